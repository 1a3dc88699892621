/* fuzz_headers.c: the request headers sent to a backend (headers.c), over
 * HTTP/1.1 and as HTTP/2 fields. From client headers the edge lets in
 * (av_header_name_valid, av_header_value_valid) and a backend the config
 * loader makes (its headers, key header, key and forwarding as the input
 * asks, as far as the loader takes them), the HTTP/1.1 request must parse
 * (http_parser) with every field valid; Host, X-Forwarded-*, X-Request-Id once each; no
 * hop-by-hop field, no x-aviary- control, no client Authorization unless
 * forwarded; the client's other fields byte for byte and in order; and
 * the HTTP/2 fields the same list, lower case, pseudo-fields first.
 * Input: a flags byte, then lines: "T path", "K api key header",
 * "B name:value" (a backend header), anything else "name:value" from the
 * client (kept when the edge would let it in).
 * fuzz-options: -max_len=4096 */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <event2/buffer.h>
#include <http_parser.h>
#include <nghttp2/nghttp2.h>
#include <strings.h>

#include "arena.h"
#include "av.h"
#include "config.h"
#include "fuzz.h"
#include "headers.h"
#include "log.h"
#include "req_t.h"

#define API_KEY "sk-backend-KEY"

/* RFC 9110 tchar and field-value bytes, written out independently of headers.c. */
static int ref_name_valid(const char *s, size_t n)
{
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && (s[i] == '\0' || strchr("!#$%&'*+-.^_`|~", s[i]) == NULL))
            return 0;
    return 1;
}

static int ref_value_valid(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!(c == '\t' || (c >= 0x20 && c != 0x7f)))
            return 0;
    }
    return 1;
}

/* ---- the HTTP/1.1 request, read back ---- */

typedef struct {
    char *name, *value;
} field_t;

typedef struct {
    field_t f[512];
    size_t n;
    char url[4096];
    size_t url_len;
    int complete;
} parsed_t;

static char *append(char *s, const char *at, size_t len)
{
    size_t old = s ? strlen(s) : 0;
    s = realloc(s, old + len + 1);
    memcpy(s + old, at, len);
    s[old + len] = '\0';
    return s;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    parsed_t *x = p->data;
    FUZZ_CHECK(x->url_len + len < sizeof(x->url), "a long url");
    memcpy(x->url + x->url_len, at, len);
    x->url_len += len;
    return 0;
}

/* The request is parsed in one piece: one callback per name and per non-empty value. */
static int on_field(http_parser *p, const char *at, size_t len)
{
    parsed_t *x = p->data;
    FUZZ_CHECK(x->n < AV_NELEMS(x->f), "too many fields");
    x->f[x->n++].name = append(NULL, at, len);
    return 0;
}

static int on_value(http_parser *p, const char *at, size_t len)
{
    parsed_t *x = p->data;
    x->f[x->n - 1].value = append(x->f[x->n - 1].value, at, len);
    return 0;
}

static int on_complete(http_parser *p)
{
    ((parsed_t *)p->data)->complete = 1;
    return 0;
}

static size_t count(const parsed_t *x, const char *name)
{
    size_t k = 0;
    for (size_t i = 0; i < x->n; i++)
        k += strcasecmp(x->f[i].name, name) == 0;
    return k;
}

static const char *value_of(const parsed_t *x, const char *name)
{
    for (size_t i = 0; i < x->n; i++)
        if (strcasecmp(x->f[i].name, name) == 0)
            return x->f[i].value ? x->f[i].value : "";
    return NULL;
}

/* ---- which client fields go on, by headers.h's rules ---- */

static int streq_ci(const char *a, size_t n, const char *b)
{
    return strlen(b) == n && strncasecmp(a, b, n) == 0;
}

static int listed_in_connection(const av_headers_t *h, const char *name, size_t len)
{
    for (size_t i = 0; i < h->n; i++) {
        if (!streq_ci(h->v[i].name, h->v[i].name_len, "connection"))
            continue;
        const char *p = h->v[i].value, *end = p + h->v[i].value_len;
        while (p < end) {
            while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
                p++;
            const char *t = p;
            while (p < end && *p != ',' && *p != ' ' && *p != '\t')
                p++;
            if ((size_t)(p - t) == len && len > 0 && strncasecmp(t, name, len) == 0)
                return 1;
        }
    }
    return 0;
}

static int goes_on(const av_headers_t *h, const av_header_t *e, const av_backend_t *b)
{
    static const char *const dropped[] = {"connection", "keep-alive", "proxy-connection", "te", "trailer",
                                          "transfer-encoding", "upgrade", "proxy-authorization", "proxy-authenticate",
                                          "host", "content-length", "expect", "x-forwarded-for", "x-forwarded-proto",
                                          "x-request-id"};
    for (size_t i = 0; i < AV_NELEMS(dropped); i++)
        if (streq_ci(e->name, e->name_len, dropped[i]))
            return 0;
    if (listed_in_connection(h, e->name, e->name_len))
        return 0;
    if (e->name_len >= 9 && strncasecmp(e->name, "x-aviary-", 9) == 0)
        return 0;
    if (streq_ci(e->name, e->name_len, "authorization") && !b->forward_authorization)
        return 0;
    if (b->api_key != NULL && streq_ci(e->name, e->name_len, b->api_key_header))
        return 0;
    for (size_t i = 0; i < b->nheaders; i++)
        if (streq_ci(e->name, e->name_len, b->headers[i].name))
            return 0;
    return 1;
}

/* The gateway's own fields, which are not the client's. */
static int ours(const char *name, const av_backend_t *b, int shadow)
{
    static const char *const mine[] = {"host", "x-forwarded-for", "x-forwarded-proto", "x-request-id",
                                       "content-length", "connection"};
    for (size_t i = 0; i < AV_NELEMS(mine); i++)
        if (strcasecmp(name, mine[i]) == 0)
            return 1;
    if (shadow && strcasecmp(name, "x-aviary-shadow") == 0)
        return 1;
    return 0;
}

/* ---- the input ---- */

typedef struct {
    av_arena_t *arena;
    av_config_t *cfg; /* the backend's */
    av_req_t req;
    const av_backend_t *b;
    char target[512];
    size_t body_len;
} setup_t;

static void trim(const char **s, size_t *n)
{
    while (*n > 0 && (**s == ' ' || **s == '\t'))
        (*s)++, (*n)--;
    while (*n > 0 && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t'))
        (*n)--;
}

/* http_parser 2.9.4, the oracle here, takes any name that begins with
 * Transfer-Encoding for it (and refuses it beside Content-Length): such
 * names are left out. */
static int parser_quirk(const char *name, size_t len)
{
    return len > 17 && strncasecmp(name, "transfer-encoding", 17) == 0;
}

/* The backend as the config loader makes it from what the input asks for
 * (its headers, key header, key, forwarding); what the loader refuses is
 * left out, so that the backend is always one a config can give. */
static av_config_t *backend_config(unsigned flags, cJSON *headers, const char *key_header)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        cJSON *root = cJSON_CreateObject(), *b = cJSON_CreateObject(), *backends = cJSON_CreateObject();
        cJSON_AddItemToObject(root, "listen", cJSON_Parse("[{\"address\": \"127.0.0.1:0\"}]"));
        cJSON_AddStringToObject(b, "url", (flags >> 4) & 1 ? "http://127.0.0.1:8443/base/" : "http://127.0.0.1:8443");
        cJSON_AddBoolToObject(b, "forward_authorization", flags & 1);
        if ((flags >> 1) & 1)
            cJSON_AddStringToObject(b, "api_key_env", "AV_FUZZ_KEY");
        if (attempt == 0 && key_header != NULL)
            cJSON_AddStringToObject(b, "api_key_header", key_header);
        if (attempt == 0 && headers->child != NULL)
            cJSON_AddItemToObject(b, "headers", cJSON_Duplicate(headers, 1));
        cJSON_AddItemToObject(backends, "b", b);
        cJSON_AddItemToObject(root, "backends", backends);
        cJSON_AddItemToObject(root, "routes",
                              cJSON_Parse("[{\"name\": \"r\", \"variants\": [{\"name\": \"v\", \"backend\": \"b\"}]}]"));
        char *text = cJSON_PrintUnformatted(root), err[512];
        cJSON_Delete(root);
        av_config_t *c = av_config_parse("conf/fuzz.json", text, strlen(text), 1, err, sizeof(err));
        free(text);
        if (c != NULL)
            return c;
        FUZZ_CHECK(attempt == 0, "the plain backend config is refused: %s", err);
    }
    return NULL;
}

static void setup(setup_t *x, const uint8_t *data, size_t size)
{
    fuzz_in_t in = {data, size};
    unsigned flags = fuzz_byte(&in);
    memset(x, 0, sizeof(*x));
    x->arena = av_arena_new(0);
    av_req_t *r = &x->req;
    static const char *const methods[] = {"GET", "POST", "PUT", "DELETE"};
    static const int method_ids[] = {HTTP_GET, HTTP_POST, HTTP_PUT, HTTP_DELETE};
    r->arena = x->arena;
    r->method = method_ids[(flags >> 5) & 3];
    r->method_str = methods[(flags >> 5) & 3];
    r->tls = (flags >> 2) & 1;
    r->shadow = (flags >> 3) & 1;
    snprintf(r->client_ip, sizeof(r->client_ip), "%s", (flags & 0x80) ? "::1" : "203.0.113.9");
    snprintf(r->id, sizeof(r->id), "req-1");
    snprintf(x->target, sizeof(x->target), "/v1/chat/completions");
    x->body_len = r->method == HTTP_GET ? 0 : 3;
    cJSON *bheaders = cJSON_CreateObject();
    char *key_header = NULL;
    while (in.n > 0) {
        const uint8_t *nl = memchr(in.p, '\n', in.n);
        size_t len = nl ? (size_t)(nl - in.p) : in.n;
        const char *line = (const char *)in.p;
        in.p += len + (nl != NULL);
        in.n -= len + (nl != NULL);
        if (len >= 2 && line[0] == 'T' && line[1] == ' ') {
            /* a path the edge passes: no space or control byte, from / */
            size_t k = 0;
            x->target[k++] = '/';
            for (size_t i = 2; i < len && k + 1 < sizeof(x->target); i++)
                if ((unsigned char)line[i] > 0x20 && (unsigned char)line[i] < 0x7f)
                    x->target[k++] = line[i];
            x->target[k] = '\0';
            continue;
        }
        if (len >= 3 && line[0] == 'K' && line[1] == ' ') {
            if (memchr(line + 2, '\0', len - 2) == NULL && !parser_quirk(line + 2, len - 2)) {
                free(key_header);
                key_header = fuzz_strndup(line + 2, len - 2);
            }
            continue;
        }
        const char *colon = memchr(line, ':', len);
        if (colon == NULL)
            continue;
        if (len >= 2 && line[0] == 'B' && line[1] == ' ') {
            const char *name = line + 2, *value = colon + 1;
            size_t nl2 = (size_t)(colon - name), vl = len - (size_t)(value - line);
            if (nl2 > 0 && memchr(name, '\0', nl2) == NULL && memchr(value, '\0', vl) == NULL &&
                !parser_quirk(name, nl2) && cJSON_GetArraySize(bheaders) < 8) {
                char *n = fuzz_strndup(name, nl2), *v = fuzz_strndup(value, vl);
                cJSON_AddStringToObject(bheaders, n, v);
                free(n);
                free(v);
            }
            continue;
        }
        const char *name = line, *value = colon + 1;
        size_t nlen = (size_t)(colon - line), vlen = len - nlen - 1;
        trim(&value, &vlen); /* as the HTTP/1.1 parser hands values over */
        int edge = av_header_name_valid(name, nlen), edge_v = av_header_value_valid(value, vlen);
        FUZZ_CHECK(edge == ref_name_valid(name, nlen), "name \"%.*s\": valid %d", (int)nlen, name, edge);
        FUZZ_CHECK(edge_v == ref_value_valid(value, vlen), "value \"%.*s\": valid %d", (int)vlen, value, edge_v);
        if (edge && edge_v && !parser_quirk(name, nlen) && r->headers.n < 200)
            av_headers_add(x->arena, &r->headers, name, nlen, value, vlen);
    }
    x->cfg = backend_config(flags, bheaders, key_header);
    x->b = &x->cfg->backends[0];
    FUZZ_CHECK(x->b->api_key == NULL || strcmp(x->b->api_key, API_KEY) == 0, "the backend's key");
    cJSON_Delete(bheaders);
    free(key_header);
    r->target = x->target;
    r->target_len = strlen(x->target);
}

/* The HTTP/1.1 request: it parses, and says what the rules say. */
static void check_h1(setup_t *x, parsed_t *p)
{
    const av_req_t *r = &x->req;
    const av_backend_t *b = x->b;
    struct evbuffer *out = evbuffer_new();
    av_headers_backend_request(out, r, b, x->body_len);
    evbuffer_add(out, "abc", x->body_len);
    size_t n = evbuffer_get_length(out);
    const char *text = (const char *)evbuffer_pullup(out, -1);
    http_parser hp;
    http_parser_settings s = {0};
    s.on_url = on_url;
    s.on_header_field = on_field;
    s.on_header_value = on_value;
    s.on_message_complete = on_complete;
    http_parser_init(&hp, HTTP_REQUEST);
    hp.data = p;
    size_t used = http_parser_execute(&hp, &s, text, n);
    FUZZ_CHECK(used == n && HTTP_PARSER_ERRNO(&hp) == HPE_OK && p->complete, "the request does not parse (%s at %zu): %.*s",
               http_errno_name(HTTP_PARSER_ERRNO(&hp)), used, (int)(n < 2000 ? n : 2000), text);
    FUZZ_CHECK(hp.method == (unsigned)r->method, "method %u, sent %d", hp.method, r->method);
    size_t bl = strlen(b->base_path);
    FUZZ_CHECK(p->url_len == bl + r->target_len && memcmp(p->url, b->base_path, bl) == 0 &&
                   memcmp(p->url + bl, r->target, r->target_len) == 0,
               "url \"%.*s\"", (int)p->url_len, p->url);
    for (size_t i = 0; i < p->n; i++) {
        const char *nm = p->f[i].name, *v = p->f[i].value ? p->f[i].value : "";
        FUZZ_CHECK(av_header_name_valid(nm, strlen(nm)) && av_header_value_valid(v, strlen(v)),
                   "an invalid field sent to the backend: \"%s: %s\"", nm, v);
        int configured = b->api_key != NULL && strcasecmp(nm, b->api_key_header) == 0;
        for (size_t j = 0; j < b->nheaders && !configured; j++)
            configured = strcasecmp(nm, b->headers[j].name) == 0;
        FUZZ_CHECK(strncasecmp(nm, "x-aviary-", 9) != 0 || configured ||
                       (r->shadow && strcasecmp(nm, "x-aviary-shadow") == 0),
                   "%s sent to the backend", nm);
    }
    FUZZ_CHECK(count(p, "host") == 1 && strcmp(value_of(p, "host"), b->host_header) == 0, "Host");
    FUZZ_CHECK(count(p, "x-forwarded-for") == 1 && count(p, "x-forwarded-proto") == 1 && count(p, "x-request-id") == 1,
               "X-Forwarded-For, X-Forwarded-Proto, X-Request-Id once each");
    FUZZ_CHECK(strcmp(value_of(p, "x-request-id"), r->id) == 0, "X-Request-Id");
    FUZZ_CHECK(count(p, "connection") == 1 && strcmp(value_of(p, "connection"), "keep-alive") == 0, "Connection");
    static const char *const hop[] = {"keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
                                      "upgrade", "proxy-authorization", "proxy-authenticate", "expect"};
    for (size_t i = 0; i < AV_NELEMS(hop); i++)
        FUZZ_CHECK(count(p, hop[i]) == 0, "%s sent to the backend", hop[i]);
    FUZZ_CHECK(count(p, "content-length") == (x->body_len > 0 || r->body != NULL), "Content-Length");
    /* the backend's key: once, in its header */
    if (b->api_key != NULL && strcasecmp(b->api_key_header, "authorization") == 0)
        FUZZ_CHECK(count(p, "authorization") == 1 && strcmp(value_of(p, "authorization"), "Bearer " API_KEY) == 0,
                   "Authorization for the backend's key");
    /* the client's fields that go on, in order, byte for byte; nothing else of theirs */
    size_t k = 0;
    for (size_t i = 0; i < p->n; i++) {
        const char *nm = p->f[i].name, *v = p->f[i].value ? p->f[i].value : "";
        if (ours(nm, b, r->shadow))
            continue;
        while (k < r->headers.n && !goes_on(&r->headers, &r->headers.v[k], b))
            k++;
        if (k < r->headers.n && r->headers.v[k].name_len == strlen(nm) &&
            memcmp(r->headers.v[k].name, nm, strlen(nm)) == 0 && r->headers.v[k].value_len == strlen(v) &&
            memcmp(r->headers.v[k].value, v, strlen(v)) == 0) {
            k++;
            continue;
        }
        /* else it must be the backend's own: its key, or a configured header */
        int backend = b->api_key != NULL && strcasecmp(nm, b->api_key_header) == 0;
        for (size_t j = 0; j < b->nheaders && !backend; j++)
            backend = strcasecmp(nm, b->headers[j].name) == 0;
        FUZZ_CHECK(backend, "\"%s: %s\" is neither the client's (in order) nor the gateway's", nm, v);
    }
    while (k < r->headers.n && !goes_on(&r->headers, &r->headers.v[k], b))
        k++;
    FUZZ_CHECK(k == r->headers.n, "the client's \"%.*s\" was dropped", (int)r->headers.v[k].name_len,
               r->headers.v[k].name);
    evbuffer_free(out);
}

/* The HTTP/2 fields: the same as HTTP/1.1's, lower case, pseudo-fields first. */
static void check_h2(setup_t *x, const parsed_t *p)
{
    const av_req_t *r = &x->req;
    nghttp2_nv *nv = NULL;
    size_t n = av_headers_backend_nv(r, x->b, x->body_len, &nv);
    static const char *const pseudo[] = {":method", ":scheme", ":authority", ":path"};
    FUZZ_CHECK(n >= 4, "%zu fields", n);
    for (size_t i = 0; i < 4; i++)
        FUZZ_CHECK(nv[i].namelen == strlen(pseudo[i]) && memcmp(nv[i].name, pseudo[i], nv[i].namelen) == 0,
                   "field %zu is not %s", i, pseudo[i]);
    size_t k = 0, cl = 0;
    for (size_t i = 4; i < n; i++) {
        FUZZ_CHECK(nghttp2_check_header_name(nv[i].name, nv[i].namelen) &&
                       nghttp2_check_header_value_rfc9113(nv[i].value, nv[i].valuelen),
                   "an HTTP/2 field nghttp2 refuses: \"%.*s: %.*s\"", (int)nv[i].namelen, nv[i].name,
                   (int)nv[i].valuelen, nv[i].value);
        if (nv[i].namelen == 14 && memcmp(nv[i].name, "content-length", 14) == 0) {
            cl++;
            continue;
        }
        while (k < p->n && (strcasecmp(p->f[k].name, "host") == 0 || strcasecmp(p->f[k].name, "connection") == 0 ||
                            strcasecmp(p->f[k].name, "content-length") == 0))
            k++;
        const char *v = k < p->n && p->f[k].value ? p->f[k].value : "";
        FUZZ_CHECK(k < p->n && strlen(p->f[k].name) == nv[i].namelen &&
                       strncasecmp(p->f[k].name, (const char *)nv[i].name, nv[i].namelen) == 0 &&
                       strlen(v) == nv[i].valuelen && memcmp(v, nv[i].value, nv[i].valuelen) == 0,
                   "HTTP/2 field %zu \"%.*s\" is not HTTP/1.1's \"%s\"", i, (int)nv[i].namelen, nv[i].name,
                   k < p->n ? p->f[k].name : "(none)");
        k++;
    }
    while (k < p->n && (strcasecmp(p->f[k].name, "host") == 0 || strcasecmp(p->f[k].name, "connection") == 0 ||
                        strcasecmp(p->f[k].name, "content-length") == 0))
        k++;
    FUZZ_CHECK(k == p->n, "HTTP/1.1 has \"%s\", HTTP/2 not", p->f[k].name);
    int post = r->method == HTTP_POST || r->method == HTTP_PUT || r->method == HTTP_PATCH;
    FUZZ_CHECK(cl == (x->body_len > 0 || post), "content-length %zu times", cl);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup_t x;
    setup(&x, data, size);
    parsed_t *p = calloc(1, sizeof(*p));
    check_h1(&x, p);
    check_h2(&x, p);
    for (size_t i = 0; i < x.req.headers.n; i++) {
        const av_header_t *e = &x.req.headers.v[i];
        int hop = av_header_is_hop(&x.req.headers, e->name, e->name_len);
        int want = !hop && !streq_ci(e->name, e->name_len, "content-length") &&
                   !streq_ci(e->name, e->name_len, "x-request-id");
        FUZZ_CHECK(av_header_forward_response(&x.req.headers, e) == want, "response field \"%.*s\"",
                   (int)e->name_len, e->name);
        FUZZ_CHECK(av_headers_get(&x.req.headers, e->name) != NULL, "av_headers_get misses \"%s\"", e->name);
    }
    for (size_t i = 0; i < p->n; i++) {
        free(p->f[i].name);
        free(p->f[i].value);
    }
    free(p);
    av_config_unref(x.cfg);
    av_arena_free(x.arena);
    return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    setenv("AV_FUZZ_KEY", API_KEY, 1);
    av_log_set_level(AV_LOG_ERROR);
    return 0;
}
