/* test_sim_gen.c: the simulator's knobs, parsing and bodies are deterministic and well-formed. */
#include <cjson/cJSON.h>
#include <event2/buffer.h>
#include <stdlib.h>

#include "config.h"
#include "sim_gen.h"
#include "usage.h"
#include "test.h"

static char *drain(struct evbuffer *b)
{
    size_t n = evbuffer_get_length(b);
    char *s = malloc(n + 1);
    evbuffer_remove(b, s, n);
    s[n] = '\0';
    return s;
}

static void test_knobs(void)
{
    av_sim_knobs_t k;
    av_sim_knobs_default(&k);
    CHECK_INT(k.tokens, 16);
    CHECK_INT(k.drop_after, -1);
    CHECK_INT(av_sim_knob_header(&k, "x-sim-ttft-ms", "250"), 0);
    CHECK_INT(k.ttft_ms, 250);
    CHECK_INT(av_sim_knob_header(&k, "x-sim-error-rate", "0.5"), 0);
    CHECK(k.error_rate == 0.5);
    CHECK_INT(av_sim_knob_header(&k, "x-sim-error-rate", "2"), -1);
    CHECK_INT(av_sim_knob_header(&k, "x-sim-tokens", "ten"), -1);
    CHECK_INT(av_sim_knob_header(&k, "x-sim-status", "99"), -1);
    CHECK_INT(av_sim_knob_header(&k, "x-sim-unknown", "1"), 0);
}

static void test_parse_and_body(void)
{
    av_sim_knobs_t k;
    av_sim_knobs_default(&k);
    av_sim_req_t r;
    char err[128];
    const char *body = "{\"model\":\"m\\\"x\",\"max_tokens\":4,\"messages\":[{\"role\":\"user\",\"content\":\"12345678\"}]}";
    CHECK_INT(av_sim_parse(&r, AV_SIM_CHAT, body, strlen(body), &k, err, sizeof(err)), 0);
    CHECK_STR(r.model, "m\"x");
    CHECK_INT(r.completion_tokens, 4);
    CHECK_STR(r.finish_reason, "length");
    CHECK_INT(r.stream, 0);
    struct evbuffer *b = evbuffer_new();
    av_sim_body(b, &r, &k);
    char *s = drain(b);
    cJSON *j = cJSON_Parse(s);
    CHECK(j != NULL);
    cJSON *u = cJSON_GetObjectItem(j, "usage");
    CHECK_INT(cJSON_GetObjectItem(u, "completion_tokens")->valuedouble, 4);
    CHECK_STR(cJSON_GetObjectItem(j, "model")->valuestring, "m\"x");
    cJSON_Delete(j);
    free(s);
    CHECK_INT(av_sim_parse(&r, AV_SIM_CHAT, "{\"messages\":[]}", 15, &k, err, sizeof(err)), -1);
    CHECK_STR(err, "you must provide a model parameter");
    CHECK_INT(av_sim_parse(&r, AV_SIM_CHAT, "nope", 4, &k, err, sizeof(err)), -1);
    evbuffer_free(b);
}

static void test_stream_events(void)
{
    av_sim_knobs_t k;
    av_sim_knobs_default(&k);
    av_sim_req_t r;
    char err[128];
    const char *body = "{\"model\":\"m\",\"stream\":true,\"stream_options\":{\"include_usage\":true},\"messages\":[]}";
    CHECK_INT(av_sim_parse(&r, AV_SIM_CHAT, body, strlen(body), &k, err, sizeof(err)), 0);
    CHECK_INT(r.stream, 1);
    CHECK_INT(r.include_usage, 1);
    struct evbuffer *b = evbuffer_new();
    av_sim_event_token(b, &r, &k, 0);
    char *s = drain(b);
    CHECK(strncmp(s, "data: {", 7) == 0);
    CHECK(strcmp(s + strlen(s) - 2, "\n\n") == 0);
    CHECK(strstr(s, av_sim_token(1, 0)) != NULL);
    free(s);
    av_sim_event_done(b, &r);
    s = drain(b);
    CHECK_STR(s, "data: [DONE]\n\n");
    free(s);
    evbuffer_free(b);
    CHECK_STR(av_sim_token(7, 3), av_sim_token(7, 3));
}

/* The sim's answers in every dialect, whole and streamed, read back by the
 * gateway's usage reader: the counts it reports are the ones the sim meant. */
static void test_dialects_read_back(void)
{
    static const struct {
        av_sim_kind_t kind;
        int dialect;
        const char *body;
    } cases[] = {
        {AV_SIM_CHAT, AV_DIALECT_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hello there\"}]%s}"},
        {AV_SIM_COMPLETIONS, AV_DIALECT_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"hello there\"%s}"},
        {AV_SIM_RESPONSES, AV_DIALECT_RESPONSES, "{\"model\":\"m\",\"input\":\"hello there\",\"max_output_tokens\":5%s}"},
        {AV_SIM_ANTHROPIC, AV_DIALECT_ANTHROPIC, "{\"model\":\"m\",\"max_tokens\":99,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]%s}"},
    };
    av_sim_knobs_t k;
    av_sim_knobs_default(&k);
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++)
        for (int stream = 0; stream < 2; stream++) {
            char body[512], err[128];
            snprintf(body, sizeof(body), cases[c].body,
                     stream ? ",\"stream\":true,\"stream_options\":{\"include_usage\":true}" : "");
            av_sim_req_t r;
            CHECK_INT(av_sim_parse(&r, cases[c].kind, body, strlen(body), &k, err, sizeof(err)), 0);
            struct evbuffer *b = evbuffer_new();
            if (stream) {
                av_sim_event_open(b, &r);
                for (int64_t i = 0; i < r.completion_tokens; i++)
                    av_sim_event_token(b, &r, &k, i);
                av_sim_event_finish(b, &r, &k);
                if (r.include_usage)
                    av_sim_event_usage(b, &r);
                av_sim_event_done(b, &r);
            } else {
                av_sim_body(b, &r, &k);
            }
            av_usage_t u;
            av_usage_init(&u, cases[c].dialect, stream, 0);
            size_t n = evbuffer_get_length(b);
            av_usage_feed(&u, (const char *)evbuffer_pullup(b, -1), n, 1, NULL, NULL);
            av_usage_end(&u, 2, NULL, NULL);
            CHECK_INT(u.input, r.prompt_tokens);
            CHECK_INT(u.output, r.completion_tokens);
            CHECK_STR(u.finish, r.finish_reason);
            CHECK_INT(u.token_events, stream ? (uint64_t)r.completion_tokens : (r.completion_tokens > 0));
            if (t_case_failed)
                printf("# kind %d stream %d\n", cases[c].kind, stream);
            av_usage_free(&u);
            evbuffer_free(b);
        }
}

int main(void)
{
    RUN(test_knobs);
    RUN(test_parse_and_body);
    RUN(test_dialects_read_back);
    RUN(test_stream_events);
    TEST_DONE();
}
