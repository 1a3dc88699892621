/* req.c: one exchange from complete request to KPI line: route, variant, body
 * rewrite, backend request, response relay and the gateway's own errors. */
#include "req.h"

#include <cjson/cJSON.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <stdio.h>
#include <string.h>

#include "arena.h"
#include "av.h"
#include "config.h"
#include "headers.h"
#include "jscan.h"
#include "jsonw.h"
#include "kpilog.h"
#include "log.h"
#include "router.h"
#include "split.h"
#include "upstream.h"
#include "worker.h"

const char AV_ERR_CONNECT[] = "connect_failed";
const char AV_ERR_TLS[] = "backend_tls_failed";
const char AV_ERR_CONNECT_TIMEOUT[] = "connect_timeout";
const char AV_ERR_FIRST_BYTE_TIMEOUT[] = "first_byte_timeout";
const char AV_ERR_READ_TIMEOUT[] = "read_timeout";
const char AV_ERR_BACKEND_CLOSED[] = "backend_closed";
const char AV_ERR_BACKEND_PROTOCOL[] = "backend_protocol_error";
const char AV_ERR_BUSY[] = "backend_busy";
const char AV_ERR_CLIENT_ABORT[] = "client_abort";
const char AV_ERR_INVALID_JSON[] = "invalid_json";

static void free_evbuffer(void *p)
{
    evbuffer_free(p);
}

av_req_t *av_req_new(av_worker_t *w, const av_client_ops_t *ops, void *client_ctx)
{
    av_arena_t *a = av_arena_new(4096);
    av_req_t *req = av_arena_calloc(a, sizeof(*req));
    req->arena = a;
    req->worker = w;
    req->cfg = av_config_ref(w->cfg);
    req->client = ops;
    req->client_ctx = client_ctx;
    req->t_start_us = av_now_us();
    req->t_wall_us = av_wall_us();
    req->body = evbuffer_new();
    av_arena_on_free(a, free_evbuffer, req->body);
    return req;
}

void av_req_set_id(av_req_t *req)
{
    const av_header_t *h = av_headers_get(&req->headers, "x-request-id");
    if (h != NULL && av_request_id_valid(h->value, h->value_len)) {
        memcpy(req->id, h->value, h->value_len);
        req->id[h->value_len] = '\0';
        return;
    }
    static const char hex[] = "0123456789abcdef";
    for (int half = 0; half < 2; half++) { /* 32 hex digits from two 64-bit draws */
        uint64_t r = av_worker_random(req->worker);
        for (int i = 15; i >= 0; i--, r >>= 4)
            req->id[half * 16 + i] = hex[r & 15];
    }
    req->id[32] = '\0';
}

static void kpi_write(av_req_t *req)
{
    if (req->logged || !req->ran)
        return;
    req->logged = 1;
    uint64_t end = req->t_end_us ? req->t_end_us : av_now_us();
    size_t path_len = strcspn(req->target, "?"); /* the query stays out of the log */
    if (path_len > req->target_len)
        path_len = req->target_len;
    av_kpi_rec_t r = {
        .time_us = req->t_wall_us,
        .request_id = req->id,
        .route = req->route ? req->route->name : NULL,
        .variant = req->variant ? req->variant->name : NULL,
        .generation = req->cfg->generation,
        .backend = req->variant ? req->variant->backend->name : NULL,
        .model = req->model,
        .client_model = req->client_model,
        .assign = req->assign,
        .method = req->method_str,
        .path = req->target,
        .path_len = path_len,
        .status = req->status,
        .stream = req->stream,
        .latency_us = (int64_t)(end - req->t_start_us),
        .ttft_us = req->t_first_byte_us ? (int64_t)(req->t_first_byte_us - req->t_start_us) : -1,
        .bytes_in = req->bytes_in,
        .bytes_out = req->bytes_out,
        .error = req->error,
    };
    av_worker_kpi_line(req->worker, &r);
}

void av_req_free(av_req_t *req)
{
    if (req->up != NULL || req->up2 != NULL || req->waiting)
        av_upstream_cancel(req);
    if (req->ran && !req->finished && req->error == NULL) {
        req->error = AV_ERR_CLIENT_ABORT;
        req->status = req->status ? req->status : 499;
    }
    kpi_write(req);
    if (req->ran)
        req->worker->stats.active_requests--;
    av_config_unref(req->cfg);
    av_arena_free(req->arena);
}

void av_error_json(struct evbuffer *out, const char *type, const char *code, const char *message,
                   const char *request_id)
{
    cJSON *root = cJSON_CreateObject(), *e = cJSON_AddObjectToObject(root, "error");
    cJSON_AddStringToObject(e, "message", message);
    cJSON_AddStringToObject(e, "type", type);
    cJSON_AddStringToObject(e, "code", code);
    if (request_id != NULL)
        cJSON_AddStringToObject(e, "request_id", request_id);
    char *s = cJSON_PrintUnformatted(root);
    if (s == NULL)
        av_oom();
    evbuffer_add(out, s, strlen(s));
    evbuffer_add(out, "\n", 1);
    cJSON_free(s);
    cJSON_Delete(root);
}

void av_req_reject(av_req_t *req, int status, const char *code, const char *why)
{
    if (req->id[0] == '\0')
        av_req_set_id(req);
    if (req->method_str == NULL) {
        req->method_str = "-";
        req->target = "-";
        req->target_len = 1;
    }
    av_req_respond_error(req, status, "invalid_request_error", code, "%s", why);
}

/* Names the variant that served, when the config asks for it. */
static void add_variant_header(av_req_t *req, av_headers_t *h)
{
    const char *name = req->cfg->variant_header;
    if (req->variant != NULL && name[0] != '\0')
        av_headers_add(req->arena, h, name, strlen(name), req->variant->name, strlen(req->variant->name));
}

void av_req_respond_error(av_req_t *req, int status, const char *type, const char *code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    struct evbuffer *body = evbuffer_new();
    av_error_json(body, type, code, msg, req->id);
    size_t len = evbuffer_get_length(body);
    av_headers_t h = {0};
    av_headers_add(req->arena, &h, "Content-Type", 12, "application/json", 16);
    add_variant_header(req, &h);
    req->status = status;
    req->t_head_us = av_now_us();
    req->head_sent = 1;
    req->client->respond_head(req, status, &h, (int64_t)len);
    req->client->respond_body(req, (const char *)evbuffer_pullup(body, -1), len);
    req->bytes_out += len;
    evbuffer_free(body);
    req->finished = 1;
    req->t_end_us = av_now_us();
    kpi_write(req);
    req->client->respond_end(req); /* may free req */
}

typedef struct {
    const char *text;      /* the body, contiguous; NULL when it is not a JSON object */
    size_t len, first;     /* first: offset of its opening brace */
    av_jmember_t model[4]; /* every top-level "model": duplicates are all replaced */
    size_t n_model, n_members;
    int too_many;
    const av_route_t *route;
    /* the route's body sticky sources: the top-level member each starts from */
    av_jmember_t sticky_top[AV_STICKY_MAX];
    int sticky_found[AV_STICKY_MAX];
} body_scan_t;

static int on_member(void *arg, const av_jmember_t *m)
{
    body_scan_t *b = arg;
    b->n_members++;
    const av_route_t *rt = b->route;
    for (size_t i = 0, k = 0; i < rt->nsticky; i++) {
        if (rt->sticky[i].kind != AV_STICKY_BODY)
            continue;
        if (av_jscan_key_is(m, rt->sticky[i].path[0])) {
            b->sticky_top[k] = *m; /* the last one wins, as with most parsers */
            b->sticky_found[k] = 1;
        }
        k++;
    }
    if (!av_jscan_key_is(m, "model"))
        return 0;
    if (b->n_model == sizeof(b->model) / sizeof(b->model[0])) {
        b->too_many = 1;
        return 1;
    }
    b->model[b->n_model++] = *m;
    return 0;
}

/* Scans a JSON object body once: its models and the route's body sticky
 * fields. Keyed on the body, not its label: clients often send JSON as form
 * data (curl -d). Returns 0, or -1 after answering 400 for a body that
 * starts as a JSON object and is not one. */
static int scan_body(av_req_t *req, body_scan_t *b)
{
    size_t len = evbuffer_get_length(req->body);
    b->route = req->route;
    if (len == 0)
        return 0;
    const char *text = (const char *)evbuffer_pullup(req->body, -1);
    size_t first = 0;
    while (first < len && (text[first] == ' ' || text[first] == '\t' || text[first] == '\r' || text[first] == '\n'))
        first++;
    if (first == len || text[first] != '{')
        return 0;
    size_t err_off = 0;
    if (av_jscan_object(text, len, on_member, b, &err_off) != 0) {
        req->error = AV_ERR_INVALID_JSON;
        av_req_respond_error(req, 400, "invalid_request_error", "invalid_json",
                             "request body is not valid JSON (error at byte %zu)", err_off);
        return -1;
    }
    if (b->too_many) {
        req->error = AV_ERR_INVALID_JSON;
        av_req_respond_error(req, 400, "invalid_request_error", "invalid_json",
                             "request body repeats \"model\" too often");
        return -1;
    }
    b->text = text;
    b->len = len;
    b->first = first;
    if (b->n_model > 0) {
        const av_jmember_t *m = &b->model[b->n_model - 1]; /* the one most parsers keep */
        if (m->type == '"') {
            char *s = av_arena_alloc(req->arena, m->val_len);
            if (av_jscan_unescape(m->val + 1, m->val_len - 2, s) >= 0)
                req->client_model = s;
        }
    }
    req->model = req->client_model;
    return 0;
}

typedef struct {
    const char *name;
    av_jmember_t found;
    int hit;
} find_t;

static int on_find(void *arg, const av_jmember_t *m)
{
    find_t *f = arg;
    if (av_jscan_key_is(m, f->name)) {
        f->found = *m;
        f->hit = 1;
    }
    return 0;
}

/* A sticky key from the body: a string (decoded) or a number, found by
 * walking src's path down from its top-level member. */
static const char *body_key(av_req_t *req, const av_sticky_src_t *src, const av_jmember_t *top, size_t *len)
{
    av_jmember_t m = *top;
    for (size_t d = 1; d < src->npath; d++) {
        if (m.type != '{')
            return NULL;
        find_t f = {.name = src->path[d]};
        size_t err_off;
        if (av_jscan_object(m.val, m.val_len, on_find, &f, &err_off) != 0 || !f.hit)
            return NULL;
        m = f.found;
    }
    if (m.type == '0') {
        *len = m.val_len;
        return m.val;
    }
    if (m.type != '"')
        return NULL;
    char *s = av_arena_alloc(req->arena, m.val_len);
    long n = av_jscan_unescape(m.val + 1, m.val_len - 2, s);
    if (n <= 0)
        return NULL;
    *len = (size_t)n;
    return s;
}

/* Puts the variant's model in the scanned JSON body, in place. */
static void rewrite_model(av_req_t *req, const body_scan_t *b)
{
    const char *want = req->variant->model;
    if (b->text == NULL || want == NULL ||
        (req->client_model != NULL && strcmp(want, req->client_model) == 0 && b->n_model == 1))
        return;
    const char *text = b->text;
    struct evbuffer *nb = evbuffer_new();
    if (nb == NULL)
        av_oom();
    size_t at = 0;
    if (b->n_model == 0) {
        at = b->first + 1;
        evbuffer_add(nb, text, at);
        evbuffer_add(nb, "\"model\":", 8);
        av_json_str(nb, want, strlen(want));
        if (b->n_members > 0)
            evbuffer_add(nb, ",", 1);
    }
    for (size_t i = 0; i < b->n_model; i++) {
        size_t vat = (size_t)(b->model[i].val - text);
        evbuffer_add(nb, text + at, vat - at);
        av_json_str(nb, want, strlen(want));
        at = vat + b->model[i].val_len;
    }
    evbuffer_add(nb, text + at, b->len - at);
    evbuffer_drain(req->body, b->len);
    evbuffer_add_buffer(req->body, nb);
    evbuffer_free(nb);
    req->model = want;
}

void av_req_run(av_req_t *req)
{
    req->ran = 1;
    req->worker->stats.requests++;
    req->worker->stats.active_requests++;
    req->bytes_in = evbuffer_get_length(req->body);
    const av_route_t *route = av_route_match(req->cfg, req);
    if (route == NULL) {
        av_req_respond_error(req, 404, "invalid_request_error", "route_not_found", "no route matches %s %.*s",
                             req->method_str, (int)req->target_len, req->target);
        return;
    }
    req->route = route;
    body_scan_t b = {0};
    if (scan_body(req, &b) != 0)
        return;
    const char *keys[AV_STICKY_MAX] = {0};
    size_t key_lens[AV_STICKY_MAX] = {0};
    for (size_t i = 0, k = 0; i < route->nsticky; i++) {
        if (route->sticky[i].kind != AV_STICKY_BODY)
            continue;
        if (b.sticky_found[k])
            keys[k] = body_key(req, &route->sticky[i], &b.sticky_top[k], &key_lens[k]);
        k++;
    }
    char why[512];
    int status = av_split_choose(req, keys, key_lens, why, sizeof(why));
    if (status != 0) {
        av_req_respond_error(req, status, "invalid_request_error",
                             status == 403 ? "override_forbidden" : "unknown_variant", "%s", why);
        return;
    }
    rewrite_model(req, &b);
    if (req->variant->backend->protocol == AV_PROTO_HTTP1) { /* HTTP/2 sends fields and req->body */
        req->backend_out = evbuffer_new();
        av_arena_on_free(req->arena, free_evbuffer, req->backend_out);
        size_t blen = evbuffer_get_length(req->body);
        av_headers_backend_request(req->backend_out, req, req->variant->backend, blen);
        evbuffer_add_buffer(req->backend_out, req->body);
    }
    av_upstream_send(req);
}

void av_req_client_gone(av_req_t *req)
{
    req->client_gone = 1;
    if (req->up != NULL || req->up2 != NULL || req->waiting)
        av_upstream_cancel(req);
    if (!req->finished && req->ran) {
        req->error = AV_ERR_CLIENT_ABORT;
        req->status = 499;
        req->t_end_us = av_now_us();
        kpi_write(req);
    }
}

void av_req_client_drained(av_req_t *req)
{
    if (req->up != NULL || req->up2 != NULL)
        av_upstream_resume(req);
}

void av_req_backend_head(av_req_t *req, int status, const av_headers_t *hdrs, int64_t content_length)
{
    req->status = status;
    req->t_head_us = av_now_us();
    av_headers_t out = {0};
    for (size_t i = 0; i < hdrs->n; i++) {
        const av_header_t *h = &hdrs->v[i];
        if (!av_header_forward_response(hdrs, h))
            continue;
        if (av_streq_ci(h->name, h->name_len, "content-type") && h->value_len >= 17 &&
            strncasecmp(h->value, "text/event-stream", 17) == 0)
            req->stream = 1;
        av_headers_push(req->arena, &out, h); /* strings already live in the arena */
    }
    add_variant_header(req, &out);
    req->head_sent = 1;
    req->client->respond_head(req, status, &out, req->stream ? -1 : content_length);
}

void av_req_backend_body(av_req_t *req, const char *data, size_t len)
{
    if (req->t_first_byte_us == 0)
        req->t_first_byte_us = av_now_us();
    req->bytes_out += len;
    req->client->respond_body(req, data, len);
}

void av_req_backend_end(av_req_t *req)
{
    req->finished = 1;
    req->t_end_us = av_now_us();
    kpi_write(req);
    req->client->respond_end(req); /* may free req */
}

void av_req_backend_error(av_req_t *req, const char *err)
{
    req->error = err;
    const char *name = req->variant->backend->name;
    AV_INFO("request %s: backend %s: %s", req->id, name, err);
    if (!req->head_sent) {
        if (err == AV_ERR_CONNECT)
            av_req_respond_error(req, 502, "server_error", err, "backend %s is unreachable", name);
        else if (err == AV_ERR_TLS)
            av_req_respond_error(req, 502, "server_error", err,
                                 "the TLS handshake with backend %s failed (its certificate was not accepted, "
                                 "or it does not speak TLS); the gateway's log has the reason", name);
        else if (err == AV_ERR_BUSY)
            av_req_respond_error(req, 503, "server_error", err,
                                 "backend %s is at max_connections and no connection freed in time", name);
        else if (err == AV_ERR_CONNECT_TIMEOUT || err == AV_ERR_FIRST_BYTE_TIMEOUT ||
                 err == AV_ERR_READ_TIMEOUT)
            av_req_respond_error(req, 504, "server_error", err, "backend %s did not answer in time (%s)", name,
                                 err);
        else
            av_req_respond_error(req, 502, "server_error", err, "backend %s failed: %s", name, err);
        return;
    }
    req->finished = 1;
    req->t_end_us = av_now_us();
    kpi_write(req);
    req->client->respond_abort(req); /* may free req */
}
