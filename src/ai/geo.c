/* geo.c: trusted-proxy address resolution and MaxMind lookups. Databases are
 * mmapped by libmaxminddb and read-only afterwards, so every worker looks up
 * in the same generation's mapping without locks. */
#include "geo.h"

#include <arpa/inet.h>
#include <maxminddb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "av.h"
#include "headers.h"

#define GEO_MAX_DBS 4

typedef struct {
    unsigned char addr[16]; /* IPv4 as ::ffff:a.b.c.d */
    int bits;               /* prefix length over the 128 */
} cidr_t;

struct av_geo_s {
    MMDB_s db[GEO_MAX_DBS];
    size_t ndb;
    cidr_t *proxies;
    size_t nproxies;
};

/* a.b.c.d or v6, as 16 bytes */
static int parse_ip(const char *s, size_t n, unsigned char out[16], int *v4)
{
    char buf[64];
    if (n == 0 || n >= sizeof(buf))
        return -1;
    memcpy(buf, s, n);
    buf[n] = '\0';
    unsigned char a4[4];
    if (inet_pton(AF_INET, buf, a4) == 1) {
        memset(out, 0, 10);
        out[10] = out[11] = 0xff;
        memcpy(out + 12, a4, 4);
        *v4 = 1;
        return 0;
    }
    *v4 = 0;
    return inet_pton(AF_INET6, buf, out) == 1 ? 0 : -1;
}

static int parse_cidr(const char *s, cidr_t *c)
{
    const char *slash = strchr(s, '/');
    size_t n = slash ? (size_t)(slash - s) : strlen(s);
    int v4;
    if (parse_ip(s, n, c->addr, &v4) != 0)
        return -1;
    int max = v4 ? 32 : 128, bits = max;
    if (slash != NULL) {
        char *end;
        long b = strtol(slash + 1, &end, 10);
        if (*end != '\0' || end == slash + 1 || b < 0 || b > max)
            return -1;
        bits = (int)b;
    }
    c->bits = v4 ? bits + 96 : bits;
    return 0;
}

int av_geo_cidr_valid(const char *s)
{
    cidr_t c;
    return parse_cidr(s, &c) == 0;
}

static int in_cidr(const cidr_t *c, const unsigned char a[16])
{
    int full = c->bits / 8, rest = c->bits % 8;
    if (memcmp(c->addr, a, (size_t)full) != 0)
        return 0;
    if (rest == 0)
        return 1;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (c->addr[full] & mask) == (a[full] & mask);
}

static int trusted(const av_geo_t *g, const char *ip, size_t n)
{
    unsigned char a[16];
    int v4;
    if (g == NULL || g->nproxies == 0 || parse_ip(ip, n, a, &v4) != 0)
        return 0;
    for (size_t i = 0; i < g->nproxies; i++)
        if (in_cidr(&g->proxies[i], a))
            return 1;
    return 0;
}

av_geo_t *av_geo_open(const char *const *dbs, size_t ndbs, const char *const *proxies, size_t nproxies, char *err,
                      size_t errlen)
{
    av_geo_t *g = av_calloc(1, sizeof(*g));
    if (ndbs > GEO_MAX_DBS) {
        snprintf(err, errlen, "at most %d databases", GEO_MAX_DBS);
        free(g);
        return NULL;
    }
    for (size_t i = 0; i < ndbs; i++) {
        int rc = MMDB_open(dbs[i], MMDB_MODE_MMAP, &g->db[i]);
        if (rc != MMDB_SUCCESS) {
            snprintf(err, errlen, "cannot open \"%s\": %s", dbs[i], MMDB_strerror(rc));
            av_geo_close(g);
            return NULL;
        }
        g->ndb++;
    }
    g->proxies = av_calloc(nproxies ? nproxies : 1, sizeof(*g->proxies));
    for (size_t i = 0; i < nproxies; i++) {
        if (parse_cidr(proxies[i], &g->proxies[i]) != 0) {
            snprintf(err, errlen, "\"%s\" is not an address or CIDR block", proxies[i]);
            av_geo_close(g);
            return NULL;
        }
    }
    g->nproxies = nproxies;
    return g;
}

void av_geo_close(av_geo_t *g)
{
    if (g == NULL)
        return;
    for (size_t i = 0; i < g->ndb; i++)
        MMDB_close(&g->db[i]);
    free(g->proxies);
    free(g);
}

/* s (n bytes) into out, cut to fit and NUL-terminated: every request
 * passes here, and snprintf costs more than the rest of the lookup. */
static void put_ip(char *out, size_t outlen, const char *s, size_t n)
{
    if (n >= outlen)
        n = outlen - 1;
    memcpy(out, s, n);
    out[n] = '\0';
}

void av_geo_client_ip(const av_geo_t *g, const av_req_t *req, char *out, size_t outlen)
{
    size_t peer_len = strlen(req->client_ip);
    put_ip(out, outlen, req->client_ip, peer_len);
    if (!trusted(g, req->client_ip, peer_len))
        return;
    /* walk X-Forwarded-For from the right: the first hop not ours is the client */
    for (size_t i = req->headers.n; i-- > 0;) {
        const av_header_t *h = &req->headers.v[i];
        if (!av_streq_ci(h->name, h->name_len, "x-forwarded-for"))
            continue;
        const char *end = h->value + h->value_len;
        while (end > h->value) {
            const char *start = end;
            while (start > h->value && start[-1] != ',')
                start--;
            const char *a = start, *b = end;
            while (a < b && (*a == ' ' || *a == '\t'))
                a++;
            while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
                b--;
            unsigned char tmp[16];
            int v4;
            if (b > a && parse_ip(a, (size_t)(b - a), tmp, &v4) == 0) {
                put_ip(out, outlen, a, (size_t)(b - a));
                if (!trusted(g, a, (size_t)(b - a)))
                    return;
            } else if (b > a) {
                return; /* not an address: stop believing the chain here */
            }
            end = start > h->value ? start - 1 : h->value;
        }
    }
}

static void get_str(MMDB_entry_s *e, char out[3], const char *a, const char *b)
{
    MMDB_entry_data_s d;
    if (out[0] != '\0' || MMDB_get_value(e, &d, a, b, NULL) != MMDB_SUCCESS || !d.has_data ||
        d.type != MMDB_DATA_TYPE_UTF8_STRING || d.data_size != 2)
        return;
    memcpy(out, d.utf8_string, 2);
    out[2] = '\0';
}

void av_geo_lookup(const av_geo_t *g, const char *ip, av_geo_info_t *info)
{
    memset(info, 0, sizeof(*info));
    for (size_t i = 0; g != NULL && i < g->ndb; i++) {
        int gai = 0, mmdb = 0;
        MMDB_lookup_result_s r = MMDB_lookup_string(&g->db[i], ip, &gai, &mmdb);
        if (gai != 0 || mmdb != MMDB_SUCCESS || !r.found_entry)
            continue;
        get_str(&r.entry, info->country, "country", "iso_code");
        get_str(&r.entry, info->continent, "continent", "code");
        MMDB_entry_data_s d;
        if (info->asn == 0 && MMDB_get_value(&r.entry, &d, "autonomous_system_number", NULL) == MMDB_SUCCESS &&
            d.has_data && d.type == MMDB_DATA_TYPE_UINT32)
            info->asn = d.uint32;
    }
}
