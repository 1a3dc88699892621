/* headers.c: what crosses from the client to the backend and back. Secrets
 * (the client's Authorization, the backend key) cross only as configured. */
#include "headers.h"

#include <ctype.h>
#include <event2/buffer.h>
#include <http_parser.h>
#include <nghttp2/nghttp2.h>
#include <string.h>
#include <strings.h>

#include "arena.h"
#include "av.h"

void av_headers_push(av_arena_t *a, av_headers_t *h, const av_header_t *e)
{
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 16;
        av_header_t *v = av_arena_alloc(a, cap * sizeof(*v));
        if (h->n)
            memcpy(v, h->v, h->n * sizeof(*v));
        h->v = v;
        h->cap = cap;
    }
    h->v[h->n++] = *e;
}

void av_headers_add(av_arena_t *a, av_headers_t *h, const char *name, size_t nlen, const char *value,
                    size_t vlen)
{
    av_header_t e = {av_arena_strndup(a, name, nlen), av_arena_strndup(a, value, vlen), nlen, vlen};
    av_headers_push(a, h, &e);
}

const av_header_t *av_headers_get(const av_headers_t *h, const char *name)
{
    for (size_t i = 0; i < h->n; i++)
        if (av_streq_ci(h->v[i].name, h->v[i].name_len, name))
            return &h->v[i];
    return NULL;
}

typedef struct {
    const char *name;
    size_t len;
} name_t;
#define NAME(s) {s, sizeof(s) - 1}

/* Whether name is one of names (lengths first: most headers match none). */
static int among(const name_t *names, size_t n, const char *name, size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (names[i].len == len && strncasecmp(name, names[i].name, len) == 0)
            return 1;
    return 0;
}

static const name_t hop_headers[] = {
    NAME("connection"), NAME("keep-alive"), NAME("proxy-connection"), NAME("te"), NAME("trailer"),
    NAME("transfer-encoding"), NAME("upgrade"), NAME("proxy-authorization"), NAME("proxy-authenticate"),
};

/* Whether name is one of the comma-separated tokens of a Connection header. */
static int in_connection(const av_headers_t *h, const char *name, size_t len)
{
    for (size_t i = 0; i < h->n; i++) {
        if (!av_streq_ci(h->v[i].name, h->v[i].name_len, "connection"))
            continue;
        const char *p = h->v[i].value, *end = p + h->v[i].value_len;
        while (p < end) {
            while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
                p++;
            const char *t = p;
            while (p < end && *p != ',' && *p != ' ' && *p != '\t')
                p++;
            if ((size_t)(p - t) == len && strncasecmp(t, name, len) == 0)
                return 1;
        }
    }
    return 0;
}

int av_header_is_hop(const av_headers_t *h, const char *name, size_t len)
{
    if (among(hop_headers, AV_NELEMS(hop_headers), name, len))
        return 1;
    return h != NULL && in_connection(h, name, len);
}

int av_header_name_valid(const char *name, size_t len)
{
    return av_http_token(name, len);
}

int av_header_value_valid(const char *value, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)value[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return 0;
    }
    return 1;
}

int av_request_id_valid(const char *s, size_t len)
{
    if (len == 0 || len > 128)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
              c == '_' || c == ':' || c == '-'))
            return 0;
    }
    return 1;
}

/* Headers the gateway sets itself, so the client's copies are dropped. */
static int replaced(const av_header_t *e, const av_backend_t *b)
{
    static const name_t ours[] = {
        NAME("host"), NAME("content-length"), NAME("expect"), NAME("x-forwarded-for"), NAME("x-forwarded-proto"),
        NAME("x-request-id"),
    };
    if (among(ours, AV_NELEMS(ours), e->name, e->name_len))
        return 1;
    if (av_streq_ci(e->name, e->name_len, "authorization") && !b->forward_authorization)
        return 1;
    if (e->name_len >= 9 && strncasecmp(e->name, "x-aviary-", 9) == 0)
        return 1; /* our own controls (variant override, its token) stay here */
    if (b->api_key != NULL && av_streq_ci(e->name, e->name_len, b->api_key_header))
        return 1;
    for (size_t i = 0; i < b->nheaders; i++)
        if (av_streq_ci(e->name, e->name_len, b->headers[i].name))
            return 1;
    return 0;
}

static char *put_header(char *p, const char *name, size_t nlen, const char *value, size_t vlen)
{
    p = av_put(p, name, nlen);
    p = AV_PUT_LIT(p, ": ");
    p = av_put(p, value, vlen);
    return AV_PUT_LIT(p, "\r\n");
}

void av_headers_backend_request(struct evbuffer *out, const av_req_t *req, const av_backend_t *b,
                                size_t body_len)
{
    /* one reservation sized for everything, then plain stores: no printf */
    size_t method_len = strlen(req->method_str), base_len = strlen(b->base_path);
    size_t host_len = strlen(b->host_header), ip_len = strlen(req->client_ip), id_len = strlen(req->id);
    size_t room = 288 + method_len + base_len + req->target_len + host_len + ip_len + id_len;
    const av_header_t *xff = NULL;
    for (size_t i = 0; i < req->headers.n; i++)
        room += req->headers.v[i].name_len + req->headers.v[i].value_len + 4;
    size_t key_len = b->api_key ? strlen(b->api_key) : 0, key_hdr_len = strlen(b->api_key_header);
    room += key_len + key_hdr_len + 16;
    for (size_t i = 0; i < b->nheaders; i++)
        room += strlen(b->headers[i].name) + strlen(b->headers[i].value) + 4;
    struct evbuffer_iovec v;
    if (evbuffer_reserve_space(out, (ev_ssize_t)room, &v, 1) != 1)
        av_oom();
    char *p = v.iov_base;
    p = av_put(p, req->method_str, method_len);
    *p++ = ' ';
    p = av_put(p, b->base_path, base_len);
    p = av_put(p, req->target, req->target_len);
    p = AV_PUT_LIT(p, " HTTP/1.1\r\nHost: ");
    p = av_put(p, b->host_header, host_len);
    p = AV_PUT_LIT(p, "\r\n");
    for (size_t i = 0; i < req->headers.n; i++) {
        const av_header_t *e = &req->headers.v[i];
        if (av_streq_ci(e->name, e->name_len, "x-forwarded-for") && xff == NULL)
            xff = e;
        if (av_header_is_hop(&req->headers, e->name, e->name_len) || replaced(e, b))
            continue;
        p = put_header(p, e->name, e->name_len, e->value, e->value_len);
    }
    p = AV_PUT_LIT(p, "X-Forwarded-For: ");
    if (xff != NULL) {
        p = av_put(p, xff->value, xff->value_len);
        p = AV_PUT_LIT(p, ", ");
    }
    p = av_put(p, req->client_ip, ip_len);
    p = req->tls ? AV_PUT_LIT(p, "\r\nX-Forwarded-Proto: https\r\nX-Request-Id: ")
                 : AV_PUT_LIT(p, "\r\nX-Forwarded-Proto: http\r\nX-Request-Id: ");
    p = av_put(p, req->id, id_len);
    p = AV_PUT_LIT(p, "\r\n");
    if (b->api_key != NULL) {
        if (strcasecmp(b->api_key_header, "authorization") == 0) {
            p = AV_PUT_LIT(p, "Authorization: Bearer ");
            p = av_put(p, b->api_key, key_len);
            p = AV_PUT_LIT(p, "\r\n");
        } else {
            p = put_header(p, b->api_key_header, key_hdr_len, b->api_key, key_len);
        }
    }
    for (size_t i = 0; i < b->nheaders; i++)
        p = put_header(p, b->headers[i].name, strlen(b->headers[i].name), b->headers[i].value,
                       strlen(b->headers[i].value));
    if (body_len > 0 || req->body != NULL) {
        p = AV_PUT_LIT(p, "Content-Length: ");
        p = av_put_u64(p, body_len);
        p = AV_PUT_LIT(p, "\r\n");
    }
    if (req->shadow)
        p = AV_PUT_LIT(p, "X-Aviary-Shadow: 1\r\n");
    p = AV_PUT_LIT(p, "Connection: keep-alive\r\n\r\n");
    v.iov_len = (size_t)(p - (char *)v.iov_base);
    evbuffer_commit_space(out, &v, 1);
}

static char *lower_dup(av_arena_t *a, const char *s, size_t n)
{
    char *d = av_arena_alloc(a, n + 1);
    for (size_t i = 0; i < n; i++)
        d[i] = (char)tolower((unsigned char)s[i]);
    d[n] = '\0';
    return d;
}

size_t av_headers_backend_nv(const av_req_t *req, const av_backend_t *b, size_t body_len, nghttp2_nv **out)
{
    av_arena_t *a = req->arena;
    size_t cap = req->headers.n + b->nheaders + 13, n = 0;
    nghttp2_nv *nv = av_arena_alloc(a, cap * sizeof(*nv));
#define NV(nm, nl, val, vl) \
    nv[n++] = (nghttp2_nv){(uint8_t *)(nm), (uint8_t *)(val), (nl), (vl), NGHTTP2_NV_FLAG_NONE}
    size_t base_len = strlen(b->base_path);
    char *path = av_arena_alloc(a, base_len + req->target_len + 1);
    memcpy(path, b->base_path, base_len);
    memcpy(path + base_len, req->target, req->target_len);
    NV(":method", 7, req->method_str, strlen(req->method_str));
    NV(":scheme", 7, b->tls ? "https" : "http", b->tls ? 5u : 4u);
    NV(":authority", 10, b->host_header, strlen(b->host_header));
    NV(":path", 5, path, base_len + req->target_len);
    const av_header_t *xff = NULL;
    for (size_t i = 0; i < req->headers.n; i++) {
        const av_header_t *e = &req->headers.v[i];
        if (av_streq_ci(e->name, e->name_len, "x-forwarded-for") && xff == NULL)
            xff = e;
        if (av_header_is_hop(&req->headers, e->name, e->name_len) || replaced(e, b))
            continue;
        NV(lower_dup(a, e->name, e->name_len), e->name_len, e->value, e->value_len);
    }
    size_t ip_len = strlen(req->client_ip), xlen = ip_len + (xff ? xff->value_len + 2 : 0);
    char *x = av_arena_alloc(a, xlen + 1), *p = x;
    if (xff != NULL) {
        p = av_put(p, xff->value, xff->value_len);
        p = AV_PUT_LIT(p, ", ");
    }
    av_put(p, req->client_ip, ip_len);
    NV("x-forwarded-for", 15, x, xlen);
    NV("x-forwarded-proto", 17, req->tls ? "https" : "http", req->tls ? 5u : 4u);
    NV("x-request-id", 12, req->id, strlen(req->id));
    if (b->api_key != NULL) {
        size_t key_len = strlen(b->api_key);
        if (strcasecmp(b->api_key_header, "authorization") == 0) {
            char *v = av_arena_alloc(a, key_len + 8);
            memcpy(v, "Bearer ", 7);
            memcpy(v + 7, b->api_key, key_len);
            NV("authorization", 13, v, key_len + 7);
        } else {
            size_t hl = strlen(b->api_key_header);
            NV(lower_dup(a, b->api_key_header, hl), hl, b->api_key, key_len);
        }
    }
    for (size_t i = 0; i < b->nheaders; i++) {
        size_t hl = strlen(b->headers[i].name);
        NV(lower_dup(a, b->headers[i].name, hl), hl, b->headers[i].value, strlen(b->headers[i].value));
    }
    if (req->shadow)
        NV("x-aviary-shadow", 15, "1", 1);
    if (body_len > 0 || req->method == HTTP_POST || req->method == HTTP_PUT || req->method == HTTP_PATCH) {
        char *cl = av_arena_alloc(a, AV_PUT_NUM_MAX);
        NV("content-length", 14, cl, (size_t)(av_put_u64(cl, body_len) - cl));
    }
#undef NV
    *out = nv;
    return n;
}

int av_header_forward_response(const av_headers_t *resp, const av_header_t *hdr)
{
    if (av_header_is_hop(resp, hdr->name, hdr->name_len))
        return 0;
    return !av_streq_ci(hdr->name, hdr->name_len, "content-length") &&
           !av_streq_ci(hdr->name, hdr->name_len, "x-request-id");
}
