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

#include "judge.h"
#include "test.h"

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

int main(void)
{
    RUN(test_aa);
    RUN(test_regressions);
    RUN(test_low_traffic_waits);
    RUN(test_feedback);
    RUN(test_stream_kpis);
    RUN(test_blocks_two_sided);
    TEST_DONE();
}
