/* judge.h: the rollout controller's verdict on a candidate against its
 * baseline, per KPI, from what each arm saw since the step began. Pure: the
 * controller feeds it sums; simulations feed it synthetic ones.
 *
 * Method (README, "How a rollout decides"):
 * - Rates (errors, 429s, guardrail blocks): each event is one trial of
 *   "did it come from the candidate?", which under "no regression" has
 *   probability p0 = nb (ra + margin) / (na ra + nb (ra + margin)), ra the
 *   baseline's rate so far. A beta mixture over p > p0 gives an e-value
 *   (a test martingale): rejecting when it reaches 1 / alpha keeps the false
 *   alarm rate at alpha however often it is read (Ville's inequality).
 *   When the baseline has no events yet, the candidate's events are tested
 *   alone against the allowed rate (its margin) with the same mixture.
 * - Means (log latency, log TTFT, cost per request): the mSPRT with a normal
 *   mixture on the difference minus the margin (log of max_ratio), one-sided.
 *   Feedback scores the same way, the other way round (lower is worse), with
 *   an absolute margin (max_decrease) and an SLO that is a floor.
 * - Before min_requests per arm, or min_events expected events, the verdict
 *   is "wait": not enough data never passes and never fails.
 * - alpha is split evenly across the KPIs a rollout watches.
 * - An absolute SLO on the candidate trips at once, with no test. */
#ifndef AV_JUDGE_H
#define AV_JUDGE_H

#include <stddef.h>
#include <stdint.h>

enum { AV_KPI_ERRORS = 1, AV_KPI_429, AV_KPI_BLOCKS, AV_KPI_LATENCY, AV_KPI_TTFT, AV_KPI_COST, AV_KPI_FEEDBACK,
       AV_KPI_ITL, AV_KPI_TOKENS };
enum { AV_VERDICT_WAIT = 0, AV_VERDICT_OK, AV_VERDICT_FAIL, AV_VERDICT_SLO };

/* What one arm saw: counts, and sums of the values (and their squares) a
 * mean is taken of: log milliseconds for latency and TTFT, dollars for cost. */
typedef struct av_arm_s {
    uint64_t n, errors, r429, blocks;
    uint64_t lat_n, ttft_n, cost_n;
    double lat_sum, lat_sq, ttft_sum, ttft_sq, cost_sum, cost_sq;
    uint64_t fb_n;             /* feedback scores (0 to 1) the application posted */
    double fb_sum, fb_sq;
    uint64_t itl_n, tok_n;     /* per request: log of its median inter-token ms; its output tokens */
    double itl_sum, itl_sq, tok_sum, tok_sq;
} av_arm_t;

typedef struct {
    int kind;          /* AV_KPI_* */
    double margin;     /* rates: points allowed (0.01 = one point); means: allowed ratio (1.2); feedback: points of score */
    double slo;        /* the candidate's absolute limit (a rate, or ms, or dollars per request); 0: none */
} av_kpi_t;

typedef struct {
    double alpha;           /* false-alarm budget of the whole rollout (0.05) */
    uint64_t min_requests;  /* per arm before any relative verdict (200) */
    double min_events;      /* expected rate events per arm before a rate verdict (5) */
} av_judge_cfg_t;

typedef struct {
    int verdict;            /* AV_VERDICT_* */
    double baseline, candidate; /* the KPI's value for each arm (rate, ms, dollars) */
    double lo, hi;          /* an always-valid interval for candidate against baseline: a difference
                             * (rates, scores) or a ratio (latency, TTFT, inter-token, cost, tokens) */
    uint64_t n_baseline, n_candidate; /* the samples the KPI is taken over */
    double evidence;        /* the e-value or mSPRT ratio; fails at 1 / (alpha / kpis) */
    const char *why;        /* a few words: "not enough data", "no regression", ... */
} av_kpi_result_t;

void av_arm_add(av_arm_t *arm, int error, int r429, int blocked, double latency_ms, double ttft_ms, double cost);
void av_arm_add_stream(av_arm_t *arm, double itl_ms, double output_tokens);
/* out = now - then, field by field (what an arm saw between two reads);
 * all zero when now is behind then (other counters: nothing known since). */
void av_arm_diff(const av_arm_t *now, const av_arm_t *then, av_arm_t *out);
/* Whether some count of now is below then's: they are not the same counters. */
int av_arm_behind(const av_arm_t *now, const av_arm_t *then);
/* Judges one KPI of candidate b against baseline a; nkpis splits alpha. */
void av_judge_kpi(const av_judge_cfg_t *cfg, const av_kpi_t *k, size_t nkpis, const av_arm_t *a, const av_arm_t *b,
                  av_kpi_result_t *out);

/* The step-end tail check on two hist.h histograms (AV_HIST_BUCKETS counts
 * each, microseconds): the baseline's p95 (inside its bucket in proportion)
 * times the margin is the limit; if the candidate's own p95 were within it,
 * at most 5 % of its requests would fall past it. past counts them (the
 * bucket the limit falls in, in proportion) and p is the exact binomial
 * tail of that many of nb at 5 %. */
typedef struct {
    uint64_t na, nb;
    double base_p95_ms, limit_ms, past, p;
} av_tail_t;
void av_tail_check(const uint64_t *ha, const uint64_t *hb, double margin, av_tail_t *out);

/* The step-end distribution check: a Mann-Whitney U test of the candidate
 * against the baseline scaled by the margin (each baseline bucket's count
 * spread over the buckets its scaled range covers), so that it asks whether
 * the candidate tends to be slower than the baseline times the margin, not
 * slower at all (a small systematic bias between two backend processes is
 * within a margin, and an unscaled test finds it with enough data). p is
 * one-sided (candidate higher); the medians are read inside their buckets. */
typedef struct {
    uint64_t na, nb;
    double med_a_ms, med_b_ms, z, p;
} av_shift_t;
void av_shift_check(const uint64_t *ha, const uint64_t *hb, double margin, av_shift_t *out);

#endif
