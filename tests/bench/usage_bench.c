/* usage_bench.c: what reading usage costs: nanoseconds per streamed event
 * and per whole JSON response, on the sim's own output (OpenAI chat, the
 * Responses API, Anthropic). Target: under 1 us per event.
 * Built by `make tests/bench/usage_bench`; run it with no arguments, or
 * with a word that picks the cases whose names contain it. */
#include <event2/buffer.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "sim_gen.h"
#include "usage.h"

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static const char *only;

static void bench(const char *name, av_sim_kind_t kind, int dialect, const char *body, int stream)
{
    if (only != NULL && strstr(name, only) == NULL)
        return;
    av_sim_knobs_t k;
    av_sim_knobs_default(&k);
    av_sim_req_t r;
    char err[128];
    if (av_sim_parse(&r, kind, body, strlen(body), &k, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s: %s\n", name, err);
        return;
    }
    r.stream = stream;
    struct evbuffer *b = evbuffer_new();
    size_t events = 1;
    if (stream) {
        av_sim_event_open(b, &r);
        for (int64_t i = 0; i < r.completion_tokens; i++)
            av_sim_event_token(b, &r, &k, i);
        av_sim_event_finish(b, &r, &k);
        if (r.include_usage)
            av_sim_event_usage(b, &r);
        av_sim_event_done(b, &r);
        events = 0;
        const char *p = (const char *)evbuffer_pullup(b, -1);
        for (size_t i = 0; i + 1 < evbuffer_get_length(b); i++)
            events += p[i] == '\n' && p[i + 1] == '\n';
    } else {
        av_sim_body(b, &r, &k);
    }
    size_t n = evbuffer_get_length(b);
    const char *text = (const char *)evbuffer_pullup(b, -1);
    int rounds = stream ? 20000 : 100000;
    double t0 = now_ns();
    int64_t sink = 0;
    for (int i = 0; i < rounds; i++) {
        av_usage_t u;
        av_usage_init(&u, dialect, stream, 0);
        av_usage_feed(&u, text, n, 1, NULL, NULL);
        av_usage_end(&u, 2, NULL, NULL);
        sink += u.output;
        av_usage_free(&u);
    }
    double per = (now_ns() - t0) / rounds;
    if (stream)
        printf("%-28s %6.0f ns per event (%zu events, %zu bytes)\n", name, per / (double)events, events, n);
    else
        printf("%-28s %6.0f ns per response (%zu bytes)\n", name, per, n);
    if (sink < 0)
        printf("unreachable\n");
    evbuffer_free(b);
}

int main(int argc, char **argv)
{
    only = argc > 1 ? argv[1] : NULL;
    bench("openai chat, streamed", AV_SIM_CHAT, AV_DIALECT_CHAT,
          "{\"model\":\"m\",\"stream_options\":{\"include_usage\":true},\"messages\":[{\"role\":\"user\",\"content\":\"hello there\"}]}", 1);
    bench("openai chat, JSON", AV_SIM_CHAT, AV_DIALECT_CHAT,
          "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hello there\"}]}", 0);
    bench("responses, streamed", AV_SIM_RESPONSES, AV_DIALECT_RESPONSES, "{\"model\":\"m\",\"input\":\"hello there\"}", 1);
    bench("anthropic, streamed", AV_SIM_ANTHROPIC, AV_DIALECT_ANTHROPIC,
          "{\"model\":\"m\",\"max_tokens\":99,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", 1);
    bench("anthropic, JSON", AV_SIM_ANTHROPIC, AV_DIALECT_ANTHROPIC,
          "{\"model\":\"m\",\"max_tokens\":99,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", 0);
    return 0;
}
