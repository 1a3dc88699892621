/* test_rollout.c: the controller on synthetic metrics, without a network:
 * a candidate whose TTFT median moved up past the margin while its mean of
 * logs did not (a bimodal shift the mSPRT does not see) is rolled back by the
 * Mann-Whitney check at the step's end; one whose slowest tenth went four
 * times slower (the p95, not the median) by the p95 check; a candidate like
 * its baseline passes
 * the step; the state and reason show in the JSON view. */
#include <event2/buffer.h>
#include <string.h>

#include "av.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "rollout.h"
#include "split.h"
#include "test.h"

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
    static char out[4096];
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
    feed(m, 0, 300, 100);
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
    } else if (bimodal) { /* 60 % at 140 ms, 40 % at 60 ms: the median up 40 %, the geometric mean not */
        feed(m, 1, 180, 140);
        feed(m, 1, 120, 60);
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
    run(1, "\"state\":\"rolled_back\"", "ttft at the step's end (Mann-Whitney U): candidate median");
}

static void test_like_baseline_passes(void)
{
    run(0, "\"state\":\"promoted\"", "step 1 passed: every KPI within its margin");
}

static void test_p95_at_step_end(void)
{
    run(4, "\"state\":\"rolled_back\"", "ttft p95 at the step's end: 30 of 300 candidate requests past");
}

static void test_shadow_stage(void)
{
    run(2, "\"state\":\"rolled_back\"", "ttft regressed: baseline 100, candidate 200");
    run(3, "\"state\":\"step\",\"step\":1,\"steps\":2,\"candidate_percent\":50",
        "the shadow stage passed: every KPI of the copies within its margin");
}

int main(void)
{
    av_log_set_level(AV_LOG_WARN);
    RUN(test_mann_whitney_at_step_end);
    RUN(test_like_baseline_passes);
    RUN(test_shadow_stage);
    RUN(test_p95_at_step_end);
    TEST_DONE();
}
