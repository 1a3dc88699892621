/* metrics.h: per route and variant, what every finished request added:
 * cumulative counters and histograms for Prometheus (GET /metrics), and
 * time-bucketed windows (10 s buckets, the last 10 minutes) with mergeable
 * histograms for the rollout controller and GET /kpi. Each worker writes its
 * own cells (no locks, no shared cache lines); readers add them up. */
#ifndef AV_METRICS_H
#define AV_METRICS_H

#include <stddef.h>
#include <stdint.h>

struct evbuffer;
typedef struct av_metrics_s av_metrics_t;

/* Outcome classes of a request. */
enum { AV_OUT_OK, AV_OUT_CLIENT_ERROR, AV_OUT_RATE_LIMITED, AV_OUT_SERVER_ERROR, AV_OUT_TIMEOUT,
       AV_OUT_CLIENT_ABORT, AV_OUT_BLOCKED, AV_OUT_N };
extern const char *const av_outcome_names[AV_OUT_N];

typedef struct {
    int status;
    const char *error;        /* the request's error class, or NULL */
    int override;             /* forced by x-aviary-variant: counted, left out of the windows */
    int64_t latency_us, ttft_us, itl_us; /* < 0: none */
    int64_t input, output, cached, cache_write, reasoning;
    int64_t cost_nano;        /* < 0: unpriced */
    int blocked;              /* a policy denied the request or stopped its stream */
    int shadow;               /* a shadow copy: counted only in the variant's shadow arm */
} av_metrics_rec_t;

/* The outcome class of a status and error class. */
int av_outcome(int status, const char *error);

av_metrics_t *av_metrics_new(size_t nvariants, int nworkers);
void av_metrics_free(av_metrics_t *m);
/* From worker `worker` only (each worker writes its own cells). */
void av_metrics_record(av_metrics_t *m, size_t variant, int worker, const av_metrics_rec_t *r, uint64_t wall_us);

/* One route as the exposition sees it. */
typedef struct {
    const char *name;
    const av_metrics_t *m;
    const char *const *variants;
    const int64_t *weights;
    size_t nvariants;
} av_metrics_route_t;

/* Prometheus text exposition (format 0.0.4) of every route: each metric
 * family once, its HELP and TYPE first, then its samples. */
void av_metrics_prometheus(struct evbuffer *out, const av_metrics_route_t *routes, size_t nroutes);

/* What the rollout controller judges a variant by (judge.h), summed over
 * workers since the start: requests not forced by the override header or
 * a policy, their errors (server errors, timeouts, aborted streams), 429s,
 * policy blocks, and sums of log latency, log TTFT (ms) and cost (dollars).
 * The controller takes differences of these between two reads. */
struct av_arm_s;
void av_metrics_arm(const av_metrics_t *m, size_t variant, struct av_arm_s *out);
/* The same for the shadow copies sent to the variant (a rollout's shadow stage). */
void av_metrics_arm_shadow(const av_metrics_t *m, size_t variant, struct av_arm_s *out);
/* A feedback score (0 to 1) for a request the variant served, from worker
 * `worker` (the one that took the feedback). */
void av_metrics_feedback(av_metrics_t *m, size_t variant, int worker, double score);

/* The variant's latency (which 0) or TTFT (which 1) histogram, in hist.h's
 * buckets, over the windows from since_wall_us to now_wall_us (at most the
 * last ten minutes; whole 10 s buckets). */
void av_metrics_hist(const av_metrics_t *m, size_t variant, int which, uint64_t since_wall_us, uint64_t now_wall_us,
                     uint64_t *out);

/* A window summary per variant over the last `seconds` (10 to 600), as a
 * JSON array of objects. */
void av_metrics_window_json(struct evbuffer *out, const av_metrics_t *m, const char *const *variants, size_t nvariants,
                            int seconds, uint64_t now_wall_us);

#endif
