/* rollout_bench.c: what the rollout controller costs: one evaluation of 100
 * routes, each with a rollout watching five KPIs, over metrics filled with
 * synthetic traffic (so every KPI is judged, none fails). It runs on the main
 * thread once a second, away from the workers; this says how much of that
 * second it takes. Built by `make tests/bench/rollout_bench`; no arguments. */
#include <event2/buffer.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "log.h"
#include "metrics.h"
#include "rollout.h"
#include "split.h"

#define ROUTES 100

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

int main(void)
{
    av_log_set_level(AV_LOG_WARN);
    struct evbuffer *conf = evbuffer_new();
    evbuffer_add_printf(conf, "{\"listen\": [{\"address\": \"127.0.0.1:0\"}], \"workers\": 2,"
                              "\"backends\": {\"b\": {\"url\": \"http://127.0.0.1:9\"}}, \"routes\": [");
    for (int i = 0; i < ROUTES; i++)
        evbuffer_add_printf(conf,
                            "%s{\"name\": \"r%d\", \"match\": {\"path\": \"/r%d\"}, \"variants\": "
                            "[{\"name\": \"a\", \"backend\": \"b\", \"weight\": 95}, {\"name\": \"c\", \"backend\": \"b\", "
                            "\"weight\": 5}], \"rollout\": {\"baseline\": \"a\", \"candidate\": \"c\", "
                            "\"min_step_s\": 100000, \"min_requests\": 50, \"min_events\": 1, \"kpis\": {\"error_rate\": {\"max_increase\": 0.01}, "
                            "\"rate_429\": {\"max_increase\": 0.01}, \"latency\": {\"max_ratio\": 1.2}, "
                            "\"ttft\": {\"max_ratio\": 1.2}, \"cost\": {\"max_ratio\": 1.1}}}}",
                            i ? "," : "", i, i);
    evbuffer_add_printf(conf, "]}");
    char err[512];
    av_config_t *cfg = av_config_parse("bench", (const char *)evbuffer_pullup(conf, -1), evbuffer_get_length(conf), 1,
                                       err, sizeof(err));
    evbuffer_free(conf);
    if (cfg == NULL) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    av_split_reg_t *reg = av_split_reg_new(2);
    av_split_attach(reg, cfg);
    av_rollouts_t *ro = av_rollouts_new(NULL, NULL);
    av_rollouts_sync(ro, cfg);
    /* 2000 requests per route, 5 % to the candidate, from two workers */
    uint64_t seed = 1;
    for (int i = 0; i < ROUTES; i++) {
        struct av_metrics_s *m = av_split_metrics(cfg->routes[i].split);
        for (int k = 0; k < 2000; k++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            double u = (double)(seed >> 11) / 9007199254740992.0;
            av_metrics_rec_t r = {.status = u < 0.01 ? 500 : 200, .latency_us = 300000 + (int64_t)(u * 400000),
                                  .ttft_us = 100000 + (int64_t)(u * 200000), .itl_us = -1, .cost_nano = 1000000};
            av_metrics_record(m, (seed >> 7) % 20 == 0 ? 1 : 0, k & 1, &r, 1800000000000000ull);
        }
    }
    int rounds = 2000;
    av_rollouts_tick(ro); /* warm */
    double t0 = now_ns();
    for (int i = 0; i < rounds; i++)
        av_rollouts_tick(ro);
    double per = (now_ns() - t0) / rounds;
    struct evbuffer *out = evbuffer_new();
    av_rollouts_json(ro, "r0", out);
    printf("one evaluation of %d rollouts (5 KPIs each, 2 workers' metrics): %.1f us (%.2f %% of the 1 s tick)\n",
           ROUTES, per / 1000.0, per / 1e7);
    printf("route r0: %.*s", (int)evbuffer_get_length(out) > 400 ? 400 : (int)evbuffer_get_length(out),
           (const char *)evbuffer_pullup(out, -1));
    printf("\n");
    evbuffer_free(out);
    av_rollouts_free(ro);
    av_config_unref(cfg);
    av_split_reg_free(reg);
    return 0;
}
