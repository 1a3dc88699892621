/* req.c: one exchange from complete request to KPI line: route, variant, body
 * rewrite, backend request, response relay and the gateway's own errors. */
#include "req.h"

#include <cjson/cJSON.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <http_parser.h>
#include <stdio.h>
#include <string.h>

#include "arena.h"
#include "av.h"
#include "config.h"
#include "feedback.h"
#include "headers.h"
#include "jscan.h"
#include "jsonw.h"
#include "kpilog.h"
#include "log.h"
#include "metrics.h"
#include "policy.h"
#include "reqbody.h"
#include "shadow.h"
#include "usage.h"
#include "router.h"
#include "split.h"
#include "upstream.h"
#include "loop.h"

#define ADD_LIT(buf, lit) evbuffer_add((buf), (lit), sizeof(lit) - 1)


static void free_evbuffer(void *p)
{
    evbuffer_free(p);
}

static void free_usage(void *p)
{
    av_usage_free(p);
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

void av_req_tokens(const av_req_t *req, av_tokens_t *t)
{
    av_usage_tokens(req->usage, req->bytes_in, t);
    const av_usage_t *u = req->usage;
    if (req->backend_status >= 400 && (!u->reported || u->untrusted)) /* providers bill no failure they did not count */
        *t = (av_tokens_t){0, 0, 0, 0, 0, 0};
}

static void kpi_write(av_req_t *req)
{
    if (req->logged || !req->ran)
        return;
    req->logged = 1;
    uint64_t end = req->t_end_us ? req->t_end_us : av_now_us();
    if (req->route != NULL && req->route->npolicies > 0 && !req->shadow) {
        if (req->t_end_us == 0)
            req->t_end_us = end;
        av_policy_complete(req);
    }
    size_t path_len = strcspn(req->target, "?"); /* the query stays out of the log */
    if (path_len > req->target_len)
        path_len = req->target_len;
    av_tokens_t tok = {-1, -1, -1, -1, -1, 0};
    int64_t cost = -1, ttft = -1, gap = -1, tps = -1;
    const av_usage_t *u = req->usage;
    if (u != NULL) {
        av_usage_end(req->usage, end, NULL, NULL); /* counted up to here, if the answer was cut */
        av_req_tokens(req, &tok);
        if (u->untrusted && req->backend_status < 400)
            AV_INFO("request %s: backend %s reported %s as a number no count can be (negative, fractional or "
                    "past 2^53); the tokens are estimated", req->id,
                    req->variant ? req->variant->backend->name : "-", u->untrusted_key);
        const av_price_t *price = av_config_price(req->cfg, req->model);
        if (price != NULL)
            cost = av_usage_cost_nano(&tok, price);
        else if (!req->shadow && tok.input + tok.output > 0)
            req->worker->stats.unpriced++;
        if (u->first_token_us)
            ttft = (int64_t)(u->first_token_us - req->t_start_us);
        gap = av_usage_gap_p50_us(u);
        uint64_t span = u->last_token_us - u->first_token_us;
        if (u->token_events > 1 && span > 0)
            tps = (int64_t)((double)tok.output * 1e6 * 1000.0 / (double)span); /* thousandths of a token per second */
    }
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
        .prompt_hash = req->prompt_hash,
        .shadow = req->shadow,
        .method = req->method_str,
        .path = req->target,
        .path_len = path_len,
        .status = req->status,
        .stream = req->stream,
        .latency_us = (int64_t)(end - req->t_start_us),
        .first_byte_us = req->t_first_byte_us ? (int64_t)(req->t_first_byte_us - req->t_start_us) : -1,
        .ttft_us = ttft,
        .input_tokens = u ? tok.input : -1,
        .output_tokens = u ? tok.output : -1,
        .cached_tokens = u ? tok.cached : -1,
        .cache_write_tokens = u ? tok.cache_write : -1,
        .reasoning_tokens = u ? tok.reasoning : -1,
        .usage_estimated = u ? tok.estimated : 0,
        .cost_nano = cost,
        .inter_token_p50_us = gap,
        .output_tps_milli = tps,
        .finish_reason = u && u->finish[0] ? u->finish : NULL,
        .tool_calls = u ? u->tool_calls : -1,
        .bytes_in = req->bytes_in,
        .bytes_out = req->bytes_out,
        .error = req->error,
        .policy_errors = av_policy_errors(req),
    };
    r.nverdicts = av_policy_verdicts(req, &r.verdicts);
    av_kpi_queue(req->worker, &r);
    if (req->route != NULL && req->variant != NULL && req->route->split != NULL && !req->shadow)
        av_feedback_remember(req->id, strlen(req->id), req->route->split,
                             (size_t)(req->variant - req->route->variants));
    if (r.nverdicts > 0 && req->worker->audit != NULL) { /* each verdict is an audit event */
        struct evbuffer *b = evbuffer_new();
        for (size_t i = 0; i < r.nverdicts; i++) {
            av_audit_begin(b, "policy");
            av_audit_str(b, "policy", r.verdicts[i].policy);
            av_audit_str(b, "action", r.verdicts[i].action);
            av_audit_str(b, "rule", r.verdicts[i].rule);
            av_audit_str(b, "route", r.route);
            av_audit_str(b, "variant", r.variant);
            av_audit_str(b, "request_id", req->id);
            evbuffer_add_printf(b, ",\"generation\":%llu", (unsigned long long)r.generation);
            av_audit_end(b);
        }
        av_kpilog_append(req->worker->audit, b, r.nverdicts);
        evbuffer_free(b);
    }
    if (req->route != NULL && req->variant != NULL && req->route->split != NULL) {
        av_metrics_rec_t mr = {
            .shadow = req->shadow,
            .status = req->status, .error = req->error,
            .override = req->assign == AV_ASSIGN_OVERRIDE || req->assign == AV_ASSIGN_POLICY,
            .latency_us = r.latency_us, .ttft_us = ttft, .itl_us = gap,
            .input = tok.input, .output = tok.output, .cached = tok.cached, .cache_write = tok.cache_write,
            .reasoning = tok.reasoning, .cost_nano = cost,
            .blocked = req->error != NULL && strncmp(req->error, "policy_", 7) == 0,
        };
        av_metrics_record(av_split_metrics(req->route->split), (size_t)(req->variant - req->route->variants),
                          req->worker->id, &mr, av_wall_us());
    }
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
    if (req->pair != NULL)
        av_shadow_done(req);
    if (req->ran)
        req->worker->stats.active_requests--;
    av_policy_done(req); /* its VM goes with the config */
    av_config_unref(req->cfg);
    av_arena_free(req->arena);
}

void av_error_json(struct evbuffer *out, const char *type, const char *code, const char *message,
                   const char *request_id)
{
    /* written by the one JSON string writer: what a client sent (a path, a
     * model) comes back escaped and as valid UTF-8 */
    ADD_LIT(out, "{\"error\":{\"message\":");
    av_json_str(out, message, strlen(message));
    ADD_LIT(out, ",\"type\":");
    av_json_str(out, type, strlen(type));
    ADD_LIT(out, ",\"code\":");
    av_json_str(out, code, strlen(code));
    if (request_id != NULL) {
        ADD_LIT(out, ",\"request_id\":");
        av_json_str(out, request_id, strlen(request_id));
    }
    ADD_LIT(out, "}}\n");
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

/* Sends a whole JSON answer made by the gateway (an error, a feedback receipt): head and body; frees body. */
static void send_json(av_req_t *req, int status, struct evbuffer *body)
{
    size_t len = evbuffer_get_length(body);
    av_headers_t h = {0};
    av_headers_add(req->arena, &h, "Content-Type", 12, "application/json", 16);
    add_variant_header(req, &h);
    if (av_body_dialect(req) == AV_DIALECT_ANTHROPIC) /* where the Anthropic SDK reads it (err.requestID) */
        av_headers_add(req->arena, &h, "request-id", 10, req->id, strlen(req->id));
    req->status = status;
    if (req->t_head_us == 0)
        req->t_head_us = av_now_us();
    req->head_sent = 1;
    req->client->respond_head(req, status, &h, (int64_t)len);
    req->client->respond_body(req, (const char *)evbuffer_pullup(body, -1), len);
    req->bytes_out += len;
    evbuffer_free(body);
}

/* The answer is complete: its KPI line, then the client side's end (which may free req). */
static void finish(av_req_t *req)
{
    req->finished = 1;
    req->t_end_us = av_now_us();
    kpi_write(req);
    req->client->respond_end(req);
}

/* Anthropic's error type for a status (its API's own list). */
static const char *anthropic_error_type(int status)
{
    switch (status) {
    case 401:
        return "authentication_error";
    case 403:
        return "permission_error";
    case 404:
        return "not_found_error";
    case 413:
        return "request_too_large";
    case 429:
        return "rate_limit_error";
    case 503:
    case 529:
        return "overloaded_error";
    default:
        return status >= 500 ? "api_error" : "invalid_request_error";
    }
}

/* {"type":"error","error":{"type":...,"message":...}} without the newline. */
static void anthropic_error(struct evbuffer *out, int status, const char *message, const char *request_id)
{
    const char *type = anthropic_error_type(status);
    evbuffer_add_printf(out, "{\"type\":\"error\",\"error\":{\"type\":\"%s\",\"message\":", type);
    av_json_str(out, message, strlen(message));
    ADD_LIT(out, "}");
    if (request_id != NULL) {
        ADD_LIT(out, ",\"request_id\":");
        av_json_str(out, request_id, strlen(request_id));
    }
    ADD_LIT(out, "}");
}

/* An error body in the client's dialect. */
static struct evbuffer *error_body(const av_req_t *req, int status, const char *type, const char *code,
                                   const char *message)
{
    struct evbuffer *body = evbuffer_new();
    if (av_body_dialect(req) == AV_DIALECT_ANTHROPIC) {
        anthropic_error(body, status, message, req->id);
        ADD_LIT(body, "\n");
    } else {
        av_error_json(body, type, code, message, req->id);
    }
    return body;
}

void av_req_respond_error(av_req_t *req, int status, const char *type, const char *code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    send_json(req, status, error_body(req, status, type, code, msg));
    finish(req);
}

void av_req_error_event(const av_req_t *req, struct evbuffer *out)
{
    const char *code = req->error ? req->error : "backend_closed";
    static const char msg[] = "the backend ended the stream before it was complete";
    switch (av_body_dialect(req)) {
    case AV_DIALECT_ANTHROPIC:
        ADD_LIT(out, "event: error\ndata: ");
        anthropic_error(out, 502, msg, req->id);
        ADD_LIT(out, "\n\n");
        return;
    case AV_DIALECT_RESPONSES:
        ADD_LIT(out, "event: error\ndata: {\"type\":\"error\",\"code\":");
        av_json_str(out, code, strlen(code));
        ADD_LIT(out, ",\"message\":");
        av_json_str(out, msg, sizeof(msg) - 1);
        ADD_LIT(out, ",\"param\":null}\n\n");
        return;
    default:
        ADD_LIT(out, "data: ");
        av_error_json(out, "server_error", code, msg, req->id); /* ends the line */
        ADD_LIT(out, "\n");                               /* the blank line ends the event */
    }
}

/* A policy's deny, worded as the client's dialect words errors. */
static struct evbuffer *policy_error_body(av_req_t *req, int status, const char *code, const char *message)
{
    return error_body(req, status, status >= 500 ? "server_error" : "invalid_request_error", code, message);
}

/* Answers a request a policy denied in on_request. */
static void respond_policy_denial(av_req_t *req)
{
    int status;
    const char *code, *message;
    av_policy_denial(req, &status, &code, &message);
    req->error = "policy_denied";
    send_json(req, status, policy_error_body(req, status, code, message));
    finish(req);
}

/* The variant's edits to the body, the backend request, and off it goes. */
static void send_to_backend(av_req_t *req, const av_body_t *b)
{
    if (av_body_rewrite(req, b) != 0) {
        req->error = AV_ERR_INVALID_JSON;
        av_req_respond_error(req, 400, "invalid_request_error", "invalid_json",
                             "request body repeats the members this route sets more than %d times",
                             AV_BODY_MAX_PARAMS);
        return;
    }
    if (req->variant->backend->protocol == AV_PROTO_HTTP1) { /* HTTP/2 sends fields and req->body */
        req->backend_out = evbuffer_new();
        av_arena_on_free(req->arena, free_evbuffer, req->backend_out);
        size_t blen = evbuffer_get_length(req->body);
        av_headers_backend_request(req->backend_out, req, req->variant->backend, blen);
        evbuffer_add_buffer(req->backend_out, req->body);
    }
    av_upstream_send(req);
}

/* POST /v1/feedback {"request_id": "...", "score": 0.8} or {"request_id":
 * "...", "thumbs": "up"}: the score counts for the variant that served that
 * request (its KPI windows, and a feedback line in the KPI log). */
static void feedback(av_req_t *req)
{
    size_t n = evbuffer_get_length(req->body);
    cJSON *root = cJSON_ParseWithLength((const char *)evbuffer_pullup(req->body, -1), n);
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(root, "request_id");
    const cJSON *score = cJSON_GetObjectItemCaseSensitive(root, "score");
    const cJSON *thumbs = cJSON_GetObjectItemCaseSensitive(root, "thumbs");
    double v = -1;
    if (cJSON_IsNumber(score) && score->valuedouble >= 0 && score->valuedouble <= 1)
        v = score->valuedouble;
    else if (cJSON_IsString(thumbs) && strcmp(thumbs->valuestring, "up") == 0)
        v = 1;
    else if (cJSON_IsString(thumbs) && strcmp(thumbs->valuestring, "down") == 0)
        v = 0;
    if (!cJSON_IsString(id) || v < 0) {
        cJSON_Delete(root);
        av_req_respond_error(req, 400, "invalid_request_error", "invalid_feedback", "%s",
                             "expected {\"request_id\": \"...\", \"score\": 0 to 1} or {\"request_id\": \"...\", "
                             "\"thumbs\": \"up\" or \"down\"}");
        return;
    }
    av_split_state_t *split;
    size_t variant;
    if (av_feedback_lookup(id->valuestring, strlen(id->valuestring), &split, &variant) != 0) {
        av_req_respond_error(req, 404, "invalid_request_error", "unknown_request_id",
                             "request %.128s is not among the recent requests this gateway served (too old, from "
                             "before a restart, or never seen)", id->valuestring);
        cJSON_Delete(root);
        return;
    }
    av_metrics_feedback(av_split_metrics(split), variant, req->worker->id, v);
    const char *route = av_split_route_name(split), *name = av_split_variant_name(split, variant);
    struct evbuffer *line = evbuffer_new();
    av_audit_begin(line, "feedback");
    av_audit_str(line, "request_id", id->valuestring);
    av_audit_str(line, "route", route);
    av_audit_str(line, "variant", name);
    evbuffer_add_printf(line, ",\"score\":%.4g", v);
    av_audit_end(line);
    av_kpilog_append(req->worker->kpilog, line, 1);
    evbuffer_free(line);
    cJSON_Delete(root);
    struct evbuffer *body = evbuffer_new();
    evbuffer_add_printf(body, "{\"status\":\"recorded\",\"route\":");
    av_json_str(body, route, strlen(route));
    evbuffer_add_printf(body, ",\"variant\":");
    av_json_str(body, name, strlen(name));
    evbuffer_add_printf(body, ",\"score\":%.4g}\n", v);
    req->logged = 1; /* the feedback line stands for it */
    send_json(req, 200, body);
    finish(req);
}

void av_req_run(av_req_t *req)
{
    req->ran = 1;
    req->worker->stats.requests++;
    req->worker->stats.active_requests++;
    req->bytes_in = evbuffer_get_length(req->body);
    /* routed, logged and sent as the path it names: /v1/../admin is /admin
     * (in place: both client sides copy the target into the request's arena) */
    if (av_target_normalize((char *)req->target, &req->target_len) != 0) {
        av_req_respond_error(req, 400, "invalid_request_error", "bad_request_target",
                             "the request path climbs above the root");
        return;
    }
    const char *fp = req->cfg->feedback_path;
    if (fp[0] != '\0' && req->method == HTTP_POST && strlen(fp) == strcspn(req->target, "?") &&
        strncmp(req->target, fp, strlen(fp)) == 0) {
        feedback(req);
        return;
    }
    const av_route_t *route = av_route_match(req->cfg, req);
    if (route == NULL) {
        av_req_respond_error(req, 404, "invalid_request_error", "route_not_found", "no route matches %s %.*s",
                             req->method_str, (int)req->target_len, req->target);
        return;
    }
    req->route = route;
    if (route->npolicies > 0 && av_policy_request(req) != 0) {
        /* counted for the variant the split gives it (by its header keys),
         * so a route's books and block rate include what was denied */
        char why[256];
        size_t none[AV_STICKY_MAX] = {0};
        if (route->split != NULL && av_split_choose(req, NULL, none, why, sizeof(why)) != 0)
            req->variant = NULL;
        respond_policy_denial(req);
        return;
    }
    av_body_t b = {0};
    if (av_body_scan(req, &b) != 0) {
        av_req_respond_error(req, 400, "invalid_request_error", "invalid_json", "%s", b.error);
        return;
    }
    const char *keys[AV_STICKY_MAX] = {0};
    size_t key_lens[AV_STICKY_MAX] = {0};
    for (size_t k = 0; k < route->nsticky_body; k++)
        keys[k] = av_body_sticky_key(req, &b, k, &key_lens[k]);
    char why[512];
    int status = av_split_choose(req, keys, key_lens, why, sizeof(why));
    if (status != 0) {
        av_req_respond_error(req, status, "invalid_request_error",
                             status == 403 ? "override_forbidden" : "unknown_variant", "%s", why);
        return;
    }
    av_shadow_maybe(req); /* copies the body as the client sent it */
    send_to_backend(req, &b);
}

void av_req_run_shadow(av_req_t *req)
{
    req->ran = 1;
    req->worker->stats.requests++;
    req->worker->stats.active_requests++;
    req->bytes_in = evbuffer_get_length(req->body);
    av_body_t b = {0};
    if (av_body_scan(req, &b) != 0) {
        av_req_respond_error(req, 400, "invalid_request_error", "invalid_json", "%s", b.error);
        return;
    }
    send_to_backend(req, &b);
}

void av_req_client_gone(av_req_t *req)
{
    req->client_gone = 1;
    if (req->up != NULL || req->up2 != NULL || req->waiting)
        av_upstream_cancel(req);
    if (!req->finished && req->ran) {
        if (req->error == NULL) { /* what the gateway did first decides: a policy's stop stays a stop */
            req->error = AV_ERR_CLIENT_ABORT;
            req->status = 499;
        }
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
    req->backend_status = status;
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
    if (req->route->npolicies > 0 && !req->shadow && av_policy_response(req, &out) != 0) {
        /* the client gets the policy's error now; the backend's answer is read and dropped */
        int st;
        const char *code, *message;
        av_policy_denial(req, &st, &code, &message);
        req->error = "policy_denied";
        req->blocked = 1;
        send_json(req, st, policy_error_body(req, st, code, message)); /* ended with the backend's answer */
        return;
    }
    req->head_sent = 1;
    if (av_body_counts_only(req)) { /* a count of tokens is no completion: nothing to read or bill */
        req->client->respond_head(req, status, &out, content_length);
        return;
    }
    req->usage = av_arena_calloc(req->arena, sizeof(*req->usage));
    av_usage_init(req->usage, av_body_dialect(req), req->stream, req->strip_usage);
    av_arena_on_free(req->arena, free_usage, req->usage);
    req->usage->want_text = req->pair != NULL; /* a shadow pair compares the answers' text */
    if (req->stream && av_policy_wants_chunks(req)) {
        req->chunk_in = evbuffer_new();
        av_arena_on_free(req->arena, free_evbuffer, req->chunk_in);
    }
    /* a stripped usage chunk changes the length: the client side frames it */
    req->client->respond_head(req, status, &out, req->stream || req->usage->strip ? -1 : content_length);
}

static void send_client(av_req_t *req, const char *data, size_t len)
{
    req->bytes_out += len;
    req->client->respond_body(req, data, len);
}

/* After r:stop(): the backend is let go and the client's answer ended,
 * from the loop (not inside the backend's read). */
static void stop_cb(evutil_socket_t fd, short what, void *arg)
{
    av_req_t *req = arg;
    if (req->finished)
        return;
    if (req->up != NULL || req->up2 != NULL || req->waiting)
        av_upstream_cancel(req);
    req->finished = 1;
    req->t_end_us = av_now_us();
    kpi_write(req);
    req->client->respond_end(req); /* may free req */
}

static void free_event(void *p)
{
    event_free(p);
}

/* Whole events from chunk_in through the route's on_chunk policies; what
 * they let through goes to the client in one piece per read. */
static void chunk_events(av_req_t *req, int last)
{
    struct evbuffer *in = req->chunk_in, *out = evbuffer_new();
    int stop = 0;
    for (;;) {
        size_t n = evbuffer_get_length(in), end = 0;
        if (n == 0)
            break;
        const char *p = (const char *)evbuffer_pullup(in, -1);
        for (const char *nl = memchr(p, '\n', n); nl != NULL && end == 0;
             nl = memchr(nl + 1, '\n', n - (size_t)(nl + 1 - p))) { /* an empty line ends an event */
            size_t i = (size_t)(nl - p);
            if (i + 1 < n && p[i + 1] == '\n')
                end = i + 2;
            else if (i + 2 < n && p[i + 1] == '\r' && p[i + 2] == '\n')
                end = i + 3;
        }
        if (end == 0) {
            if (!last)
                break; /* the rest of the event comes in a later read */
            end = n;
        }
        stop = av_policy_chunk(req, p, end, out);
        evbuffer_drain(in, end);
        if (stop)
            break;
    }
    size_t olen = evbuffer_get_length(out);
    if (olen > 0)
        send_client(req, (const char *)evbuffer_pullup(out, -1), olen);
    evbuffer_free(out);
    if (stop) {
        evbuffer_drain(in, evbuffer_get_length(in));
        req->blocked = 1;
        req->error = "policy_stopped";
        if (!last) {
            req->stop_ev = evtimer_new(req->worker->base, stop_cb, req);
            av_arena_on_free(req->arena, free_event, req->stop_ev);
            struct timeval now = {0, 0};
            evtimer_add(req->stop_ev, &now);
        }
    }
}

/* What the usage reader passes on (strip) goes to the client, through the
 * route's on_chunk policies when it has any. */
/* A backend asked for usage on the client's behalf puts "usage":null last
 * in every chunk (OpenAI documents it); the client did not ask and gets the
 * chunks as they would have been. Whole events come here, so a data line is
 * never cut. Returns the bytes to send: data, or out with those removed. */
static const char *drop_null_usage(const char *data, size_t *len, char **out)
{
    static const char pat[] = ",\"usage\":null}";
    const size_t plen = sizeof(pat) - 1;
    const char *hit = memmem(data, *len, pat, plen);
    if (hit == NULL)
        return data;
    char *o = *out = av_malloc(*len), *w = o;
    const char *p = data, *end = data + *len;
    while (hit != NULL) {
        const char *after = hit + plen;
        int last = after == end || *after == '\n' || *after == '\r'; /* the top level's last member */
        size_t keep = (size_t)(hit - p) + (last ? 0 : plen);
        memcpy(w, p, keep);
        w += keep;
        if (last)
            *w++ = '}';
        p = after;
        hit = memmem(p, (size_t)(end - p), pat, plen);
    }
    memcpy(w, p, (size_t)(end - p));
    w += end - p;
    *len = (size_t)(w - o);
    return o;
}

static void to_client(void *arg, const char *data, size_t len)
{
    av_req_t *req = arg;
    char *filtered = NULL;
    if (req->strip_usage)
        data = drop_null_usage(data, &len, &filtered);
    if (req->chunk_in == NULL) {
        send_client(req, data, len);
        free(filtered);
        return;
    }
    if (req->blocked) {
        free(filtered);
        return;
    }
    evbuffer_add(req->chunk_in, data, len);
    free(filtered);
    chunk_events(req, 0);
}

void av_req_backend_body(av_req_t *req, const char *data, size_t len)
{
    uint64_t now = av_now_us();
    if (req->t_first_byte_us == 0)
        req->t_first_byte_us = now;
    if (req->blocked && req->chunk_in == NULL)
        return;
    if (req->usage == NULL) { /* a count of tokens: passed on as it is */
        send_client(req, data, len);
        return;
    }
    av_usage_feed(req->usage, data, len, now, to_client, req);
    if (!req->usage->strip)
        to_client(req, data, len);
}

void av_req_backend_end(av_req_t *req)
{
    if (req->finished)
        return;
    req->finished = 1;
    req->t_end_us = av_now_us();
    if (req->usage != NULL)
        av_usage_end(req->usage, req->t_end_us, to_client, req);
    if (req->chunk_in != NULL && !req->blocked)
        chunk_events(req, 1); /* a last event without its blank line */
    kpi_write(req);
    req->client->respond_end(req); /* may free req */
}

void av_req_backend_error(av_req_t *req, const char *err)
{
    if (req->blocked) { /* the client has its whole answer: the policy's error */
        av_req_backend_end(req);
        return;
    }
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
    kpi_write(req); /* with what was counted up to the cut */
    req->client->respond_abort(req); /* may free req */
}
