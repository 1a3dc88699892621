/* test_sim_gen.c: the simulator's knobs, parsing and bodies are deterministic and well-formed,
 * in every dialect, with tool calls, and read back by the gateway's usage reader. */
#include <cjson/cJSON.h>
#include <event2/buffer.h>
#include <stdlib.h>

#include "config.h"
#include "sim_gen.h"
#include "usage.h"
#include "../test.h"

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
                for (int64_t i = 0; i < r.steps; i++)
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

/* Splits a stream into its events: name (or "") and data, one per entry. */
typedef struct {
    char name[64];
    char *data;
} ev_t;

static int split_events(char *s, ev_t *ev, int max)
{
    int n = 0;
    char *p = s;
    while (*p != '\0' && n < max) {
        char *end = strstr(p, "\n\n");
        if (end == NULL)
            break;
        *end = '\0';
        ev[n].name[0] = '\0';
        ev[n].data = NULL;
        for (char *line = p; line != NULL;) {
            char *nl = strchr(line, '\n');
            if (nl != NULL)
                *nl = '\0';
            if (strncmp(line, "event: ", 7) == 0)
                snprintf(ev[n].name, sizeof(ev[n].name), "%s", line + 7);
            else if (strncmp(line, "data: ", 6) == 0)
                ev[n].data = line + 6;
            line = nl != NULL ? nl + 1 : NULL;
        }
        n++;
        p = end + 2;
    }
    return n;
}

/* The whole stream of a parsed request, as the sim sends it. */
static char *stream_of(av_sim_req_t *r, const av_sim_knobs_t *k)
{
    struct evbuffer *b = evbuffer_new();
    av_sim_event_open(b, r);
    for (int64_t i = 0; i < r->steps; i++)
        av_sim_event_token(b, r, k, i);
    av_sim_event_finish(b, r, k);
    if (r->include_usage)
        av_sim_event_usage(b, r);
    av_sim_event_done(b, r);
    char *s = drain(b);
    evbuffer_free(b);
    return s;
}

/* The member at a dotted path ("choices.0.delta"), or NULL. */
static const cJSON *at(const cJSON *j, const char *path)
{
    char key[64];
    while (j != NULL && *path) {
        size_t n = strcspn(path, ".");
        snprintf(key, sizeof(key), "%.*s", (int)n, path);
        j = key[0] >= '0' && key[0] <= '9' ? cJSON_GetArrayItem(j, atoi(key)) : cJSON_GetObjectItem(j, key);
        path += n + (path[n] == '.');
    }
    return j;
}

static const char *str_at(const cJSON *j, const char *path)
{
    const cJSON *v = at(j, path);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static double num_at(const cJSON *j, const char *path)
{
    const cJSON *v = at(j, path);
    return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

static const char *const TOOLS_CHAT =
    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"parameters\":{\"type\":\"object\","
    "\"properties\":{\"city\":{\"type\":\"string\"},\"unit\":{\"enum\":[\"c\",\"f\"]},\"n\":{\"type\":\"integer\"}},"
    "\"required\":[\"city\",\"unit\"]}}}]";

static void test_tool_knobs(void)
{
    av_sim_knobs_t k;
    av_sim_knobs_default(&k);
    CHECK_INT(av_sim_knob_header(&k, "x-sim-tool-call", "get_weather"), 0);
    CHECK_STR(k.tool_call, "get_weather");
    CHECK_INT(av_sim_knob_header(&k, "x-sim-tool-call", "a,b,c,d"), 0);
    CHECK_INT(av_sim_knob_header(&k, "x-sim-tool-call", "a,b,c,d,e"), -1);
    CHECK_INT(av_sim_knob_header(&k, "x-sim-tool-call", "a,,b"), -1);
    CHECK_INT(av_sim_knob_header(&k, "x-sim-tool-call", "has space"), -1);
    CHECK_INT(av_sim_knob_header(&k, "x-sim-tool-call", ""), -1);
    CHECK_INT(av_sim_knob_header(&k, "x-sim-tool-text", "2"), -1);
    CHECK_INT(av_sim_knob_header(&k, "x-sim-usage-null", "1"), 0);
    av_sim_req_t r;
    char err[128], body[1024];
    av_sim_knobs_default(&k);
    k.tool_call = "get_weather";
    k.tool_args = "[1]";
    snprintf(body, sizeof(body), "{\"model\":\"m\",\"messages\":[],%s}", TOOLS_CHAT);
    CHECK_INT(av_sim_parse(&r, AV_SIM_CHAT, body, strlen(body), &k, err, sizeof(err)), -1);
    CHECK_STR(err, "x-sim-tool-args is not a JSON object");
}

/* A chat tool call, whole and streamed: the shape, the arguments from the
 * schema, and the gateway's reading of it (tool calls, tokens, finish). */
static void test_chat_tools(void)
{
    av_sim_knobs_t k;
    av_sim_knobs_default(&k);
    k.tool_call = "get_weather,nope";
    av_sim_req_t r;
    char err[128], body[1024];
    snprintf(body, sizeof(body), "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],%s}", TOOLS_CHAT);
    CHECK_INT(av_sim_parse(&r, AV_SIM_CHAT, body, strlen(body), &k, err, sizeof(err)), 0);
    CHECK_INT(r.ncalls, 2);
    CHECK_INT(r.text_tokens, 0);
    CHECK_STR(r.finish_reason, "tool_calls");
    struct evbuffer *b = evbuffer_new();
    r.id = 9;
    av_sim_body(b, &r, &k);
    char *s = drain(b);
    cJSON *j = cJSON_Parse(s);
    CHECK(j != NULL);
    CHECK(cJSON_IsNull(at(j, "choices.0.message.content")));
    CHECK_STR(str_at(j, "choices.0.message.tool_calls.0.function.name"), "get_weather");
    CHECK_STR(str_at(j, "choices.0.message.tool_calls.0.function.arguments"), "{\"city\":\"sim\",\"unit\":\"c\"}");
    CHECK_STR(str_at(j, "choices.0.message.tool_calls.1.function.name"), "nope"); /* undeclared: called with {} */
    CHECK_STR(str_at(j, "choices.0.message.tool_calls.1.function.arguments"), "{}");
    CHECK_STR(str_at(j, "choices.0.message.tool_calls.0.id"), "call_sim_9_0");
    CHECK_STR(str_at(j, "choices.0.finish_reason"), "tool_calls");
    CHECK_INT(num_at(j, "usage.completion_tokens"), r.completion_tokens);
    cJSON_Delete(j);
    free(s);
    av_sim_req_free(&r);

    /* streamed: the pieces of the arguments add up to them, and the gateway counts two calls */
    snprintf(body, sizeof(body), "{\"model\":\"m\",\"stream\":true,\"messages\":[],%s}", TOOLS_CHAT);
    k.tool_text = 1;
    CHECK_INT(av_sim_parse(&r, AV_SIM_CHAT, body, strlen(body), &k, err, sizeof(err)), 0);
    CHECK_INT(r.text_tokens, 16);
    s = stream_of(&r, &k);
    ev_t ev[64];
    char *copy = strdup(s);
    int n = split_events(copy, ev, 64);
    char args[2][256] = {"", ""};
    int named = 0;
    for (int i = 0; i < n; i++) {
        if (strcmp(ev[i].data, "[DONE]") == 0)
            continue;
        cJSON *c = cJSON_Parse(ev[i].data);
        CHECK(c != NULL);
        const cJSON *tc = at(c, "choices.0.delta.tool_calls");
        if (tc != NULL) {
            int idx = (int)num_at(tc, "0.index");
            named += str_at(tc, "0.id") != NULL;
            const char *a = str_at(tc, "0.function.arguments");
            CHECK(idx == 0 || idx == 1);
            if (a != NULL && (idx == 0 || idx == 1))
                strncat(args[idx], a, sizeof(args[idx]) - strlen(args[idx]) - 1);
        }
        cJSON_Delete(c);
    }
    free(copy);
    CHECK_INT(named, 2);
    CHECK_STR(args[0], "{\"city\":\"sim\",\"unit\":\"c\"}");
    CHECK_STR(args[1], "{}");
    av_usage_t u;
    av_usage_init(&u, AV_DIALECT_CHAT, 1, 0);
    av_usage_feed(&u, s, strlen(s), 1, NULL, NULL);
    av_usage_end(&u, 2, NULL, NULL);
    CHECK_INT(u.tool_calls, 2);
    CHECK_STR(u.finish, "tool_calls");
    av_usage_free(&u);
    free(s);
    av_sim_req_free(&r);
    av_sim_req_free(&r); /* twice is harmless */
    evbuffer_free(b);
}

/* The Responses API's documented stream: created, in_progress, the message's
 * item and part, deltas, their done events, a function call's item and
 * argument deltas, completed with the whole output; sequence numbers 0, 1, ... */
static void test_responses_stream(void)
{
    av_sim_knobs_t k;
    av_sim_knobs_default(&k);
    k.tokens = 2;
    k.tool_text = 1;
    k.tool_call = "f";
    /* characters of 2, 3 and 4 bytes across the 8-byte piece boundaries */
    k.tool_args = "{\"q\":\"x\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80 and \xf0\x9f\x98\x80\xf0\x9f\x98\x80\"}";
    av_sim_req_t r;
    char err[128];
    const char *body = "{\"model\":\"m\",\"stream\":true,\"input\":\"hi\","
                       "\"tools\":[{\"type\":\"function\",\"name\":\"f\",\"parameters\":{}}]}";
    CHECK_INT(av_sim_parse(&r, AV_SIM_RESPONSES, body, strlen(body), &k, err, sizeof(err)), 0);
    char *s = stream_of(&r, &k);
    char *copy = strdup(s);
    ev_t ev[64];
    int n = split_events(copy, ev, 64);
    static const char *const want[] = {
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done", "response.output_item.added",
    };
    CHECK(n > 14);
    for (int i = 0; i < n && i < 10; i++)
        CHECK_STR(ev[i].name, want[i]);
    CHECK_STR(ev[n - 3].name, "response.function_call_arguments.done");
    CHECK_STR(ev[n - 2].name, "response.output_item.done");
    CHECK_STR(ev[n - 1].name, "response.completed");
    char args[512] = "";
    for (int i = 0; i < n; i++) {
        cJSON *j = cJSON_Parse(ev[i].data);
        CHECK(j != NULL);
        CHECK_STR(str_at(j, "type"), ev[i].name);
        CHECK_INT(num_at(j, "sequence_number"), i);
        if (strcmp(ev[i].name, "response.function_call_arguments.delta") == 0) {
            CHECK_INT(num_at(j, "output_index"), 1);
            strncat(args, str_at(j, "delta"), sizeof(args) - strlen(args) - 1);
        }
        if (i == n - 1) {
            CHECK_STR(str_at(j, "response.output.0.type"), "message");
            CHECK_STR(str_at(j, "response.output.1.type"), "function_call");
            CHECK_STR(str_at(j, "response.output.1.arguments"), args);
            CHECK_INT(num_at(j, "response.usage.output_tokens"), r.completion_tokens);
        }
        cJSON_Delete(j);
    }
    CHECK_STR(args, k.tool_args); /* pieces split between UTF-8 characters, never inside one */
    free(copy);
    av_usage_t u;
    av_usage_init(&u, AV_DIALECT_RESPONSES, 1, 0);
    av_usage_feed(&u, s, strlen(s), 1, NULL, NULL);
    av_usage_end(&u, 2, NULL, NULL);
    CHECK_INT(u.tool_calls, 1);
    CHECK_INT(u.output, r.completion_tokens);
    CHECK_STR(u.finish, "completed");
    av_usage_free(&u);
    free(s);
    av_sim_req_free(&r);

    /* tool_choice "required": the first declared tool */
    av_sim_knobs_default(&k);
    body = "{\"model\":\"m\",\"input\":\"hi\",\"tool_choice\":\"required\",\"tools\":[{\"type\":\"function\",\"name\":\"g\"}]}";
    CHECK_INT(av_sim_parse(&r, AV_SIM_RESPONSES, body, strlen(body), &k, err, sizeof(err)), 0);
    CHECK_INT(r.ncalls, 1);
    CHECK_STR(r.calls[0].name, "g");
    av_sim_req_free(&r);
}

/* Anthropic: tool_use blocks after the text block, input_json_delta pieces,
 * message_delta with the stop reason and output tokens; count_tokens; errors. */
static void test_anthropic_tools(void)
{
    av_sim_knobs_t k;
    av_sim_knobs_default(&k);
    k.tokens = 2;
    k.tool_text = 1;
    av_sim_req_t r;
    char err[128];
    const char *body = "{\"model\":\"m\",\"max_tokens\":50,\"stream\":true,\"messages\":[],\"tool_choice\":{\"type\":\"tool\","
                       "\"name\":\"t2\"},\"tools\":[{\"name\":\"t1\"},{\"name\":\"t2\",\"input_schema\":{\"type\":\"object\","
                       "\"properties\":{\"ok\":{\"type\":\"boolean\"},\"x\":{\"type\":[\"null\",\"number\"]}}}}]}";
    CHECK_INT(av_sim_parse(&r, AV_SIM_ANTHROPIC, body, strlen(body), &k, err, sizeof(err)), 0);
    CHECK_INT(r.ncalls, 1);
    CHECK_STR(r.calls[0].name, "t2");
    CHECK_STR(r.finish_reason, "tool_use");
    char *s = stream_of(&r, &k);
    char *copy = strdup(s);
    ev_t ev[64];
    int n = split_events(copy, ev, 64);
    char json[256] = "";
    int starts = 0;
    for (int i = 0; i < n; i++) {
        cJSON *j = cJSON_Parse(ev[i].data);
        CHECK(j != NULL);
        CHECK_STR(str_at(j, "type"), ev[i].name);
        if (strcmp(ev[i].name, "content_block_start") == 0) {
            CHECK_INT(num_at(j, "index"), starts);
            CHECK_STR(str_at(j, "content_block.type"), starts++ ? "tool_use" : "text");
        }
        if (str_at(j, "delta.partial_json") != NULL) {
            CHECK_INT(num_at(j, "index"), 1);
            strncat(json, str_at(j, "delta.partial_json"), sizeof(json) - strlen(json) - 1);
        }
        if (strcmp(ev[i].name, "message_delta") == 0) {
            CHECK_STR(str_at(j, "delta.stop_reason"), "tool_use");
            CHECK_INT(num_at(j, "usage.output_tokens"), r.completion_tokens);
        }
        cJSON_Delete(j);
    }
    CHECK_STR(json, "{\"ok\":true,\"x\":1.5}");
    CHECK_STR(ev[2].name, "ping");
    CHECK_STR(ev[n - 1].name, "message_stop");
    free(copy);
    av_usage_t u;
    av_usage_init(&u, AV_DIALECT_ANTHROPIC, 1, 0);
    av_usage_feed(&u, s, strlen(s), 1, NULL, NULL);
    av_usage_end(&u, 2, NULL, NULL);
    CHECK_INT(u.tool_calls, 1);
    CHECK_INT(u.input, r.prompt_tokens);
    CHECK_INT(u.output, r.completion_tokens);
    av_usage_free(&u);
    free(s);
    av_sim_req_free(&r);

    /* count_tokens: what messages would bill for the same prompt */
    int64_t billed = 0;
    body = "{\"model\":\"m\",\"max_tokens\":5,\"system\":\"be brief\",\"messages\":[{\"role\":\"user\",\"content\":\"hello\"}]}";
    CHECK_INT(av_sim_parse(&r, AV_SIM_ANTHROPIC, body, strlen(body), &k, err, sizeof(err)), 0);
    billed = r.prompt_tokens;
    CHECK_INT(av_sim_parse(&r, AV_SIM_COUNT_TOKENS, body, strlen(body), &k, err, sizeof(err)), 0);
    struct evbuffer *b = evbuffer_new();
    av_sim_body(b, &r, &k);
    s = drain(b);
    char want[64];
    snprintf(want, sizeof(want), "{\"input_tokens\":%lld}\n", (long long)billed);
    CHECK_STR(s, want);
    free(s);
    av_sim_error_body(b, AV_SIM_ANTHROPIC, 529, "busy");
    s = drain(b);
    CHECK_STR(s, "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"busy\"}}\n");
    free(s);
    av_sim_error_body(b, AV_SIM_CHAT, 429, "slow down");
    s = drain(b);
    CHECK(strstr(s, "{\"error\":{\"message\":\"slow down\",\"type\":\"rate_limit_error\"") == s);
    free(s);
    evbuffer_free(b);
}

/* Embeddings: one vector per input (strings or token ids), dimensions, and
 * base64 (little-endian float32) that decodes to the float answer's numbers. */
static void test_embeddings(void)
{
    av_sim_knobs_t k;
    av_sim_knobs_default(&k);
    av_sim_req_t r;
    char err[160];
    const char *body = "{\"model\":\"e\",\"input\":[\"a b c d\",\"e\",\"f\"],\"dimensions\":5}";
    CHECK_INT(av_sim_parse(&r, AV_SIM_EMBEDDINGS, body, strlen(body), &k, err, sizeof(err)), 0);
    CHECK_INT(r.inputs, 3);
    CHECK_INT(r.dims, 5);
    CHECK_INT(r.prompt_tokens, 2 + 1 + 1 + 1);
    struct evbuffer *b = evbuffer_new();
    av_sim_body(b, &r, &k);
    char *s = drain(b);
    cJSON *fl = cJSON_Parse(s);
    free(s);
    body = "{\"model\":\"e\",\"input\":[\"a b c d\",\"e\",\"f\"],\"dimensions\":5,\"encoding_format\":\"base64\"}";
    CHECK_INT(av_sim_parse(&r, AV_SIM_EMBEDDINGS, body, strlen(body), &k, err, sizeof(err)), 0);
    av_sim_body(b, &r, &k);
    s = drain(b);
    cJSON *bj = cJSON_Parse(s);
    free(s);
    CHECK(fl != NULL && bj != NULL);
    CHECK_INT(cJSON_GetArraySize(cJSON_GetObjectItem(fl, "data")), 3);
    for (int i = 0; i < 3; i++) {
        char path[64];
        snprintf(path, sizeof(path), "data.%d.embedding", i);
        const char *b64 = str_at(bj, path);
        CHECK(b64 != NULL && strlen(b64) == 28); /* 20 bytes */
        if (b64 == NULL)
            continue;
        unsigned char bytes[21];
        int nb = 0;
        unsigned acc = 0, bits = 0;
        for (const char *p = b64; *p && *p != '='; p++) {
            const char *abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            acc = (acc << 6) | (unsigned)(strchr(abc, *p) - abc);
            bits += 6;
            if (bits >= 8) {
                bits -= 8;
                bytes[nb++] = (unsigned char)(acc >> bits);
            }
        }
        CHECK_INT(nb, 20);
        for (int d = 0; d < 5 && nb == 20; d++) {
            uint32_t u = (uint32_t)bytes[4 * d] | (uint32_t)bytes[4 * d + 1] << 8 | (uint32_t)bytes[4 * d + 2] << 16 |
                         (uint32_t)bytes[4 * d + 3] << 24;
            float f;
            memcpy(&f, &u, 4);
            snprintf(path, sizeof(path), "data.%d.embedding.%d", i, d);
            CHECK(num_at(fl, path) == (double)f && f >= -1 && f <= 1);
        }
    }
    cJSON_Delete(fl);
    cJSON_Delete(bj);
    body = "{\"model\":\"e\",\"input\":[[5,6,7]]}";
    CHECK_INT(av_sim_parse(&r, AV_SIM_EMBEDDINGS, body, strlen(body), &k, err, sizeof(err)), 0);
    CHECK_INT(r.inputs, 1);
    CHECK_INT(r.prompt_tokens, 3 + 1);
    static const char *const bad[] = {
        "{\"model\":\"e\",\"input\":[]}", "{\"model\":\"e\",\"input\":\"\"}", "{\"model\":\"e\",\"input\":[\"a\",3]}",
        "{\"model\":\"e\",\"input\":\"a\",\"encoding_format\":\"hex\"}", "{\"model\":\"e\",\"input\":\"a\",\"dimensions\":0}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK_INT(av_sim_parse(&r, AV_SIM_EMBEDDINGS, bad[i], strlen(bad[i]), &k, err, sizeof(err)), -1);
    evbuffer_free(b);
}

/* With include_usage and x-sim-usage-null, every chunk but the usage one says "usage": null. */
static void test_usage_null(void)
{
    av_sim_knobs_t k;
    av_sim_knobs_default(&k);
    k.tokens = 2;
    k.usage_null = 1;
    av_sim_req_t r;
    char err[128];
    const char *body = "{\"model\":\"m\",\"stream\":true,\"stream_options\":{\"include_usage\":true},\"messages\":[]}";
    CHECK_INT(av_sim_parse(&r, AV_SIM_CHAT, body, strlen(body), &k, err, sizeof(err)), 0);
    char *s = stream_of(&r, &k);
    char *copy = strdup(s);
    ev_t ev[16];
    int n = split_events(copy, ev, 16);
    CHECK_INT(n, 6);
    for (int i = 0; i < n - 2; i++)
        CHECK(strstr(ev[i].data, "}],\"usage\":null}") != NULL);
    CHECK(strstr(ev[n - 2].data, "\"choices\":[],\"usage\":{") != NULL);
    free(copy);
    free(s);
}

int main(void)
{
    RUN(test_knobs);
    RUN(test_parse_and_body);
    RUN(test_dialects_read_back);
    RUN(test_stream_events);
    RUN(test_tool_knobs);
    RUN(test_chat_tools);
    RUN(test_responses_stream);
    RUN(test_anthropic_tools);
    RUN(test_embeddings);
    RUN(test_usage_null);
    TEST_DONE();
}
