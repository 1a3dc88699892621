/* test_rollout.c: the controller on synthetic metrics, without a network:
 * a candidate whose TTFT median moved up past the margin while its mean of
 * logs did not (a bimodal shift the mSPRT does not see) is rolled back by the
 * Mann-Whitney check at the step's end; one whose slowest tenth went four
 * times slower (the p95, not the median) by the p95 check; a candidate like
 * its baseline passes the step; the state and reason show in the JSON view.
 * Reloads, on a clock of the test's own: one that changes the route's
 * variant list, at the start, middle and end of a step, restarts the step's
 * clock and data together and neither promotes nor pauses on garbage; a
 * candidate whose model, params or backend changed (even once promoted) is
 * a new rollout from step 1; a baseline that changed restarts the step; a
 * reload that changes only timing keeps the rollout and its data. */
#include <cjson/cJSON.h>
#include <event2/buffer.h>
#include <string.h>

#include "av.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "rollout.h"
#include "split.h"
#include "../test.h"

static const char conf[] =
    "{\"listen\": [{\"address\": \"127.0.0.1:0\"}], \"workers\": 1,"
    "\"backends\": {\"b\": {\"url\": \"http://127.0.0.1:9\"}},"
    "\"routes\": [{\"name\": \"r\", \"variants\": [{\"name\": \"a\", \"backend\": \"b\", \"weight\": 50},"
    "{\"name\": \"c\", \"backend\": \"b\", \"weight\": 50}],"
    "\"rollout\": {\"baseline\": \"a\", \"candidate\": \"c\", \"steps\": [50, 100], \"min_step_s\": 0,"
    "\"min_requests\": 100, \"kpis\": {\"ttft\": {\"max_ratio\": 1.2}}}}]}";

static const char conf_shadow[] =
    "{\"listen\": [{\"address\": \"127.0.0.1:0\"}], \"workers\": 1,"
    "\"backends\": {\"b\": {\"url\": \"http://127.0.0.1:9\"}},"
    "\"routes\": [{\"name\": \"r\", \"variants\": [{\"name\": \"a\", \"backend\": \"b\", \"weight\": 100},"
    "{\"name\": \"c\", \"backend\": \"b\", \"weight\": 0}], \"shadow\": {\"variant\": \"c\"},"
    "\"rollout\": {\"baseline\": \"a\", \"candidate\": \"c\", \"steps\": [50, 100], \"min_step_s\": 0,"
    "\"shadow_first\": true, \"min_requests\": 100, \"kpis\": {\"ttft\": {\"max_ratio\": 1.2}}}}]}";

static int shadow_copies; /* feed() records shadow copies while set */

/* n requests of the variant with TTFT ttft_ms (and latency twice that) */
static void feed(struct av_metrics_s *m, size_t variant, int n, int64_t ttft_ms)
{
    for (int i = 0; i < n; i++) {
        av_metrics_rec_t r = {.status = 200, .latency_us = ttft_ms * 2000, .ttft_us = ttft_ms * 1000, .itl_us = -1,
                              .cost_nano = -1, .shadow = shadow_copies};
        av_metrics_record(m, variant, 0, &r, av_wall_us());
    }
}

static const char *view(av_rollouts_t *ro)
{
    static char out[8192];
    struct evbuffer *b = evbuffer_new();
    av_rollouts_json(ro, "r", b);
    snprintf(out, sizeof(out), "%.*s", (int)evbuffer_get_length(b), (const char *)evbuffer_pullup(b, -1));
    evbuffer_free(b);
    return out;
}

/* bimodal 2: a shadow stage, the candidate's copies twice as slow; 3: as fast */
static void run(int bimodal, const char *want_state, const char *want_reason)
{
    char err[512];
    const char *text = bimodal == 2 || bimodal == 3 ? conf_shadow : conf;
    av_config_t *cfg = av_config_parse("t.json", text, strlen(text), 1, err, sizeof(err));
    CHECK(cfg != NULL);
    if (cfg == NULL) {
        printf("# %s\n", err);
        return;
    }
    av_split_reg_t *reg = av_split_reg_new(1);
    av_split_attach(reg, cfg);
    av_rollouts_t *ro = av_rollouts_new(NULL, NULL);
    av_rollouts_sync(ro, cfg);
    struct av_metrics_s *m = av_split_metrics(cfg->routes[0].split);
    if (bimodal == 1) { /* a baseline with a tail: 90 % at 100 ms, 10 % at 200 ms (its p95) */
        feed(m, 0, 270, 100);
        feed(m, 0, 30, 200);
    } else {
        feed(m, 0, 300, 100);
    }
    if (bimodal == 2 || bimodal == 3) {
        const char *v0 = view(ro);
        if (strstr(v0, "\"state\":\"shadow\",\"step\":1,\"steps\":2,\"candidate_percent\":0") == NULL) {
            printf("# want the shadow stage at first: %s\n", v0);
            t_case_failed = 1;
        }
        shadow_copies = 1;
        feed(m, 1, 300, bimodal == 2 ? 200 : 100);
        shadow_copies = 0;
    } else if (bimodal == 4) { /* 90 % as fast, 10 % four times slower: the p95 moved, the median did not */
        feed(m, 1, 270, 100);
        feed(m, 1, 30, 400);
    } else if (bimodal) { /* 60 % at 140 ms, 30 % at 60 ms, the same tail: the median up 40 %, the geometric
                           * mean 5 % and the p95 not at all */
        feed(m, 1, 180, 140);
        feed(m, 1, 90, 60);
        feed(m, 1, 30, 200);
    } else {
        feed(m, 1, 300, 100);
    }
    av_rollouts_tick(ro);
    const char *v = view(ro);
    if (strstr(v, want_state) == NULL || strstr(v, want_reason) == NULL) {
        printf("# want %s and %s in: %s\n", want_state, want_reason, v);
        t_case_failed = 1;
    }
    av_rollouts_free(ro);
    av_config_unref(cfg);
    av_split_reg_free(reg);
}

static void test_mann_whitney_at_step_end(void)
{
    run(1, "\"state\":\"rolled_back\"", "ttft at the step's end (Mann-Whitney U against the baseline times 1.2): "
                                        "candidate median");
}

static void test_like_baseline_passes(void)
{
    run(0, "\"state\":\"promoted\"", "step 1 passed: every KPI within its margin");
}

static void test_p95_at_step_end(void)
{
    run(4, "\"state\":\"rolled_back\"", "ttft p95 at the step's end: 30.0 of 300 candidate requests (10.0 %) past "
                                        "136.6 ms, the baseline's p95 of 113.9 ms times 1.2");
}

static void test_shadow_stage(void)
{
    run(2, "\"state\":\"rolled_back\"", "ttft regressed: baseline 100, candidate 200");
    run(3, "\"state\":\"step\",\"step\":1,\"steps\":2,\"candidate_percent\":50",
        "the shadow stage passed: every KPI of the copies within its margin");
}

/* ---- reloads, on the test's clock ---- */

static uint64_t fake_us;
static uint64_t fake_mono(void)
{
    return fake_us;
}
static uint64_t fake_wall(void)
{
    return 1800000000000000ull + fake_us;
}

/* %s: the candidate's extra members; %s: the baseline's; %d: min_step_s; %s: a third variant or "" */
static const char conf_reload[] =
    "{\"listen\": [{\"address\": \"127.0.0.1:0\"}], \"workers\": 1,"
    "\"backends\": {\"b\": {\"url\": \"http://127.0.0.1:9\"}, \"b2\": {\"url\": \"http://127.0.0.2:9\"}},"
    "\"routes\": [{\"name\": \"r\", \"variants\": [{\"name\": \"a\", \"backend\": \"b\", \"weight\": 50%s},"
    "{\"name\": \"c\", \"weight\": 50%s}%s],"
    "\"rollout\": {\"baseline\": \"a\", \"candidate\": \"c\", \"steps\": [50, 100], \"min_step_s\": %d,"
    "\"min_requests\": 100, \"kpis\": {\"ttft\": {\"max_ratio\": 1.2}, \"error_rate\": {\"max_increase\": 0.02}}}}]}";

static av_config_t *load(const char *base, const char *cand, const char *third, int min_step)
{
    char text[2048], err[512];
    snprintf(text, sizeof(text), conf_reload, base, cand, third, min_step);
    av_config_t *cfg = av_config_parse("t.json", text, strlen(text), 1, err, sizeof(err));
    if (cfg == NULL)
        printf("# %s\n", err);
    return cfg;
}

typedef struct {
    av_split_reg_t *reg;
    av_rollouts_t *ro;
    av_config_t *cfg;
} bench_t;

static int open_bench(bench_t *b, av_config_t *cfg)
{
    if (cfg == NULL)
        return -1;
    fake_us = 0;
    b->cfg = cfg;
    b->reg = av_split_reg_new(1);
    av_split_attach(b->reg, cfg);
    b->ro = av_rollouts_new(NULL, NULL);
    av_rollouts_set_clock(b->ro, fake_mono, fake_wall);
    av_rollouts_sync(b->ro, cfg);
    return 0;
}

static void reload(bench_t *b, av_config_t *cfg)
{
    if (cfg == NULL)
        return;
    av_split_attach(b->reg, cfg);
    av_rollouts_sync(b->ro, cfg);
    av_config_unref(b->cfg);
    b->cfg = cfg;
}

static void close_bench(bench_t *b)
{
    av_rollouts_free(b->ro);
    av_config_unref(b->cfg);
    av_split_reg_free(b->reg);
}

/* secs seconds of traffic, 10 requests a second per arm, like each other, a tick after each */
static void traffic(bench_t *b, int secs)
{
    for (int t = 0; t < secs; t++) {
        fake_us += 1000000;
        struct av_metrics_s *m = av_split_metrics(b->cfg->routes[0].split);
        for (size_t v = 0; v < 2; v++)
            for (int i = 0; i < 10; i++) {
                int64_t ttft = 80 + (i * 7) % 40;
                av_metrics_rec_t r = {.status = 200, .latency_us = ttft * 2000, .ttft_us = ttft * 1000, .itl_us = -1,
                                      .cost_nano = -1};
                av_metrics_record(m, v, 0, &r, fake_wall());
            }
        av_rollouts_tick(b->ro);
    }
}

static int shows(bench_t *b, const char *want)
{
    const char *v = view(b->ro);
    cJSON *j = cJSON_Parse(v);
    if (j == NULL) {
        printf("# the view is not JSON: %s\n", v);
        return 0;
    }
    cJSON_Delete(j);
    if (strstr(v, want) != NULL)
        return 1;
    printf("# want %s in: %s\n", want, v);
    return 0;
}

static void test_reload_new_variant(void)
{
    static const int at[] = {1, 30, 59};
    for (size_t k = 0; k < 3; k++) {
        bench_t b;
        if (open_bench(&b, load("", ", \"backend\": \"b\"", "", 60)) != 0) {
            t_case_failed = 1;
            return;
        }
        traffic(&b, at[k]);
        /* a weight-0 variant appended: the route's split and its counters are new */
        reload(&b, load("", ", \"backend\": \"b\"", ", {\"name\": \"d\", \"backend\": \"b\", \"weight\": 0}", 60));
        CHECK(shows(&b, "\"state\":\"step\",\"step\":1"));
        CHECK(shows(&b, "the route's variants changed and their counters started from zero: step 1 starts over"));
        CHECK(shows(&b, "\"step_seconds\":0.0,\"samples\":{\"baseline\":0,\"candidate\":0}"));
        traffic(&b, 59); /* the old step's end has passed: no promotion on its clock, no pause on garbage */
        CHECK(shows(&b, "\"state\":\"step\",\"step\":1"));
        CHECK(shows(&b, "\"samples\":{\"baseline\":590,\"candidate\":590}"));
        traffic(&b, 2);
        CHECK(shows(&b, "\"state\":\"promoted\""));
        CHECK(shows(&b, "step 1 passed: every KPI within its margin for 60 s"));
        close_bench(&b);
    }
}

static void test_reload_changed_candidate(void)
{
    static const struct {
        const char *was, *now, *why;
    } cases[] = {
        {", \"backend\": \"b\", \"model\": \"m1\"", ", \"backend\": \"b\", \"model\": \"m2\"", "(model m1 -> m2)"},
        {", \"backend\": \"b\", \"params\": {\"temperature\": 0.5}", ", \"backend\": \"b\", \"params\": {\"temperature\": 0.7}",
         "(params "},
        {", \"backend\": \"b\"", ", \"backend\": \"b2\"", "(backend http://127.0.0.1:9 http1 -> http://127.0.0.2:9 http1)"},
    };
    for (size_t k = 0; k < AV_NELEMS(cases); k++) {
        bench_t b;
        if (open_bench(&b, load("", cases[k].was, "", 60)) != 0) {
            t_case_failed = 1;
            return;
        }
        traffic(&b, 5);
        char why[64];
        CHECK(av_rollouts_action(b.ro, "r", "promote", why, sizeof(why)) == 0);
        CHECK(shows(&b, "\"state\":\"promoted\""));
        reload(&b, load("", cases[k].was, "", 60)); /* the same: stays promoted */
        CHECK(shows(&b, "\"state\":\"promoted\""));
        reload(&b, load("", cases[k].now, "", 60));
        CHECK(shows(&b, "\"state\":\"step\",\"step\":1,\"steps\":2,\"candidate_percent\":50"));
        CHECK(shows(&b, "candidate c changed "));
        CHECK(shows(&b, cases[k].why));
        close_bench(&b);
    }
}

static void test_reload_changed_baseline(void)
{
    bench_t b;
    if (open_bench(&b, load(", \"model\": \"m1\"", ", \"backend\": \"b\"", "", 60)) != 0) {
        t_case_failed = 1;
        return;
    }
    traffic(&b, 30);
    reload(&b, load(", \"model\": \"m9\"", ", \"backend\": \"b\"", "", 60));
    CHECK(shows(&b, "baseline a changed (model m1 -> m9): step 1 starts over"));
    CHECK(shows(&b, "\"step_seconds\":0.0,\"samples\":{\"baseline\":0,\"candidate\":0}"));
    close_bench(&b);
}

static void test_reload_timing_keeps_data(void)
{
    bench_t b;
    if (open_bench(&b, load("", ", \"backend\": \"b\"", "", 60)) != 0) {
        t_case_failed = 1;
        return;
    }
    traffic(&b, 30);
    reload(&b, load("", ", \"backend\": \"b\"", "", 120));
    CHECK(shows(&b, "\"step_seconds\":30.0,\"samples\":{\"baseline\":300,\"candidate\":300}"));
    CHECK(shows(&b, "\"reason\":\"started\""));
    traffic(&b, 40); /* 70 s: past the old minimum, not the new one */
    CHECK(shows(&b, "\"state\":\"step\",\"step\":1"));
    CHECK(shows(&b, "\"samples\":{\"baseline\":700,\"candidate\":700}"));
    traffic(&b, 51);
    CHECK(shows(&b, "step 1 passed: every KPI within its margin for 120 s"));
    close_bench(&b);
}

int main(void)
{
    av_log_set_level(AV_LOG_WARN);
    RUN(test_mann_whitney_at_step_end);
    RUN(test_like_baseline_passes);
    RUN(test_shadow_stage);
    RUN(test_p95_at_step_end);
    RUN(test_reload_new_variant);
    RUN(test_reload_changed_candidate);
    RUN(test_reload_changed_baseline);
    RUN(test_reload_timing_keeps_data);
    TEST_DONE();
}
