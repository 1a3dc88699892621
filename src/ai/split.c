/* split.c: choosing a route's variant. The bucket space [0, 2^32) is laid
 * out once per weight change; a request's bucket comes from its sticky key
 * (hashed with the route's salt) or, without one, from the worker's random
 * generator. Weights are read under a sequence lock, so the request path
 * takes no lock and an admin change is seen whole by every worker. */
#include "split.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "av.h"
#include "config.h"
#include "geo.h"
#include "headers.h"
#include "metrics.h"
#include "loop.h"

const char AV_ASSIGN_OVERRIDE[] = "override";
const char AV_ASSIGN_POLICY[] = "policy";
const char AV_ASSIGN_GEO[] = "geo";
const char AV_ASSIGN_SHADOW[] = "shadow";
const char AV_ASSIGN_STICKY[] = "sticky";
const char AV_ASSIGN_WEIGHT[] = "weight";

typedef struct {
    _Atomic uint64_t requests, unkeyed, overridden;
    char _pad[64 - 3 * sizeof(uint64_t)]; /* one cache line per variant: workers count apart */
} split_counter_t;

struct av_split_state_s {
    av_split_state_t *next;
    char *route;
    size_t n;
    char *names[AV_SPLIT_MAX_VARIANTS];
    int64_t config_weights[AV_SPLIT_MAX_VARIANTS]; /* as the config said when last loaded */
    /* under the sequence lock: odd while a writer is inside */
    _Atomic uint64_t seq;
    _Atomic int64_t weights[AV_SPLIT_MAX_VARIANTS];
    _Atomic uint64_t lo[AV_SPLIT_MAX_VARIANTS], hi[AV_SPLIT_MAX_VARIANTS];
    pthread_mutex_t write_lock; /* writers among themselves */
    split_counter_t counts[AV_SPLIT_MAX_VARIANTS];
    _Atomic int64_t shadow_in_flight;
    _Atomic uint64_t shadow_sent, shadow_dropped, shadow_over_budget;
    /* the copies' spending in the current minute */
    _Atomic uint64_t budget_minute;
    _Atomic int64_t budget_tokens, budget_nano;
    av_metrics_t *metrics;      /* per variant and worker */
};

struct av_split_reg_s {
    int nworkers;
    av_split_state_t *states;
    av_split_state_t *retired; /* replaced, but older generations may still point at them */
};

const char *av_split_route_name(const av_split_state_t *s)
{
    return s->route;
}

const char *av_split_variant_name(const av_split_state_t *s, size_t i)
{
    return i < s->n ? s->names[i] : "?";
}

/* ---- buckets ---- */

static uint64_t mix64(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

uint32_t av_split_bucket(const char *salt, const char *key, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a over salt, a separator, key; then a finaliser */
    for (const unsigned char *p = (const unsigned char *)salt; *p; p++)
        h = (h ^ *p) * 0x100000001b3ull;
    h = (h ^ 0xff) * 0x100000001b3ull;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)key[i]) * 0x100000001b3ull;
    return (uint32_t)(mix64(h) >> 32);
}

void av_split_ranges(const int64_t *weights, size_t n, uint64_t *lo, uint64_t *hi)
{
    const uint64_t space = 1ull << 32;
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += (uint64_t)weights[i];
    uint64_t cum = 0, at = 0;
    for (size_t i = 1; i < n; i++) { /* candidates from the bottom, in order */
        cum += (uint64_t)weights[i];
        uint64_t end = total ? (uint64_t)((unsigned __int128)cum * space / total) : 0;
        lo[i] = at;
        hi[i] = end;
        at = end;
    }
    lo[0] = at; /* the baseline takes the rest, at the top */
    hi[0] = space;
}

/* ---- states ---- */

static void publish(av_split_state_t *s, const int64_t *w)
{
    uint64_t lo[AV_SPLIT_MAX_VARIANTS], hi[AV_SPLIT_MAX_VARIANTS];
    av_split_ranges(w, s->n, lo, hi);
    uint64_t seq = atomic_load_explicit(&s->seq, memory_order_relaxed);
    atomic_store_explicit(&s->seq, seq + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    for (size_t i = 0; i < s->n; i++) {
        atomic_store_explicit(&s->weights[i], w[i], memory_order_relaxed);
        atomic_store_explicit(&s->lo[i], lo[i], memory_order_relaxed);
        atomic_store_explicit(&s->hi[i], hi[i], memory_order_relaxed);
    }
    atomic_store_explicit(&s->seq, seq + 2, memory_order_release);
}

int av_split_set_weights(av_split_state_t *s, const int64_t *w, size_t n)
{
    int64_t total = 0;
    if (n != s->n)
        return AV_EINVAL;
    for (size_t i = 0; i < n; i++) {
        if (w[i] < 0 || w[i] > 1000000)
            return AV_EINVAL;
        total += w[i];
    }
    if (total == 0)
        return AV_EINVAL;
    pthread_mutex_lock(&s->write_lock);
    publish(s, w);
    pthread_mutex_unlock(&s->write_lock);
    return 0;
}

/* Reads the ranges whole: retried while a writer is inside. */
static void read_ranges(av_split_state_t *s, uint64_t *lo, uint64_t *hi, int64_t *w)
{
    for (;;) {
        uint64_t a = atomic_load_explicit(&s->seq, memory_order_acquire);
        if (a & 1)
            continue;
        for (size_t i = 0; i < s->n; i++) {
            if (lo != NULL) {
                lo[i] = atomic_load_explicit(&s->lo[i], memory_order_relaxed);
                hi[i] = atomic_load_explicit(&s->hi[i], memory_order_relaxed);
            }
            if (w != NULL)
                w[i] = atomic_load_explicit(&s->weights[i], memory_order_relaxed);
        }
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&s->seq, memory_order_relaxed) == a)
            return;
    }
}

void av_split_weights(av_split_state_t *s, int64_t *w, size_t n)
{
    (void)n;
    read_ranges(s, NULL, NULL, w);
}

void av_split_counts(av_split_state_t *s, size_t i, av_split_counts_t *out)
{
    out->requests = atomic_load_explicit(&s->counts[i].requests, memory_order_relaxed);
    out->unkeyed = atomic_load_explicit(&s->counts[i].unkeyed, memory_order_relaxed);
    out->overridden = atomic_load_explicit(&s->counts[i].overridden, memory_order_relaxed);
}

/* The current minute's counters, reset when the minute turns. */
static void budget_roll(av_split_state_t *s)
{
    uint64_t minute = av_wall_us() / 60000000u, seen = atomic_load_explicit(&s->budget_minute, memory_order_relaxed);
    if (seen != minute && atomic_compare_exchange_strong(&s->budget_minute, &seen, minute)) {
        atomic_store_explicit(&s->budget_tokens, 0, memory_order_relaxed);
        atomic_store_explicit(&s->budget_nano, 0, memory_order_relaxed);
    }
}

int av_split_shadow_budget_ok(av_split_state_t *s, int64_t max_tokens, int64_t max_nano)
{
    if (max_tokens <= 0 && max_nano <= 0)
        return 1;
    budget_roll(s);
    if ((max_tokens > 0 && atomic_load_explicit(&s->budget_tokens, memory_order_relaxed) >= max_tokens) ||
        (max_nano > 0 && atomic_load_explicit(&s->budget_nano, memory_order_relaxed) >= max_nano)) {
        atomic_fetch_add_explicit(&s->shadow_over_budget, 1, memory_order_relaxed);
        return 0;
    }
    return 1;
}

void av_split_shadow_spent(av_split_state_t *s, int64_t tokens, int64_t nano)
{
    budget_roll(s);
    atomic_fetch_add_explicit(&s->budget_tokens, tokens, memory_order_relaxed);
    if (nano > 0)
        atomic_fetch_add_explicit(&s->budget_nano, nano, memory_order_relaxed);
}

int av_split_shadow_acquire(av_split_state_t *s, int64_t max)
{
    int64_t n = atomic_load_explicit(&s->shadow_in_flight, memory_order_relaxed);
    do {
        if (n >= max) {
            atomic_fetch_add_explicit(&s->shadow_dropped, 1, memory_order_relaxed);
            return 0;
        }
    } while (!atomic_compare_exchange_weak_explicit(&s->shadow_in_flight, &n, n + 1, memory_order_relaxed,
                                                    memory_order_relaxed));
    atomic_fetch_add_explicit(&s->shadow_sent, 1, memory_order_relaxed);
    return 1;
}

void av_split_shadow_release(av_split_state_t *s)
{
    atomic_fetch_sub_explicit(&s->shadow_in_flight, 1, memory_order_relaxed);
}

void av_split_shadow_counts(av_split_state_t *s, uint64_t *sent, uint64_t *dropped, int64_t *in_flight,
                            uint64_t *over_budget, int64_t *minute_tokens, int64_t *minute_nano)
{
    budget_roll(s);
    *over_budget = atomic_load_explicit(&s->shadow_over_budget, memory_order_relaxed);
    *minute_tokens = atomic_load_explicit(&s->budget_tokens, memory_order_relaxed);
    *minute_nano = atomic_load_explicit(&s->budget_nano, memory_order_relaxed);
    *sent = atomic_load_explicit(&s->shadow_sent, memory_order_relaxed);
    *dropped = atomic_load_explicit(&s->shadow_dropped, memory_order_relaxed);
    *in_flight = atomic_load_explicit(&s->shadow_in_flight, memory_order_relaxed);
}

av_split_reg_t *av_split_reg_new(int nworkers)
{
    av_split_reg_t *r = av_calloc(1, sizeof(av_split_reg_t));
    r->nworkers = nworkers;
    return r;
}

av_metrics_t *av_split_metrics(av_split_state_t *s)
{
    return s->metrics;
}

static void state_free(av_split_state_t *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->names[i]);
    free(s->route);
    av_metrics_free(s->metrics);
    pthread_mutex_destroy(&s->write_lock);
    free(s);
}

void av_split_reg_free(av_split_reg_t *r)
{
    if (r == NULL)
        return;
    av_split_state_t *lists[2] = {r->states, r->retired};
    for (int k = 0; k < 2; k++) {
        av_split_state_t *s = lists[k];
        while (s != NULL) {
            av_split_state_t *next = s->next;
            state_free(s);
            s = next;
        }
    }
    free(r);
}

static int same_variants(const av_split_state_t *s, const av_route_t *rt)
{
    if (s->n != rt->nvariants)
        return 0;
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->names[i], rt->variants[i].name) != 0)
            return 0;
    return 1;
}

void av_split_attach(av_split_reg_t *r, av_config_t *cfg)
{
    for (size_t k = 0; k < cfg->nroutes; k++) {
        av_route_t *rt = &cfg->routes[k];
        int64_t w[AV_SPLIT_MAX_VARIANTS] = {0};
        for (size_t i = 0; i < rt->nvariants; i++)
            w[i] = rt->variants[i].weight;
        av_split_state_t **pp = &r->states, *s;
        while ((s = *pp) != NULL && strcmp(s->route, rt->name) != 0)
            pp = &s->next;
        if (s != NULL && !same_variants(s, rt)) { /* other variants: a new split, counters from 0 */
            *pp = s->next;
            s->next = r->retired;
            r->retired = s;
            s = NULL;
        }
        if (s == NULL) {
            s = av_calloc(1, sizeof(*s));
            s->route = av_strdup(rt->name);
            s->n = rt->nvariants;
            for (size_t i = 0; i < s->n; i++)
                s->names[i] = av_strdup(rt->variants[i].name);
            pthread_mutex_init(&s->write_lock, NULL);
            s->metrics = av_metrics_new(s->n, r->nworkers);
            s->next = r->states;
            r->states = s;
            memcpy(s->config_weights, w, s->n * sizeof(w[0]));
            publish(s, w);
        } else if (memcmp(s->config_weights, w, s->n * sizeof(w[0])) != 0) {
            /* the file's weights changed: they win over an earlier admin call */
            memcpy(s->config_weights, w, s->n * sizeof(w[0]));
            av_split_set_weights(s, w, s->n);
        }
        rt->split = s;
    }
}

/* ---- choosing ---- */

/* The value of cookie name in the request's Cookie headers. */
static const char *cookie_value(const av_req_t *req, const char *name, size_t *len)
{
    size_t nlen = strlen(name);
    for (size_t i = 0; i < req->headers.n; i++) {
        const av_header_t *h = &req->headers.v[i];
        if (!av_streq_ci(h->name, h->name_len, "cookie"))
            continue;
        const char *p = h->value, *end = h->value + h->value_len;
        while (p < end) {
            while (p < end && (*p == ' ' || *p == ';'))
                p++;
            const char *eq = memchr(p, '=', (size_t)(end - p));
            const char *semi = memchr(p, ';', (size_t)(end - p));
            if (semi == NULL)
                semi = end;
            if (eq != NULL && eq < semi && (size_t)(eq - p) == nlen && memcmp(p, name, nlen) == 0) {
                *len = (size_t)(semi - eq - 1);
                return eq + 1;
            }
            p = semi;
        }
    }
    return NULL;
}

/* The client's API key: Authorization's credentials, or x-api-key. */
static const char *api_key(const av_req_t *req, size_t *len)
{
    const av_header_t *h = av_headers_get(&req->headers, "authorization");
    if (h != NULL) {
        const char *v = h->value;
        size_t n = h->value_len;
        if (n > 7 && strncasecmp(v, "bearer ", 7) == 0) {
            v += 7;
            n -= 7;
        }
        *len = n;
        return n > 0 ? v : NULL;
    }
    h = av_headers_get(&req->headers, "x-api-key");
    if (h != NULL && h->value_len > 0) {
        *len = h->value_len;
        return h->value;
    }
    return NULL;
}

/* The first sticky source that the request carries. */
static int has_code(const char (*list)[3], size_t n, const char *code)
{
    for (size_t i = 0; i < n; i++)
        if (code[0] != '\0' && memcmp(list[i], code, 2) == 0)
            return 1;
    return 0;
}

/* The first geo rule the client's location meets, or -1. */
static long geo_rule(const av_req_t *req, const av_route_t *rt)
{
    for (size_t i = 0; i < rt->ngeo; i++) {
        const av_geo_rule_t *g = &rt->geo[i];
        if (g->ncountries && !has_code(g->countries, g->ncountries, req->geo_country))
            continue;
        if (g->ncontinents && !has_code(g->continents, g->ncontinents, req->geo_continent))
            continue;
        if (g->nasns) {
            size_t k = 0;
            while (k < g->nasns && (uint64_t)g->asns[k] != req->geo_asn)
                k++;
            if (k == g->nasns)
                continue;
        }
        return (long)i;
    }
    return -1;
}

static const char *sticky_key(const av_req_t *req, const av_route_t *rt, const char *const *body_keys,
                              const size_t *body_key_lens, size_t *len)
{
    size_t body_i = 0;
    for (size_t i = 0; i < rt->nsticky; i++) {
        const av_sticky_src_t *src = &rt->sticky[i];
        const char *v = NULL;
        const av_header_t *h;
        switch (src->kind) {
        case AV_STICKY_HEADER:
            if ((h = av_headers_get(&req->headers, src->name)) != NULL && h->value_len > 0) {
                v = h->value;
                *len = h->value_len;
            }
            break;
        case AV_STICKY_COOKIE:
            v = cookie_value(req, src->name, len);
            break;
        case AV_STICKY_BODY:
            if (body_keys != NULL && body_keys[body_i] != NULL) {
                v = body_keys[body_i];
                *len = body_key_lens[body_i];
            }
            body_i++;
            break;
        case AV_STICKY_API_KEY:
            v = api_key(req, len);
            break;
        case AV_STICKY_CLIENT_IP:
            v = req->real_ip;
            *len = strlen(v);
            break;
        }
        if (v != NULL && *len > 0)
            return v;
    }
    return NULL;
}

/* Constant time, so a token cannot be guessed a byte at a time. */
static int token_ok(const char *want, const char *got, size_t got_len)
{
    size_t n = strlen(want);
    unsigned diff = (unsigned)(n ^ got_len);
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)want[i] ^ (unsigned char)(i < got_len ? got[i] : 0);
    return diff == 0;
}

static void count(av_split_state_t *s, size_t i, const char *assign)
{
    if (s == NULL)
        return;
    atomic_fetch_add_explicit(&s->counts[i].requests, 1, memory_order_relaxed);
    if (assign == AV_ASSIGN_WEIGHT)
        atomic_fetch_add_explicit(&s->counts[i].unkeyed, 1, memory_order_relaxed);
    else if (assign == AV_ASSIGN_OVERRIDE || assign == AV_ASSIGN_POLICY)
        atomic_fetch_add_explicit(&s->counts[i].overridden, 1, memory_order_relaxed);
}

int av_split_choose(av_req_t *req, const char *const *body_keys, const size_t *body_key_lens, char *why,
                    size_t whylen)
{
    const av_route_t *rt = req->route;
    av_split_state_t *s = rt->split;
    if (rt->override_enabled) {
        const av_header_t *h = av_headers_get(&req->headers, "x-aviary-variant");
        if (h != NULL) {
            if (rt->override_token != NULL) {
                const av_header_t *t = av_headers_get(&req->headers, "x-aviary-token");
                if (t == NULL || !token_ok(rt->override_token, t->value, t->value_len)) {
                    snprintf(why, whylen, "x-aviary-variant on route %s needs the right x-aviary-token", rt->name);
                    return 403;
                }
            }
            for (size_t i = 0; i < rt->nvariants; i++)
                if (strlen(rt->variants[i].name) == h->value_len &&
                    memcmp(rt->variants[i].name, h->value, h->value_len) == 0) {
                    req->variant = &rt->variants[i];
                    req->assign = AV_ASSIGN_OVERRIDE;
                    count(s, i, req->assign);
                    return 0;
                }
            size_t at = (size_t)snprintf(why, whylen, "route %s has no variant \"%.*s\"; it has", rt->name,
                                         (int)(h->value_len > 64 ? 64 : h->value_len), h->value);
            for (size_t i = 0; i < rt->nvariants && at < whylen; i++)
                at += (size_t)snprintf(why + at, whylen - at, "%s \"%s\"", i ? "," : "", rt->variants[i].name);
            return 400;
        }
    }
    if (req->policy_variant > 0 && (size_t)req->policy_variant <= rt->nvariants) {
        size_t i = (size_t)req->policy_variant - 1;
        req->variant = &rt->variants[i];
        req->assign = AV_ASSIGN_POLICY;
        count(s, i, req->assign);
        return 0;
    }
    const av_geo_t *geo = req->cfg->geo;
    av_geo_client_ip(geo, req, req->real_ip, sizeof(req->real_ip));
    if (rt->ngeo > 0) {
        av_geo_info_t info;
        av_geo_lookup(geo, req->real_ip, &info);
        memcpy(req->geo_country, info.country, 3);
        memcpy(req->geo_continent, info.continent, 3);
        req->geo_asn = info.asn;
        long g = geo_rule(req, rt);
        if (g >= 0) {
            req->variant = &rt->variants[rt->geo[g].variant];
            req->assign = AV_ASSIGN_GEO;
            count(s, rt->geo[g].variant, req->assign);
            return 0;
        }
    }
    if (rt->nvariants == 1) {
        req->variant = &rt->variants[0];
        req->assign = AV_ASSIGN_WEIGHT;
        count(s, 0, req->assign); /* nothing to choose: by weight, as the KPI line says */
        return 0;
    }
    size_t klen = 0;
    const char *key = sticky_key(req, rt, body_keys, body_key_lens, &klen);
    uint32_t bucket;
    if (key != NULL) {
        bucket = av_split_bucket(rt->salt, key, klen);
        req->assign = AV_ASSIGN_STICKY;
    } else {
        bucket = (uint32_t)(av_worker_random(req->worker) >> 32);
        req->assign = AV_ASSIGN_WEIGHT;
    }
    uint64_t lo[AV_SPLIT_MAX_VARIANTS], hi[AV_SPLIT_MAX_VARIANTS];
    if (s != NULL) {
        read_ranges(s, lo, hi, NULL);
    } else { /* a config not attached to a registry (tools, tests): its own weights */
        int64_t w[AV_SPLIT_MAX_VARIANTS] = {0};
        for (size_t i = 0; i < rt->nvariants; i++)
            w[i] = rt->variants[i].weight;
        av_split_ranges(w, rt->nvariants, lo, hi);
    }
    size_t pick = 0;
    for (size_t i = 0; i < rt->nvariants; i++)
        if (bucket >= lo[i] && bucket < hi[i]) {
            pick = i;
            break;
        }
    req->variant = &rt->variants[pick];
    count(s, pick, req->assign);
    return 0;
}
