/* shadow.c: copies of requests for a route's shadow variant. A copy owns
 * everything it uses (headers, body, its request id with ":shadow"), starts
 * from the event loop after the original went out, uses its backend's
 * separate "#shadow" pool, reads its answer to the end and drops it. The
 * pair (original and copy) is compared when both are over. */
#include "shadow.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "av.h"
#include "config.h"
#include "headers.h"
#include "jsonw.h"
#include "kpilog.h"
#include "log.h"
#include "usage.h"
#include "req.h"
#include "split.h"
#include "loop.h"

static const char ERR_SHADOW_CANCELLED[] = "shadow_cancelled";

typedef struct {
    int done;
    char variant[64];
    char request_id[144];
    int status;
    int64_t latency_us, ttft_us;
    const char *error;     /* a constant */
    size_t chars;
    uint64_t hash;
    int known;             /* the text was read whole */
    int64_t input_tokens, output_tokens;
    int estimated;
} side_t;

struct av_shadow_pair_s {
    int refs, compare;
    char route[64];
    side_t side[2]; /* 0: the original, 1: the copy */
};

/* ---- the copy's client: nobody ---- */

static void null_head(av_req_t *req, int status, const av_headers_t *h, int64_t clen)
{
    (void)req;
    (void)status;
    (void)h;
    (void)clen;
}

static void null_body(av_req_t *req, const char *data, size_t len)
{
    (void)req;
    (void)data;
    (void)len;
}

static void null_end(av_req_t *req)
{
    av_req_free(req); /* the answer is read to the end and dropped */
}

static size_t null_pending(av_req_t *req)
{
    (void)req;
    return 0; /* never slows the shadow backend: its bytes go nowhere */
}

static void null_flush(av_req_t *req)
{
    (void)req;
}

static const av_client_ops_t shadow_ops = {
    .respond_head = null_head,
    .respond_body = null_body,
    .respond_end = null_end,
    .respond_abort = null_end,
    .pending = null_pending,
    .flush = null_flush,
};

/* ---- starting a copy ---- */

static void free_event(void *p)
{
    event_free(p);
}

static void start_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    av_req_run_shadow(arg);
}

void av_shadow_maybe(av_req_t *req)
{
    const av_route_t *rt = req->route;
    av_worker_t *w = req->worker;
    if (rt->shadow_variant_name == NULL || req->variant == &rt->variants[rt->shadow_variant] || w->draining)
        return;
    if (rt->shadow_percent < 100 && (int64_t)(av_worker_random(w) % 100) >= rt->shadow_percent)
        return;
    if (rt->split != NULL &&
        (!av_split_shadow_budget_ok(rt->split, rt->shadow_budget_tokens, rt->shadow_budget_nano) ||
         !av_split_shadow_acquire(rt->split, rt->shadow_max_in_flight)))
        return; /* counted as over budget, or dropped */
    av_shadow_pair_t *pair = av_calloc(1, sizeof(*pair));
    pair->refs = 2;
    pair->compare = rt->shadow_compare;
    snprintf(pair->route, sizeof(pair->route), "%s", rt->name);
    req->pair = pair;

    av_req_t *s = av_req_new(w, &shadow_ops, NULL);
    av_arena_t *a = s->arena;
    s->shadow = 1;
    s->pair = pair;
    s->method = req->method;
    s->method_str = av_arena_strndup(a, req->method_str, strlen(req->method_str));
    s->target = av_arena_strndup(a, req->target, req->target_len);
    s->target_len = req->target_len;
    s->host = req->host ? av_arena_strndup(a, req->host, strlen(req->host)) : NULL;
    s->http_major = req->http_major;
    s->http_minor = req->http_minor;
    for (size_t i = 0; i < req->headers.n; i++) {
        const av_header_t *h = &req->headers.v[i];
        if (av_streq_ci(h->name, h->name_len, "x-request-id"))
            continue; /* the copy has its own */
        av_headers_add(a, &s->headers, h->name, h->name_len, h->value, h->value_len);
    }
    evbuffer_add(s->body, evbuffer_pullup(req->body, -1), evbuffer_get_length(req->body));
    memcpy(s->client_ip, req->client_ip, sizeof(s->client_ip));
    memcpy(s->real_ip, req->real_ip, sizeof(s->real_ip));
    s->tls = req->tls;
    size_t idlen = strnlen(req->id, 128); /* ids are at most 128: ":shadow" fits */
    memcpy(s->id, req->id, idlen);
    memcpy(s->id + idlen, ":shadow", 8);
    s->route = rt;
    s->variant = &rt->variants[rt->shadow_variant];
    s->assign = AV_ASSIGN_SHADOW;
    TAILQ_INSERT_TAIL(&w->shadows, s, shadow_link);
    w->stats.client_conns++; /* a drain waits for copies as for connections */
    /* from the loop: the original goes out first, whatever the copy meets */
    struct event *ev = evtimer_new(w->base, start_cb, s);
    av_arena_on_free(a, free_event, ev);
    struct timeval zero = {0, 0};
    evtimer_add(ev, &zero);
}

/* ---- ending ---- */

static void side_json(struct evbuffer *b, const side_t *sd)
{
    evbuffer_add_printf(b, "{\"request_id\":");
    av_json_str(b, sd->request_id, strlen(sd->request_id));
    evbuffer_add_printf(b, ",\"variant\":");
    av_json_str(b, sd->variant, strlen(sd->variant));
    evbuffer_add_printf(b, ",\"status\":%d,\"latency_ms\":%.3f,\"ttft_ms\":", sd->status, sd->latency_us / 1000.0);
    if (sd->ttft_us >= 0)
        evbuffer_add_printf(b, "%.3f", sd->ttft_us / 1000.0);
    else
        evbuffer_add(b, "null", 4);
    evbuffer_add_printf(b, ",\"input_tokens\":%lld,\"output_tokens\":%lld,\"usage_estimated\":%s",
                        (long long)sd->input_tokens, (long long)sd->output_tokens, sd->estimated ? "true" : "false");
    evbuffer_add_printf(b, ",\"output_bytes\":");
    if (sd->known)
        evbuffer_add_printf(b, "%zu", sd->chars);
    else
        evbuffer_add(b, "null", 4);
    evbuffer_add_printf(b, ",\"error\":");
    if (sd->error != NULL)
        av_json_str(b, sd->error, strlen(sd->error));
    else
        evbuffer_add(b, "null", 4);
    evbuffer_add(b, "}", 1);
}

/* {"time", "type":"shadow_compare", "route", "primary":{...}, "shadow":{...}, "same_output"} */
static void compare_line(av_worker_t *w, const av_shadow_pair_t *p)
{
    struct evbuffer *b = evbuffer_new();
    char ts[32];
    uint64_t now = av_wall_us();
    time_t sec = (time_t)(now / 1000000u);
    struct tm tm;
    gmtime_r(&sec, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    evbuffer_add_printf(b, "{\"time\":\"%s.%03uZ\",\"type\":\"shadow_compare\",\"route\":", ts,
                        (unsigned)(now / 1000u % 1000u));
    av_json_str(b, p->route, strlen(p->route));
    evbuffer_add_printf(b, ",\"primary\":");
    side_json(b, &p->side[0]);
    evbuffer_add_printf(b, ",\"shadow\":");
    side_json(b, &p->side[1]);
    const side_t *x = &p->side[0], *y = &p->side[1];
    if (x->known && y->known && x->error == NULL && y->error == NULL)
        evbuffer_add_printf(b, ",\"same_output\":%s}\n", x->chars == y->chars && x->hash == y->hash ? "true" : "false");
    else
        evbuffer_add_printf(b, ",\"same_output\":null}\n");
    size_t n = evbuffer_get_length(b);
    av_kpi_queue_raw(w, (const char *)evbuffer_pullup(b, -1), n);
    evbuffer_free(b);
}

void av_shadow_done(av_req_t *req)
{
    av_shadow_pair_t *p = req->pair;
    if (p == NULL)
        return;
    req->pair = NULL;
    side_t *sd = &p->side[req->shadow ? 1 : 0];
    sd->done = 1;
    snprintf(sd->variant, sizeof(sd->variant), "%s", req->variant ? req->variant->name : "");
    snprintf(sd->request_id, sizeof(sd->request_id), "%s", req->id);
    sd->status = req->status;
    uint64_t end = req->t_end_us ? req->t_end_us : av_now_us();
    sd->latency_us = (int64_t)(end - req->t_start_us);
    sd->ttft_us = req->t_first_byte_us ? (int64_t)(req->t_first_byte_us - req->t_start_us) : -1;
    sd->error = req->error;
    sd->input_tokens = sd->output_tokens = 0;
    if (req->usage != NULL) {
        av_usage_end(req->usage, av_now_us(), NULL, NULL);
        sd->known = !req->usage->incomplete && req->finished;
        sd->chars = req->usage->chars;
        sd->hash = req->usage->hash;
        av_tokens_t t;
        av_usage_tokens(req->usage, req->bytes_in, &t);
        sd->input_tokens = t.input;
        sd->output_tokens = t.output;
        sd->estimated = t.estimated;
    }
    av_worker_t *w = req->worker;
    if (req->shadow) {
        TAILQ_REMOVE(&w->shadows, req, shadow_link);
        if (req->route->split != NULL) {
            av_split_shadow_release(req->route->split);
            if (req->usage != NULL) { /* what the copy spent counts against the minute's budget */
                av_tokens_t t;
                av_req_tokens(req, &t);
                const av_price_t *price = av_config_price(req->cfg, req->model);
                av_split_shadow_spent(req->route->split, t.input + t.output,
                                      price ? av_usage_cost_nano(&t, price) : 0);
            }
        }
    }
    if (--p->refs == 0) {
        if (p->compare)
            compare_line(w, p);
        free(p);
    }
    if (req->shadow)
        av_worker_conn_closed(w);
}

void av_shadow_close_all(av_worker_t *w)
{
    av_req_t *s;
    while ((s = TAILQ_FIRST(&w->shadows)) != NULL) {
        if (s->error == NULL)
            s->error = ERR_SHADOW_CANCELLED;
        av_req_free(s);
    }
}
