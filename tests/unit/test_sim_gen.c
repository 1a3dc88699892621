/* test_sim_gen.c: the simulator's knobs, parsing and bodies are deterministic and well-formed. */
#include <cjson/cJSON.h>
#include <event2/buffer.h>
#include <stdlib.h>

#include "sim_gen.h"
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
    av_sim_event_done(b);
    s = drain(b);
    CHECK_STR(s, "data: [DONE]\n\n");
    free(s);
    evbuffer_free(b);
    CHECK_STR(av_sim_token(7, 3), av_sim_token(7, 3));
}

int main(void)
{
    RUN(test_knobs);
    RUN(test_parse_and_body);
    RUN(test_stream_events);
    TEST_DONE();
}
