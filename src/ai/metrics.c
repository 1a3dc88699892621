/* metrics.c: counters, histograms and windows per route, variant and worker.
 * A cell has one writer (its worker); readers on the admin thread load its
 * fields with relaxed atomics and add the workers' cells together. */
#include "metrics.h"

#include <event2/buffer.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "av.h"
#include "hist.h"
#include "judge.h"
#include "jsonw.h"
#include "errclass.h"

#define WIN_SECONDS 10
#define WIN_BUCKETS 60 /* ten minutes */

const char *const av_outcome_names[AV_OUT_N] = {"ok", "client_error", "rate_limited", "server_error", "timeout",
                                                "client_abort", "blocked"};

/* Prometheus histogram bounds, in microseconds */
static const uint64_t lat_le[] = {5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000,
                                  5000000, 10000000, 30000000, 60000000, 120000000};
static const uint64_t itl_le[] = {1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000};
#define NLAT (sizeof(lat_le) / sizeof(lat_le[0]))
#define NITL (sizeof(itl_le) / sizeof(itl_le[0]))

enum { TOK_IN, TOK_OUT, TOK_CACHED, TOK_CACHE_WRITE, TOK_REASONING, TOK_N };
static const char *const tok_names[TOK_N] = {"input", "output", "cached_input", "cache_write", "reasoning"};

typedef struct {
    uint64_t outcomes[AV_OUT_N];
    uint64_t tokens[TOK_N];
    uint64_t cost_nano, unpriced;
    uint64_t lat[NLAT + 1], ttft[NLAT + 1], itl[NITL + 1]; /* the last: +Inf */
    uint64_t lat_sum, ttft_sum, itl_sum, ttft_n, itl_n;   /* microseconds */
} totals_t;

typedef struct {
    uint64_t epoch; /* wall seconds / WIN_SECONDS of what it holds */
    uint32_t outcomes[AV_OUT_N];
    uint64_t tokens[TOK_N];
    uint64_t cost_nano;
    uint32_t lat[AV_HIST_BUCKETS], ttft[AV_HIST_BUCKETS], itl[AV_HIST_BUCKETS];
} window_t;

/* The rollout's sums (judge.h's arm), doubles kept as their bits so that
 * the reader can load them atomically. */
typedef struct {
    uint64_t n, errors, r429, blocks, lat_n, ttft_n, cost_n;
    uint64_t lat_sum, lat_sq, ttft_sum, ttft_sq, cost_sum, cost_sq; /* double bits */
    uint64_t fb_n, fb_sum, fb_sq;                                     /* fb_sum, fb_sq: double bits */
    uint64_t itl_n, itl_sum, itl_sq, tok_n, tok_sum, tok_sq;          /* sums: double bits */
} arm_cell_t;

typedef struct {
    totals_t t;
    arm_cell_t arm, shadow_arm; /* shadow_arm: the copies sent to this variant */
    window_t w[WIN_BUCKETS];
} cell_t;

struct av_metrics_s {
    size_t nvariants;
    int nworkers;
    cell_t *cells; /* [variant * nworkers + worker] */
};

#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define ADD(x, v) __atomic_store_n(&(x), LOAD(x) + (v), __ATOMIC_RELAXED) /* one writer per cell */

static double loadd(const uint64_t *slot)
{
    uint64_t bits = __atomic_load_n(slot, __ATOMIC_RELAXED);
    double d;
    memcpy(&d, &bits, sizeof(d));
    return d;
}

static void addd(uint64_t *slot, double v)
{
    double d = loadd(slot) + v;
    uint64_t bits;
    memcpy(&bits, &d, sizeof(bits));
    __atomic_store_n(slot, bits, __ATOMIC_RELAXED);
}

int av_outcome(int status, const char *error)
{
    if (error != NULL && strncmp(error, "policy_", 7) == 0) /* a guardrail denied or stopped it */
        return AV_OUT_BLOCKED;
    if (error == AV_ERR_CLIENT_ABORT)
        return AV_OUT_CLIENT_ABORT;
    if (error == AV_ERR_CONNECT_TIMEOUT || error == AV_ERR_FIRST_BYTE_TIMEOUT || error == AV_ERR_READ_TIMEOUT)
        return AV_OUT_TIMEOUT;
    if (status == 429)
        return AV_OUT_RATE_LIMITED;
    if (status >= 500 || (error != NULL && error != AV_ERR_INVALID_JSON))
        return AV_OUT_SERVER_ERROR;
    if (status >= 400)
        return AV_OUT_CLIENT_ERROR;
    return AV_OUT_OK;
}

av_metrics_t *av_metrics_new(size_t nvariants, int nworkers)
{
    av_metrics_t *m = av_calloc(1, sizeof(*m));
    m->nvariants = nvariants;
    m->nworkers = nworkers < 1 ? 1 : nworkers;
    m->cells = av_calloc(nvariants * (size_t)m->nworkers, sizeof(cell_t));
    return m;
}

void av_metrics_free(av_metrics_t *m)
{
    if (m == NULL)
        return;
    free(m->cells);
    free(m);
}

static void le_add(uint64_t *h, const uint64_t *le, size_t n, uint64_t v)
{
    size_t i = 0;
    while (i < n && v > le[i])
        i++;
    ADD(h[i], 1);
}

/* What the rollout judges by (see av_metrics_arm). */
static void arm_add(arm_cell_t *a, const av_metrics_rec_t *r, int out)
{
    ADD(a->n, 1);
    if (out == AV_OUT_SERVER_ERROR || out == AV_OUT_TIMEOUT || (out == AV_OUT_CLIENT_ABORT && r->ttft_us >= 0))
        ADD(a->errors, 1); /* a stream the client lost after it began counts: the backend may have stalled */
    if (out == AV_OUT_RATE_LIMITED)
        ADD(a->r429, 1);
    if (r->blocked)
        ADD(a->blocks, 1);
    if (r->latency_us > 0 && out == AV_OUT_OK) {
        double l = log((double)r->latency_us / 1000.0);
        ADD(a->lat_n, 1);
        addd(&a->lat_sum, l);
        addd(&a->lat_sq, l * l);
    }
    if (r->ttft_us > 0) {
        double l = log((double)r->ttft_us / 1000.0);
        ADD(a->ttft_n, 1);
        addd(&a->ttft_sum, l);
        addd(&a->ttft_sq, l * l);
    }
    if (r->itl_us > 0) {
        double l = log((double)r->itl_us / 1000.0);
        ADD(a->itl_n, 1);
        addd(&a->itl_sum, l);
        addd(&a->itl_sq, l * l);
    }
    if (r->output >= 0 && out == AV_OUT_OK) {
        ADD(a->tok_n, 1);
        addd(&a->tok_sum, (double)r->output);
        addd(&a->tok_sq, (double)r->output * (double)r->output);
    }
    if (r->cost_nano >= 0) {
        double d = (double)r->cost_nano / 1e9;
        ADD(a->cost_n, 1);
        addd(&a->cost_sum, d);
        addd(&a->cost_sq, d * d);
    }
}

void av_metrics_record(av_metrics_t *m, size_t variant, int worker, const av_metrics_rec_t *r, uint64_t wall_us)
{
    if (m == NULL || variant >= m->nvariants || worker < 0 || worker >= m->nworkers)
        return;
    cell_t *c = &m->cells[variant * (size_t)m->nworkers + (size_t)worker];
    int out = av_outcome(r->status, r->error);
    if (r->shadow) { /* a copy: only the rollout's shadow stage counts it */
        arm_add(&c->shadow_arm, r, out);
        return;
    }
    int64_t tok[TOK_N] = {r->input, r->output, r->cached, r->cache_write, r->reasoning};
    totals_t *t = &c->t;
    ADD(t->outcomes[out], 1);
    for (int k = 0; k < TOK_N; k++)
        if (tok[k] > 0)
            ADD(t->tokens[k], (uint64_t)tok[k]);
    if (r->cost_nano >= 0)
        ADD(t->cost_nano, (uint64_t)r->cost_nano);
    else if (r->input + r->output > 0)
        ADD(t->unpriced, 1);
    if (r->latency_us >= 0) {
        le_add(t->lat, lat_le, NLAT, (uint64_t)r->latency_us);
        ADD(t->lat_sum, (uint64_t)r->latency_us);
    }
    if (r->ttft_us >= 0) {
        le_add(t->ttft, lat_le, NLAT, (uint64_t)r->ttft_us);
        ADD(t->ttft_sum, (uint64_t)r->ttft_us);
        ADD(t->ttft_n, 1);
    }
    if (r->itl_us >= 0) {
        le_add(t->itl, itl_le, NITL, (uint64_t)r->itl_us);
        ADD(t->itl_sum, (uint64_t)r->itl_us);
        ADD(t->itl_n, 1);
    }
    if (r->override)
        return; /* forced variants stay out of the windows the rollout reads */
    arm_add(&c->arm, r, out);
    uint64_t epoch = wall_us / 1000000u / WIN_SECONDS;
    window_t *w = &c->w[epoch % WIN_BUCKETS];
    if (LOAD(w->epoch) != epoch) { /* a bucket ten minutes old: start it afresh */
        __atomic_store_n(&w->epoch, 0, __ATOMIC_RELAXED);
        memset((char *)w + sizeof(w->epoch), 0, sizeof(*w) - sizeof(w->epoch));
        __atomic_store_n(&w->epoch, epoch, __ATOMIC_RELEASE);
    }
    ADD(w->outcomes[out], 1);
    for (int k = 0; k < TOK_N; k++)
        if (tok[k] > 0)
            ADD(w->tokens[k], (uint64_t)tok[k]);
    if (r->cost_nano > 0)
        ADD(w->cost_nano, (uint64_t)r->cost_nano);
    if (r->latency_us >= 0)
        ADD(w->lat[av_hist_bucket((uint64_t)r->latency_us)], 1);
    if (r->ttft_us >= 0)
        ADD(w->ttft[av_hist_bucket((uint64_t)r->ttft_us)], 1);
    if (r->itl_us >= 0)
        ADD(w->itl[av_hist_bucket((uint64_t)r->itl_us)], 1);
}

/* ---- Prometheus ---- */

static void label(struct evbuffer *out, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            evbuffer_add_printf(out, "\\%c", *s);
        else if (*s == '\n')
            evbuffer_add(out, "\\n", 2);
        else
            evbuffer_add(out, s, 1);
    }
}

static void labels(struct evbuffer *out, const char *route, const char *variant)
{
    evbuffer_add(out, "route=\"", 7);
    label(out, route);
    evbuffer_add(out, "\",variant=\"", 11);
    label(out, variant);
    evbuffer_add(out, "\"", 1);
}

static void sum_totals(const av_metrics_t *m, size_t v, totals_t *s)
{
    memset(s, 0, sizeof(*s));
    for (int k = 0; k < m->nworkers; k++) {
        const totals_t *t = &m->cells[v * (size_t)m->nworkers + (size_t)k].t;
        const uint64_t *src = (const uint64_t *)(const void *)t;
        uint64_t *dst = (uint64_t *)(void *)s;
        for (size_t i = 0; i < sizeof(*t) / sizeof(uint64_t); i++)
            dst[i] += __atomic_load_n(&src[i], __ATOMIC_RELAXED);
    }
}

static void histogram(struct evbuffer *out, const char *name, const char *route, const char *variant,
                      const uint64_t *h, const uint64_t *le, size_t n, uint64_t sum_us)
{
    uint64_t cum = 0;
    for (size_t i = 0; i <= n; i++) {
        cum += h[i];
        evbuffer_add_printf(out, "%s_bucket{", name);
        labels(out, route, variant);
        if (i < n)
            evbuffer_add_printf(out, ",le=\"%g\"} %llu\n", (double)le[i] / 1e6, (unsigned long long)cum);
        else
            evbuffer_add_printf(out, ",le=\"+Inf\"} %llu\n", (unsigned long long)cum);
    }
    evbuffer_add_printf(out, "%s_sum{", name);
    labels(out, route, variant);
    evbuffer_add_printf(out, "} %.6f\n%s_count{", (double)sum_us / 1e6, name);
    labels(out, route, variant);
    evbuffer_add_printf(out, "} %llu\n", (unsigned long long)cum);
}

enum { F_REQUESTS, F_TOKENS, F_COST, F_UNPRICED, F_LATENCY, F_TTFT, F_ITL, F_WEIGHT, F_N };

static const struct {
    const char *name, *type, *help;
} families[F_N] = {
    {"aviary_requests_total", "counter", "Requests finished, by route, variant and outcome."},
    {"aviary_tokens_total", "counter", "Tokens used, by kind (input counts cached input and cache writes)."},
    {"aviary_cost_usd_total", "counter", "Cost at the configured prices."},
    {"aviary_unpriced_requests_total", "counter", "Requests with tokens but no price for their model."},
    {"aviary_request_duration_seconds", "histogram", "From the request read to the response relayed."},
    {"aviary_time_to_first_token_seconds", "histogram", "To the first piece of the answer's text."},
    {"aviary_inter_token_seconds", "histogram", "Median time between a stream's content events, per request."},
    {"aviary_route_weight", "gauge", "A variant's weight in its route's split."},
};

void av_metrics_prometheus(struct evbuffer *out, const av_metrics_route_t *routes, size_t nroutes)
{
    for (int f = 0; f < F_N; f++) {
        evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", families[f].name, families[f].help, families[f].name,
                            families[f].type);
        for (size_t r = 0; r < nroutes; r++) {
            const av_metrics_route_t *rt = &routes[r];
            for (size_t v = 0; v < rt->nvariants && v < rt->m->nvariants; v++) {
                const char *var = rt->variants[v];
                totals_t t;
                sum_totals(rt->m, v, &t);
                switch (f) {
                case F_REQUESTS:
                    for (int o = 0; o < AV_OUT_N; o++) {
                        evbuffer_add_printf(out, "%s{", families[f].name);
                        labels(out, rt->name, var);
                        evbuffer_add_printf(out, ",outcome=\"%s\"} %llu\n", av_outcome_names[o],
                                            (unsigned long long)t.outcomes[o]);
                    }
                    break;
                case F_TOKENS:
                    for (int k = 0; k < TOK_N; k++) {
                        evbuffer_add_printf(out, "%s{", families[f].name);
                        labels(out, rt->name, var);
                        evbuffer_add_printf(out, ",kind=\"%s\"} %llu\n", tok_names[k], (unsigned long long)t.tokens[k]);
                    }
                    break;
                case F_COST:
                case F_UNPRICED:
                case F_WEIGHT:
                    evbuffer_add_printf(out, "%s{", families[f].name);
                    labels(out, rt->name, var);
                    if (f == F_COST)
                        evbuffer_add_printf(out, "} %.9f\n", (double)t.cost_nano / 1e9);
                    else if (f == F_UNPRICED)
                        evbuffer_add_printf(out, "} %llu\n", (unsigned long long)t.unpriced);
                    else
                        evbuffer_add_printf(out, "} %lld\n", (long long)(rt->weights ? rt->weights[v] : 0));
                    break;
                case F_LATENCY:
                    histogram(out, families[f].name, rt->name, var, t.lat, lat_le, NLAT, t.lat_sum);
                    break;
                case F_TTFT:
                    histogram(out, families[f].name, rt->name, var, t.ttft, lat_le, NLAT, t.ttft_sum);
                    break;
                case F_ITL:
                    histogram(out, families[f].name, rt->name, var, t.itl, itl_le, NITL, t.itl_sum);
                    break;
                default:
                    break;
                }
            }
        }
    }
}

/* ---- windows ---- */

typedef struct {
    uint64_t outcomes[AV_OUT_N], tokens[TOK_N], cost_nano;
    uint64_t lat[AV_HIST_BUCKETS], ttft[AV_HIST_BUCKETS], itl[AV_HIST_BUCKETS];
} merged_t;

static void merge(const av_metrics_t *m, size_t v, uint64_t first_epoch, uint64_t last_epoch, merged_t *s)
{
    memset(s, 0, sizeof(*s));
    for (int k = 0; k < m->nworkers; k++) {
        const cell_t *c = &m->cells[v * (size_t)m->nworkers + (size_t)k];
        for (int b = 0; b < WIN_BUCKETS; b++) {
            const window_t *w = &c->w[b];
            uint64_t e = __atomic_load_n(&w->epoch, __ATOMIC_ACQUIRE);
            if (e < first_epoch || e > last_epoch)
                continue;
            for (int o = 0; o < AV_OUT_N; o++)
                s->outcomes[o] += LOAD(w->outcomes[o]);
            for (int t = 0; t < TOK_N; t++)
                s->tokens[t] += LOAD(w->tokens[t]);
            s->cost_nano += LOAD(w->cost_nano);
            for (int i = 0; i < AV_HIST_BUCKETS; i++) {
                s->lat[i] += LOAD(w->lat[i]);
                s->ttft[i] += LOAD(w->ttft[i]);
                s->itl[i] += LOAD(w->itl[i]);
            }
        }
    }
}

void av_metrics_hist(const av_metrics_t *m, size_t variant, int which, uint64_t since_wall_us, uint64_t now_wall_us,
                     uint64_t *out)
{
    memset(out, 0, AV_HIST_BUCKETS * sizeof(*out));
    if (m == NULL || variant >= m->nvariants)
        return;
    merged_t *s = av_malloc(sizeof(*s));
    merge(m, variant, since_wall_us / 1000000u / WIN_SECONDS, now_wall_us / 1000000u / WIN_SECONDS, s);
    memcpy(out, which == 0 ? s->lat : s->ttft, AV_HIST_BUCKETS * sizeof(*out));
    free(s);
}

/* A quantile from hist.h buckets, in milliseconds (the bucket's middle), or -1. */
static int64_t quantile_us(const uint64_t *h, double q)
{
    uint64_t n = 0, seen = 0;
    for (int i = 0; i < AV_HIST_BUCKETS; i++)
        n += h[i];
    if (n == 0)
        return -1;
    uint64_t rank = (uint64_t)(q * (double)n + 0.999999);
    if (rank < 1)
        rank = 1;
    for (int i = 0; i < AV_HIST_BUCKETS; i++) {
        seen += h[i];
        if (seen >= rank)
            return (int64_t)av_hist_mid((unsigned)i);
    }
    return -1;
}

static void ms(struct evbuffer *out, const char *key, int64_t us)
{
    char buf[AV_JW_NUM_MAX];
    char *e = av_jw_ms(buf, us);
    evbuffer_add_printf(out, ",\"%s\":%.*s", key, (int)(e - buf), buf);
}

void av_metrics_window_json(struct evbuffer *out, const av_metrics_t *m, const char *const *variants, size_t nvariants,
                            int seconds, uint64_t now_wall_us)
{
    uint64_t last = now_wall_us / 1000000u / WIN_SECONDS;
    uint64_t span = (uint64_t)(seconds + WIN_SECONDS - 1) / WIN_SECONDS;
    uint64_t first = last + 1 >= span ? last + 1 - span : 0;
    evbuffer_add(out, "[", 1);
    for (size_t v = 0; v < nvariants && v < m->nvariants; v++) {
        merged_t s;
        merge(m, v, first, last, &s);
        uint64_t n = 0, errors = 0;
        for (int o = 0; o < AV_OUT_N; o++)
            n += s.outcomes[o];
        errors = s.outcomes[AV_OUT_SERVER_ERROR] + s.outcomes[AV_OUT_TIMEOUT];
        evbuffer_add_printf(out, "%s{\"variant\":", v ? "," : "");
        av_json_str(out, variants[v], strlen(variants[v]));
        evbuffer_add_printf(out, ",\"requests\":%llu,\"outcomes\":{", (unsigned long long)n);
        for (int o = 0; o < AV_OUT_N; o++)
            evbuffer_add_printf(out, "%s\"%s\":%llu", o ? "," : "", av_outcome_names[o],
                                (unsigned long long)s.outcomes[o]);
        evbuffer_add_printf(out, "},\"error_rate\":%.6f", n ? (double)errors / (double)n : 0.0);
        ms(out, "latency_p50_ms", quantile_us(s.lat, 0.50));
        ms(out, "latency_p95_ms", quantile_us(s.lat, 0.95));
        ms(out, "latency_p99_ms", quantile_us(s.lat, 0.99));
        ms(out, "ttft_p50_ms", quantile_us(s.ttft, 0.50));
        ms(out, "ttft_p95_ms", quantile_us(s.ttft, 0.95));
        ms(out, "inter_token_p50_ms", quantile_us(s.itl, 0.50));
        evbuffer_add_printf(out, ",\"tokens\":{");
        for (int t = 0; t < TOK_N; t++)
            evbuffer_add_printf(out, "%s\"%s\":%llu", t ? "," : "", tok_names[t], (unsigned long long)s.tokens[t]);
        evbuffer_add_printf(out, "},\"cost_usd\":%.9f,\"cost_per_request_usd\":%.9f}", (double)s.cost_nano / 1e9,
                            n ? (double)s.cost_nano / 1e9 / (double)n : 0.0);
    }
    evbuffer_add(out, "]", 1);
}

static void arm_sum(const av_metrics_t *m, size_t variant, int shadow, av_arm_t *out)
{
    memset(out, 0, sizeof(*out));
    if (m == NULL || variant >= m->nvariants)
        return;
    for (int w = 0; w < m->nworkers; w++) {
        const cell_t *c = &m->cells[variant * (size_t)m->nworkers + (size_t)w];
        const arm_cell_t *a = shadow ? &c->shadow_arm : &c->arm;
        out->n += LOAD(a->n);
        out->errors += LOAD(a->errors);
        out->r429 += LOAD(a->r429);
        out->blocks += LOAD(a->blocks);
        out->lat_n += LOAD(a->lat_n);
        out->ttft_n += LOAD(a->ttft_n);
        out->cost_n += LOAD(a->cost_n);
        out->lat_sum += loadd(&a->lat_sum);
        out->lat_sq += loadd(&a->lat_sq);
        out->ttft_sum += loadd(&a->ttft_sum);
        out->ttft_sq += loadd(&a->ttft_sq);
        out->cost_sum += loadd(&a->cost_sum);
        out->cost_sq += loadd(&a->cost_sq);
        out->fb_n += LOAD(a->fb_n);
        out->fb_sum += loadd(&a->fb_sum);
        out->fb_sq += loadd(&a->fb_sq);
        out->itl_n += LOAD(a->itl_n);
        out->itl_sum += loadd(&a->itl_sum);
        out->itl_sq += loadd(&a->itl_sq);
        out->tok_n += LOAD(a->tok_n);
        out->tok_sum += loadd(&a->tok_sum);
        out->tok_sq += loadd(&a->tok_sq);
    }
}

void av_metrics_arm(const av_metrics_t *m, size_t variant, av_arm_t *out)
{
    arm_sum(m, variant, 0, out);
}

void av_metrics_arm_shadow(const av_metrics_t *m, size_t variant, av_arm_t *out)
{
    arm_sum(m, variant, 1, out);
}

void av_metrics_feedback(av_metrics_t *m, size_t variant, int worker, double score)
{
    if (m == NULL || variant >= m->nvariants || worker < 0 || worker >= m->nworkers)
        return;
    arm_cell_t *a = &m->cells[variant * (size_t)m->nworkers + (size_t)worker].arm;
    ADD(a->fb_n, 1);
    addd(&a->fb_sum, score);
    addd(&a->fb_sq, score * score);
}
