/* sim_gen.c: deterministic OpenAI-compatible bodies and SSE events for aviary-sim.
 * Output is written straight into evbuffers: the simulator must not be the bottleneck. */
#include "sim_gen.h"

#include "jsonw.h"

#define ADD_LIT(buf, lit) evbuffer_add((buf), (lit), sizeof(lit) - 1)

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const words[] = {
    " the", " model", " answers", " with", " care", " and", " a", " steady",
    " stream", " of", " tokens", " that", " flow", " through", " the", " gateway",
    " to", " every", " client", " who", " asked", " kindly", " for", " more",
    " text", " than", " it", " needed", " today", " so", " here", " it",
};

void av_sim_knobs_default(av_sim_knobs_t *k)
{
    memset(k, 0, sizeof(*k));
    k->tokens = 16;
    k->seed = 1;
    k->drop_after = -1;
}

static int parse_i64(const char *v, int64_t min, int64_t max, int64_t *out)
{
    char *end;
    long long n = strtoll(v, &end, 10);
    if (*v == '\0' || *end != '\0' || n < min || n > max)
        return -1;
    *out = n;
    return 0;
}

static int parse_rate(const char *v, double *out)
{
    char *end;
    double d = strtod(v, &end);
    if (*v == '\0' || *end != '\0' || !(d >= 0.0 && d <= 1.0))
        return -1;
    *out = d;
    return 0;
}

int av_sim_knob_header(av_sim_knobs_t *k, const char *name, const char *v)
{
    int64_t n;
    if (strcmp(name, "x-sim-latency-ms") == 0)
        return parse_i64(v, 0, 3600000, &k->latency_ms);
    if (strcmp(name, "x-sim-ttft-ms") == 0)
        return parse_i64(v, 0, 3600000, &k->ttft_ms);
    if (strcmp(name, "x-sim-tps") == 0)
        return parse_i64(v, 0, 1000000, &k->tps);
    if (strcmp(name, "x-sim-tokens") == 0)
        return parse_i64(v, 0, 1000000, &k->tokens);
    if (strcmp(name, "x-sim-error-rate") == 0)
        return parse_rate(v, &k->error_rate);
    if (strcmp(name, "x-sim-429-rate") == 0)
        return parse_rate(v, &k->rate_429);
    if (strcmp(name, "x-sim-drop-after") == 0)
        return parse_i64(v, -1, 1000000, &k->drop_after);
    if (strcmp(name, "x-sim-cached-tokens") == 0)
        return parse_i64(v, 0, 1000000, &k->cached);
    if (strcmp(name, "x-sim-no-usage") == 0)
        return parse_i64(v, 0, 1, &k->usage_off);
    if (strcmp(name, "x-sim-seed") == 0) {
        if (parse_i64(v, 0, INT64_MAX, &n) != 0)
            return -1;
        k->seed = (uint64_t)n;
        return 0;
    }
    if (strcmp(name, "x-sim-echo") == 0) {
        if (parse_i64(v, 0, 1, &n) != 0)
            return -1;
        k->echo = (int)n;
        return 0;
    }
    if (strcmp(name, "x-sim-status") == 0) {
        if (parse_i64(v, 100, 599, &n) != 0)
            return -1;
        k->status = (int)n;
        return 0;
    }
    return 0; /* unknown x-sim-* headers are ignored, like unknown fields */
}

static int64_t text_tokens(const cJSON *v)
{
    if (cJSON_IsString(v))
        return (int64_t)(strlen(v->valuestring) + 3) / 4;
    int64_t n = 0;
    if (cJSON_IsArray(v) || cJSON_IsObject(v))
        for (const cJSON *c = v->child; c != NULL; c = c->next)
            n += text_tokens(c);
    return n;
}

int av_sim_parse(av_sim_req_t *r, av_sim_kind_t kind, const char *body, size_t len,
                 const av_sim_knobs_t *k, char *err, size_t errlen)
{
    memset(r, 0, sizeof(*r));
    r->kind = kind;
    cJSON *j = cJSON_ParseWithLength(body, len);
    if (j == NULL || !cJSON_IsObject(j)) {
        snprintf(err, errlen, "request body is not a JSON object");
        cJSON_Delete(j);
        return -1;
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(j, "model");
    if (!cJSON_IsString(model) || model->valuestring[0] == '\0') {
        snprintf(err, errlen, "you must provide a model parameter");
        cJSON_Delete(j);
        return -1;
    }
    snprintf(r->model, sizeof(r->model), "%s", model->valuestring);
    const char *input_key = kind == AV_SIM_CHAT || kind == AV_SIM_ANTHROPIC ? "messages"
                            : kind == AV_SIM_COMPLETIONS                  ? "prompt"
                                                                          : "input";
    const cJSON *input = cJSON_GetObjectItemCaseSensitive(j, input_key);
    if (input == NULL) {
        snprintf(err, errlen, "'%s' is a required property", input_key);
        cJSON_Delete(j);
        return -1;
    }
    r->prompt_tokens = text_tokens(input) + (kind == AV_SIM_CHAT || kind == AV_SIM_ANTHROPIC ? 7 : 1);
    r->prompt_tokens += text_tokens(cJSON_GetObjectItemCaseSensitive(j, kind == AV_SIM_ANTHROPIC ? "system" : "instructions"));
    r->usage_off = (int)k->usage_off;
    r->cached_tokens = k->cached < r->prompt_tokens ? k->cached : r->prompt_tokens;
    r->stream = kind != AV_SIM_EMBEDDINGS && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "stream"));
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(j, "stream_options");
    r->include_usage = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(so, "include_usage")) && !k->usage_off;
    r->completion_tokens = kind == AV_SIM_EMBEDDINGS ? 0 : k->tokens;
    r->finish_reason = kind == AV_SIM_ANTHROPIC ? "end_turn" : kind == AV_SIM_RESPONSES ? "completed" : "stop";
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(j, kind == AV_SIM_RESPONSES ? "max_output_tokens" : "max_tokens");
    if (mt == NULL)
        mt = cJSON_GetObjectItemCaseSensitive(j, "max_completion_tokens");
    if (cJSON_IsNumber(mt) && mt->valuedouble >= 0 && mt->valuedouble < (double)r->completion_tokens) {
        r->completion_tokens = (int64_t)mt->valuedouble;
        r->finish_reason = kind == AV_SIM_ANTHROPIC ? "max_tokens" : kind == AV_SIM_RESPONSES ? "incomplete" : "length";
    }
    cJSON_Delete(j);
    return 0;
}

const char *av_sim_token(uint64_t seed, int64_t i)
{
    uint64_t z = seed * 0x9e3779b97f4a7c15ull + (uint64_t)i * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return words[z % (sizeof(words) / sizeof(words[0]))];
}

static void head(struct evbuffer *out, const av_sim_req_t *r, const char *object)
{
    evbuffer_add_printf(out, "{\"id\":\"%s-sim-%llu\",\"object\":\"%s\",\"created\":%lld,\"model\":",
                        r->kind == AV_SIM_CHAT ? "chatcmpl" : "cmpl", (unsigned long long)r->id,
                        object, (long long)r->created);
    av_json_str(out, r->model, strlen(r->model));
}

static void usage(struct evbuffer *out, const av_sim_req_t *r)
{
    evbuffer_add_printf(out, "\"usage\":{\"prompt_tokens\":%lld,\"completion_tokens\":%lld,\"total_tokens\":%lld,"
                             "\"prompt_tokens_details\":{\"cached_tokens\":%lld}}",
                        (long long)r->prompt_tokens, (long long)r->completion_tokens,
                        (long long)(r->prompt_tokens + r->completion_tokens), (long long)r->cached_tokens);
}

static void answer_text(struct evbuffer *out, const av_sim_req_t *r, const av_sim_knobs_t *k)
{
    for (int64_t i = 0; i < r->completion_tokens; i++) {
        const char *w = av_sim_token(k->seed, i);
        evbuffer_add(out, w, strlen(w));
    }
}

/* A Responses API object; with text (k not NULL) or without (in progress). */
static void responses_object(struct evbuffer *out, const av_sim_req_t *r, const av_sim_knobs_t *k, const char *status)
{
    evbuffer_add_printf(out, "{\"id\":\"resp_sim_%llu\",\"object\":\"response\",\"created_at\":%lld,\"status\":\"%s\","
                             "\"model\":",
                        (unsigned long long)r->id, (long long)r->created, status);
    av_json_str(out, r->model, strlen(r->model));
    ADD_LIT(out, ",\"output\":[");
    if (k != NULL) {
        evbuffer_add_printf(out, "{\"type\":\"message\",\"id\":\"msg_sim_%llu\",\"status\":\"completed\",\"role\":"
                                 "\"assistant\",\"content\":[{\"type\":\"output_text\",\"text\":\"",
                            (unsigned long long)r->id);
        answer_text(out, r, k);
        ADD_LIT(out, "\",\"annotations\":[]}]}");
    }
    evbuffer_add(out, "]", 1);
    if (k != NULL && !r->usage_off)
        evbuffer_add_printf(out, ",\"usage\":{\"input_tokens\":%lld,\"input_tokens_details\":{\"cached_tokens\":%lld},"
                                 "\"output_tokens\":%lld,\"output_tokens_details\":{\"reasoning_tokens\":0},"
                                 "\"total_tokens\":%lld}",
                            (long long)r->prompt_tokens, (long long)r->cached_tokens, (long long)r->completion_tokens,
                            (long long)(r->prompt_tokens + r->completion_tokens));
    evbuffer_add(out, "}", 1);
}

void av_sim_body(struct evbuffer *out, const av_sim_req_t *r, const av_sim_knobs_t *k)
{
    if (r->kind == AV_SIM_EMBEDDINGS) {
        evbuffer_add_printf(out, "{\"object\":\"list\",\"data\":[{\"object\":\"embedding\",\"index\":0,\"embedding\":[");
        for (int i = 0; i < 8; i++)
            evbuffer_add_printf(out, "%s0.%03u", i ? "," : "",
                                (unsigned)((unsigned char)av_sim_token(k->seed, i)[1] * 7u % 1000u));
        evbuffer_add_printf(out, "]}],\"model\":");
        av_json_str(out, r->model, strlen(r->model));
        evbuffer_add_printf(out, ",\"usage\":{\"prompt_tokens\":%lld,\"total_tokens\":%lld}}\n",
                            (long long)r->prompt_tokens, (long long)r->prompt_tokens);
        return;
    }
    if (r->kind == AV_SIM_RESPONSES) {
        responses_object(out, r, k, r->finish_reason);
        evbuffer_add(out, "\n", 1);
        return;
    }
    if (r->kind == AV_SIM_ANTHROPIC) {
        evbuffer_add_printf(out, "{\"id\":\"msg_sim_%llu\",\"type\":\"message\",\"role\":\"assistant\",\"model\":",
                            (unsigned long long)r->id);
        av_json_str(out, r->model, strlen(r->model));
        ADD_LIT(out, ",\"content\":[{\"type\":\"text\",\"text\":\"");
        answer_text(out, r, k);
        evbuffer_add_printf(out, "\"}],\"stop_reason\":\"%s\",\"stop_sequence\":null", r->finish_reason);
        if (!r->usage_off)
            evbuffer_add_printf(out, ",\"usage\":{\"input_tokens\":%lld,\"cache_read_input_tokens\":%lld,"
                                     "\"output_tokens\":%lld}",
                                (long long)(r->prompt_tokens - r->cached_tokens), (long long)r->cached_tokens,
                                (long long)r->completion_tokens);
        evbuffer_add(out, "}\n", 2);
        return;
    }
    int chat = r->kind == AV_SIM_CHAT;
    head(out, r, chat ? "chat.completion" : "text_completion");
    evbuffer_add_printf(out, chat ? ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\""
                                  : ",\"choices\":[{\"index\":0,\"text\":\"");
    for (int64_t i = 0; i < r->completion_tokens; i++) {
        const char *w = av_sim_token(k->seed, i);
        evbuffer_add(out, w, strlen(w));
    }
    evbuffer_add_printf(out, "\"%s,\"logprobs\":null,\"finish_reason\":\"%s\"}],", chat ? "}" : "",
                        r->finish_reason);
    if (!k->usage_off)
        usage(out, r);
    else
        evbuffer_add(out, "\"usage\":null", 12);
    evbuffer_add(out, "}\n", 2);
}

static void chunk_head(struct evbuffer *out, const av_sim_req_t *r)
{
    evbuffer_add(out, "data: ", 6);
    head(out, r, r->kind == AV_SIM_CHAT ? "chat.completion.chunk" : "text_completion");
}

void av_sim_event_open(struct evbuffer *out, const av_sim_req_t *r)
{
    if (r->kind == AV_SIM_RESPONSES) {
        evbuffer_add_printf(out, "event: response.created\ndata: {\"type\":\"response.created\",\"response\":");
        responses_object(out, r, NULL, "in_progress");
        evbuffer_add(out, "}\n\n", 3);
        return;
    }
    if (r->kind == AV_SIM_ANTHROPIC) {
        evbuffer_add_printf(out, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_sim_%llu\","
                                 "\"type\":\"message\",\"role\":\"assistant\",\"model\":",
                            (unsigned long long)r->id);
        av_json_str(out, r->model, strlen(r->model));
        evbuffer_add_printf(out, ",\"content\":[],\"stop_reason\":null");
        if (!r->usage_off)
            evbuffer_add_printf(out, ",\"usage\":{\"input_tokens\":%lld,\"cache_read_input_tokens\":%lld,\"output_tokens\":1}",
                                (long long)(r->prompt_tokens - r->cached_tokens), (long long)r->cached_tokens);
        evbuffer_add_printf(out, "}}\n\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,"
                                 "\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
        return;
    }
    if (r->kind != AV_SIM_CHAT)
        return;
    chunk_head(out, r);
    evbuffer_add_printf(out, ",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"
                             "\"logprobs\":null,\"finish_reason\":null}]}\n\n");
}

void av_sim_event_token(struct evbuffer *out, const av_sim_req_t *r, const av_sim_knobs_t *k, int64_t i)
{
    if (r->kind == AV_SIM_RESPONSES) {
        evbuffer_add_printf(out, "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\","
                                 "\"item_id\":\"msg_sim_%llu\",\"output_index\":0,\"content_index\":0,\"delta\":\"%s\"}\n\n",
                            (unsigned long long)r->id, av_sim_token(k->seed, i));
        return;
    }
    if (r->kind == AV_SIM_ANTHROPIC) {
        evbuffer_add_printf(out, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,"
                                 "\"delta\":{\"type\":\"text_delta\",\"text\":\"%s\"}}\n\n",
                            av_sim_token(k->seed, i));
        return;
    }
    chunk_head(out, r);
    if (r->kind == AV_SIM_CHAT)
        evbuffer_add_printf(out, ",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"%s\"},"
                                 "\"logprobs\":null,\"finish_reason\":null}]}\n\n", av_sim_token(k->seed, i));
    else
        evbuffer_add_printf(out, ",\"choices\":[{\"text\":\"%s\",\"index\":0,\"logprobs\":null,"
                                 "\"finish_reason\":null}]}\n\n", av_sim_token(k->seed, i));
}

void av_sim_event_finish(struct evbuffer *out, const av_sim_req_t *r, const av_sim_knobs_t *k)
{
    if (r->kind == AV_SIM_RESPONSES) {
        evbuffer_add_printf(out, "event: response.%s\ndata: {\"type\":\"response.%s\",\"response\":", r->finish_reason,
                            r->finish_reason);
        responses_object(out, r, k, r->finish_reason);
        evbuffer_add(out, "}\n\n", 3);
        return;
    }
    if (r->kind == AV_SIM_ANTHROPIC) {
        evbuffer_add_printf(out, "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
                                 "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"%s\","
                                 "\"stop_sequence\":null}",
                            r->finish_reason);
        if (!r->usage_off)
            evbuffer_add_printf(out, ",\"usage\":{\"output_tokens\":%lld}", (long long)r->completion_tokens);
        evbuffer_add_printf(out, "}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
        return;
    }
    chunk_head(out, r);
    if (r->kind == AV_SIM_CHAT)
        evbuffer_add_printf(out, ",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,"
                                 "\"finish_reason\":\"%s\"}]}\n\n", r->finish_reason);
    else
        evbuffer_add_printf(out, ",\"choices\":[{\"text\":\"\",\"index\":0,\"logprobs\":null,"
                                 "\"finish_reason\":\"%s\"}]}\n\n", r->finish_reason);
}

void av_sim_event_usage(struct evbuffer *out, const av_sim_req_t *r)
{
    chunk_head(out, r);
    evbuffer_add(out, ",\"choices\":[],", 14);
    usage(out, r);
    evbuffer_add(out, "}\n\n", 3);
}

void av_sim_event_done(struct evbuffer *out, const av_sim_req_t *r)
{
    if (r->kind == AV_SIM_CHAT || r->kind == AV_SIM_COMPLETIONS)
        evbuffer_add(out, "data: [DONE]\n\n", 14);
}

void av_sim_error_body(struct evbuffer *out, int status, const char *message)
{
    const char *type = status == 429 ? "rate_limit_error" : status >= 500 ? "server_error" : "invalid_request_error";
    evbuffer_add(out, "{\"error\":{\"message\":", 20);
    av_json_str(out, message, strlen(message));
    evbuffer_add_printf(out, ",\"type\":\"%s\",\"param\":null,\"code\":\"sim_%d\"}}\n", type, status);
}
