/* config.c: JSON config -> immutable snapshot. Every key has its type, bounds,
 * default and reload flag in one table per object; errors name file:line:col and key.
 * The loader, listeners, backends, pricing and geo live here; routes in config_route.c. */
#include "config.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "av.h"
#include "config_int.h"
#include "jsonc.h"
#include "judge.h"
#include "log.h"
#include "tls.h"

#define AV_CONFIG_MAX_BYTES (16u << 20)

void av_cfg_push_key(av_cfg_ctx_t *x, const char *key)
{
    if (x->depth < AV_CONFIG_MAX_DEPTH)
        x->path[x->depth] = (av_jpath_seg_t){key, 0};
    x->depth++;
}

void av_cfg_push_index(av_cfg_ctx_t *x, size_t i)
{
    if (x->depth < AV_CONFIG_MAX_DEPTH)
        x->path[x->depth] = (av_jpath_seg_t){NULL, i};
    x->depth++;
}

void av_cfg_pop(av_cfg_ctx_t *x)
{
    x->depth--;
}

int av_cfg_fail(av_cfg_ctx_t *x, const char *fmt, ...)
{
    size_t depth = x->depth < AV_CONFIG_MAX_DEPTH ? x->depth : AV_CONFIG_MAX_DEPTH;
    size_t off = av_jsonc_locate(x->text, x->len, x->path, depth);
    unsigned line, col;
    av_jsonc_linecol(x->text, off, &line, &col);
    char key[256] = "";
    size_t k = 0;
    for (size_t i = 0; i < depth && k < sizeof(key) - 1; i++) {
        int n;
        if (x->path[i].key != NULL)
            n = snprintf(key + k, sizeof(key) - k, "%s%s", i ? "." : "", x->path[i].key);
        else
            n = snprintf(key + k, sizeof(key) - k, "[%zu]", x->path[i].index);
        if (n < 0)
            break;
        k += (size_t)n;
        if (k >= sizeof(key))
            k = sizeof(key) - 1;
    }
    int n = snprintf(x->err, x->errlen, "%s:%u:%u: %s%s", x->name, line, col, depth ? key : "",
                     depth ? ": " : "");
    if (n >= 0 && (size_t)n < x->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(x->err + n, x->errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return AV_EINVAL;
}

const char *av_cfg_dup_str(av_cfg_ctx_t *x, const char *s)
{
    return av_arena_strndup(x->cfg->arena, s, strlen(s));
}

const char *av_cfg_type_name(const cJSON *v)
{
    if (cJSON_IsObject(v))
        return "an object";
    if (cJSON_IsArray(v))
        return "an array";
    if (cJSON_IsString(v))
        return "a string";
    if (cJSON_IsNumber(v))
        return "a number";
    if (cJSON_IsBool(v))
        return "a boolean";
    return "null";
}

static int load_field(av_cfg_ctx_t *x, const cJSON *v, const av_cfg_key_t *s, void *base)
{
    char *field = (char *)base + s->off;
    switch (s->type) {
    case K_INT: {
        if (!cJSON_IsNumber(v))
            return av_cfg_fail(x, "expected an integer, got %s", av_cfg_type_name(v));
        double d = v->valuedouble;
        if (d != floor(d) || d < (double)s->min || d > (double)s->max)
            return av_cfg_fail(x, "must be an integer from %lld to %lld", (long long)s->min,
                        (long long)s->max);
        *(int64_t *)(void *)field = (int64_t)d;
        return 0;
    }
    case K_BOOL:
        if (!cJSON_IsBool(v))
            return av_cfg_fail(x, "expected true or false, got %s", av_cfg_type_name(v));
        *(int *)(void *)field = cJSON_IsTrue(v);
        return 0;
    case K_STR:
        if (!cJSON_IsString(v))
            return av_cfg_fail(x, "expected a string, got %s", av_cfg_type_name(v));
        if (s->min > 0 && strlen(v->valuestring) < (size_t)s->min)
            return av_cfg_fail(x, "must not be empty");
        *(const char **)(void *)field = av_cfg_dup_str(x, v->valuestring);
        return 0;
    case K_OBJ:
        if (!cJSON_IsObject(v))
            return av_cfg_fail(x, "expected an object, got %s", av_cfg_type_name(v));
        return av_cfg_load_obj(x, v, s->sub, base);
    case K_CUSTOM:
        return s->custom(x, v, base);
    }
    return AV_EINVAL;
}

static void set_default(av_cfg_ctx_t *x, const av_cfg_key_t *s, void *base)
{
    char *field = (char *)base + s->off;
    switch (s->type) {
    case K_INT:
        *(int64_t *)(void *)field = s->idef;
        break;
    case K_BOOL:
        *(int *)(void *)field = (int)s->idef;
        break;
    case K_STR:
        *(const char **)(void *)field = s->sdef ? av_cfg_dup_str(x, s->sdef) : NULL;
        break;
    case K_OBJ:
        for (const av_cfg_key_t *t = s->sub; t->key != NULL; t++)
            set_default(x, t, base);
        break;
    case K_CUSTOM:
        break;
    }
}

int av_cfg_load_obj(av_cfg_ctx_t *x, const cJSON *obj, const av_cfg_key_t *spec, void *base)
{
    for (const cJSON *m = obj->child; m != NULL; m = m->next) {
        av_cfg_push_key(x, m->string);
        size_t seen = 0;
        for (const cJSON *p = obj->child; p != m; p = p->next)
            seen += strcmp(p->string, m->string) == 0;
        if (seen > 0) {
            x->path[x->depth - 1].index = seen; /* point at this occurrence */
            return av_cfg_fail(x, "duplicate key");
        }
        const av_cfg_key_t *s = spec;
        while (s->key != NULL && strcmp(s->key, m->string) != 0)
            s++;
        if (s->key == NULL) {
            char known[512] = "";
            size_t k = 0;
            for (const av_cfg_key_t *t = spec; t->key != NULL && k < sizeof(known); t++) {
                int n = snprintf(known + k, sizeof(known) - k, "%s%s", t == spec ? "" : ", ", t->key);
                if (n < 0)
                    break;
                k += (size_t)n;
            }
            return av_cfg_fail(x, "unknown key (known keys: %s)", known);
        }
        int rc = load_field(x, m, s, base);
        if (rc != 0)
            return rc;
        av_cfg_pop(x);
    }
    for (const av_cfg_key_t *s = spec; s->key != NULL; s++) {
        if (cJSON_GetObjectItemCaseSensitive(obj, s->key) != NULL)
            continue;
        if (s->flags & K_REQUIRED) {
            return av_cfg_fail(x, "%s: missing, and it is required", s->key);
        }
        set_default(x, s, base);
    }
    return 0;
}

/* ---- custom loaders ---- */

int av_cfg_load_kv(av_cfg_ctx_t *x, const cJSON *v, av_kv_t **out, size_t *n)
{
    if (!cJSON_IsObject(v))
        return av_cfg_fail(x, "expected an object of strings, got %s", av_cfg_type_name(v));
    size_t cnt = (size_t)cJSON_GetArraySize(v), i = 0;
    av_kv_t *kv = av_arena_calloc(x->cfg->arena, cnt * sizeof(*kv));
    for (const cJSON *m = v->child; m != NULL; m = m->next, i++) {
        av_cfg_push_key(x, m->string);
        if (!cJSON_IsString(m))
            return av_cfg_fail(x, "expected a string, got %s", av_cfg_type_name(m));
        for (const char *p = m->string; *p; p++)
            if (*p <= ' ' || *p == ':' || *p >= 127)
                return av_cfg_fail(x, "not a valid header name");
        for (const char *p = m->valuestring; *p; p++)
            if (*p == '\r' || *p == '\n')
                return av_cfg_fail(x, "header values cannot hold line breaks");
        kv[i].name = av_cfg_dup_str(x, m->string);
        kv[i].value = av_cfg_dup_str(x, m->valuestring);
        av_cfg_pop(x);
    }
    *out = kv;
    *n = cnt;
    return 0;
}

static void free_tls_ctx(void *p)
{
    av_tls_ctx_free(p);
}

/* Loads the listener's certificate into a context owned by this generation. */
static int load_listen_tls(av_cfg_ctx_t *x, av_listen_t *l)
{
    if (l->tls_cert == NULL && l->tls_key == NULL)
        return 0;
    av_cfg_push_key(x, "tls");
    if (l->tls_cert == NULL || l->tls_key == NULL)
        return av_cfg_fail(x, "needs both \"cert\" and \"key\" (PEM files)");
    l->tls_cert = av_cfg_relative_to(x, x->cfg->dir, l->tls_cert);
    l->tls_key = av_cfg_relative_to(x, x->cfg->dir, l->tls_key);
    char why[512];
    l->tls_ctx = av_tls_server_ctx(l->tls_cert, l->tls_key, l->http2, why, sizeof(why));
    if (l->tls_ctx == NULL) {
        av_cfg_push_key(x, strstr(why, "key \"") == why ? "key" : "cert");
        return av_cfg_fail(x, "%s", why);
    }
    av_arena_on_free(x->cfg->arena, free_tls_ctx, l->tls_ctx);
    av_cfg_pop(x);
    return 0;
}

static int c_listen(av_cfg_ctx_t *x, const cJSON *v, void *base)
{
    av_config_t *c = base;
    static const av_cfg_key_t tls_spec[] = {
        {"cert", K_STR, offsetof(av_listen_t, tls_cert), 1, 0, 0, NULL, 0, NULL, NULL},
        {"key", K_STR, offsetof(av_listen_t, tls_key), 1, 0, 0, NULL, 0, NULL, NULL},
        {NULL, 0, 0, 0, 0, 0, NULL, 0, NULL, NULL},
    };
    static const av_cfg_key_t spec[] = {
        {"address", K_STR, offsetof(av_listen_t, address), 1, 0, 0, NULL, K_REQUIRED, NULL, NULL},
        {"tls", K_OBJ, 0, 0, 0, 0, NULL, 0, tls_spec, NULL},
        {"http2", K_BOOL, offsetof(av_listen_t, http2), 0, 1, 1, NULL, 0, NULL, NULL},
        {NULL, 0, 0, 0, 0, 0, NULL, 0, NULL, NULL},
    };
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) == 0)
        return av_cfg_fail(x, "expected a non-empty array of listeners");
    c->nlisten = (size_t)cJSON_GetArraySize(v);
    c->listen = av_arena_calloc(c->arena, c->nlisten * sizeof(*c->listen));
    size_t i = 0;
    for (const cJSON *e = v->child; e != NULL; e = e->next, i++) {
        av_cfg_push_index(x, i);
        if (!cJSON_IsObject(e))
            return av_cfg_fail(x, "expected an object like {\"address\": \"127.0.0.1:8080\"}");
        int rc = av_cfg_load_obj(x, e, spec, &c->listen[i]);
        if (rc != 0)
            return rc;
        av_cfg_push_key(x, "address");
        if (av_parse_hostport(c->listen[i].address, 0, 1, &c->listen[i].addr,
                              &c->listen[i].addrlen) != 0)
            return av_cfg_fail(x, "\"%s\" is not a numeric host:port (e.g. 127.0.0.1:8080, [::]:8080, *:8080)",
                        c->listen[i].address);
        const char *colon = strrchr(c->listen[i].address, ':');
        int ephemeral = colon != NULL && strcmp(colon, ":0") == 0; /* each bind picks its own port */
        for (size_t j = 0; j < i && !ephemeral; j++)
            if (strcmp(c->listen[j].address, c->listen[i].address) == 0)
                return av_cfg_fail(x, "\"%s\" is listed twice", c->listen[i].address);
        av_cfg_pop(x);
        rc = load_listen_tls(x, &c->listen[i]);
        if (rc != 0)
            return rc;
        av_cfg_pop(x);
    }
    return 0;
}

/* Fields the gateway writes itself: a backend's headers and key header
 * cannot name them (two Host fields, two Content-Lengths). */
static int gateway_field(const char *name)
{
    static const char *const fields[] = {"host", "content-length", "transfer-encoding", "connection", "keep-alive",
                                         "te", "trailer", "upgrade", "expect", "x-forwarded-for",
                                         "x-forwarded-proto", "x-request-id"};
    for (size_t i = 0; i < AV_NELEMS(fields); i++)
        if (strcasecmp(name, fields[i]) == 0)
            return 1;
    /* and what the gateway drops from clients as hop-by-hop: Proxy-* */
    return strncasecmp(name, "x-aviary-", 9) == 0 || strncasecmp(name, "proxy-", 6) == 0;
}

static int c_headers(av_cfg_ctx_t *x, const cJSON *v, void *base)
{
    av_backend_t *b = base;
    int rc = av_cfg_load_kv(x, v, &b->headers, &b->nheaders);
    if (rc != 0)
        return rc;
    for (size_t i = 0; i < b->nheaders; i++) {
        const char *n = b->headers[i].name, *val = b->headers[i].value;
        size_t vl = strlen(val);
        av_cfg_push_key(x, n);
        if (!av_http_token(n, strlen(n)))
            return av_cfg_fail(x, "not a header name (letters, digits and !#$%%&'*+-.^_`|~ only)");
        if (gateway_field(n))
            return av_cfg_fail(x, "the gateway sets this header itself");
        for (size_t k = 0; k < vl; k++)
            if (((unsigned char)val[k] < 0x20 && val[k] != '\t') || val[k] == 0x7f)
                return av_cfg_fail(x, "header values cannot hold control characters");
        if (vl > 0 && (val[0] == ' ' || val[0] == '\t' || val[vl - 1] == ' ' || val[vl - 1] == '\t'))
            return av_cfg_fail(x, "a header value cannot begin or end with a space (HTTP/2 backends refuse it)");
        av_cfg_pop(x);
    }
    return 0;
}

static const av_cfg_key_t backend_spec[] = {
    {"url", K_STR, offsetof(av_backend_t, url), 1, 0, 0, NULL, K_REQUIRED, NULL, NULL},
    {"protocol", K_STR, offsetof(av_backend_t, protocol_name), 1, 0, 0, "http1", 0, NULL, NULL},
    {"max_connections", K_INT, offsetof(av_backend_t, max_connections), 1, 100000, 64, NULL, 0, NULL, NULL},
    {"connect_timeout_ms", K_INT, offsetof(av_backend_t, connect_timeout_ms), 1, 600000, 5000, NULL, 0, NULL, NULL},
    {"first_byte_timeout_ms", K_INT, offsetof(av_backend_t, first_byte_timeout_ms), 1, 3600000, 60000, NULL, 0, NULL, NULL},
    {"read_timeout_ms", K_INT, offsetof(av_backend_t, read_timeout_ms), 1, 3600000, 60000, NULL, 0, NULL, NULL},
    {"idle_timeout_ms", K_INT, offsetof(av_backend_t, idle_timeout_ms), 1, 3600000, 60000, NULL, 0, NULL, NULL},
    {"ping_interval_ms", K_INT, offsetof(av_backend_t, ping_interval_ms), 100, 3600000, 30000, NULL, 0, NULL, NULL},
    {"api_key_env", K_STR, offsetof(av_backend_t, api_key_env), 1, 0, 0, NULL, 0, NULL, NULL},
    {"api_key_header", K_STR, offsetof(av_backend_t, api_key_header), 1, 0, 0, "authorization", 0, NULL, NULL},
    {"forward_authorization", K_BOOL, offsetof(av_backend_t, forward_authorization), 0, 1, 0, NULL, 0, NULL, NULL},
    {"headers", K_CUSTOM, 0, 0, 0, 0, NULL, 0, NULL, c_headers},
    {"tls_verify", K_BOOL, offsetof(av_backend_t, tls_verify), 0, 1, 1, NULL, 0, NULL, NULL},
    {"stream_usage", K_BOOL, offsetof(av_backend_t, stream_usage), 0, 1, 1, NULL, 0, NULL, NULL},
    {"tls_ca_file", K_STR, offsetof(av_backend_t, tls_ca_file), 1, 0, 0, NULL, 0, NULL, NULL},
    {NULL, 0, 0, 0, 0, 0, NULL, 0, NULL, NULL},
};

/* The backend's TLS context, owned by this generation; checks that the
 * protocol, the scheme and the TLS keys agree. */
static int load_backend_tls(av_cfg_ctx_t *x, const cJSON *e, av_backend_t *b)
{
    if (b->protocol == AV_PROTO_H2 && !b->tls) {
        av_cfg_push_key(x, "protocol");
        return av_cfg_fail(x, "\"h2\" is HTTP/2 over TLS and needs an https:// url; use \"h2c\" for cleartext HTTP/2");
    }
    if (b->protocol == AV_PROTO_H2C && b->tls) {
        av_cfg_push_key(x, "protocol");
        return av_cfg_fail(x, "\"h2c\" is cleartext HTTP/2 and needs an http:// url; use \"h2\" over https://");
    }
    const cJSON *verify = cJSON_GetObjectItemCaseSensitive(e, "tls_verify");
    if (!b->tls) {
        if (verify != NULL || b->tls_ca_file != NULL) {
            av_cfg_push_key(x, verify != NULL ? "tls_verify" : "tls_ca_file");
            return av_cfg_fail(x, "applies to https:// backends only");
        }
        return 0;
    }
    if (b->tls_ca_file != NULL) {
        b->tls_ca_file = av_cfg_relative_to(x, x->cfg->dir, b->tls_ca_file);
        if (access(b->tls_ca_file, R_OK) != 0) {
            av_cfg_push_key(x, "tls_ca_file");
            return av_cfg_fail(x, "cannot read \"%s\": %s", b->tls_ca_file, strerror(errno));
        }
    }
    char why[512];
    b->tls_ctx = av_tls_client_ctx(b->tls_ca_file, b->tls_verify, b->protocol == AV_PROTO_H2 ? "h2" : "http/1.1",
                                   why, sizeof(why));
    if (b->tls_ctx == NULL) {
        av_cfg_push_key(x, b->tls_ca_file != NULL ? "tls_ca_file" : "url");
        return av_cfg_fail(x, "%s", why);
    }
    av_arena_on_free(x->cfg->arena, free_tls_ctx, b->tls_ctx);
    if (!b->tls_verify)
        AV_WARN("backend %s: \"tls_verify\": false: its certificate and name are not checked; anyone on the "
                "path can read and change its traffic", b->name);
    return 0;
}

static int parse_url(av_cfg_ctx_t *x, av_backend_t *b)
{
    const char *u = b->url, *hp;
    if (strncmp(u, "https://", 8) == 0) {
        b->tls = 1;
        hp = u + 8;
    } else if (strncmp(u, "http://", 7) == 0) {
        hp = u + 7;
    } else {
        return av_cfg_fail(x, "\"%s\" must start with http:// or https://", u);
    }
    const char *slash = strchr(hp, '/');
    size_t hplen = slash ? (size_t)(slash - hp) : strlen(hp);
    if (hplen == 0 || hplen > 255)
        return av_cfg_fail(x, "\"%s\" has no host", u);
    for (const char *c = u; *c != '\0'; c++)
        if ((unsigned char)*c <= ' ' || *c == 0x7f) /* it goes into every request line */
            return av_cfg_fail(x, "a url has no spaces or control characters (byte %d is one)", (int)(c - u) + 1);
    if (strpbrk(u, "?#") != NULL)
        return av_cfg_fail(x, "\"%s\": a backend url takes no query or fragment", u);
    if (memchr(hp, '@', hplen) != NULL)
        return av_cfg_fail(x, "\"%s\": no credentials in the url (use \"api_key_env\")", u);
    char hostport[300];
    memcpy(hostport, hp, hplen);
    hostport[hplen] = '\0';
    /* host, then an optional :port; an IPv6 host in brackets */
    const char *host = hostport, *host_end, *port = NULL;
    if (hostport[0] == '[') {
        host = hostport + 1;
        host_end = strchr(host, ']');
        if (host_end == NULL || host_end == host)
            return av_cfg_fail(x, "\"%s\": an IPv6 host goes in brackets, like http://[::1]:8000", u);
        if (host_end[1] == ':')
            port = host_end + 2;
        else if (host_end[1] != '\0')
            return av_cfg_fail(x, "\"%s\": expected :port or / after the ]", u);
    } else {
        host_end = strchr(hostport, ':');
        if (host_end != NULL && strchr(host_end + 1, ':') != NULL)
            return av_cfg_fail(x, "\"%s\": an IPv6 host goes in brackets, like http://[::1]:8000", u);
        if (host_end != NULL)
            port = host_end + 1;
        else
            host_end = hostport + hplen;
        if (host_end == host)
            return av_cfg_fail(x, "\"%s\" has no host", u);
    }
    int has_port = port != NULL;
    if (has_port) {
        char *end = NULL;
        long pn = *port >= '0' && *port <= '9' ? strtol(port, &end, 10) : -1;
        if (pn < 1 || pn > 65535 || *end != '\0' || end - port > 5)
            return av_cfg_fail(x, "\"%s\": the port must be a number from 1 to 65535", u);
    }
    b->tls_name = av_arena_strndup(x->cfg->arena, host, (size_t)(host_end - host)); /* the name to verify: no brackets */
    if (!has_port)
        strcat(hostport, b->tls ? ":443" : ":80");
    if (av_parse_hostport(hostport, 1, 0, &b->addr, &b->addrlen) != 0)
        return av_cfg_fail(x, "cannot resolve \"%s\"", hostport);
    b->host_header = av_arena_strndup(x->cfg->arena, hp, hplen);
    /* per backend, not per address: each backend's max_connections holds on its own */
    size_t klen = strlen(b->name) + strlen(hostport) + 16;
    char *key = av_arena_alloc(x->cfg->arena, klen);
    snprintf(key, klen, "%s@%s/%s%s", b->name, hostport, b->protocol_name, b->tls ? "+tls" : "");
    b->pool_key = key;
    size_t slen = klen + 8;
    char *skey = av_arena_alloc(x->cfg->arena, slen);
    snprintf(skey, slen, "%s#shadow", key);
    b->shadow_pool_key = skey;
    const char *path = slash ? slash : "";
    size_t plen = strlen(path);
    while (plen > 0 && path[plen - 1] == '/')
        plen--;
    b->base_path = av_arena_strndup(x->cfg->arena, path, plen);
    return 0;
}

static int c_backends(av_cfg_ctx_t *x, const cJSON *v, void *base)
{
    av_config_t *c = base;
    if (c->backends != NULL)
        return 0; /* loaded first, before routes refer to them */
    if (!cJSON_IsObject(v) || v->child == NULL)
        return av_cfg_fail(x, "expected an object of named backends, with at least one");
    c->nbackends = (size_t)cJSON_GetArraySize(v);
    c->backends = av_arena_calloc(c->arena, c->nbackends * sizeof(*c->backends));
    size_t i = 0;
    for (const cJSON *e = v->child; e != NULL; e = e->next, i++) {
        av_backend_t *b = &c->backends[i];
        av_cfg_push_key(x, e->string);
        if (!cJSON_IsObject(e))
            return av_cfg_fail(x, "expected an object like {\"url\": \"http://127.0.0.1:8000\"}");
        int rc = av_cfg_load_obj(x, e, backend_spec, b);
        if (rc != 0)
            return rc;
        const char *proto = b->protocol_name;
        av_cfg_push_key(x, "protocol");
        if (strcmp(proto, "http1") == 0)
            b->protocol = AV_PROTO_HTTP1;
        else if (strcmp(proto, "h2") == 0)
            b->protocol = AV_PROTO_H2;
        else if (strcmp(proto, "h2c") == 0)
            b->protocol = AV_PROTO_H2C;
        else
            return av_cfg_fail(x, "\"%s\" is not a protocol (use \"http1\", \"h2\" for HTTP/2 over TLS or \"h2c\" "
                           "for cleartext HTTP/2)", proto);
        av_cfg_pop(x);
        b->name = av_cfg_dup_str(x, e->string);
        b->index = (int)i;
        av_cfg_push_key(x, "url");
        rc = parse_url(x, b);
        if (rc != 0)
            return rc;
        av_cfg_pop(x);
        rc = load_backend_tls(x, e, b);
        if (rc != 0)
            return rc;
        av_cfg_push_key(x, "api_key_header");
        if (!av_http_token(b->api_key_header, strlen(b->api_key_header)))
            return av_cfg_fail(x, "not a header name (letters, digits and !#$%%&'*+-.^_`|~ only)");
        if (gateway_field(b->api_key_header))
            return av_cfg_fail(x, "the gateway sets this header itself");
        av_cfg_pop(x);
        for (size_t h = 0; h < b->nheaders && b->api_key_env != NULL; h++)
            if (strcasecmp(b->headers[h].name, b->api_key_header) == 0) {
                av_cfg_push_key(x, "headers");
                av_cfg_push_key(x, b->headers[h].name);
                return av_cfg_fail(x, "the backend's key goes in this header (api_key_header): set one or the other");
            }
        if (b->api_key_env != NULL) {
            av_cfg_push_key(x, "api_key_env");
            const char *key = getenv(b->api_key_env);
            if (key == NULL || key[0] == '\0')
                return av_cfg_fail(x, "environment variable %s is not set", b->api_key_env);
            for (const char *p = key; *p; p++)
                if (*p == '\r' || *p == '\n')
                    return av_cfg_fail(x, "environment variable %s holds a line break", b->api_key_env);
            b->api_key = av_cfg_dup_str(x, key);
            av_cfg_pop(x);
        }
        av_cfg_pop(x);
    }
    return 0;
}


static int c_admin_addr(av_cfg_ctx_t *x, av_config_t *c)
{
    if (av_parse_hostport(c->admin_address, 0, 1, &c->admin_addr, &c->admin_addrlen) != 0) {
        av_cfg_push_key(x, "admin");
        av_cfg_push_key(x, "address");
        return av_cfg_fail(x, "\"%s\" is not a numeric host:port", c->admin_address);
    }
    return 0;
}

static const av_cfg_key_t admin_spec[] = {
    {"address", K_STR, offsetof(av_config_t, admin_address), 1, 0, 0, "127.0.0.1:9901", K_RESTART, NULL, NULL},
    {"token_env", K_STR, offsetof(av_config_t, admin_token_env), 1, 0, 0, NULL, 0, NULL, NULL},
    {NULL, 0, 0, 0, 0, 0, NULL, 0, NULL, NULL},
};

static const av_cfg_key_t fleet_spec[] = {
    {"redis", K_STR, offsetof(av_config_t, fleet.redis), 1, 0, 0, NULL, K_RESTART | K_REQUIRED, NULL, NULL},
    {"password_env", K_STR, offsetof(av_config_t, fleet.password_env), 1, 0, 0, NULL, K_RESTART, NULL, NULL},
    {"name", K_STR, offsetof(av_config_t, fleet.name), 1, 0, 0, "aviary", K_RESTART, NULL, NULL},
    {"replica_id", K_STR, offsetof(av_config_t, fleet.replica_id), 1, 0, 0, NULL, K_RESTART, NULL, NULL},
    {NULL, 0, 0, 0, 0, 0, NULL, 0, NULL, NULL},
};

/* A key part Redis keys are made of: printable, no spaces or braces (hash tags stay ours). */
static int key_part_ok(const char *s)
{
    if (*s == '\0' || strlen(s) > 64)
        return 0;
    for (; *s; s++)
        if (*s <= ' ' || *s >= 0x7f || *s == '{' || *s == '}' || *s == ':')
            return 0;
    return 1;
}

/* "redis://host:port/db" (port 6379 and db 0 when left out) or "unix:/path[?db=N]". */
static int c_fleet(av_cfg_ctx_t *x, av_config_t *c)
{
    av_fleet_cfg_t *f = &c->fleet;
    if (f->redis == NULL)
        return 0;
    av_cfg_push_key(x, "fleet");
    av_cfg_push_key(x, "redis");
    const char *r = f->redis;
    char *end;
    if (strncmp(r, "unix:", 5) == 0) {
        const char *q = strchr(r + 5, '?');
        size_t n = q ? (size_t)(q - (r + 5)) : strlen(r + 5);
        if (n == 0 || r[5] != '/')
            return av_cfg_fail(x, "\"%s\": a unix socket is \"unix:/absolute/path\"", r);
        char *p = av_arena_alloc(c->arena, n + 1);
        memcpy(p, r + 5, n);
        p[n] = '\0';
        f->unix_path = p;
        if (q != NULL) {
            long db = strncmp(q, "?db=", 4) == 0 ? strtol(q + 4, &end, 10) : -1;
            if (db < 0 || db > 15 || end == q + 4 || *end != '\0')
                return av_cfg_fail(x, "\"%s\": after the path only ?db=N (0 to 15)", r);
            f->db = (int)db;
        }
    } else if (strncmp(r, "redis://", 8) == 0) {
        const char *h = r + 8, *slash = strchr(h, '/');
        size_t hn = slash ? (size_t)(slash - h) : strlen(h);
        if (memchr(h, '@', hn) != NULL)
            return av_cfg_fail(x, "\"%s\": no password in the URL; name an environment variable in "
                                  "\"password_env\"", r);
        char hostport[300];
        if (hn == 0 || hn >= sizeof(hostport))
            return av_cfg_fail(x, "\"%s\" has no host", r);
        memcpy(hostport, h, hn);
        hostport[hn] = '\0';
        char *colon = hostport[0] == '[' ? strstr(hostport, "]:") : strrchr(hostport, ':');
        long port = 6379;
        if (colon != NULL) {
            char *ps = colon + (hostport[0] == '[' ? 2 : 1);
            port = strtol(ps, &end, 10);
            if (*ps == '\0' || *end != '\0' || port < 1 || port > 65535)
                return av_cfg_fail(x, "\"%s\": the port is a number from 1 to 65535", r);
            *(hostport[0] == '[' ? colon + 1 : colon) = '\0';
        }
        if (hostport[0] == '[') { /* [::1] */
            size_t l = strlen(hostport);
            if (l < 3 || hostport[l - 1] != ']')
                return av_cfg_fail(x, "\"%s\": an IPv6 address goes in brackets, [::1]:6379", r);
            hostport[l - 1] = '\0';
            memmove(hostport, hostport + 1, l - 1);
        }
        if (hostport[0] == '\0')
            return av_cfg_fail(x, "\"%s\" has no host", r);
        f->host = av_cfg_dup_str(x, hostport);
        f->port = (int)port;
        if (slash != NULL && slash[1] != '\0') {
            long db = strtol(slash + 1, &end, 10);
            if (db < 0 || db > 15 || *end != '\0')
                return av_cfg_fail(x, "\"%s\": the database after the / is a number from 0 to 15", r);
            f->db = (int)db;
        }
    } else {
        return av_cfg_fail(x, "\"%s\" is not a Redis address (\"redis://host:port/db\" or \"unix:/path\")", r);
    }
    av_cfg_pop(x);
    if (f->password_env != NULL) {
        const char *pw = getenv(f->password_env);
        if (pw == NULL || pw[0] == '\0') {
            av_cfg_push_key(x, "password_env");
            return av_cfg_fail(x, "environment variable %s is not set", f->password_env);
        }
        f->password = av_cfg_dup_str(x, pw);
    }
    if (!key_part_ok(f->name)) {
        av_cfg_push_key(x, "name");
        return av_cfg_fail(x, "\"%s\": a fleet name is 1 to 64 printable characters without spaces, ':', '{' or '}'",
                           f->name);
    }
    if (f->replica_id == NULL) {
        char host[128] = "";
        if (gethostname(host, sizeof(host) - 1) != 0 || host[0] == '\0')
            snprintf(host, sizeof(host), "replica");
        for (char *p = host; *p; p++)
            if (*p <= ' ' || *p >= 0x7f || *p == '{' || *p == '}' || *p == ':')
                *p = '-';
        char id[160];
        snprintf(id, sizeof(id), "%.50s-%ld", host, (long)getpid());
        f->replica_id = av_cfg_dup_str(x, id);
    } else if (!key_part_ok(f->replica_id)) {
        av_cfg_push_key(x, "replica_id");
        return av_cfg_fail(x, "\"%s\": a replica id is 1 to 64 printable characters without spaces, ':', '{' or '}'",
                           f->replica_id);
    }
    av_cfg_pop(x);
    return 0;
}

static const av_cfg_key_t log_spec[] = {
    {"kpi", K_STR, offsetof(av_config_t, kpi_log), 1, 0, 0, "-", K_RESTART, NULL, NULL},
    {"audit", K_STR, offsetof(av_config_t, audit_log), 1, 0, 0, NULL, K_RESTART, NULL, NULL},
    {"level", K_STR, offsetof(av_config_t, log_level), 1, 0, 0, "info", 0, NULL, NULL},
    {NULL, 0, 0, 0, 0, 0, NULL, 0, NULL, NULL},
};

static const av_cfg_key_t policy_spec[] = {
    {"dir", K_STR, offsetof(av_config_t, policy_dir), 1, 0, 0, "../lua/policies", 0, NULL, NULL},
    {"memory_mb", K_INT, offsetof(av_config_t, policy_memory_mb), 1, 4096, 64, NULL, 0, NULL, NULL},
    {"max_instructions", K_INT, offsetof(av_config_t, policy_max_instructions), 1000, 1000000000, 1000000, NULL, 0,
     NULL, NULL},
    {"max_ms", K_INT, offsetof(av_config_t, policy_max_ms), 1, 10000, 50, NULL, 0, NULL, NULL},
    {NULL, 0, 0, 0, 0, 0, NULL, 0, NULL, NULL},
};

static av_config_loaders_t loaders;

void av_config_set_loaders(const av_config_loaders_t *l)
{
    loaders = *l;
}

static void free_policies(void *p)
{
    loaders.policies_free(p);
}

/* Compiles the policies the routes name, once each, in order of first mention. */
static int load_policies(av_cfg_ctx_t *x, av_config_t *c)
{
    const char *names[256];
    size_t n = 0, where_route[256], where_index[256];
    for (size_t i = 0; i < c->nroutes; i++)
        for (size_t k = 0; k < c->routes[i].npolicies; k++) {
            const char *name = c->routes[i].policy_names[k];
            size_t j = 0;
            while (j < n && strcmp(names[j], name) != 0)
                j++;
            if (j == n) {
                if (n == AV_NELEMS(names)) {
                    av_cfg_push_key(x, "routes");
                    return av_cfg_fail(x, "more than %zu different policies", AV_NELEMS(names));
                }
                names[n] = name;
                where_route[n] = i;
                where_index[n++] = k;
            }
        }
    if (n == 0)
        return 0;
    c->policy_dir = av_cfg_relative_to(x, c->dir, c->policy_dir);
    av_policy_limits_t lim = {
        .memory_bytes = c->policy_memory_mb << 20,
        .max_instructions = c->policy_max_instructions,
        .max_us = c->policy_max_ms * 1000,
    };
    char why[1024];
    int bad = -1;
    if (loaders.policies_load == NULL) {
        av_cfg_push_key(x, "routes");
        av_cfg_push_index(x, where_route[0]);
        av_cfg_push_key(x, "policies");
        return av_cfg_fail(x, "this program cannot run policies (no policy loader)");
    }
    c->policies = loaders.policies_load(c->policy_dir, names, n, &lim, why, sizeof(why), &bad);
    if (c->policies == NULL) {
        if (bad >= 0) {
            av_cfg_push_key(x, "routes");
            av_cfg_push_index(x, where_route[bad]);
            av_cfg_push_key(x, "policies");
            av_cfg_push_index(x, where_index[bad]);
        } else {
            av_cfg_push_key(x, "policy");
        }
        return av_cfg_fail(x, "%s", why);
    }
    av_arena_on_free(c->arena, free_policies, c->policies);
    for (size_t i = 0; i < c->nroutes; i++)
        for (size_t k = 0; k < c->routes[i].npolicies; k++)
            c->routes[i].policies[k] = loaders.policies_find(c->policies, c->routes[i].policy_names[k]);
    return 0;
}

/* Each route's policy_params, matched to the policies it lists. */
static int match_params(av_cfg_ctx_t *x, av_config_t *c)
{
    for (size_t i = 0; i < c->nroutes; i++) {
        av_route_t *r = &c->routes[i];
        r->policy_params = av_arena_calloc(c->arena, (r->npolicies ? r->npolicies : 1) * sizeof(char *));
        for (size_t j = 0; j < r->nparams_raw; j++) {
            size_t k = 0;
            while (k < r->npolicies && strcmp(r->policy_names[k], r->params_raw[j].name) != 0)
                k++;
            if (k == r->npolicies) {
                av_cfg_push_key(x, "routes");
                av_cfg_push_index(x, i);
                av_cfg_push_key(x, "policy_params");
                av_cfg_push_key(x, r->params_raw[j].name);
                return av_cfg_fail(x, "the route has no policy \"%s\" in \"policies\"", r->params_raw[j].name);
            }
            r->policy_params[k] = r->params_raw[j].value;
        }
    }
    return 0;
}

static const av_cfg_key_t client_spec[] = {
    {"header_timeout_ms", K_INT, offsetof(av_config_t, header_timeout_ms), 10, 600000, 10000, NULL, 0, NULL, NULL},
    {"idle_timeout_ms", K_INT, offsetof(av_config_t, idle_timeout_ms), 10, 3600000, 60000, NULL, 0, NULL, NULL},
    {"max_header_bytes", K_INT, offsetof(av_config_t, max_header_bytes), 256, 1 << 20, 65536, NULL, 0, NULL, NULL},
    {"max_headers", K_INT, offsetof(av_config_t, max_headers), 1, 1000, 100, NULL, 0, NULL, NULL},
    {"max_body_bytes", K_INT, offsetof(av_config_t, max_body_bytes), 0, 1 << 30, 10 << 20, NULL, 0, NULL, NULL},
    {"drain_timeout_ms", K_INT, offsetof(av_config_t, drain_timeout_ms), 0, 3600000, 30000, NULL, 0, NULL, NULL},
    {NULL, 0, 0, 0, 0, 0, NULL, 0, NULL, NULL},
};

/* "pricing": {"MODEL": {"input": 2.5, "output": 10, ...}}: USD per million tokens */
static int c_pricing(av_cfg_ctx_t *x, const cJSON *v, void *base)
{
    av_config_t *c = base;
    if (!cJSON_IsObject(v))
        return av_cfg_fail(x, "expected {\"MODEL\": {\"input\": USD_PER_MILLION, \"output\": USD_PER_MILLION}, ...}");
    c->nprices = (size_t)cJSON_GetArraySize(v);
    c->prices = av_arena_calloc(c->arena, (c->nprices ? c->nprices : 1) * sizeof(*c->prices));
    size_t i = 0;
    for (const cJSON *m = v->child; m != NULL; m = m->next, i++) {
        av_price_t *p = &c->prices[i];
        av_cfg_push_key(x, m->string);
        if (!cJSON_IsObject(m))
            return av_cfg_fail(x, "expected {\"input\": USD_PER_MILLION, \"output\": USD_PER_MILLION}");
        p->model = av_cfg_dup_str(x, m->string);
        p->input = p->output = p->cached_input = p->cache_write = p->reasoning = -1;
        for (const cJSON *f = m->child; f != NULL; f = f->next) {
            av_cfg_push_key(x, f->string);
            int64_t *slot = strcmp(f->string, "input") == 0          ? &p->input
                            : strcmp(f->string, "output") == 0       ? &p->output
                            : strcmp(f->string, "cached_input") == 0 ? &p->cached_input
                            : strcmp(f->string, "cache_write") == 0  ? &p->cache_write
                            : strcmp(f->string, "reasoning") == 0    ? &p->reasoning
                                                                     : NULL;
            if (slot == NULL)
                return av_cfg_fail(x, "unknown key (known keys: input, output, cached_input, cache_write, reasoning)");
            if (!cJSON_IsNumber(f) || f->valuedouble < 0 || f->valuedouble > 1000000)
                return av_cfg_fail(x, "expected USD per million tokens, a number from 0 to 1000000");
            *slot = (int64_t)llround(f->valuedouble * 1e6); /* picodollars per token */
            av_cfg_pop(x);
        }
        if (p->input < 0 || p->output < 0)
            return av_cfg_fail(x, "a price needs \"input\" and \"output\"");
        if (p->cached_input < 0)
            p->cached_input = p->input;
        if (p->cache_write < 0)
            p->cache_write = p->input;
        if (p->reasoning < 0)
            p->reasoning = p->output;
        av_cfg_pop(x);
    }
    return 0;
}

const av_price_t *av_config_price(const av_config_t *c, const char *model)
{
    if (model == NULL)
        return NULL;
    for (size_t i = 0; i < c->nprices; i++)
        if (strcmp(c->prices[i].model, model) == 0)
            return &c->prices[i];
    return NULL;
}

static void free_geo(void *p)
{
    loaders.geo_close(p);
}

static int c_geoip(av_cfg_ctx_t *x, const cJSON *v, void *base)
{
    av_config_t *c = base;
    if (c->geo != NULL)
        return 0; /* loaded first, before routes refer to it */
    if (!cJSON_IsObject(v))
        return av_cfg_fail(x, "expected {\"databases\": [\"GeoLite2-Country.mmdb\"], \"trusted_proxies\": [\"10.0.0.0/8\"]}");
    if (loaders.geo_open == NULL)
        return av_cfg_fail(x, "this program cannot read geo databases (no geo loader)");
    const char *dbs[8], *proxies[256];
    size_t ndbs = 0, nproxies = 0;
    for (const cJSON *m = v->child; m != NULL; m = m->next) {
        av_cfg_push_key(x, m->string);
        int is_db = strcmp(m->string, "databases") == 0;
        if (!is_db && strcmp(m->string, "trusted_proxies") != 0)
            return av_cfg_fail(x, "unknown key (known keys: databases, trusted_proxies)");
        if (!cJSON_IsArray(m) || cJSON_GetArraySize(m) > (is_db ? 4 : 256))
            return av_cfg_fail(x, "expected an array of at most %d strings", is_db ? 4 : 256);
        size_t i = 0;
        for (const cJSON *e = m->child; e != NULL; e = e->next, i++) {
            av_cfg_push_index(x, i);
            if (!cJSON_IsString(e))
                return av_cfg_fail(x, "expected a string, got %s", av_cfg_type_name(e));
            if (is_db) {
                dbs[ndbs++] = av_cfg_relative_to(x, x->cfg->dir, e->valuestring);
            } else {
                if (!loaders.geo_cidr_valid(e->valuestring))
                    return av_cfg_fail(x, "\"%s\" is not an address or CIDR block", e->valuestring);
                proxies[nproxies++] = e->valuestring;
            }
            av_cfg_pop(x);
        }
        av_cfg_pop(x);
    }
    char why[512];
    c->geo = loaders.geo_open(dbs, ndbs, proxies, nproxies, why, sizeof(why));
    if (c->geo == NULL) {
        av_cfg_push_key(x, "databases");
        return av_cfg_fail(x, "%s", why);
    }
    av_arena_on_free(c->arena, free_geo, c->geo);
    return 0;
}

static const av_cfg_key_t top_spec[] = {
    {"workers", K_INT, offsetof(av_config_t, workers), 0, 256, 0, NULL, K_RESTART, NULL, NULL},
    {"listen", K_CUSTOM, 0, 0, 0, 0, NULL, K_REQUIRED | K_RESTART, NULL, c_listen},
    {"admin", K_OBJ, 0, 0, 0, 0, NULL, K_RESTART, admin_spec, NULL},
    {"log", K_OBJ, 0, 0, 0, 0, NULL, 0, log_spec, NULL},
    {"client", K_OBJ, 0, 0, 0, 0, NULL, 0, client_spec, NULL},
    {"backends", K_CUSTOM, 0, 0, 0, 0, NULL, K_REQUIRED, NULL, c_backends},
    {"routes", K_CUSTOM, 0, 0, 0, 0, NULL, K_REQUIRED, NULL, av_cfg_routes},
    {"variant_header", K_STR, offsetof(av_config_t, variant_header), 0, 0, 0, "x-aviary-variant", 0, NULL, NULL},
    {"geoip", K_CUSTOM, 0, 0, 0, 0, NULL, 0, NULL, c_geoip},
    {"pricing", K_CUSTOM, 0, 0, 0, 0, NULL, 0, NULL, c_pricing},
    {"policy", K_OBJ, 0, 0, 0, 0, NULL, 0, policy_spec, NULL},
    {"rollout_state_file", K_STR, offsetof(av_config_t, rollout_state_file), 1, 0, 0, NULL, 0, NULL, NULL},
    {"rollout_webhook", K_STR, offsetof(av_config_t, rollout_webhook), 1, 0, 0, NULL, 0, NULL, NULL},
    {"feedback_path", K_STR, offsetof(av_config_t, feedback_path), 0, 0, 0, "/v1/feedback", 0, NULL, NULL},
    {"fleet", K_OBJ, 0, 0, 0, 0, NULL, K_RESTART, fleet_spec, NULL},
    {NULL, 0, 0, 0, 0, 0, NULL, 0, NULL, NULL},
};

const char *av_cfg_relative_to(av_cfg_ctx_t *x, const char *dir, const char *p)
{
    if (p == NULL || strcmp(p, "-") == 0 || p[0] == '/')
        return p;
    size_t n = strlen(dir) + strlen(p) + 2;
    char *out = av_arena_alloc(x->cfg->arena, n);
    snprintf(out, n, "%s/%s", dir, p);
    return out;
}

av_config_t *av_config_parse(const char *name, const char *text, size_t len, uint64_t generation,
                             char *err, size_t errlen)
{
    char *buf = av_malloc(len + 1);
    memcpy(buf, text, len);
    buf[len] = '\0';
    av_config_t *c = av_calloc(1, sizeof(*c));
    c->_refs = 1;
    c->generation = generation;
    c->arena = av_arena_new(8192);
    av_cfg_ctx_t x = {.name = name, .text = buf, .len = len, .err = err, .errlen = errlen, .cfg = c};
    size_t off = 0;
    cJSON *root = NULL;
    int rc;
    if (av_jsonc_strip(buf, len, &off) != 0) {
        unsigned line, col;
        av_jsonc_linecol(buf, off, &line, &col);
        snprintf(err, errlen, "%s:%u:%u: unterminated /* comment", name, line, col);
        goto fail;
    }
    const char *end = NULL;
    root = cJSON_ParseWithLengthOpts(buf, len, &end, 0);
    if (root == NULL) {
        const char *at = cJSON_GetErrorPtr();
        off = (at != NULL && at >= buf && at <= buf + len) ? (size_t)(at - buf) : 0;
        unsigned line, col;
        av_jsonc_linecol(buf, off, &line, &col);
        snprintf(err, errlen, "%s:%u:%u: invalid JSON near here", name, line, col);
        goto fail;
    }
    if (!cJSON_IsObject(root)) {
        av_cfg_fail(&x, "the config must be a JSON object");
        goto fail;
    }
    for (const char *p = end; p != NULL && p < buf + len; p++) /* comments are spaces by now */
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            unsigned line, col;
            av_jsonc_linecol(buf, (size_t)(p - buf), &line, &col);
            snprintf(err, errlen, "%s:%u:%u: text after the config's object (a second object, a stray brace?)",
                     name, line, col);
            goto fail;
        }
    const char *slash = strrchr(name, '/');
    c->path = av_cfg_dup_str(&x, name);
    c->dir = slash ? av_arena_strndup(c->arena, name, (size_t)(slash - name)) : ".";
    /* geoip and backends before routes, whatever order the file has them in */
    cJSON *geoip = cJSON_GetObjectItemCaseSensitive(root, "geoip");
    if (geoip != NULL) {
        av_cfg_push_key(&x, "geoip");
        rc = c_geoip(&x, geoip, c);
        if (rc != 0)
            goto fail;
        av_cfg_pop(&x);
    }
    cJSON *backends = cJSON_GetObjectItemCaseSensitive(root, "backends");
    if (backends != NULL) {
        av_cfg_push_key(&x, "backends");
        rc = c_backends(&x, backends, c);
        if (rc != 0)
            goto fail;
        av_cfg_pop(&x);
    }
    rc = av_cfg_load_obj(&x, root, top_spec, c);
    if (rc != 0)
        goto fail;
    if (c_admin_addr(&x, c) != 0 || c_fleet(&x, c) != 0)
        goto fail;
    if (c->admin_token_env != NULL) {
        const char *tok = getenv(c->admin_token_env);
        if (tok == NULL || tok[0] == '\0') {
            av_cfg_push_key(&x, "admin");
            av_cfg_push_key(&x, "token_env");
            av_cfg_fail(&x, "environment variable %s is not set", c->admin_token_env);
            goto fail;
        }
        c->admin_token = av_cfg_dup_str(&x, tok);
    }
    if (av_log_level_parse(c->log_level) < 0) {
        av_cfg_push_key(&x, "log");
        av_cfg_push_key(&x, "level");
        av_cfg_fail(&x, "\"%s\" is not one of error, warn, info, debug", c->log_level);
        goto fail;
    }
    for (const char *h = c->variant_header; *h; h++)
        if (!((*h >= 'a' && *h <= 'z') || (*h >= 'A' && *h <= 'Z') || (*h >= '0' && *h <= '9') || *h == '-' ||
              *h == '_')) {
            av_cfg_push_key(&x, "variant_header");
            av_cfg_fail(&x, "\"%s\" is not a header name (letters, digits, - and _; \"\" for none)", c->variant_header);
            goto fail;
        }
    c->kpi_log = av_cfg_relative_to(&x, c->dir, c->kpi_log);
    c->audit_log = av_cfg_relative_to(&x, c->dir, c->audit_log);
    c->rollout_state_file = av_cfg_relative_to(&x, c->dir, c->rollout_state_file);
    if (c->rollout_webhook != NULL &&
        (strncmp(c->rollout_webhook, "http://", 7) != 0 || c->rollout_webhook[7] == '\0')) {
        av_cfg_push_key(&x, "rollout_webhook");
        av_cfg_fail(&x, "\"%s\" is not an http:// URL (the webhook is sent in cleartext; put a local relay in front "
                 "of an https endpoint)", c->rollout_webhook);
        goto fail;
    }
    if (match_params(&x, c) != 0 || load_policies(&x, c) != 0)
        goto fail;
    cJSON_Delete(root);
    free(buf);
    return c;
fail:
    cJSON_Delete(root);
    free(buf);
    av_arena_free(c->arena);
    free(c);
    return NULL;
}

av_config_t *av_config_load(const char *path, uint64_t generation, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > (off_t)AV_CONFIG_MAX_BYTES) {
        snprintf(err, errlen, "%s: not a regular file of at most %u bytes", path, AV_CONFIG_MAX_BYTES);
        close(fd);
        return NULL;
    }
    size_t len = (size_t)st.st_size, got = 0;
    char *text = av_malloc(len + 1);
    while (got < len) {
        ssize_t n = read(fd, text + got, len - got);
        if (n <= 0) {
            snprintf(err, errlen, "%s: read failed: %s", path, n < 0 ? strerror(errno) : "short file");
            close(fd);
            free(text);
            return NULL;
        }
        got += (size_t)n;
    }
    close(fd);
    av_config_t *c = av_config_parse(path, text, len, generation, err, errlen);
    free(text);
    return c;
}

av_config_t *av_config_ref(av_config_t *c)
{
    __atomic_add_fetch(&c->_refs, 1, __ATOMIC_RELAXED);
    return c;
}

void av_config_unref(av_config_t *c)
{
    if (c == NULL || __atomic_sub_fetch(&c->_refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    av_arena_free(c->arena);
    free(c);
}

const av_backend_t *av_config_backend(const av_config_t *c, const char *name)
{
    for (size_t i = 0; i < c->nbackends; i++)
        if (strcmp(c->backends[i].name, name) == 0)
            return &c->backends[i];
    return NULL;
}

static int streq_null(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

void av_config_restart_keys(const av_config_t *old, const av_config_t *cur,
                            void (*warn)(const char *key, void *arg), void *arg)
{
    int same = old->nlisten == cur->nlisten;
    for (size_t i = 0; same && i < cur->nlisten; i++)
        same = strcmp(old->listen[i].address, cur->listen[i].address) == 0;
    if (!same)
        warn("listen", arg);
    if (old->workers != cur->workers)
        warn("workers", arg);
    if (!streq_null(old->admin_address, cur->admin_address))
        warn("admin.address", arg);
    if (!streq_null(old->kpi_log, cur->kpi_log))
        warn("log.kpi", arg);
    if (!streq_null(old->audit_log, cur->audit_log))
        warn("log.audit", arg);
    if (!streq_null(old->fleet.redis, cur->fleet.redis) || !streq_null(old->fleet.name, cur->fleet.name) ||
        !streq_null(old->fleet.replica_id, cur->fleet.replica_id) ||
        !streq_null(old->fleet.password, cur->fleet.password))
        warn("fleet", arg);
}
