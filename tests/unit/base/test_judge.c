/* test_judge.c: the rollout verdicts in simulation, with no network:
 * seeded synthetic traffic split 95/5 between a baseline and a candidate,
 * judged every 500 requests as the controller would (looking continuously).
 * - A/A: identical arms, 1000 runs: a false alarm in no more runs than the
 *   configured alpha allows (with three standard errors of slack).
 * - the candidate's errors up 2 points, or its TTFT doubled: rolled back,
 *   within a bound; the distribution of requests needed is printed.
 * - low traffic: every verdict is "wait". */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "hist.h"
#include "judge.h"
#include "../test.h"

#define AV_TAIL_BUCKETS AV_HIST_BUCKETS

static uint64_t rng_state;

static double uniform(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}

static double normal(void)
{
    double u = uniform(), v = uniform();
    return sqrt(-2.0 * log(u + 1e-300)) * cos(6.283185307179586 * v);
}

typedef struct {
    double error_rate, ttft_ms, lat_ms;
} arm_model_t;

static void one_request(av_arm_t *arm, const arm_model_t *m)
{
    int err = uniform() < m->error_rate;
    double ttft = m->ttft_ms * exp(0.6 * normal()), lat = m->lat_ms * exp(0.5 * normal());
    av_arm_add(arm, err, 0, 0, lat, err ? -1 : ttft, 0.001);
}

static const av_kpi_t kpis[3] = {
    {AV_KPI_ERRORS, 0.01, 0},
    {AV_KPI_TTFT, 1.2, 0},
    {AV_KPI_LATENCY, 1.2, 0},
};
static const av_judge_cfg_t cfg = {.alpha = 0.05, .min_requests = 200, .min_events = 5};

/* Runs until a FAIL or max requests; returns the requests seen at the FAIL, or 0. */
static uint64_t run(uint64_t seed, const arm_model_t *base, const arm_model_t *cand, uint64_t max,
                    const av_kpi_t *k, size_t nk, int *which)
{
    rng_state = seed * 0x9e3779b97f4a7c15ull + 1;
    av_arm_t a = {0}, b = {0};
    for (uint64_t i = 1; i <= max; i++) {
        if (uniform() < 0.05)
            one_request(&b, cand);
        else
            one_request(&a, base);
        if (i % 500 == 0)
            for (size_t j = 0; j < nk; j++) {
                av_kpi_result_t r;
                av_judge_kpi(&cfg, &k[j], nk, &a, &b, &r);
                if (r.verdict == AV_VERDICT_FAIL || r.verdict == AV_VERDICT_SLO) {
                    *which = k[j].kind;
                    return i;
                }
            }
    }
    return 0;
}

static int cmp_u64(const void *x, const void *y)
{
    uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
    return a < b ? -1 : a > b;
}

static void test_aa(void)
{
    const arm_model_t same = {0.01, 200, 500};
    int alarms = 0, alarms0 = 0, which;
    const av_kpi_t tight[3] = {{AV_KPI_ERRORS, 0, 0}, {AV_KPI_TTFT, 1.0, 0}, {AV_KPI_LATENCY, 1.0, 0}};
    for (uint64_t s = 1; s <= 1000; s++) {
        alarms += run(s, &same, &same, 20000, kpis, 3, &which) != 0;
        alarms0 += run(s + 5000, &same, &same, 20000, tight, 3, &which) != 0;
    }
    printf("# A/A over 1000 runs of 20000 requests, looked at every 500: %d false alarms with the margins, "
           "%d with no margin (alpha 0.05: 50 expected at most)\n", alarms, alarms0);
    CHECK(alarms <= 50 + 21); /* 3 standard errors of a binomial(1000, 0.05) */
    CHECK(alarms0 <= 50 + 21);
}

static void test_regressions(void)
{
    const arm_model_t base = {0.01, 200, 500}, errors = {0.03, 200, 500}, slow = {0.01, 400, 500};
    uint64_t at[200];
    int found = 0, which = 0;
    for (int s = 0; s < 200; s++) {
        at[s] = run((uint64_t)s + 100000, &base, &errors, 400000, kpis, 3, &which);
        found += at[s] != 0 && which == AV_KPI_ERRORS;
        if (at[s] == 0)
            at[s] = UINT64_MAX;
    }
    qsort(at, 200, sizeof(at[0]), cmp_u64);
    printf("# errors 1%% -> 3%% at 5%% weight: found in %d of 200 runs; requests needed: median %llu, p90 %llu\n",
           found, (unsigned long long)at[100], (unsigned long long)at[180]);
    CHECK(found >= 190);
    CHECK(at[180] <= 200000);
    found = 0;
    for (int s = 0; s < 200; s++) {
        at[s] = run((uint64_t)s + 200000, &base, &slow, 100000, kpis, 3, &which);
        found += at[s] != 0 && which == AV_KPI_TTFT;
        if (at[s] == 0)
            at[s] = UINT64_MAX;
    }
    qsort(at, 200, sizeof(at[0]), cmp_u64);
    printf("# TTFT doubled at 5%% weight: found in %d of 200 runs; requests needed: median %llu, p90 %llu\n", found,
           (unsigned long long)at[100], (unsigned long long)at[180]);
    CHECK(found >= 195);
    CHECK(at[180] <= 20000);
}

static void test_low_traffic_waits(void)
{
    const arm_model_t base = {0.01, 200, 500}, bad = {0.5, 2000, 5000};
    rng_state = 7;
    av_arm_t a = {0}, b = {0};
    for (int i = 0; i < 150; i++) {
        one_request(&a, &base);
        one_request(&b, &bad);
    }
    for (size_t j = 0; j < 3; j++) {
        av_kpi_result_t r;
        av_judge_kpi(&cfg, &kpis[j], 3, &a, &b, &r);
        CHECK_INT(r.verdict, AV_VERDICT_WAIT);
        CHECK_STR(r.why, "not enough data");
    }
    /* an SLO trips with no comparison once the candidate has min_requests */
    for (int i = 0; i < 100; i++)
        one_request(&b, &bad);
    av_kpi_t slo = {AV_KPI_ERRORS, 0.01, 0.2};
    av_kpi_result_t r;
    av_judge_kpi(&cfg, &slo, 1, &a, &b, &r);
    CHECK_INT(r.verdict, AV_VERDICT_SLO);
}

/* feedback scores: lower is worse, an absolute margin, a floor */
static void test_feedback(void)
{
    rng_state = 11;
    av_arm_t a = {0}, b = {0}, c = {0};
    for (int i = 0; i < 2000; i++) {
        a.fb_n++, b.fb_n++, c.fb_n++;
        double sa = uniform() < 0.80 ? 1 : 0, sb = uniform() < 0.60 ? 1 : 0, sc = uniform() < 0.79 ? 1 : 0;
        a.fb_sum += sa, a.fb_sq += sa * sa;
        b.fb_sum += sb, b.fb_sq += sb * sb;
        c.fb_sum += sc, c.fb_sq += sc * sc;
    }
    a.n = b.n = c.n = 2000;
    av_kpi_t fb = {AV_KPI_FEEDBACK, 0.05, 0};
    av_kpi_result_t r;
    av_judge_kpi(&cfg, &fb, 1, &a, &b, &r);
    CHECK_INT(r.verdict, AV_VERDICT_FAIL); /* 80 % thumbs up against 60 % */
    CHECK(r.baseline > 0.75 && r.candidate < 0.65);
    av_judge_kpi(&cfg, &fb, 1, &a, &c, &r);
    CHECK_INT(r.verdict, AV_VERDICT_OK); /* 79 % is within 5 points */
    av_kpi_t floor = {AV_KPI_FEEDBACK, 0.05, 0.7};
    av_judge_kpi(&cfg, &floor, 1, &a, &b, &r);
    CHECK_INT(r.verdict, AV_VERDICT_SLO);
}

/* inter-token time and tokens per request: means like the others */
static void test_stream_kpis(void)
{
    rng_state = 5;
    av_arm_t a = {0}, b = {0};
    for (int i = 0; i < 1000; i++) {
        a.n++, b.n++;
        av_arm_add_stream(&a, 20 * exp(0.3 * normal()), 100 + 10 * normal());
        av_arm_add_stream(&b, 40 * exp(0.3 * normal()), 100 + 10 * normal());
    }
    av_kpi_t itl = {AV_KPI_ITL, 1.2, 0}, tok = {AV_KPI_TOKENS, 1.2, 0};
    av_kpi_result_t r;
    av_judge_kpi(&cfg, &itl, 2, &a, &b, &r);
    CHECK_INT(r.verdict, AV_VERDICT_FAIL); /* inter-token time doubled */
    av_judge_kpi(&cfg, &tok, 2, &a, &b, &r);
    CHECK_INT(r.verdict, AV_VERDICT_OK);   /* the same length */
    CHECK(r.baseline > 95 && r.baseline < 105);
}

/* guardrail blocks are judged both ways: far fewer can mean a bypass */
static void test_blocks_two_sided(void)
{
    av_arm_t a = {0}, b = {0}, c = {0};
    a.n = b.n = c.n = 2000;
    a.blocks = 200; /* 10 % */
    b.blocks = 0;   /* none: a bypass? */
    c.blocks = 196;
    av_kpi_t k = {AV_KPI_BLOCKS, 0.02, 0};
    av_kpi_result_t r;
    av_judge_kpi(&cfg, &k, 1, &a, &b, &r);
    CHECK_INT(r.verdict, AV_VERDICT_FAIL);
    CHECK(strstr(r.why, "bypass") != NULL);
    av_judge_kpi(&cfg, &k, 1, &a, &c, &r);
    CHECK_INT(r.verdict, AV_VERDICT_OK);
    CHECK(r.lo < 0 && r.hi > 0); /* the interval of the difference holds 0 */
}

/* The step-end p95 check on synthetic histograms: lognormal latencies
 * (median 100 ms, log spread 0.5), the candidate's scaled so its true p95
 * is 1.1, 1.2, 1.3 and 1.4 times the baseline's, margin 1.2, 1000 seeded
 * steps each of 2000 baseline and 500 candidate requests, at the share of
 * alpha two KPIs would give it (0.025). At 1.2 the candidate is exactly at
 * the limit: a rollback there is a false alarm, and at most alpha of them
 * may happen (plus three standard errors of slack for the baseline's own
 * p95 being estimated); past it, the check must find many at 1.3 (it found
 * 494 of 1000 when this was written) and nearly all at 1.4 (963). */
static void test_tail_check(void)
{
    enum { RUNS = 1000, NA = 2000, NB = 500 };
    static const double ratios[] = {1.1, 1.2, 1.3, 1.4};
    const double alpha = 0.025;
    int alarms[4] = {0};
    for (size_t k = 0; k < 4; k++) {
        for (int run = 0; run < RUNS; run++) {
            rng_state = (uint64_t)(run + 1) * 0x9e3779b97f4a7c15ull + k;
            uint64_t ha[AV_TAIL_BUCKETS] = {0}, hb[AV_TAIL_BUCKETS] = {0};
            for (int i = 0; i < NA; i++)
                ha[av_hist_bucket((uint64_t)(100000.0 * exp(0.5 * normal())))]++;
            for (int i = 0; i < NB; i++)
                hb[av_hist_bucket((uint64_t)(ratios[k] * 100000.0 * exp(0.5 * normal())))]++;
            av_tail_t t;
            av_tail_check(ha, hb, 1.2, &t);
            alarms[k] += t.p < alpha;
        }
        printf("# p95 check, candidate's p95 at %.1fx the baseline's (margin 1.2): rolled back in %d of %d steps "
               "(%s)\n", ratios[k], alarms[k], RUNS, ratios[k] <= 1.2 ? "false alarms" : "power");
    }
    double slack = 3.0 * sqrt(alpha * (1 - alpha) / RUNS);
    CHECK(alarms[0] <= (int)(RUNS * alpha));
    CHECK(alarms[1] <= (int)(RUNS * (alpha + slack)));
    CHECK(alarms[2] >= RUNS * 4 / 10);
    CHECK(alarms[3] >= RUNS * 95 / 100);
}

/* The step-end distribution check against the baseline times the margin
 * (1.1), on lognormal latencies (median 130 ms, near a bucket boundary, log
 * spread 0.3), 300 requests an arm, 1000 seeded steps, at alpha 0.025: a
 * candidate 3 % slower (a bias between two backend processes, within the
 * margin) is rolled back at most alpha of the time (a test of the unscaled
 * distributions finds a bias of any size, given data enough, and a bucket's
 * middle as the median put the two one bucket, 20 %, apart: the A/A bench
 * rolled back 13 of 100 so). One 1.3 times slower is found. */
static void test_shift_check(void)
{
    enum { RUNS = 1000, N = 300 };
    static const double ratios[] = {1.0, 1.03, 1.1, 1.3};
    int alarms[4] = {0};
    for (size_t k = 0; k < 4; k++) {
        for (int run = 0; run < RUNS; run++) {
            rng_state = (uint64_t)(run + 1) * 0x9e3779b97f4a7c15ull + 100 + k;
            uint64_t ha[AV_TAIL_BUCKETS] = {0}, hb[AV_TAIL_BUCKETS] = {0};
            for (int i = 0; i < N; i++) {
                ha[av_hist_bucket((uint64_t)(130000.0 * exp(0.3 * normal())))]++;
                hb[av_hist_bucket((uint64_t)(ratios[k] * 130000.0 * exp(0.3 * normal())))]++;
            }
            av_shift_t sh;
            av_shift_check(ha, hb, 1.1, &sh);
            alarms[k] += sh.p < 0.025 && sh.med_b_ms > 1.1 * sh.med_a_ms;
        }
        printf("# distribution check, candidate %.2fx the baseline (margin 1.1): rolled back in %d of %d steps\n",
               ratios[k], alarms[k], RUNS);
    }
    CHECK(alarms[0] <= 25 && alarms[1] <= 25 && alarms[2] <= 25 + 15); /* at the margin: alpha, and slack */
    CHECK(alarms[3] >= RUNS * 9 / 10);
}

/* The old check's worst case: the limit at the top of the baseline's p95
 * bucket (114.7 ms here, so 137.6 ms), and the candidate's bucket that
 * holds the limit left out (131-164 ms: it counted none of the 200 at
 * 135 ms). The limit must be 1.2 times the p95 read inside its bucket. */
static void test_tail_limit(void)
{
    uint64_t ha[AV_TAIL_BUCKETS] = {0}, hb[AV_TAIL_BUCKETS] = {0};
    ha[av_hist_bucket(50000)] = 940;    /* 94 % at 50 ms */
    ha[av_hist_bucket(100000)] = 60;    /* the p95 a sixth into the 98.3-114.7 ms bucket: 101 ms */
    hb[av_hist_bucket(50000)] = 800;
    hb[av_hist_bucket(135000)] = 200;   /* 1.35 times 100 ms: past 1.2 times the p95 */
    av_tail_t t;
    av_tail_check(ha, hb, 1.2, &t);
    printf("# p95 %.1f ms, limit %.1f ms, %.1f of %llu past, p %.3g\n", t.base_p95_ms, t.limit_ms, t.past,
           (unsigned long long)t.nb, t.p);
    CHECK(t.base_p95_ms > 100.9 && t.base_p95_ms < 101.1);
    CHECK(fabs(t.limit_ms - 1.2 * t.base_p95_ms) < 1e-9);
    CHECK(t.past > 150 && t.past <= 200);
    CHECK(t.p < 1e-6);
}

/* What the views show: evidence only in the direction tested (a candidate
 * far better than the margin has none), and no values without data. */
static void test_evidence_direction(void)
{
    av_arm_t a = {0}, b = {0};
    rng_state = 7;
    for (int i = 0; i < 5000; i++) {
        av_arm_add(&a, 0, 0, 0, 1000 * exp(0.3 * normal()), 500 * exp(0.3 * normal()), 0.001);
        av_arm_add(&b, 0, 0, 0, 200 * exp(0.3 * normal()), 100 * exp(0.3 * normal()), 0.001);
    }
    av_kpi_t k = {AV_KPI_LATENCY, 1.2, 0};
    av_kpi_result_t r;
    av_judge_kpi(&cfg, &k, 1, &a, &b, &r);
    CHECK_INT(r.verdict, AV_VERDICT_OK);
    CHECK(isfinite(r.evidence) && r.evidence < 0.01); /* was the two-sided ratio: 1e308 */
    av_judge_kpi(&cfg, &k, 1, &b, &a, &r); /* the other way round: five times slower */
    CHECK_INT(r.verdict, AV_VERDICT_FAIL);
    CHECK(r.evidence > 1e6);
    av_arm_t none = {0};
    av_judge_kpi(&cfg, &k, 1, &a, &none, &r);
    CHECK_INT(r.verdict, AV_VERDICT_WAIT);
    CHECK(isnan(r.candidate) && isnan(r.evidence) && isnan(r.lo) && !isnan(r.baseline));
    av_kpi_t e = {AV_KPI_ERRORS, 0.01, 0};
    av_judge_kpi(&cfg, &e, 1, &none, &none, &r);
    CHECK(isnan(r.baseline) && isnan(r.candidate));
}

/* Counters that went back (another split's) give nothing, never 1.8e19 samples. */
static void test_arm_behind(void)
{
    av_arm_t then = {.n = 500, .errors = 5, .lat_n = 490}, now = {.n = 20, .errors = 1, .lat_n = 20}, d;
    CHECK(av_arm_behind(&now, &then));
    av_arm_diff(&now, &then, &d);
    CHECK_INT(d.n, 0);
    CHECK_INT(d.lat_n, 0);
    av_arm_diff(&then, &now, &d);
    CHECK_INT(d.n, 480);
    CHECK_INT(d.errors, 4);
}

int main(void)
{
    RUN(test_aa);
    RUN(test_regressions);
    RUN(test_low_traffic_waits);
    RUN(test_feedback);
    RUN(test_stream_kpis);
    RUN(test_blocks_two_sided);
    RUN(test_tail_check);
    RUN(test_tail_limit);
    RUN(test_shift_check);
    RUN(test_evidence_direction);
    RUN(test_arm_behind);
    TEST_DONE();
}
