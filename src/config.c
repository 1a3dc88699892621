/* config.c: JSON config -> immutable snapshot. Every key has its type, bounds,
 * default and reload flag in one table per object; errors name file:line:col and key. */
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
#include <sys/stat.h>
#include <unistd.h>

#include "av.h"
#include "jsonc.h"
#include "geo.h"
#include "judge.h"
#include "log.h"
#include "policy.h"
#include "split.h"
#include "tls.h"

#define AV_CONFIG_MAX_BYTES (16u << 20)
#define AV_CONFIG_MAX_DEPTH 16

typedef enum { K_INT, K_BOOL, K_STR, K_OBJ, K_CUSTOM } ktype_t;

enum { K_REQUIRED = 1, K_RESTART = 2 };

typedef struct ctx_s ctx_t;
typedef int (*custom_cb)(ctx_t *x, const cJSON *v, void *base);

typedef struct kspec_s {
    const char *key;
    ktype_t type;
    size_t off;
    int64_t min, max, idef;
    const char *sdef;
    unsigned flags;
    const struct kspec_s *sub; /* K_OBJ: fields of the nested object, same base */
    custom_cb custom;          /* K_CUSTOM */
} kspec_t;

struct ctx_s {
    const char *name;
    const char *text;
    size_t len;
    av_jpath_seg_t path[AV_CONFIG_MAX_DEPTH];
    size_t depth;
    char *err;
    size_t errlen;
    av_config_t *cfg;
};

static void push_key(ctx_t *x, const char *key)
{
    if (x->depth < AV_CONFIG_MAX_DEPTH)
        x->path[x->depth] = (av_jpath_seg_t){key, 0};
    x->depth++;
}

static void push_index(ctx_t *x, size_t i)
{
    if (x->depth < AV_CONFIG_MAX_DEPTH)
        x->path[x->depth] = (av_jpath_seg_t){NULL, i};
    x->depth++;
}

static void pop(ctx_t *x)
{
    x->depth--;
}

static int fail(ctx_t *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(ctx_t *x, const char *fmt, ...)
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

static const char *dup_str(ctx_t *x, const char *s)
{
    return av_arena_strndup(x->cfg->arena, s, strlen(s));
}

static const char *type_name(const cJSON *v)
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

static int load_obj(ctx_t *x, const cJSON *obj, const kspec_t *spec, void *base);

static int load_field(ctx_t *x, const cJSON *v, const kspec_t *s, void *base)
{
    char *field = (char *)base + s->off;
    switch (s->type) {
    case K_INT: {
        if (!cJSON_IsNumber(v))
            return fail(x, "expected an integer, got %s", type_name(v));
        double d = v->valuedouble;
        if (d != floor(d) || d < (double)s->min || d > (double)s->max)
            return fail(x, "must be an integer from %lld to %lld", (long long)s->min,
                        (long long)s->max);
        *(int64_t *)(void *)field = (int64_t)d;
        return 0;
    }
    case K_BOOL:
        if (!cJSON_IsBool(v))
            return fail(x, "expected true or false, got %s", type_name(v));
        *(int *)(void *)field = cJSON_IsTrue(v);
        return 0;
    case K_STR:
        if (!cJSON_IsString(v))
            return fail(x, "expected a string, got %s", type_name(v));
        if (s->min > 0 && strlen(v->valuestring) < (size_t)s->min)
            return fail(x, "must not be empty");
        *(const char **)(void *)field = dup_str(x, v->valuestring);
        return 0;
    case K_OBJ:
        if (!cJSON_IsObject(v))
            return fail(x, "expected an object, got %s", type_name(v));
        return load_obj(x, v, s->sub, base);
    case K_CUSTOM:
        return s->custom(x, v, base);
    }
    return AV_EINVAL;
}

static void set_default(ctx_t *x, const kspec_t *s, void *base)
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
        *(const char **)(void *)field = s->sdef ? dup_str(x, s->sdef) : NULL;
        break;
    case K_OBJ:
        for (const kspec_t *t = s->sub; t->key != NULL; t++)
            set_default(x, t, base);
        break;
    case K_CUSTOM:
        break;
    }
}

static int load_obj(ctx_t *x, const cJSON *obj, const kspec_t *spec, void *base)
{
    for (const cJSON *m = obj->child; m != NULL; m = m->next) {
        push_key(x, m->string);
        size_t seen = 0;
        for (const cJSON *p = obj->child; p != m; p = p->next)
            seen += strcmp(p->string, m->string) == 0;
        if (seen > 0) {
            x->path[x->depth - 1].index = seen; /* point at this occurrence */
            return fail(x, "duplicate key");
        }
        const kspec_t *s = spec;
        while (s->key != NULL && strcmp(s->key, m->string) != 0)
            s++;
        if (s->key == NULL) {
            char known[512] = "";
            size_t k = 0;
            for (const kspec_t *t = spec; t->key != NULL && k < sizeof(known); t++) {
                int n = snprintf(known + k, sizeof(known) - k, "%s%s", t == spec ? "" : ", ", t->key);
                if (n < 0)
                    break;
                k += (size_t)n;
            }
            return fail(x, "unknown key (known keys: %s)", known);
        }
        int rc = load_field(x, m, s, base);
        if (rc != 0)
            return rc;
        pop(x);
    }
    for (const kspec_t *s = spec; s->key != NULL; s++) {
        if (cJSON_GetObjectItemCaseSensitive(obj, s->key) != NULL)
            continue;
        if (s->flags & K_REQUIRED) {
            return fail(x, "%s: missing, and it is required", s->key);
        }
        set_default(x, s, base);
    }
    return 0;
}

/* ---- custom loaders ---- */

static int load_kv_object(ctx_t *x, const cJSON *v, av_kv_t **out, size_t *n)
{
    if (!cJSON_IsObject(v))
        return fail(x, "expected an object of strings, got %s", type_name(v));
    size_t cnt = (size_t)cJSON_GetArraySize(v), i = 0;
    av_kv_t *kv = av_arena_calloc(x->cfg->arena, cnt * sizeof(*kv));
    for (const cJSON *m = v->child; m != NULL; m = m->next, i++) {
        push_key(x, m->string);
        if (!cJSON_IsString(m))
            return fail(x, "expected a string, got %s", type_name(m));
        for (const char *p = m->string; *p; p++)
            if (*p <= ' ' || *p == ':' || *p >= 127)
                return fail(x, "not a valid header name");
        for (const char *p = m->valuestring; *p; p++)
            if (*p == '\r' || *p == '\n')
                return fail(x, "header values cannot hold line breaks");
        kv[i].name = dup_str(x, m->string);
        kv[i].value = dup_str(x, m->valuestring);
        pop(x);
    }
    *out = kv;
    *n = cnt;
    return 0;
}

static const char *relative_to(ctx_t *x, const char *dir, const char *p);

static void free_tls_ctx(void *p)
{
    av_tls_ctx_free(p);
}

/* Loads the listener's certificate into a context owned by this generation. */
static int load_listen_tls(ctx_t *x, av_listen_t *l)
{
    if (l->tls_cert == NULL && l->tls_key == NULL)
        return 0;
    push_key(x, "tls");
    if (l->tls_cert == NULL || l->tls_key == NULL)
        return fail(x, "needs both \"cert\" and \"key\" (PEM files)");
    l->tls_cert = relative_to(x, x->cfg->dir, l->tls_cert);
    l->tls_key = relative_to(x, x->cfg->dir, l->tls_key);
    char why[512];
    l->tls_ctx = av_tls_server_ctx(l->tls_cert, l->tls_key, l->http2, why, sizeof(why));
    if (l->tls_ctx == NULL) {
        push_key(x, strstr(why, "key \"") == why ? "key" : "cert");
        return fail(x, "%s", why);
    }
    av_arena_on_free(x->cfg->arena, free_tls_ctx, l->tls_ctx);
    pop(x);
    return 0;
}

static int c_listen(ctx_t *x, const cJSON *v, void *base)
{
    av_config_t *c = base;
    static const kspec_t tls_spec[] = {
        {"cert", K_STR, offsetof(av_listen_t, tls_cert), 1, 0, 0, NULL, 0, NULL, NULL},
        {"key", K_STR, offsetof(av_listen_t, tls_key), 1, 0, 0, NULL, 0, NULL, NULL},
        {NULL, 0, 0, 0, 0, 0, NULL, 0, NULL, NULL},
    };
    static const kspec_t spec[] = {
        {"address", K_STR, offsetof(av_listen_t, address), 1, 0, 0, NULL, K_REQUIRED, NULL, NULL},
        {"tls", K_OBJ, 0, 0, 0, 0, NULL, 0, tls_spec, NULL},
        {"http2", K_BOOL, offsetof(av_listen_t, http2), 0, 1, 1, NULL, 0, NULL, NULL},
        {NULL, 0, 0, 0, 0, 0, NULL, 0, NULL, NULL},
    };
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) == 0)
        return fail(x, "expected a non-empty array of listeners");
    c->nlisten = (size_t)cJSON_GetArraySize(v);
    c->listen = av_arena_calloc(c->arena, c->nlisten * sizeof(*c->listen));
    size_t i = 0;
    for (const cJSON *e = v->child; e != NULL; e = e->next, i++) {
        push_index(x, i);
        if (!cJSON_IsObject(e))
            return fail(x, "expected an object like {\"address\": \"127.0.0.1:8080\"}");
        int rc = load_obj(x, e, spec, &c->listen[i]);
        if (rc != 0)
            return rc;
        push_key(x, "address");
        if (av_parse_hostport(c->listen[i].address, 0, 1, &c->listen[i].addr,
                              &c->listen[i].addrlen) != 0)
            return fail(x, "\"%s\" is not a numeric host:port (e.g. 127.0.0.1:8080, [::]:8080, *:8080)",
                        c->listen[i].address);
        const char *colon = strrchr(c->listen[i].address, ':');
        int ephemeral = colon != NULL && strcmp(colon, ":0") == 0; /* each bind picks its own port */
        for (size_t j = 0; j < i && !ephemeral; j++)
            if (strcmp(c->listen[j].address, c->listen[i].address) == 0)
                return fail(x, "\"%s\" is listed twice", c->listen[i].address);
        pop(x);
        rc = load_listen_tls(x, &c->listen[i]);
        if (rc != 0)
            return rc;
        pop(x);
    }
    return 0;
}

static int c_headers(ctx_t *x, const cJSON *v, void *base)
{
    av_backend_t *b = base;
    return load_kv_object(x, v, &b->headers, &b->nheaders);
}

static int c_match_headers(ctx_t *x, const cJSON *v, void *base)
{
    av_route_t *r = base;
    return load_kv_object(x, v, &r->match_headers, &r->nmatch_headers);
}

static const kspec_t backend_spec[] = {
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
static int load_backend_tls(ctx_t *x, const cJSON *e, av_backend_t *b)
{
    if (b->protocol == AV_PROTO_H2 && !b->tls) {
        push_key(x, "protocol");
        return fail(x, "\"h2\" is HTTP/2 over TLS and needs an https:// url; use \"h2c\" for cleartext HTTP/2");
    }
    if (b->protocol == AV_PROTO_H2C && b->tls) {
        push_key(x, "protocol");
        return fail(x, "\"h2c\" is cleartext HTTP/2 and needs an http:// url; use \"h2\" over https://");
    }
    const cJSON *verify = cJSON_GetObjectItemCaseSensitive(e, "tls_verify");
    if (!b->tls) {
        if (verify != NULL || b->tls_ca_file != NULL) {
            push_key(x, verify != NULL ? "tls_verify" : "tls_ca_file");
            return fail(x, "applies to https:// backends only");
        }
        return 0;
    }
    if (b->tls_ca_file != NULL) {
        b->tls_ca_file = relative_to(x, x->cfg->dir, b->tls_ca_file);
        if (access(b->tls_ca_file, R_OK) != 0) {
            push_key(x, "tls_ca_file");
            return fail(x, "cannot read \"%s\": %s", b->tls_ca_file, strerror(errno));
        }
    }
    char why[512];
    b->tls_ctx = av_tls_client_ctx(b->tls_ca_file, b->tls_verify, b->protocol == AV_PROTO_H2 ? "h2" : "http/1.1",
                                   why, sizeof(why));
    if (b->tls_ctx == NULL) {
        push_key(x, b->tls_ca_file != NULL ? "tls_ca_file" : "url");
        return fail(x, "%s", why);
    }
    av_arena_on_free(x->cfg->arena, free_tls_ctx, b->tls_ctx);
    if (!b->tls_verify)
        AV_WARN("backend %s: \"tls_verify\": false: its certificate and name are not checked; anyone on the "
                "path can read and change its traffic", b->name);
    return 0;
}

static int parse_url(ctx_t *x, av_backend_t *b)
{
    const char *u = b->url, *hp;
    if (strncmp(u, "https://", 8) == 0) {
        b->tls = 1;
        hp = u + 8;
    } else if (strncmp(u, "http://", 7) == 0) {
        hp = u + 7;
    } else {
        return fail(x, "\"%s\" must start with http:// or https://", u);
    }
    const char *slash = strchr(hp, '/');
    size_t hplen = slash ? (size_t)(slash - hp) : strlen(hp);
    if (hplen == 0 || hplen > 255)
        return fail(x, "\"%s\" has no host", u);
    char hostport[300];
    memcpy(hostport, hp, hplen);
    hostport[hplen] = '\0';
    int has_port = strrchr(hostport, ':') != NULL && strrchr(hostport, ']') < strrchr(hostport, ':');
    const char *host_end = has_port ? strrchr(hp, ':') : hp + hplen;
    if (hp[0] == '[') /* [v6]: the name to verify has no brackets */
        b->tls_name = av_arena_strndup(x->cfg->arena, hp + 1, (size_t)(host_end - hp) - 2);
    else
        b->tls_name = av_arena_strndup(x->cfg->arena, hp, (size_t)(host_end - hp));
    if (!has_port)
        strcat(hostport, b->tls ? ":443" : ":80");
    if (av_parse_hostport(hostport, 1, 0, &b->addr, &b->addrlen) != 0)
        return fail(x, "cannot resolve \"%s\"", hostport);
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

static int c_backends(ctx_t *x, const cJSON *v, void *base)
{
    av_config_t *c = base;
    if (c->backends != NULL)
        return 0; /* loaded first, before routes refer to them */
    if (!cJSON_IsObject(v) || v->child == NULL)
        return fail(x, "expected an object of named backends, with at least one");
    c->nbackends = (size_t)cJSON_GetArraySize(v);
    c->backends = av_arena_calloc(c->arena, c->nbackends * sizeof(*c->backends));
    size_t i = 0;
    for (const cJSON *e = v->child; e != NULL; e = e->next, i++) {
        av_backend_t *b = &c->backends[i];
        push_key(x, e->string);
        if (!cJSON_IsObject(e))
            return fail(x, "expected an object like {\"url\": \"http://127.0.0.1:8000\"}");
        int rc = load_obj(x, e, backend_spec, b);
        if (rc != 0)
            return rc;
        const char *proto = b->protocol_name;
        push_key(x, "protocol");
        if (strcmp(proto, "http1") == 0)
            b->protocol = AV_PROTO_HTTP1;
        else if (strcmp(proto, "h2") == 0)
            b->protocol = AV_PROTO_H2;
        else if (strcmp(proto, "h2c") == 0)
            b->protocol = AV_PROTO_H2C;
        else
            return fail(x, "\"%s\" is not a protocol (use \"http1\", \"h2\" for HTTP/2 over TLS or \"h2c\" "
                           "for cleartext HTTP/2)", proto);
        pop(x);
        b->name = dup_str(x, e->string);
        b->index = (int)i;
        push_key(x, "url");
        rc = parse_url(x, b);
        if (rc != 0)
            return rc;
        pop(x);
        rc = load_backend_tls(x, e, b);
        if (rc != 0)
            return rc;
        if (b->api_key_env != NULL) {
            push_key(x, "api_key_env");
            const char *key = getenv(b->api_key_env);
            if (key == NULL || key[0] == '\0')
                return fail(x, "environment variable %s is not set", b->api_key_env);
            for (const char *p = key; *p; p++)
                if (*p == '\r' || *p == '\n')
                    return fail(x, "environment variable %s holds a line break", b->api_key_env);
            b->api_key = dup_str(x, key);
            pop(x);
        }
        pop(x);
    }
    return 0;
}

static const kspec_t match_spec[] = {
    {"path_prefix", K_STR, offsetof(av_route_t, path_prefix), 1, 0, 0, NULL, 0, NULL, NULL},
    {"path", K_STR, offsetof(av_route_t, path), 1, 0, 0, NULL, 0, NULL, NULL},
    {"host", K_STR, offsetof(av_route_t, host), 1, 0, 0, NULL, 0, NULL, NULL},
    {"headers", K_CUSTOM, 0, 0, 0, 0, NULL, 0, NULL, c_match_headers},
    {NULL, 0, 0, 0, 0, 0, NULL, 0, NULL, NULL},
};

static int c_prompt_vars(ctx_t *x, const cJSON *v, void *base)
{
    av_variant_t *var = base;
    if (!cJSON_IsObject(v))
        return fail(x, "expected an object of strings, like {\"product\": \"Aviary\"}");
    var->nprompt_vars = (size_t)cJSON_GetArraySize(v);
    if (var->nprompt_vars > 64)
        return fail(x, "at most 64 prompt variables");
    var->prompt_vars = av_arena_calloc(x->cfg->arena, var->nprompt_vars * sizeof(*var->prompt_vars));
    size_t i = 0;
    for (const cJSON *m = v->child; m != NULL; m = m->next, i++) {
        push_key(x, m->string);
        if (!cJSON_IsString(m))
            return fail(x, "expected a string, got %s", type_name(m));
        var->prompt_vars[i].name = dup_str(x, m->string);
        var->prompt_vars[i].value = dup_str(x, m->valuestring);
        pop(x);
    }
    return 0;
}

static int c_params(ctx_t *x, const cJSON *v, void *base)
{
    av_variant_t *var = base;
    if (!cJSON_IsObject(v))
        return fail(x, "expected an object of request fields, like {\"temperature\": 0.2}");
    var->nparams = (size_t)cJSON_GetArraySize(v);
    var->params = av_arena_calloc(x->cfg->arena, var->nparams * sizeof(*var->params));
    size_t i = 0;
    for (const cJSON *m = v->child; m != NULL; m = m->next, i++) {
        push_key(x, m->string);
        if (strcmp(m->string, "model") == 0)
            return fail(x, "set the model with the variant's \"model\"");
        char *json = cJSON_PrintUnformatted(m);
        if (json == NULL)
            av_oom();
        var->params[i].name = dup_str(x, m->string);
        var->params[i].json = dup_str(x, json);
        var->params[i].json_len = strlen(json);
        free(json);
        pop(x);
    }
    return 0;
}

static const kspec_t variant_spec[] = {
    {"name", K_STR, offsetof(av_variant_t, name), 1, 0, 0, NULL, K_REQUIRED, NULL, NULL},
    {"backend", K_STR, offsetof(av_variant_t, backend_name), 1, 0, 0, NULL, K_REQUIRED, NULL, NULL},
    {"model", K_STR, offsetof(av_variant_t, model), 1, 0, 0, NULL, 0, NULL, NULL},
    {"weight", K_INT, offsetof(av_variant_t, weight), 0, 1000000, 1, NULL, 0, NULL, NULL},
    {"system_prompt", K_STR, offsetof(av_variant_t, system_prompt_file), 1, 0, 0, NULL, 0, NULL, NULL},
    {"system_prompt_mode", K_STR, offsetof(av_variant_t, system_prompt_mode), 1, 0, 0, "prepend", 0, NULL, NULL},
    {"prompt_vars", K_CUSTOM, 0, 0, 0, 0, NULL, 0, NULL, c_prompt_vars},
    {"params", K_CUSTOM, 0, 0, 0, 0, NULL, 0, NULL, c_params},
    {NULL, 0, 0, 0, 0, 0, NULL, 0, NULL, NULL},
};

/* The variant's prompt file, read and hashed with this generation. */
static int load_prompt(ctx_t *x, av_variant_t *var)
{
    if (strcmp(var->system_prompt_mode, "prepend") == 0) {
        var->prompt_replace = 0;
    } else if (strcmp(var->system_prompt_mode, "replace") == 0) {
        var->prompt_replace = 1;
    } else {
        push_key(x, "system_prompt_mode");
        return fail(x, "\"%s\" is not a mode (use \"prepend\" or \"replace\")", var->system_prompt_mode);
    }
    if (var->system_prompt_file == NULL) {
        if (var->nprompt_vars > 0) {
            push_key(x, "prompt_vars");
            return fail(x, "there is no \"system_prompt\" to fill");
        }
        return 0;
    }
    const char *names[64], *values[64];
    size_t n = var->nprompt_vars < 64 ? var->nprompt_vars : 64;
    for (size_t i = 0; i < n; i++) {
        names[i] = var->prompt_vars[i].name;
        values[i] = var->prompt_vars[i].value;
    }
    char why[512];
    const char *path = relative_to(x, x->cfg->dir, var->system_prompt_file);
    if (av_prompt_load(x->cfg->arena, path, names, values, n, &var->prompt, why, sizeof(why)) != 0) {
        push_key(x, "system_prompt");
        return fail(x, "%s", why);
    }
    return 0;
}

static int c_variants(ctx_t *x, const cJSON *v, void *base)
{
    av_route_t *r = base;
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) == 0)
        return fail(x, "expected a non-empty array of variants");
    r->nvariants = (size_t)cJSON_GetArraySize(v);
    r->variants = av_arena_calloc(x->cfg->arena, r->nvariants * sizeof(*r->variants));
    size_t i = 0;
    for (const cJSON *e = v->child; e != NULL; e = e->next, i++) {
        av_variant_t *var = &r->variants[i];
        push_index(x, i);
        if (!cJSON_IsObject(e))
            return fail(x, "expected an object like {\"name\": \"stable\", \"backend\": \"...\"}");
        int rc = load_obj(x, e, variant_spec, var);
        if (rc != 0)
            return rc;
        for (size_t j = 0; j < i; j++)
            if (strcmp(r->variants[j].name, var->name) == 0) {
                push_key(x, "name");
                return fail(x, "variant \"%s\" is named twice in this route", var->name);
            }
        var->backend = av_config_backend(x->cfg, var->backend_name);
        if (var->backend == NULL) {
            push_key(x, "backend");
            return fail(x, "no backend named \"%s\" in \"backends\"", var->backend_name);
        }
        rc = load_prompt(x, var);
        if (rc != 0)
            return rc;
        pop(x);
    }
    return 0;
}

/* "header:NAME", "cookie:NAME", "body:a.b.c", "api_key", "client_ip" */
static int parse_sticky(ctx_t *x, const char *spec, av_sticky_src_t *src)
{
    src->spec = dup_str(x, spec);
    const char *colon = strchr(spec, ':');
    const char *arg = colon ? colon + 1 : "";
    size_t kind_len = colon ? (size_t)(colon - spec) : strlen(spec);
    if (kind_len == 6 && strncmp(spec, "header", 6) == 0 && *arg) {
        src->kind = AV_STICKY_HEADER;
        src->name = dup_str(x, arg);
    } else if (kind_len == 6 && strncmp(spec, "cookie", 6) == 0 && *arg) {
        src->kind = AV_STICKY_COOKIE;
        src->name = dup_str(x, arg);
    } else if (kind_len == 4 && strncmp(spec, "body", 4) == 0 && *arg) {
        src->kind = AV_STICKY_BODY;
        const char *p = arg;
        while (*p) {
            size_t n = strcspn(p, ".");
            if (n == 0 || src->npath == AV_STICKY_MAX_DEPTH)
                return fail(x, "\"%s\": a body field is names joined by dots, at most %d deep (e.g. "
                               "\"body:metadata.user_id\")", spec, AV_STICKY_MAX_DEPTH);
            src->path[src->npath++] = av_arena_strndup(x->cfg->arena, p, n);
            p += n;
            if (*p == '.')
                p++;
        }
    } else if (strcmp(spec, "api_key") == 0) {
        src->kind = AV_STICKY_API_KEY;
    } else if (strcmp(spec, "client_ip") == 0) {
        src->kind = AV_STICKY_CLIENT_IP;
    } else {
        return fail(x, "\"%s\" is not a sticky key source (use \"header:NAME\", \"cookie:NAME\", "
                       "\"body:FIELD[.FIELD]\", \"api_key\" or \"client_ip\")", spec);
    }
    return 0;
}

static int c_sticky_keys(ctx_t *x, const cJSON *v, void *base)
{
    av_route_t *r = base;
    if (cJSON_IsString(v)) {
        r->nsticky = 1;
        r->sticky = av_arena_calloc(x->cfg->arena, sizeof(*r->sticky));
        int rc = parse_sticky(x, v->valuestring, &r->sticky[0]);
        r->nsticky_body = r->sticky[0].kind == AV_STICKY_BODY;
        return rc;
    }
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) == 0 || cJSON_GetArraySize(v) > AV_STICKY_MAX)
        return fail(x, "expected a source like \"header:x-user-id\", or an array of 1 to %d of them (the first "
                       "the request carries is used)", AV_STICKY_MAX);
    r->nsticky = (size_t)cJSON_GetArraySize(v);
    r->sticky = av_arena_calloc(x->cfg->arena, r->nsticky * sizeof(*r->sticky));
    size_t i = 0;
    for (const cJSON *e = v->child; e != NULL; e = e->next, i++) {
        push_index(x, i);
        if (!cJSON_IsString(e))
            return fail(x, "expected a string like \"header:x-user-id\", got %s", type_name(e));
        int rc = parse_sticky(x, e->valuestring, &r->sticky[i]);
        if (rc != 0)
            return rc;
        r->nsticky_body += r->sticky[i].kind == AV_STICKY_BODY;
        pop(x);
    }
    return 0;
}

/* A string or an array of strings, each of exactly two letters (upper case). */
static int codes(ctx_t *x, const cJSON *v, const char (**out)[3], size_t *n)
{
    size_t cnt = cJSON_IsArray(v) ? (size_t)cJSON_GetArraySize(v) : 1;
    char (*c)[3] = av_arena_calloc(x->cfg->arena, cnt * sizeof(*c));
    const cJSON *e = cJSON_IsArray(v) ? v->child : v;
    for (size_t i = 0; i < cnt; i++, e = e->next) {
        if (!cJSON_IsString(e) || strlen(e->valuestring) != 2 || e->valuestring[0] < 'A' || e->valuestring[0] > 'Z' ||
            e->valuestring[1] < 'A' || e->valuestring[1] > 'Z')
            return fail(x, "expected two upper-case letters (e.g. \"DE\", \"EU\"), or an array of them");
        memcpy(c[i], e->valuestring, 3);
    }
    *out = (const char (*)[3])c;
    *n = cnt;
    return 0;
}

/* "policies": ["pii_redact", "max_tokens"]: files in policy.dir, run in order */
static int c_route_policies(ctx_t *x, const cJSON *v, void *base)
{
    av_route_t *r = base;
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) > 16)
        return fail(x, "expected an array of at most 16 policy names");
    r->npolicies = (size_t)cJSON_GetArraySize(v);
    r->policy_names = av_arena_calloc(x->cfg->arena, (r->npolicies ? r->npolicies : 1) * sizeof(char *));
    r->policies = av_arena_calloc(x->cfg->arena, (r->npolicies ? r->npolicies : 1) * sizeof(int));
    size_t i = 0;
    for (const cJSON *e = v->child; e != NULL; e = e->next, i++) {
        push_index(x, i);
        if (!cJSON_IsString(e) || e->valuestring[0] == '\0')
            return fail(x, "expected a policy name (its file is policy.dir/NAME.lua)");
        for (size_t j = 0; j < i; j++)
            if (strcmp(r->policy_names[j], e->valuestring) == 0)
                return fail(x, "policy \"%s\" is listed twice", e->valuestring);
        r->policy_names[i] = dup_str(x, e->valuestring);
        pop(x);
    }
    return 0;
}

static int num_field(ctx_t *x, const cJSON *v, double lo, double hi, double *out)
{
    if (!cJSON_IsNumber(v))
        return fail(x, "expected a number, got %s", type_name(v));
    if (v->valuedouble < lo || v->valuedouble > hi)
        return fail(x, "must be from %g to %g", lo, hi);
    *out = v->valuedouble;
    return 0;
}

/* "rollout": {"baseline", "candidate", "steps", "min_step_s", "max_step_s",
 * "on_timeout", "min_requests", "min_events", "alpha", "approve_before",
 * "kpis": {"error_rate": {"max_increase", "slo"}, "latency": {"max_ratio", "slo_ms"}, ...}} */
static int c_rollout(ctx_t *x, const cJSON *v, void *base)
{
    av_route_t *r = base;
    av_rollout_cfg_t *ro = &r->rollout;
    if (!cJSON_IsObject(v))
        return fail(x, "expected {\"baseline\": ..., \"candidate\": ..., \"steps\": [5, 25, 50, 100], \"kpis\": {...}}");
    ro->enabled = 1;
    ro->min_step_s = 60;
    ro->max_step_s = 3600;
    ro->on_timeout = "hold";
    ro->min_requests = 200;
    ro->min_events = 5;
    ro->alpha = 0.05;
    static const int64_t default_steps[] = {5, 25, 50, 100};
    memcpy(ro->steps, default_steps, sizeof(default_steps));
    ro->nsteps = 4;
    for (const cJSON *m = v->child; m != NULL; m = m->next) {
        const char *k = m->string;
        push_key(x, k);
        double d;
        if (strcmp(k, "baseline") == 0 || strcmp(k, "candidate") == 0 || strcmp(k, "on_timeout") == 0) {
            if (!cJSON_IsString(m))
                return fail(x, "expected a string, got %s", type_name(m));
            if (k[0] == 'b')
                ro->baseline_name = dup_str(x, m->valuestring);
            else if (k[0] == 'c')
                ro->candidate_name = dup_str(x, m->valuestring);
            else if (strcmp(m->valuestring, "hold") == 0 || strcmp(m->valuestring, "rollback") == 0 ||
                     strcmp(m->valuestring, "approve") == 0)
                ro->on_timeout = dup_str(x, m->valuestring);
            else
                return fail(x, "\"%s\" is not an action (use \"hold\", \"rollback\" or \"approve\")",
                            m->valuestring);
        } else if (strcmp(k, "steps") == 0) {
            if (!cJSON_IsArray(m) || cJSON_GetArraySize(m) < 1 || cJSON_GetArraySize(m) > AV_ROLLOUT_MAX_STEPS)
                return fail(x, "expected 1 to %d rising percentages ending at 100, e.g. [5, 25, 50, 100]",
                            AV_ROLLOUT_MAX_STEPS);
            ro->nsteps = 0;
            for (const cJSON *e = m->child; e != NULL; e = e->next) {
                push_index(x, ro->nsteps);
                if (!cJSON_IsNumber(e) || e->valuedouble != (double)(int64_t)e->valuedouble || e->valuedouble < 1 ||
                    e->valuedouble > 100 || (ro->nsteps > 0 && e->valuedouble <= (double)ro->steps[ro->nsteps - 1]))
                    return fail(x, "a step is a whole percentage from 1 to 100, above the one before");
                ro->steps[ro->nsteps++] = (int64_t)e->valuedouble;
                pop(x);
            }
            if (ro->steps[ro->nsteps - 1] != 100 || ro->nsteps < 2)
                return fail(x, "the last step must be 100 (promotion), after at least one below it");
        } else if (strcmp(k, "shadow_first") == 0) {
            if (!cJSON_IsBool(m))
                return fail(x, "expected true or false, got %s", type_name(m));
            ro->shadow_first = cJSON_IsTrue(m);
        } else if (strcmp(k, "approve_before") == 0) {
            if (!cJSON_IsArray(m))
                return fail(x, "expected step numbers (from 1), e.g. [3]");
            for (const cJSON *e = m->child; e != NULL; e = e->next)
                if (!cJSON_IsNumber(e) || e->valuedouble < 1 || e->valuedouble > AV_ROLLOUT_MAX_STEPS)
                    return fail(x, "a step number is from 1 to the number of steps");
                else
                    ro->approve |= 1u << ((unsigned)e->valuedouble - 1);
        } else if (strcmp(k, "min_step_s") == 0 || strcmp(k, "max_step_s") == 0) {
            if (num_field(x, m, 0, 1e9, &d) != 0)
                return AV_EINVAL;
            *(strcmp(k, "min_step_s") == 0 ? &ro->min_step_s : &ro->max_step_s) = (int64_t)d;
        } else if (strcmp(k, "min_requests") == 0) {
            if (num_field(x, m, 1, 1e9, &d) != 0)
                return AV_EINVAL;
            ro->min_requests = (int64_t)d;
        } else if (strcmp(k, "min_events") == 0) {
            if (num_field(x, m, 0, 1e6, &ro->min_events) != 0)
                return AV_EINVAL;
        } else if (strcmp(k, "alpha") == 0) {
            if (num_field(x, m, 1e-6, 0.5, &ro->alpha) != 0)
                return AV_EINVAL;
        } else if (strcmp(k, "kpis") == 0) {
            static const struct {
                const char *name, *margin, *slo;
                int kind;
            } kinds[] = {
                {"error_rate", "max_increase", "slo", AV_KPI_ERRORS}, {"rate_429", "max_increase", "slo", AV_KPI_429},
                {"block_rate", "max_increase", "slo", AV_KPI_BLOCKS}, {"latency", "max_ratio", "slo_ms", AV_KPI_LATENCY},
                {"ttft", "max_ratio", "slo_ms", AV_KPI_TTFT},        {"cost", "max_ratio", "slo_usd", AV_KPI_COST},
                {"feedback", "max_decrease", "slo_min", AV_KPI_FEEDBACK},
                {"inter_token", "max_ratio", "slo_ms", AV_KPI_ITL},  {"tokens", "max_ratio", "slo", AV_KPI_TOKENS},
            };
            if (!cJSON_IsObject(m))
                return fail(x, "expected {\"error_rate\": {\"max_increase\": 0.01}, \"ttft\": {\"max_ratio\": 1.2}, ...}");
            for (const cJSON *e = m->child; e != NULL; e = e->next) {
                push_key(x, e->string);
                size_t i = 0;
                while (i < AV_NELEMS(kinds) && strcmp(kinds[i].name, e->string) != 0)
                    i++;
                if (i == AV_NELEMS(kinds))
                    return fail(x, "unknown KPI (known: error_rate, rate_429, block_rate, latency, ttft, cost, "
                                   "feedback, inter_token, tokens)");
                if (!cJSON_IsObject(e))
                    return fail(x, "expected {\"%s\": ..., \"%s\": ...}", kinds[i].margin, kinds[i].slo);
                av_rollout_cfg_t *q = ro;
                for (size_t j = 0; j < q->nkpis; j++)
                    if (q->kpis[j].kind == kinds[i].kind)
                        return fail(x, "KPI \"%s\" is named twice", kinds[i].name);
                if (q->nkpis == AV_ROLLOUT_MAX_KPIS)
                    return fail(x, "at most %d KPIs", AV_ROLLOUT_MAX_KPIS);
                size_t n = q->nkpis++;
                q->kpis[n].kind = kinds[i].kind;
                int absolute = kinds[i].kind <= AV_KPI_BLOCKS || kinds[i].kind == AV_KPI_FEEDBACK;
                q->kpis[n].margin = absolute ? 0.0 : 1.0;
                for (const cJSON *f = e->child; f != NULL; f = f->next) {
                    push_key(x, f->string);
                    int is_margin = strcmp(f->string, kinds[i].margin) == 0;
                    if (!is_margin && strcmp(f->string, kinds[i].slo) != 0)
                        return fail(x, "unknown key (known keys: %s, %s)", kinds[i].margin, kinds[i].slo);
                    double lo = is_margin ? (absolute ? 0 : 1) : 0;
                    if (num_field(x, f, lo, 1e9, is_margin ? &q->kpis[n].margin : &q->kpis[n].slo) != 0)
                        return AV_EINVAL;
                    pop(x);
                }
                pop(x);
            }
        } else {
            return fail(x, "unknown key (known keys: baseline, candidate, steps, min_step_s, max_step_s, on_timeout, "
                           "min_requests, min_events, alpha, approve_before, shadow_first, kpis)");
        }
        pop(x);
    }
    if (ro->baseline_name == NULL || ro->candidate_name == NULL)
        return fail(x, "a rollout names its \"baseline\" and \"candidate\" variants");
    if (ro->nkpis == 0)
        return fail(x, "a rollout watches at least one KPI (\"kpis\": {\"error_rate\": {\"max_increase\": 0.01}})");
    for (size_t i = 0; i < AV_ROLLOUT_MAX_STEPS; i++)
        if ((ro->approve >> i) & 1 && i >= ro->nsteps)
            return fail(x, "approve_before names step %zu of %zu", i + 1, ro->nsteps);
    snprintf(ro->fingerprint, sizeof(ro->fingerprint), "%.24s/%.24s", ro->baseline_name, ro->candidate_name);
    return 0;
}

/* "policy_params": {"max_tokens": {"cap": 1024}}: what r:params() gives each policy */
static int c_policy_params(ctx_t *x, const cJSON *v, void *base)
{
    av_route_t *r = base;
    if (!cJSON_IsObject(v) || cJSON_GetArraySize(v) > 16)
        return fail(x, "expected {\"POLICY\": {...}, ...} for at most 16 policies");
    r->nparams_raw = (size_t)cJSON_GetArraySize(v);
    r->params_raw = av_arena_calloc(x->cfg->arena, (r->nparams_raw ? r->nparams_raw : 1) * sizeof(av_kv_t));
    size_t i = 0;
    for (const cJSON *e = v->child; e != NULL; e = e->next, i++) {
        push_key(x, e->string);
        if (!cJSON_IsObject(e))
            return fail(x, "expected an object of the policy's parameters");
        char *text = cJSON_PrintUnformatted(e);
        if (text == NULL)
            av_oom();
        r->params_raw[i].name = dup_str(x, e->string);
        r->params_raw[i].value = dup_str(x, text);
        cJSON_free(text);
        pop(x);
    }
    return 0;
}

static int c_geo_rules(ctx_t *x, const cJSON *v, void *base)
{
    av_route_t *r = base;
    if (!cJSON_IsArray(v))
        return fail(x, "expected an array of rules like {\"country\": [\"DE\", \"FR\"], \"variant\": \"eu\"}");
    r->ngeo = (size_t)cJSON_GetArraySize(v);
    r->geo = av_arena_calloc(x->cfg->arena, (r->ngeo ? r->ngeo : 1) * sizeof(*r->geo));
    size_t i = 0;
    for (const cJSON *e = v->child; e != NULL; e = e->next, i++) {
        av_geo_rule_t *g = &r->geo[i];
        push_index(x, i);
        if (!cJSON_IsObject(e))
            return fail(x, "expected an object like {\"continent\": \"EU\", \"variant\": \"eu\"}");
        int conditions = 0;
        for (const cJSON *m = e->child; m != NULL; m = m->next) {
            push_key(x, m->string);
            int rc = 0;
            if (strcmp(m->string, "country") == 0) {
                rc = codes(x, m, &g->countries, &g->ncountries);
                conditions++;
            } else if (strcmp(m->string, "continent") == 0) {
                rc = codes(x, m, &g->continents, &g->ncontinents);
                conditions++;
            } else if (strcmp(m->string, "asn") == 0) {
                size_t cnt = cJSON_IsArray(m) ? (size_t)cJSON_GetArraySize(m) : 1;
                int64_t *a = av_arena_calloc(x->cfg->arena, cnt * sizeof(*a));
                const cJSON *n = cJSON_IsArray(m) ? m->child : m;
                for (size_t k = 0; k < cnt; k++, n = n->next) {
                    if (!cJSON_IsNumber(n) || n->valuedouble < 1 || n->valuedouble > 4294967295.0 ||
                        n->valuedouble != floor(n->valuedouble))
                        return fail(x, "expected an AS number (e.g. 15169), or an array of them");
                    a[k] = (int64_t)n->valuedouble;
                }
                g->asns = a;
                g->nasns = cnt;
                conditions++;
            } else if (strcmp(m->string, "variant") == 0) {
                if (!cJSON_IsString(m))
                    return fail(x, "expected a variant's name");
                g->variant_name = dup_str(x, m->valuestring);
            } else {
                return fail(x, "unknown key (known keys: country, continent, asn, variant)");
            }
            if (rc != 0)
                return rc;
            pop(x);
        }
        if (g->variant_name == NULL)
            return fail(x, "a rule needs \"variant\"");
        if (conditions == 0)
            return fail(x, "a rule needs \"country\", \"continent\" or \"asn\"");
        pop(x);
    }
    return 0;
}

static const kspec_t sticky_spec[] = {
    {"keys", K_CUSTOM, 0, 0, 0, 0, NULL, 0, NULL, c_sticky_keys},
    {"salt", K_STR, offsetof(av_route_t, salt), 1, 0, 0, NULL, 0, NULL, NULL},
    {NULL, 0, 0, 0, 0, 0, NULL, 0, NULL, NULL},
};

static const kspec_t override_spec[] = {
    {"enabled", K_BOOL, offsetof(av_route_t, override_enabled), 0, 1, 1, NULL, 0, NULL, NULL},
    {"token_env", K_STR, offsetof(av_route_t, override_token_env), 1, 0, 0, NULL, 0, NULL, NULL},
    {NULL, 0, 0, 0, 0, 0, NULL, 0, NULL, NULL},
};

static const kspec_t shadow_spec[] = {
    {"variant", K_STR, offsetof(av_route_t, shadow_variant_name), 1, 0, 0, NULL, 0, NULL, NULL},
    {"percent", K_INT, offsetof(av_route_t, shadow_percent), 0, 100, 100, NULL, 0, NULL, NULL},
    {"max_in_flight", K_INT, offsetof(av_route_t, shadow_max_in_flight), 1, 100000, 64, NULL, 0, NULL, NULL},
    {"compare", K_BOOL, offsetof(av_route_t, shadow_compare), 0, 1, 1, NULL, 0, NULL, NULL},
    {"budget_tokens_per_minute", K_INT, offsetof(av_route_t, shadow_budget_tokens), 0, 1000000000, 0, NULL, 0, NULL, NULL},
    {"budget_millidollars_per_minute", K_INT, offsetof(av_route_t, shadow_budget_usd_milli), 0, 1000000000, 0, NULL, 0,
     NULL, NULL},
    {NULL, 0, 0, 0, 0, 0, NULL, 0, NULL, NULL},
};

static const kspec_t route_spec[] = {
    {"name", K_STR, offsetof(av_route_t, name), 1, 0, 0, NULL, K_REQUIRED, NULL, NULL},
    {"match", K_OBJ, 0, 0, 0, 0, NULL, 0, match_spec, NULL},
    {"variants", K_CUSTOM, 0, 0, 0, 0, NULL, K_REQUIRED, NULL, c_variants},
    {"sticky", K_OBJ, 0, 0, 0, 0, NULL, 0, sticky_spec, NULL},
    {"override", K_OBJ, 0, 0, 0, 0, NULL, 0, override_spec, NULL},
    {"dialect", K_STR, offsetof(av_route_t, dialect_name), 1, 0, 0, "auto", 0, NULL, NULL},
    {"geo", K_CUSTOM, 0, 0, 0, 0, NULL, 0, NULL, c_geo_rules},
    {"shadow", K_OBJ, 0, 0, 0, 0, NULL, 0, shadow_spec, NULL},
    {"policies", K_CUSTOM, 0, 0, 0, 0, NULL, 0, NULL, c_route_policies},
    {"policy_params", K_CUSTOM, 0, 0, 0, 0, NULL, 0, NULL, c_policy_params},
    {"rollout", K_CUSTOM, 0, 0, 0, 0, NULL, 0, NULL, c_rollout},
    {NULL, 0, 0, 0, 0, 0, NULL, 0, NULL, NULL},
};

static int c_routes(ctx_t *x, const cJSON *v, void *base)
{
    av_config_t *c = base;
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) == 0)
        return fail(x, "expected a non-empty array of routes");
    c->nroutes = (size_t)cJSON_GetArraySize(v);
    c->routes = av_arena_calloc(c->arena, c->nroutes * sizeof(*c->routes));
    size_t i = 0;
    for (const cJSON *e = v->child; e != NULL; e = e->next, i++) {
        av_route_t *r = &c->routes[i];
        push_index(x, i);
        if (!cJSON_IsObject(e))
            return fail(x, "expected an object with \"name\", \"match\" and \"variants\"");
        int rc = load_obj(x, e, route_spec, r);
        if (rc != 0)
            return rc;
        for (size_t j = 0; j < i; j++)
            if (strcmp(c->routes[j].name, r->name) == 0) {
                push_key(x, "name");
                return fail(x, "route \"%s\" is named twice", r->name);
            }
        if (r->path_prefix != NULL && r->path_prefix[0] != '/') {
            push_key(x, "match");
            push_key(x, "path_prefix");
            return fail(x, "must start with /");
        }
        if (r->path != NULL && r->path[0] != '/') {
            push_key(x, "match");
            push_key(x, "path");
            return fail(x, "must start with /");
        }
        if (r->nvariants > AV_SPLIT_MAX_VARIANTS) {
            push_key(x, "variants");
            return fail(x, "at most %d variants in a route", AV_SPLIT_MAX_VARIANTS);
        }
        int64_t total = 0;
        for (size_t k = 0; k < r->nvariants; k++)
            total += r->variants[k].weight;
        if (total == 0) {
            push_key(x, "variants");
            return fail(x, "the weights add up to 0: give at least one variant a weight above 0");
        }
        if (r->salt == NULL)
            r->salt = r->name;
        r->shadow_budget_nano = r->shadow_budget_usd_milli * 1000000;
        if (r->shadow_variant_name != NULL) {
            r->shadow_variant = r->nvariants;
            for (size_t j = 0; j < r->nvariants; j++)
                if (strcmp(r->variants[j].name, r->shadow_variant_name) == 0)
                    r->shadow_variant = j;
            if (r->shadow_variant == r->nvariants) {
                push_key(x, "shadow");
                push_key(x, "variant");
                return fail(x, "no variant \"%s\" in this route", r->shadow_variant_name);
            }
        }
        for (size_t k = 0; k < r->ngeo; k++) {
            av_geo_rule_t *g = &r->geo[k];
            g->variant = r->nvariants;
            for (size_t j = 0; j < r->nvariants; j++)
                if (strcmp(r->variants[j].name, g->variant_name) == 0)
                    g->variant = j;
            if (g->variant == r->nvariants) {
                push_key(x, "geo");
                push_index(x, k);
                push_key(x, "variant");
                return fail(x, "no variant \"%s\" in this route", g->variant_name);
            }
            if (c->geo == NULL) {
                push_key(x, "geo");
                return fail(x, "geo rules need databases: set \"geoip\": {\"databases\": [\"GeoLite2-Country.mmdb\"]}");
            }
        }
        static const char *const dialects[] = {"auto", "openai_chat", "openai_completions", "openai_embeddings",
                                               "openai_responses", "anthropic"};
        r->dialect = -1;
        for (size_t k = 0; k < AV_NELEMS(dialects); k++)
            if (strcmp(r->dialect_name, dialects[k]) == 0)
                r->dialect = (int)k;
        if (r->dialect < 0) {
            push_key(x, "dialect");
            return fail(x, "\"%s\" is not a dialect (use \"auto\", \"openai_chat\", \"openai_completions\", "
                           "\"openai_embeddings\", \"openai_responses\" or \"anthropic\")", r->dialect_name);
        }
        if (r->rollout.enabled) {
            av_rollout_cfg_t *ro = &r->rollout;
            ro->baseline = ro->candidate = r->nvariants;
            for (size_t j = 0; j < r->nvariants; j++) {
                if (strcmp(r->variants[j].name, ro->baseline_name) == 0)
                    ro->baseline = j;
                if (strcmp(r->variants[j].name, ro->candidate_name) == 0)
                    ro->candidate = j;
            }
            push_key(x, "rollout");
            if (ro->baseline == r->nvariants || ro->candidate == r->nvariants || ro->baseline == ro->candidate) {
                push_key(x, ro->baseline == r->nvariants ? "baseline" : "candidate");
                return fail(x, "not a variant of this route (or the baseline twice)");
            }
            if (ro->shadow_first && (r->shadow_variant_name == NULL || r->shadow_variant != ro->candidate ||
                                     r->shadow_percent == 0)) {
                push_key(x, "shadow_first");
                return fail(x, "a shadow stage needs the route's \"shadow\" to copy requests to the candidate, "
                               "\"%s\"", ro->candidate_name);
            }
            pop(x);
        }
        if (r->override_token_env != NULL) {
            push_key(x, "override");
            push_key(x, "token_env");
            const char *tok = getenv(r->override_token_env);
            if (tok == NULL || tok[0] == '\0')
                return fail(x, "environment variable %s is not set", r->override_token_env);
            r->override_token = dup_str(x, tok);
            pop(x);
            pop(x);
        }
        pop(x);
    }
    return 0;
}

static int c_admin_addr(ctx_t *x, av_config_t *c)
{
    if (av_parse_hostport(c->admin_address, 0, 1, &c->admin_addr, &c->admin_addrlen) != 0) {
        push_key(x, "admin");
        push_key(x, "address");
        return fail(x, "\"%s\" is not a numeric host:port", c->admin_address);
    }
    return 0;
}

static const kspec_t admin_spec[] = {
    {"address", K_STR, offsetof(av_config_t, admin_address), 1, 0, 0, "127.0.0.1:9901", K_RESTART, NULL, NULL},
    {"token_env", K_STR, offsetof(av_config_t, admin_token_env), 1, 0, 0, NULL, 0, NULL, NULL},
    {NULL, 0, 0, 0, 0, 0, NULL, 0, NULL, NULL},
};

static const kspec_t log_spec[] = {
    {"kpi", K_STR, offsetof(av_config_t, kpi_log), 1, 0, 0, "-", K_RESTART, NULL, NULL},
    {"audit", K_STR, offsetof(av_config_t, audit_log), 1, 0, 0, NULL, K_RESTART, NULL, NULL},
    {"level", K_STR, offsetof(av_config_t, log_level), 1, 0, 0, "info", 0, NULL, NULL},
    {NULL, 0, 0, 0, 0, 0, NULL, 0, NULL, NULL},
};

static const kspec_t policy_spec[] = {
    {"dir", K_STR, offsetof(av_config_t, policy_dir), 1, 0, 0, "../lua/policies", 0, NULL, NULL},
    {"memory_mb", K_INT, offsetof(av_config_t, policy_memory_mb), 1, 4096, 64, NULL, 0, NULL, NULL},
    {"max_instructions", K_INT, offsetof(av_config_t, policy_max_instructions), 1000, 1000000000, 1000000, NULL, 0,
     NULL, NULL},
    {"max_ms", K_INT, offsetof(av_config_t, policy_max_ms), 1, 10000, 50, NULL, 0, NULL, NULL},
    {NULL, 0, 0, 0, 0, 0, NULL, 0, NULL, NULL},
};

static void free_policies(void *p)
{
    av_policies_free(p);
}

/* Compiles the policies the routes name, once each, in order of first mention. */
static int load_policies(ctx_t *x, av_config_t *c)
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
                    push_key(x, "routes");
                    return fail(x, "more than %zu different policies", AV_NELEMS(names));
                }
                names[n] = name;
                where_route[n] = i;
                where_index[n++] = k;
            }
        }
    if (n == 0)
        return 0;
    c->policy_dir = relative_to(x, c->dir, c->policy_dir);
    av_policy_limits_t lim = {
        .memory_bytes = c->policy_memory_mb << 20,
        .max_instructions = c->policy_max_instructions,
        .max_us = c->policy_max_ms * 1000,
    };
    char why[1024];
    int bad = -1;
    c->policies = av_policies_load(c->policy_dir, names, n, &lim, why, sizeof(why), &bad);
    if (c->policies == NULL) {
        if (bad >= 0) {
            push_key(x, "routes");
            push_index(x, where_route[bad]);
            push_key(x, "policies");
            push_index(x, where_index[bad]);
        } else {
            push_key(x, "policy");
        }
        return fail(x, "%s", why);
    }
    av_arena_on_free(c->arena, free_policies, c->policies);
    for (size_t i = 0; i < c->nroutes; i++)
        for (size_t k = 0; k < c->routes[i].npolicies; k++)
            c->routes[i].policies[k] = av_policies_find(c->policies, c->routes[i].policy_names[k]);
    return 0;
}

/* Each route's policy_params, matched to the policies it lists. */
static int match_params(ctx_t *x, av_config_t *c)
{
    for (size_t i = 0; i < c->nroutes; i++) {
        av_route_t *r = &c->routes[i];
        r->policy_params = av_arena_calloc(c->arena, (r->npolicies ? r->npolicies : 1) * sizeof(char *));
        for (size_t j = 0; j < r->nparams_raw; j++) {
            size_t k = 0;
            while (k < r->npolicies && strcmp(r->policy_names[k], r->params_raw[j].name) != 0)
                k++;
            if (k == r->npolicies) {
                push_key(x, "routes");
                push_index(x, i);
                push_key(x, "policy_params");
                push_key(x, r->params_raw[j].name);
                return fail(x, "the route has no policy \"%s\" in \"policies\"", r->params_raw[j].name);
            }
            r->policy_params[k] = r->params_raw[j].value;
        }
    }
    return 0;
}

static const kspec_t client_spec[] = {
    {"header_timeout_ms", K_INT, offsetof(av_config_t, header_timeout_ms), 10, 600000, 10000, NULL, 0, NULL, NULL},
    {"idle_timeout_ms", K_INT, offsetof(av_config_t, idle_timeout_ms), 10, 3600000, 60000, NULL, 0, NULL, NULL},
    {"max_header_bytes", K_INT, offsetof(av_config_t, max_header_bytes), 256, 1 << 20, 65536, NULL, 0, NULL, NULL},
    {"max_headers", K_INT, offsetof(av_config_t, max_headers), 1, 1000, 100, NULL, 0, NULL, NULL},
    {"max_body_bytes", K_INT, offsetof(av_config_t, max_body_bytes), 0, 1 << 30, 10 << 20, NULL, 0, NULL, NULL},
    {"drain_timeout_ms", K_INT, offsetof(av_config_t, drain_timeout_ms), 0, 3600000, 30000, NULL, 0, NULL, NULL},
    {NULL, 0, 0, 0, 0, 0, NULL, 0, NULL, NULL},
};

/* "pricing": {"MODEL": {"input": 2.5, "output": 10, ...}}: USD per million tokens */
static int c_pricing(ctx_t *x, const cJSON *v, void *base)
{
    av_config_t *c = base;
    if (!cJSON_IsObject(v))
        return fail(x, "expected {\"MODEL\": {\"input\": USD_PER_MILLION, \"output\": USD_PER_MILLION}, ...}");
    c->nprices = (size_t)cJSON_GetArraySize(v);
    c->prices = av_arena_calloc(c->arena, (c->nprices ? c->nprices : 1) * sizeof(*c->prices));
    size_t i = 0;
    for (const cJSON *m = v->child; m != NULL; m = m->next, i++) {
        av_price_t *p = &c->prices[i];
        push_key(x, m->string);
        if (!cJSON_IsObject(m))
            return fail(x, "expected {\"input\": USD_PER_MILLION, \"output\": USD_PER_MILLION}");
        p->model = dup_str(x, m->string);
        p->input = p->output = p->cached_input = p->cache_write = p->reasoning = -1;
        for (const cJSON *f = m->child; f != NULL; f = f->next) {
            push_key(x, f->string);
            int64_t *slot = strcmp(f->string, "input") == 0          ? &p->input
                            : strcmp(f->string, "output") == 0       ? &p->output
                            : strcmp(f->string, "cached_input") == 0 ? &p->cached_input
                            : strcmp(f->string, "cache_write") == 0  ? &p->cache_write
                            : strcmp(f->string, "reasoning") == 0    ? &p->reasoning
                                                                     : NULL;
            if (slot == NULL)
                return fail(x, "unknown key (known keys: input, output, cached_input, cache_write, reasoning)");
            if (!cJSON_IsNumber(f) || f->valuedouble < 0 || f->valuedouble > 1000000)
                return fail(x, "expected USD per million tokens, a number from 0 to 1000000");
            *slot = (int64_t)llround(f->valuedouble * 1e6); /* picodollars per token */
            pop(x);
        }
        if (p->input < 0 || p->output < 0)
            return fail(x, "a price needs \"input\" and \"output\"");
        if (p->cached_input < 0)
            p->cached_input = p->input;
        if (p->cache_write < 0)
            p->cache_write = p->input;
        if (p->reasoning < 0)
            p->reasoning = p->output;
        pop(x);
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
    av_geo_close(p);
}

static int c_geoip(ctx_t *x, const cJSON *v, void *base)
{
    av_config_t *c = base;
    if (c->geo != NULL)
        return 0; /* loaded first, before routes refer to it */
    if (!cJSON_IsObject(v))
        return fail(x, "expected {\"databases\": [\"GeoLite2-Country.mmdb\"], \"trusted_proxies\": [\"10.0.0.0/8\"]}");
    const char *dbs[8], *proxies[256];
    size_t ndbs = 0, nproxies = 0;
    for (const cJSON *m = v->child; m != NULL; m = m->next) {
        push_key(x, m->string);
        int is_db = strcmp(m->string, "databases") == 0;
        if (!is_db && strcmp(m->string, "trusted_proxies") != 0)
            return fail(x, "unknown key (known keys: databases, trusted_proxies)");
        if (!cJSON_IsArray(m) || cJSON_GetArraySize(m) > (is_db ? 4 : 256))
            return fail(x, "expected an array of at most %d strings", is_db ? 4 : 256);
        size_t i = 0;
        for (const cJSON *e = m->child; e != NULL; e = e->next, i++) {
            push_index(x, i);
            if (!cJSON_IsString(e))
                return fail(x, "expected a string, got %s", type_name(e));
            if (is_db) {
                dbs[ndbs++] = relative_to(x, x->cfg->dir, e->valuestring);
            } else {
                if (!av_geo_cidr_valid(e->valuestring))
                    return fail(x, "\"%s\" is not an address or CIDR block", e->valuestring);
                proxies[nproxies++] = e->valuestring;
            }
            pop(x);
        }
        pop(x);
    }
    char why[512];
    c->geo = av_geo_open(dbs, ndbs, proxies, nproxies, why, sizeof(why));
    if (c->geo == NULL) {
        push_key(x, "databases");
        return fail(x, "%s", why);
    }
    av_arena_on_free(c->arena, free_geo, c->geo);
    return 0;
}

static const kspec_t top_spec[] = {
    {"workers", K_INT, offsetof(av_config_t, workers), 0, 256, 0, NULL, K_RESTART, NULL, NULL},
    {"listen", K_CUSTOM, 0, 0, 0, 0, NULL, K_REQUIRED | K_RESTART, NULL, c_listen},
    {"admin", K_OBJ, 0, 0, 0, 0, NULL, K_RESTART, admin_spec, NULL},
    {"log", K_OBJ, 0, 0, 0, 0, NULL, 0, log_spec, NULL},
    {"client", K_OBJ, 0, 0, 0, 0, NULL, 0, client_spec, NULL},
    {"backends", K_CUSTOM, 0, 0, 0, 0, NULL, K_REQUIRED, NULL, c_backends},
    {"routes", K_CUSTOM, 0, 0, 0, 0, NULL, K_REQUIRED, NULL, c_routes},
    {"variant_header", K_STR, offsetof(av_config_t, variant_header), 0, 0, 0, "x-aviary-variant", 0, NULL, NULL},
    {"geoip", K_CUSTOM, 0, 0, 0, 0, NULL, 0, NULL, c_geoip},
    {"pricing", K_CUSTOM, 0, 0, 0, 0, NULL, 0, NULL, c_pricing},
    {"policy", K_OBJ, 0, 0, 0, 0, NULL, 0, policy_spec, NULL},
    {"rollout_state_file", K_STR, offsetof(av_config_t, rollout_state_file), 1, 0, 0, NULL, 0, NULL, NULL},
    {"rollout_webhook", K_STR, offsetof(av_config_t, rollout_webhook), 1, 0, 0, NULL, 0, NULL, NULL},
    {"feedback_path", K_STR, offsetof(av_config_t, feedback_path), 0, 0, 0, "/v1/feedback", 0, NULL, NULL},
    {NULL, 0, 0, 0, 0, 0, NULL, 0, NULL, NULL},
};

static const char *relative_to(ctx_t *x, const char *dir, const char *p)
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
    ctx_t x = {.name = name, .text = buf, .len = len, .err = err, .errlen = errlen, .cfg = c};
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
        fail(&x, "the config must be a JSON object");
        goto fail;
    }
    const char *slash = strrchr(name, '/');
    c->path = dup_str(&x, name);
    c->dir = slash ? av_arena_strndup(c->arena, name, (size_t)(slash - name)) : ".";
    /* geoip and backends before routes, whatever order the file has them in */
    cJSON *geoip = cJSON_GetObjectItemCaseSensitive(root, "geoip");
    if (geoip != NULL) {
        push_key(&x, "geoip");
        rc = c_geoip(&x, geoip, c);
        if (rc != 0)
            goto fail;
        pop(&x);
    }
    cJSON *backends = cJSON_GetObjectItemCaseSensitive(root, "backends");
    if (backends != NULL) {
        push_key(&x, "backends");
        rc = c_backends(&x, backends, c);
        if (rc != 0)
            goto fail;
        pop(&x);
    }
    rc = load_obj(&x, root, top_spec, c);
    if (rc != 0)
        goto fail;
    if (c_admin_addr(&x, c) != 0)
        goto fail;
    if (c->admin_token_env != NULL) {
        const char *tok = getenv(c->admin_token_env);
        if (tok == NULL || tok[0] == '\0') {
            push_key(&x, "admin");
            push_key(&x, "token_env");
            fail(&x, "environment variable %s is not set", c->admin_token_env);
            goto fail;
        }
        c->admin_token = dup_str(&x, tok);
    }
    if (av_log_level_parse(c->log_level) < 0) {
        push_key(&x, "log");
        push_key(&x, "level");
        fail(&x, "\"%s\" is not one of error, warn, info, debug", c->log_level);
        goto fail;
    }
    for (const char *h = c->variant_header; *h; h++)
        if (!((*h >= 'a' && *h <= 'z') || (*h >= 'A' && *h <= 'Z') || (*h >= '0' && *h <= '9') || *h == '-' ||
              *h == '_')) {
            push_key(&x, "variant_header");
            fail(&x, "\"%s\" is not a header name (letters, digits, - and _; \"\" for none)", c->variant_header);
            goto fail;
        }
    c->kpi_log = relative_to(&x, c->dir, c->kpi_log);
    c->audit_log = relative_to(&x, c->dir, c->audit_log);
    c->rollout_state_file = relative_to(&x, c->dir, c->rollout_state_file);
    if (c->rollout_webhook != NULL &&
        (strncmp(c->rollout_webhook, "http://", 7) != 0 || c->rollout_webhook[7] == '\0')) {
        push_key(&x, "rollout_webhook");
        fail(&x, "\"%s\" is not an http:// URL (the webhook is sent in cleartext; put a local relay in front "
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
}
