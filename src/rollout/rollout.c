/* rollout.c: the controller's state per route, its once-a-second judgement,
 * weights, persistence, audit lines and admin views. */
#include "rollout.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "av.h"
#include "config.h"
#include "hist.h"
#include "judge.h"
#include "jsonw.h"
#include "kpilog.h"
#include "log.h"
#include "metrics.h"
#include "split.h"
#include "stats.h"

enum { RS_STEP, RS_AWAIT, RS_PAUSED, RS_HOLD, RS_PROMOTED, RS_ROLLED_BACK, RS_SHADOW, RS_N };
static const char *const state_names[RS_N] = {"step", "awaiting_approval", "paused", "holding", "promoted",
                                              "rolled_back", "shadow"};
static const char *const kpi_names[] = {"", "error_rate", "rate_429", "block_rate", "latency", "ttft", "cost",
                                        "feedback", "inter_token", "tokens"};
static const char *const verdict_names[] = {"wait", "ok", "fail", "slo"};

/* The split check: a sequential e-value of the step's request counts
 * (stats.h), so a healthy split pauses at most SRM_ALPHA of its steps
 * however long they run and however often it is read. */
#define SRM_ALPHA 0.001
#define SRM_CONCENTRATION 1000.0 /* the mixture's weight: tuned to shares off by a point or two */

/* What makes a variant what it is: a change of any of it is another
 * candidate (a new rollout) or another baseline (the step starts over). */
typedef struct {
    char backend[200]; /* URL, protocol, and a hash of the backend's extra headers */
    char model[96];
    char prompt[48];   /* the filled prompt's hash and mode, or "none" */
    char params[24];   /* a hash of the params, or "none" */
} ident_t;

typedef struct {
    char route[128], names[64], fingerprint[96]; /* names: "baseline/candidate" */
    const av_route_t *rt;     /* in the current generation */
    ident_t base_id, cand_id;
    int state;
    size_t step;              /* the step running, awaited, paused in */
    uint64_t step_start_us, step_start_wall_us;
    av_arm_t snap_a, snap_b, snap_bs, cur_a, cur_b; /* snap_bs: the candidate's shadow copies */
    av_kpi_result_t results[AV_ROLLOUT_MAX_KPIS];
    double srm_e;             /* the split check's e-value in this step */
    int paused_in_shadow;     /* a pause taken in the shadow stage: no traffic, and resume goes back to it */
    char reason[512];
} ro_t;

struct av_rollouts_s {
    struct event_base *base;
    struct event *timer;
    av_kpilog_t *audit;
    av_config_t *cfg;         /* the generation synced last (a reference) */
    ro_t *ro;
    size_t n;
    int loaded;               /* the state file was read */
    uint64_t (*mono_us)(void), (*wall_us)(void);
};

static uint64_t fnv(uint64_t h, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return (h ^ 0xff) * 0x100000001b3ull; /* a separator: ("ab", "c") is not ("a", "bc") */
}
#define FNV0 0xcbf29ce484222325ull

static void variant_ident(const av_variant_t *v, ident_t *id)
{
    const av_backend_t *b = v->backend;
    uint64_t h = FNV0;
    for (size_t i = 0; b != NULL && i < b->nheaders; i++) {
        h = fnv(h, b->headers[i].name, strlen(b->headers[i].name));
        h = fnv(h, b->headers[i].value, strlen(b->headers[i].value));
    }
    if (b == NULL)
        snprintf(id->backend, sizeof(id->backend), "%s", v->backend_name ? v->backend_name : "?");
    else if (b->nheaders > 0)
        snprintf(id->backend, sizeof(id->backend), "%.150s %s, headers %08llx", b->url, b->protocol_name,
                 (unsigned long long)(h >> 32));
    else
        snprintf(id->backend, sizeof(id->backend), "%.150s %s", b->url, b->protocol_name);
    snprintf(id->model, sizeof(id->model), "%.80s", v->model ? v->model : "the client's");
    if (v->prompt.text != NULL)
        snprintf(id->prompt, sizeof(id->prompt), "%s %s", v->prompt.hash, v->prompt_replace ? "replace" : "prepend");
    else
        snprintf(id->prompt, sizeof(id->prompt), "none");
    h = FNV0;
    for (size_t i = 0; i < v->nparams; i++) {
        h = fnv(h, v->params[i].name, strlen(v->params[i].name));
        h = fnv(h, v->params[i].json, v->params[i].json_len);
    }
    if (v->nparams > 0)
        snprintf(id->params, sizeof(id->params), "%016llx", (unsigned long long)h);
    else
        snprintf(id->params, sizeof(id->params), "none");
}

static uint64_t ident_hash(const ident_t *id)
{
    uint64_t h = fnv(FNV0, id->backend, strlen(id->backend));
    h = fnv(h, id->model, strlen(id->model));
    h = fnv(h, id->prompt, strlen(id->prompt));
    return fnv(h, id->params, strlen(id->params));
}

/* What changed between two identities, in words ("model gpt-a -> gpt-b");
 * "" when nothing did. */
static void ident_diff(const ident_t *was, const ident_t *now, char *out, size_t size)
{
    static const struct {
        const char *name;
        size_t off;
    } parts[] = {{"backend", offsetof(ident_t, backend)}, {"model", offsetof(ident_t, model)},
                 {"system prompt", offsetof(ident_t, prompt)}, {"params", offsetof(ident_t, params)}};
    size_t k = 0;
    out[0] = '\0';
    for (size_t i = 0; i < AV_NELEMS(parts); i++) {
        const char *a = (const char *)was + parts[i].off, *b = (const char *)now + parts[i].off;
        if (strcmp(a, b) == 0 || k >= size)
            continue;
        int w = snprintf(out + k, size - k, "%s%s %s -> %s", k ? ", " : "", parts[i].name, a, b);
        k += w > 0 ? (size_t)w : 0;
    }
}

/* The rollout's identity, as the state file keeps it: the two names and a
 * hash of the candidate's identity. */
static void fingerprint(const av_route_t *rt, const ident_t *cand, char *out, size_t size)
{
    snprintf(out, size, "%s#%016llx", rt->rollout.fingerprint, (unsigned long long)ident_hash(cand));
}

static void snapshot(av_rollouts_t *r, ro_t *o)
{
    const struct av_metrics_s *m = av_split_metrics(o->rt->split);
    av_metrics_arm(m, o->rt->rollout.baseline, &o->snap_a);
    av_metrics_arm(m, o->rt->rollout.candidate, &o->snap_b);
    av_metrics_arm_shadow(m, o->rt->rollout.candidate, &o->snap_bs);
    o->cur_a = o->cur_b = (av_arm_t){0};
    o->step_start_us = r->mono_us();
    o->step_start_wall_us = r->wall_us();
    for (size_t k = 0; k < AV_ROLLOUT_MAX_KPIS; k++)
        o->results[k] = (av_kpi_result_t){.baseline = NAN, .candidate = NAN, .lo = NAN, .hi = NAN, .evidence = NAN};
    o->srm_e = 1.0;
}

/* The candidate's share of baseline + candidate now, in percent. */
static int64_t share(const ro_t *o)
{
    const av_rollout_cfg_t *c = &o->rt->rollout;
    switch (o->state) {
    case RS_PROMOTED: return 100;
    case RS_ROLLED_BACK: return 0;
    case RS_SHADOW: return 0;
    case RS_PAUSED: return o->paused_in_shadow ? 0 : c->steps[o->step];
    case RS_AWAIT: return o->step > 0 ? c->steps[o->step - 1] : 0;
    default: return c->steps[o->step];
    }
}

/* Sets the route's weights for the share, leaving other variants alone. */
static void apply_weights(ro_t *o)
{
    const av_route_t *rt = o->rt;
    if (rt->split == NULL)
        return;
    int64_t w[AV_SPLIT_MAX_VARIANTS], want[AV_SPLIT_MAX_VARIANTS];
    av_split_weights(rt->split, w, rt->nvariants);
    memcpy(want, w, rt->nvariants * sizeof(int64_t));
    size_t a = rt->rollout.baseline, b = rt->rollout.candidate;
    int64_t total = rt->variants[a].weight + rt->variants[b].weight;
    if (total <= 0)
        total = 100;
    int64_t pct = share(o);
    want[b] = total * pct / 100;
    want[a] = total - want[b];
    int64_t sum = 0;
    for (size_t i = 0; i < rt->nvariants; i++)
        sum += want[i];
    if (sum > 0 && memcmp(w, want, rt->nvariants * sizeof(int64_t)) != 0)
        av_split_set_weights(rt->split, want, rt->nvariants);
}

static void persist(av_rollouts_t *r)
{
    const char *path = r->cfg ? r->cfg->rollout_state_file : NULL;
    if (path == NULL)
        return;
    cJSON *root = cJSON_CreateObject(), *routes = cJSON_AddObjectToObject(root, "routes");
    cJSON_AddNumberToObject(root, "version", 1);
    for (size_t i = 0; i < r->n; i++) {
        cJSON *e = cJSON_AddObjectToObject(routes, r->ro[i].route);
        cJSON_AddStringToObject(e, "fingerprint", r->ro[i].fingerprint);
        cJSON_AddStringToObject(e, "state", state_names[r->ro[i].state]);
        cJSON_AddNumberToObject(e, "step", (double)r->ro[i].step);
        cJSON_AddBoolToObject(e, "paused_in_shadow", r->ro[i].paused_in_shadow);
        cJSON_AddStringToObject(e, "reason", r->ro[i].reason);
    }
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (text == NULL)
        av_oom();
    char tmp[1100];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    size_t len = strlen(text), off = 0;
    int ok = fd >= 0;
    while (ok && off < len) {
        ssize_t k = write(fd, text + off, len - off);
        if (k < 0 && errno == EINTR)
            continue;
        ok = k > 0;
        off += k > 0 ? (size_t)k : 0;
    }
    ok = ok && fsync(fd) == 0;
    if (fd >= 0)
        close(fd);
    if (!ok || rename(tmp, path) != 0)
        AV_ERR("rollout state: cannot write %s: %s (the rollouts go on; a restart would start them afresh)", path,
               strerror(errno));
    cJSON_free(text);
}

/* A number as JSON: null when it is not finite (an overflowing ratio). */
static void jnum(struct evbuffer *b, const char *key, double v)
{
    if (isfinite(v))
        evbuffer_add_printf(b, ",\"%s\":%.6g", key, v);
    else
        evbuffer_add_printf(b, ",\"%s\":%s", key, v > 0 ? "1e308" : "null");
}

#define ADD_LIT(b, lit) evbuffer_add((b), (lit), sizeof(lit) - 1)

static void ident_json(struct evbuffer *b, const ident_t *id)
{
    ADD_LIT(b, "{\"backend\":");
    av_json_str(b, id->backend, strlen(id->backend));
    ADD_LIT(b, ",\"model\":");
    av_json_str(b, id->model, strlen(id->model));
    ADD_LIT(b, ",\"prompt\":");
    av_json_str(b, id->prompt, strlen(id->prompt));
    ADD_LIT(b, ",\"params\":");
    av_json_str(b, id->params, strlen(id->params));
    evbuffer_add(b, "}", 1);
}

static void kpis_json(struct evbuffer *b, const ro_t *o)
{
    const av_rollout_cfg_t *c = &o->rt->rollout;
    evbuffer_add(b, "[", 1);
    for (size_t k = 0; k < c->nkpis; k++) {
        const av_kpi_result_t *res = &o->results[k];
        evbuffer_add_printf(b, "%s{\"kpi\":\"%s\",\"verdict\":\"%s\"", k ? "," : "", kpi_names[c->kpis[k].kind],
                            verdict_names[res->verdict]);
        jnum(b, "baseline", res->baseline);
        jnum(b, "candidate", res->candidate);
        jnum(b, "interval_lo", res->lo);
        jnum(b, "interval_hi", res->hi);
        evbuffer_add_printf(b, ",\"samples\":{\"baseline\":%llu,\"candidate\":%llu}",
                            (unsigned long long)res->n_baseline, (unsigned long long)res->n_candidate);
        jnum(b, "evidence", res->evidence);
        jnum(b, "threshold", (double)c->nkpis / c->alpha);
        jnum(b, "margin", c->kpis[k].margin);
        jnum(b, "slo", c->kpis[k].slo);
        evbuffer_add(b, ",\"why\":", 7);
        av_json_str(b, res->why ? res->why : "", res->why ? strlen(res->why) : 0);
        evbuffer_add(b, "}", 1);
    }
    evbuffer_add(b, "]", 1);
}

static void one_json(av_rollouts_t *r, struct evbuffer *b, const ro_t *o)
{
    const av_rollout_cfg_t *c = &o->rt->rollout;
    evbuffer_add_printf(b, "{\"route\":");
    av_json_str(b, o->route, strlen(o->route));
    evbuffer_add_printf(b, ",\"baseline\":\"%s\",\"candidate\":\"%s\",\"state\":\"%s\",\"step\":%zu,\"steps\":%zu,"
                           "\"candidate_percent\":%lld,\"step_seconds\":%.1f,"
                           "\"samples\":{\"baseline\":%llu,\"candidate\":%llu},\"split_evidence\":%.6g,"
                           "\"split_threshold\":%.6g,\"reason\":",
                        c->baseline_name, c->candidate_name, state_names[o->state], o->step + 1, c->nsteps,
                        (long long)share(o), (double)(r->mono_us() - o->step_start_us) / 1e6,
                        (unsigned long long)o->cur_a.n, (unsigned long long)o->cur_b.n,
                        isfinite(o->srm_e) ? o->srm_e : 1e308, 1.0 / SRM_ALPHA);
    av_json_str(b, o->reason, strlen(o->reason));
    ADD_LIT(b, ",\"identity\":{\"baseline\":");
    ident_json(b, &o->base_id);
    ADD_LIT(b, ",\"candidate\":");
    ident_json(b, &o->cand_id);
    evbuffer_add(b, "}", 1);
    evbuffer_add(b, ",\"kpis\":", 8);
    kpis_json(b, o);
    evbuffer_add(b, "}", 1);
}

static void webhook_done(struct evhttp_request *req, void *arg)
{
    char *url = arg; /* a copy: the config it came from may be gone by now */
    int code = req != NULL ? evhttp_request_get_response_code(req) : 0;
    if (code < 200 || code >= 300)
        AV_WARN("rollout webhook %s: %s %d (the transition stands; the audit log has it)", url,
                code ? "answered" : "failed, no answer", code);
    free(url);
}

/* POSTs the transition's JSON line to the webhook, from the loop, without
 * waiting; an answer other than 2xx is logged. */
static void webhook(av_rollouts_t *r, const char *url, const char *json, size_t len)
{
    if (r->base == NULL)
        return;
    struct evhttp_uri *u = evhttp_uri_parse(url);
    const char *host = u ? evhttp_uri_get_host(u) : NULL;
    if (host == NULL) {
        if (u != NULL)
            evhttp_uri_free(u);
        return;
    }
    int port = evhttp_uri_get_port(u) > 0 ? evhttp_uri_get_port(u) : 80;
    const char *path = evhttp_uri_get_path(u) && evhttp_uri_get_path(u)[0] ? evhttp_uri_get_path(u) : "/";
    struct evhttp_connection *c = evhttp_connection_base_new(r->base, NULL, host, (ev_uint16_t)port);
    evhttp_connection_set_timeout(c, 5);
    struct evhttp_request *req = evhttp_request_new(webhook_done, av_strdup(url));
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Host", host);
    evhttp_add_header(h, "Content-Type", "application/json");
    evhttp_add_header(h, "User-Agent", "aviary-rollout");
    evbuffer_add(evhttp_request_get_output_buffer(req), json, len);
    if (evhttp_make_request(c, req, EVHTTP_REQ_POST, path) != 0)
        AV_WARN("rollout webhook %s: cannot send", url);
    evhttp_connection_free_on_completion(c);
    evhttp_uri_free(u);
}

static void transition(av_rollouts_t *r, ro_t *o, int state, size_t step, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* The audit line (and webhook) of a transition from (from, from_step) to
 * o's state and step, for o->reason, with the numbers behind it: those of
 * the step that ends (o's current ones). */
static void audit(av_rollouts_t *r, const av_config_t *cfg, const ro_t *o, int from, size_t from_step, int state,
                  size_t step)
{
    const char *hook = cfg != NULL ? cfg->rollout_webhook : NULL;
    if (r->audit == NULL && hook == NULL)
        return;
    struct evbuffer *b = evbuffer_new();
    av_audit_begin(b, "rollout");
    av_audit_str(b, "route", o->route);
    av_audit_str(b, "from", state_names[from]);
    evbuffer_add_printf(b, ",\"from_step\":%zu", from_step + 1);
    av_audit_str(b, "to", state_names[state]);
    evbuffer_add_printf(b, ",\"to_step\":%zu", step + 1);
    av_audit_str(b, "reason", o->reason);
    evbuffer_add_printf(b, ",\"samples\":{\"baseline\":%llu,\"candidate\":%llu},\"kpis\":",
                        (unsigned long long)o->cur_a.n, (unsigned long long)o->cur_b.n);
    kpis_json(b, o);
    av_audit_end(b);
    if (hook != NULL)
        webhook(r, hook, (const char *)evbuffer_pullup(b, -1), evbuffer_get_length(b));
    if (r->audit != NULL)
        av_kpilog_append(r->audit, b, 1);
    evbuffer_free(b);
}

static void transition(av_rollouts_t *r, ro_t *o, int state, size_t step, const char *fmt, ...)
{
    int from = o->state;
    size_t from_step = o->step;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(o->reason, sizeof(o->reason), fmt, ap);
    va_end(ap);
    audit(r, r->cfg, o, from, from_step, state, step);
    o->state = state;
    o->step = step;
    if (state == RS_STEP || state == RS_SHADOW)
        snapshot(r, o); /* a new stage judges from here; other states keep the last one's numbers to show */
    AV_INFO("rollout %s: %s -> %s, step %zu of %zu (candidate %lld%%): %s", o->route, state_names[from],
            state_names[state], step + 1, o->rt->rollout.nsteps, (long long)share(o), o->reason);
    apply_weights(o);
    persist(r);
}

/* At a step's end, before it passes, two checks of the step's latency and
 * TTFT distributions (from the 10 s windows), which see what the means can
 * hide: the p95 (an exact binomial test of how many candidate requests fall
 * past the baseline's p95 times the margin), and a Mann-Whitney U test of
 * the whole distributions, which fails the step only when the shift is
 * significant, towards the candidate being slower, and the candidate's
 * median is past the allowed ratio. Each at the KPI's share of alpha.
 * Returns 1 when it rolled back. */
static int step_end_check(av_rollouts_t *r, ro_t *o)
{
    const av_rollout_cfg_t *c = &o->rt->rollout;
    const struct av_metrics_s *m = av_split_metrics(o->rt->split);
    for (size_t k = 0; k < c->nkpis; k++) {
        int kind = c->kpis[k].kind;
        if (kind != AV_KPI_LATENCY && kind != AV_KPI_TTFT)
            continue;
        uint64_t ha[AV_HIST_BUCKETS], hb[AV_HIST_BUCKETS];
        uint64_t now = r->wall_us();
        av_metrics_hist(m, c->baseline, kind == AV_KPI_TTFT, o->step_start_wall_us, now, ha);
        av_metrics_hist(m, c->candidate, kind == AV_KPI_TTFT, o->step_start_wall_us, now, hb);
        av_tail_t t;
        av_tail_check(ha, hb, c->kpis[k].margin, &t);
        if (t.na >= (uint64_t)c->min_requests && t.nb >= (uint64_t)c->min_requests &&
            t.p < c->alpha / (double)c->nkpis) {
            transition(r, o, RS_ROLLED_BACK, o->step,
                       "%s p95 at the step's end: %.1f of %llu candidate requests (%.1f %%) past %.4g ms, the "
                       "baseline's p95 of %.4g ms times %.3g, where at most 5 %% may be; p %.2g",
                       kpi_names[kind], t.past, (unsigned long long)t.nb, 100.0 * t.past / (double)t.nb, t.limit_ms,
                       t.base_p95_ms, c->kpis[k].margin, t.p);
            return 1;
        }
        av_shift_t sh;
        av_shift_check(ha, hb, c->kpis[k].margin, &sh);
        if (sh.na >= (uint64_t)c->min_requests && sh.nb >= (uint64_t)c->min_requests &&
            sh.p < c->alpha / (double)c->nkpis && sh.med_b_ms > sh.med_a_ms * c->kpis[k].margin) {
            transition(r, o, RS_ROLLED_BACK, o->step,
                       "%s at the step's end (Mann-Whitney U against the baseline times %.3g): candidate median "
                       "%.4g ms against %.4g ms, z %.2f, p %.2g",
                       kpi_names[kind], c->kpis[k].margin, sh.med_b_ms, sh.med_a_ms, sh.z, sh.p);
            return 1;
        }
    }
    return 0;
}

static void judge(av_rollouts_t *r, ro_t *o)
{
    const av_rollout_cfg_t *c = &o->rt->rollout;
    const struct av_metrics_s *m = av_split_metrics(o->rt->split);
    av_arm_t a, b;
    int shadow = o->state == RS_SHADOW; /* the candidate is judged by its copies */
    av_metrics_arm(m, c->baseline, &a);
    if (shadow)
        av_metrics_arm_shadow(m, c->candidate, &b);
    else
        av_metrics_arm(m, c->candidate, &b);
    if (av_arm_behind(&a, &o->snap_a) || av_arm_behind(&b, shadow ? &o->snap_bs : &o->snap_b)) {
        /* not the counters the step began with (av_rollouts_sync restarts the step when they change;
         * this is the guard behind it): the step's clock and data start over together */
        AV_WARN("rollout %s: the route's counters went back; step %zu starts over", o->route, o->step + 1);
        snapshot(r, o);
        return;
    }
    av_arm_diff(&a, &o->snap_a, &o->cur_a);
    av_arm_diff(&b, shadow ? &o->snap_bs : &o->snap_b, &o->cur_b);
    av_judge_cfg_t jc = {.alpha = c->alpha, .min_requests = (uint64_t)c->min_requests, .min_events = c->min_events};
    int waiting = 0;
    for (size_t k = 0; k < c->nkpis; k++) {
        av_kpi_t kpi = {c->kpis[k].kind, c->kpis[k].margin, c->kpis[k].slo};
        av_judge_kpi(&jc, &kpi, c->nkpis, &o->cur_a, &o->cur_b, &o->results[k]);
        const av_kpi_result_t *res = &o->results[k];
        if (res->verdict == AV_VERDICT_FAIL || res->verdict == AV_VERDICT_SLO) {
            transition(r, o, RS_ROLLED_BACK, o->step,
                       "%s %s: baseline %.4g, candidate %.4g (evidence %.3g, threshold %.3g, margin %.3g, slo %.3g; "
                       "%llu and %llu requests)",
                       kpi_names[kpi.kind], res->verdict == AV_VERDICT_SLO ? "broke its SLO" : "regressed",
                       res->baseline, res->candidate, res->evidence, (double)c->nkpis / c->alpha, kpi.margin,
                       kpi.slo, (unsigned long long)o->cur_a.n, (unsigned long long)o->cur_b.n);
            return;
        }
        waiting |= res->verdict == AV_VERDICT_WAIT;
    }
    int64_t pct = share(o);
    if (pct > 0 && pct < 100) {
        uint64_t counts[2] = {o->cur_a.n, o->cur_b.n};
        double weights[2] = {(double)(100 - pct), (double)pct};
        double le = av_srm_log_evalue(counts, weights, 2, SRM_CONCENTRATION);
        o->srm_e = exp(le > 700 ? 700 : le);
        if (le >= log(1.0 / SRM_ALPHA)) {
            transition(r, o, RS_PAUSED, o->step,
                       "sample ratio mismatch: %llu baseline and %llu candidate requests (%.2f %%) for a %lld%% "
                       "split (evidence %.3g, threshold %.0f)",
                       (unsigned long long)o->cur_a.n, (unsigned long long)o->cur_b.n,
                       100.0 * (double)o->cur_b.n / (double)(o->cur_a.n + o->cur_b.n), (long long)pct, o->srm_e,
                       1.0 / SRM_ALPHA);
            return;
        }
    }
    double secs = (double)(r->mono_us() - o->step_start_us) / 1e6;
    if (!waiting && secs >= (double)c->min_step_s && !shadow && step_end_check(r, o))
        return;
    if (!waiting && secs >= (double)c->min_step_s && shadow) {
        if (c->approve & 1)
            transition(r, o, RS_AWAIT, 0, "the shadow stage passed; step 1 waits for approval");
        else
            transition(r, o, RS_STEP, 0, "the shadow stage passed: every KPI of the copies within its margin for "
                       "%.0f s", secs);
        return;
    }
    if (!waiting && secs >= (double)c->min_step_s) {
        size_t next = o->step + 1;
        if (next < c->nsteps && ((c->approve >> next) & 1))
            transition(r, o, RS_AWAIT, next, "step %zu passed; step %zu waits for approval", o->step + 1, next + 1);
        else if (next >= c->nsteps || c->steps[next] == 100) /* all traffic leaves nothing to compare: promotion */
            transition(r, o, RS_PROMOTED, c->nsteps - 1, "step %zu passed: every KPI within its margin for %.0f s; "
                       "promoted", o->step + 1, secs);
        else
            transition(r, o, RS_STEP, next, "step %zu passed: every KPI within its margin for %.0f s", o->step + 1,
                       secs);
        return;
    }
    if (c->max_step_s > 0 && secs >= (double)c->max_step_s) {
        if (strcmp(c->on_timeout, "rollback") == 0)
            transition(r, o, RS_ROLLED_BACK, o->step, "step %zu ran %.0f s without a verdict", o->step + 1, secs);
        else if (strcmp(c->on_timeout, "approve") == 0 && !shadow)
            transition(r, o, RS_AWAIT, o->step + 1, "step %zu ran %.0f s without a verdict: the next step waits "
                       "for approval", o->step + 1, secs);
        else
            transition(r, o, RS_HOLD, o->step, "step %zu ran %.0f s without a verdict: holding", o->step + 1, secs);
    }
}

void av_rollouts_tick(av_rollouts_t *r)
{
    for (size_t i = 0; i < r->n; i++) {
        ro_t *o = &r->ro[i];
        if (o->rt == NULL || o->rt->split == NULL)
            continue;
        apply_weights(o);
        if (o->state == RS_STEP || o->state == RS_SHADOW)
            judge(r, o);
    }
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    av_rollouts_tick(arg);
}

void av_rollouts_set_clock(av_rollouts_t *r, uint64_t (*mono_us)(void), uint64_t (*wall_us)(void))
{
    r->mono_us = mono_us;
    r->wall_us = wall_us;
}

av_rollouts_t *av_rollouts_new(struct event_base *base, av_kpilog_t *audit_log)
{
    av_rollouts_t *r = av_calloc(1, sizeof(*r));
    r->base = base;
    r->audit = audit_log;
    r->mono_us = av_now_us;
    r->wall_us = av_wall_us;
    if (base != NULL) {
        r->timer = event_new(base, -1, EV_PERSIST, tick_cb, r);
        struct timeval tv = {1, 0};
        event_add(r->timer, &tv);
    }
    return r;
}

void av_rollouts_free(av_rollouts_t *r)
{
    if (r == NULL)
        return;
    if (r->timer != NULL)
        event_free(r->timer);
    if (r->cfg != NULL)
        av_config_unref(r->cfg);
    free(r->ro);
    free(r);
}

static int state_by_name(const char *s)
{
    for (int i = 0; i < RS_N; i++)
        if (s != NULL && strcmp(state_names[i], s) == 0)
            return i;
    return -1;
}

/* What the state file says of a route: its state and step, if it is about
 * the same candidate. */
static int saved_state(cJSON *saved, const char *route, const char *fp_now, const char *names, int *state,
                       size_t *step, int *in_shadow)
{
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(saved, "routes"), route);
    const cJSON *fp = cJSON_GetObjectItemCaseSensitive(e, "fingerprint");
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(e, "state");
    const cJSON *sp = cJSON_GetObjectItemCaseSensitive(e, "step");
    /* a state file written before rollouts had identities has the names alone: taken as the same candidate */
    if (!cJSON_IsString(fp) || (strcmp(fp->valuestring, fp_now) != 0 && strcmp(fp->valuestring, names) != 0) ||
        !cJSON_IsString(st) || !cJSON_IsNumber(sp))
        return 0;
    int s = state_by_name(st->valuestring);
    if (s < 0)
        return 0;
    int64_t k;
    if (!av_whole(sp->valuedouble, 0, AV_ROLLOUT_MAX_STEPS, &k))
        return 0; /* a state file edited by hand, or not ours */
    *state = s;
    *step = (size_t)k;
    *in_shadow = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "paused_in_shadow"));
    return 1;
}

/* A rollout new to this process: resumed from the state file when it has
 * one about the same candidate, else started. */
static int initial_state(const av_route_t *rt)
{
    return rt->rollout.shadow_first ? RS_SHADOW : (rt->rollout.approve & 1) ? RS_AWAIT : RS_STEP;
}

static void start(av_rollouts_t *r, const av_config_t *cfg, cJSON *saved, ro_t *o)
{
    const av_route_t *rt = o->rt;
    int state, in_shadow = 0;
    size_t step;
    if (saved != NULL && saved_state(saved, rt->name, o->fingerprint, rt->rollout.fingerprint, &state, &step,
                                     &in_shadow) &&
        step < rt->rollout.nsteps) {
        o->state = state;
        o->step = step;
        o->paused_in_shadow = in_shadow;
        snprintf(o->reason, sizeof(o->reason), "resumed from %s after a restart", cfg->rollout_state_file);
    } else {
        o->state = initial_state(rt);
        o->step = 0;
        o->paused_in_shadow = 0;
        if (o->reason[0] == '\0')
            snprintf(o->reason, sizeof(o->reason), "started");
    }
    snapshot(r, o);
}

void av_rollouts_sync(av_rollouts_t *r, av_config_t *cfg)
{
    cJSON *saved = NULL;
    if (!r->loaded && cfg->rollout_state_file != NULL) {
        FILE *f = fopen(cfg->rollout_state_file, "rb");
        if (f != NULL) {
            char buf[1 << 16];
            size_t n = fread(buf, 1, sizeof(buf), f);
            fclose(f);
            saved = cJSON_ParseWithLength(buf, n);
            if (saved == NULL)
                AV_WARN("rollout state %s is not JSON: the rollouts start afresh", cfg->rollout_state_file);
        }
    }
    r->loaded = 1;
    ro_t *next = av_calloc(cfg->nroutes ? cfg->nroutes : 1, sizeof(*next));
    size_t n = 0;
    for (size_t i = 0; i < cfg->nroutes; i++) {
        const av_route_t *rt = &cfg->routes[i];
        if (!rt->rollout.enabled)
            continue;
        ro_t *o = &next[n++];
        ident_t base_id, cand_id;
        variant_ident(&rt->variants[rt->rollout.baseline], &base_id);
        variant_ident(&rt->variants[rt->rollout.candidate], &cand_id);
        const ro_t *old = NULL;
        for (size_t j = 0; j < r->n; j++)
            if (strcmp(r->ro[j].route, rt->name) == 0 && strcmp(r->ro[j].names, rt->rollout.fingerprint) == 0)
                old = &r->ro[j]; /* the same baseline and candidate names */
        char why[400];
        if (old != NULL) {
            ident_diff(&old->cand_id, &cand_id, why, sizeof(why));
            if (why[0] != '\0') {
                /* another candidate under the same name: a new rollout, from the start */
                *o = *old;
                o->rt = rt;
                o->base_id = base_id;
                o->cand_id = cand_id;
                fingerprint(rt, &cand_id, o->fingerprint, sizeof(o->fingerprint));
                snprintf(o->reason, sizeof(o->reason), "candidate %s changed (%s): a new rollout from the start",
                         rt->rollout.candidate_name, why);
                audit(r, cfg, o, old->state, old->step, initial_state(rt), 0); /* with the numbers it had */
                start(r, cfg, NULL, o);
                AV_INFO("rollout %s: %s", o->route, o->reason);
                apply_weights(o);
                continue;
            }
            /* the same rollout: it goes on where it was */
            *o = *old;
            o->rt = rt;
            if (o->step >= rt->rollout.nsteps)
                o->step = rt->rollout.nsteps - 1;
            /* what the step's data no longer means: counters that restarted (the route's
             * variants changed), another baseline, another share at this step */
            char restart[512] = "";
            ident_diff(&old->base_id, &base_id, why, sizeof(why));
            if (old->rt->split != rt->split)
                snprintf(restart, sizeof(restart), "the route's variants changed and their counters started from zero");
            else if (why[0] != '\0')
                snprintf(restart, sizeof(restart), "baseline %s changed (%s)", rt->rollout.baseline_name, why);
            else if (old->rt->rollout.steps[old->step] != rt->rollout.steps[o->step])
                snprintf(restart, sizeof(restart), "the step's share changed");
            o->base_id = base_id;
            if (restart[0] != '\0' && o->state != RS_STEP && o->state != RS_SHADOW) {
                snapshot(r, o); /* no step is judged now: the next one begins from these counters */
            } else if (restart[0] != '\0') {
                snprintf(o->reason, sizeof(o->reason), "%s: step %zu starts over", restart, o->step + 1);
                audit(r, cfg, o, o->state, old->step, o->state, o->step);
                AV_INFO("rollout %s: %s", o->route, o->reason);
                snapshot(r, o);
            }
            apply_weights(o);
            continue;
        }
        snprintf(o->route, sizeof(o->route), "%s", rt->name);
        snprintf(o->names, sizeof(o->names), "%s", rt->rollout.fingerprint);
        o->rt = rt;
        o->base_id = base_id;
        o->cand_id = cand_id;
        fingerprint(rt, &cand_id, o->fingerprint, sizeof(o->fingerprint));
        int replaces = 0; /* the route had a rollout of other variants */
        for (size_t j = 0; j < r->n && !replaces; j++)
            replaces = strcmp(r->ro[j].route, rt->name) == 0;
        if (replaces) {
            snprintf(o->reason, sizeof(o->reason), "started: %s against %s replaces the route's earlier rollout",
                     rt->rollout.candidate_name, rt->rollout.baseline_name);
            for (size_t j = 0; j < r->n; j++)
                if (strcmp(r->ro[j].route, rt->name) == 0)
                    audit(r, cfg, o, r->ro[j].state, r->ro[j].step, initial_state(rt), 0);
        }
        start(r, cfg, saved, o);
        apply_weights(o);
        AV_INFO("rollout %s: %s, step %zu of %zu (candidate %s at %lld%%)", o->route, state_names[o->state],
                o->step + 1, rt->rollout.nsteps, rt->rollout.candidate_name, (long long)share(o));
        for (size_t k = 0; k < rt->rollout.nkpis; k++) {
            int kind = rt->rollout.kpis[k].kind;
            int absolute = kind == AV_KPI_ERRORS || kind == AV_KPI_429 || kind == AV_KPI_BLOCKS || kind == AV_KPI_FEEDBACK;
            if (rt->rollout.kpis[k].margin == (absolute ? 0.0 : 1.0))
                AV_WARN("rollout %s: KPI %s has no margin: any difference, however small, is found in time, so even "
                        "a candidate identical to the baseline on another backend process rolls back; set one",
                        o->route, kpi_names[kind]);
        }
    }
    cJSON_Delete(saved);
    free(r->ro);
    r->ro = next;
    r->n = n;
    if (r->cfg != NULL)
        av_config_unref(r->cfg);
    r->cfg = av_config_ref(cfg);
    persist(r);
}

static ro_t *find(av_rollouts_t *r, const char *name)
{
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->ro[i].route, name) == 0)
            return &r->ro[i];
    return NULL;
}

int av_rollouts_json(av_rollouts_t *r, const char *name, struct evbuffer *out)
{
    if (name != NULL) {
        ro_t *o = find(r, name);
        if (o == NULL)
            return -1;
        one_json(r, out, o);
        evbuffer_add(out, "\n", 1);
        return 0;
    }
    evbuffer_add(out, "{\"rollouts\":[", 13);
    for (size_t i = 0; i < r->n; i++) {
        if (i)
            evbuffer_add(out, ",", 1);
        one_json(r, out, &r->ro[i]);
    }
    evbuffer_add(out, "]}\n", 3);
    return 0;
}

int av_rollouts_action(av_rollouts_t *r, const char *name, const char *action, char *why, size_t whylen)
{
    ro_t *o = find(r, name);
    if (o == NULL) {
        snprintf(why, whylen, "no rollout on route \"%.64s\"", name);
        return 404;
    }
    int s = o->state;
    if (strcmp(action, "pause") == 0) {
        if (s != RS_STEP && s != RS_AWAIT && s != RS_HOLD && s != RS_SHADOW)
            goto refused;
        o->paused_in_shadow = s == RS_SHADOW;
        transition(r, o, RS_PAUSED, o->step, "paused by the admin API");
    } else if (strcmp(action, "resume") == 0) {
        if (s == RS_ROLLED_BACK) /* trying the same candidate again takes this explicit action */
            transition(r, o, o->rt->rollout.shadow_first ? RS_SHADOW : RS_STEP, 0,
                       "resumed by the admin API after a rollback: starting over");
        else if (s == RS_PAUSED && o->paused_in_shadow)
            transition(r, o, RS_SHADOW, 0, "resumed by the admin API: the shadow stage again");
        else if (s == RS_PAUSED || s == RS_HOLD)
            transition(r, o, RS_STEP, o->step, "resumed by the admin API");
        else
            goto refused;
    } else if (strcmp(action, "approve") == 0) {
        if (s != RS_AWAIT)
            goto refused;
        if (o->rt->rollout.steps[o->step] == 100)
            transition(r, o, RS_PROMOTED, o->step, "promotion approved by the admin API");
        else
            transition(r, o, RS_STEP, o->step, "step %zu approved by the admin API", o->step + 1);
    } else if (strcmp(action, "promote") == 0) {
        if (s == RS_PROMOTED)
            goto refused;
        transition(r, o, RS_PROMOTED, o->rt->rollout.nsteps - 1, "promoted by the admin API");
    } else if (strcmp(action, "rollback") == 0) {
        if (s == RS_ROLLED_BACK)
            goto refused;
        transition(r, o, RS_ROLLED_BACK, o->step, "rolled back by the admin API");
    } else {
        snprintf(why, whylen, "\"%.32s\" is not an action (pause, resume, approve, promote, rollback)", action);
        return 400;
    }
    return 0;
refused:
    snprintf(why, whylen, "rollout %s is %s: %s does not apply", name, state_names[s], action);
    return 409;
}

/* A route name as a Prometheus label value: backslash, quote and newline escaped. */
static const char *label(const char *s, char *buf, size_t size)
{
    size_t k = 0;
    for (; *s && k + 3 < size; s++) {
        if (*s == '\\' || *s == '"' || *s == '\n') {
            buf[k++] = '\\';
            buf[k++] = *s == '\n' ? 'n' : *s;
        } else {
            buf[k++] = *s;
        }
    }
    buf[k] = '\0';
    return buf;
}

void av_rollouts_prometheus(av_rollouts_t *r, struct evbuffer *out)
{
    if (r == NULL || r->n == 0)
        return;
    char l[300];
    evbuffer_add_printf(out, "# HELP aviary_rollout_state The rollout's state (1 for the one it is in).\n"
                             "# TYPE aviary_rollout_state gauge\n");
    for (size_t i = 0; i < r->n; i++)
        for (int s = 0; s < RS_N; s++)
            evbuffer_add_printf(out, "aviary_rollout_state{route=\"%s\",state=\"%s\"} %d\n",
                                label(r->ro[i].route, l, sizeof(l)), state_names[s], r->ro[i].state == s);
    evbuffer_add_printf(out, "# HELP aviary_rollout_step The step running (from 1).\n"
                             "# TYPE aviary_rollout_step gauge\n");
    for (size_t i = 0; i < r->n; i++)
        evbuffer_add_printf(out, "aviary_rollout_step{route=\"%s\"} %zu\n", label(r->ro[i].route, l, sizeof(l)),
                            r->ro[i].step + 1);
    evbuffer_add_printf(out, "# HELP aviary_rollout_candidate_percent The candidate's share of the two variants.\n"
                             "# TYPE aviary_rollout_candidate_percent gauge\n");
    for (size_t i = 0; i < r->n; i++)
        evbuffer_add_printf(out, "aviary_rollout_candidate_percent{route=\"%s\"} %lld\n",
                            label(r->ro[i].route, l, sizeof(l)), (long long)share(&r->ro[i]));
    evbuffer_add_printf(out, "# HELP aviary_rollout_kpi_verdict Each KPI's verdict (1 for the current one).\n"
                             "# TYPE aviary_rollout_kpi_verdict gauge\n");
    for (size_t i = 0; i < r->n; i++)
        for (size_t k = 0; k < r->ro[i].rt->rollout.nkpis; k++)
            for (int v = 0; v < 4; v++)
                evbuffer_add_printf(out, "aviary_rollout_kpi_verdict{route=\"%s\",kpi=\"%s\",verdict=\"%s\"} %d\n",
                                    label(r->ro[i].route, l, sizeof(l)), kpi_names[r->ro[i].rt->rollout.kpis[k].kind],
                                    verdict_names[v], r->ro[i].results[k].verdict == v);
}
