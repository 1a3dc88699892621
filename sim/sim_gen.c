/* sim_gen.c: deterministic bodies and SSE events for aviary-sim, in the shapes the
 * APIs document and their official SDKs read: OpenAI chat, completions,
 * embeddings and Responses, Anthropic messages and count_tokens, with tool calls.
 * Output is written straight into evbuffers: the simulator must not be the bottleneck. */
#include "sim_gen.h"

#include "av.h"
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

/* Bytes of a tool call's arguments per streamed delta (moved forward to a
 * UTF-8 character's start). */
#define PIECE 8

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

static int name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
           c == '.' || c == ':';
}

/* NAME[,NAME...]: up to AV_SIM_MAX_CALLS names of tool-name characters, each shorter than 128 */
static int valid_tool_list(const char *v)
{
    int n = 0;
    for (const char *p = v;; p++) {
        size_t len = 0;
        while (name_char(p[len]))
            len++;
        if (len == 0 || len >= sizeof(((av_sim_call_t *)0)->name) || ++n > AV_SIM_MAX_CALLS)
            return -1;
        p += len;
        if (*p == '\0')
            return 0;
        if (*p != ',')
            return -1;
    }
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
    if (strcmp(name, "x-sim-usage-null") == 0)
        return parse_i64(v, 0, 1, &k->usage_null);
    if (strcmp(name, "x-sim-tool-text") == 0)
        return parse_i64(v, 0, 1, &k->tool_text);
    if (strcmp(name, "x-sim-tool-call") == 0) {
        if (valid_tool_list(v) != 0)
            return -1;
        k->tool_call = v;
        return 0;
    }
    if (strcmp(name, "x-sim-tool-args") == 0) {
        k->tool_args = v; /* checked as JSON when the request is parsed */
        return 0;
    }
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

static const cJSON *get(const cJSON *o, const char *key)
{
    return cJSON_GetObjectItemCaseSensitive(o, key);
}

/* ---- embeddings' input ---- */

/* One input: a non-empty string or a non-empty array of token ids. Returns
 * its tokens, or -1. */
static int64_t embed_one(const cJSON *v)
{
    if (cJSON_IsString(v))
        return v->valuestring[0] != '\0' ? (int64_t)(strlen(v->valuestring) + 3) / 4 : -1;
    if (!cJSON_IsArray(v) || v->child == NULL)
        return -1;
    int64_t n = 0;
    for (const cJSON *c = v->child; c != NULL; c = c->next) {
        if (!cJSON_IsNumber(c) || c->valuedouble < 0 || c->valuedouble != (double)(int64_t)c->valuedouble)
            return -1;
        n++;
    }
    return n;
}

/* input: a string, an array of token ids, or an array of either; sets r->inputs. Returns its tokens, or -1. */
static int64_t embed_inputs(av_sim_req_t *r, const cJSON *input)
{
    if (cJSON_IsString(input) || (cJSON_IsArray(input) && cJSON_IsNumber(input->child))) {
        r->inputs = 1;
        return embed_one(input);
    }
    if (!cJSON_IsArray(input) || input->child == NULL)
        return -1;
    int64_t n = 0;
    for (const cJSON *c = input->child; c != NULL; c = c->next) {
        int64_t t = embed_one(c);
        if (t < 0 || ++r->inputs > AV_SIM_MAX_INPUTS)
            return -1;
        n += t;
    }
    return n;
}

static int parse_embeddings(av_sim_req_t *r, const cJSON *j, const cJSON *input, char *err, size_t errlen)
{
    int64_t t = embed_inputs(r, input);
    if (t < 0) {
        snprintf(err, errlen, "'input' must be a non-empty string, an array of up to %d non-empty strings, or "
                              "token arrays", AV_SIM_MAX_INPUTS);
        return -1;
    }
    r->prompt_tokens = t + 1;
    const cJSON *fmt = get(j, "encoding_format");
    if (fmt != NULL && !cJSON_IsNull(fmt)) {
        if (!cJSON_IsString(fmt) || (strcmp(fmt->valuestring, "float") != 0 && strcmp(fmt->valuestring, "base64") != 0)) {
            snprintf(err, errlen, "'encoding_format' must be 'float' or 'base64'");
            return -1;
        }
        r->base64 = strcmp(fmt->valuestring, "base64") == 0;
    }
    r->dims = 8;
    const cJSON *dims = get(j, "dimensions");
    if (dims != NULL && !cJSON_IsNull(dims)) {
        if (!cJSON_IsNumber(dims) || dims->valuedouble < 1 || dims->valuedouble > 4096 ||
            dims->valuedouble != (double)(int64_t)dims->valuedouble) {
            snprintf(err, errlen, "'dimensions' must be an integer from 1 to 4096");
            return -1;
        }
        r->dims = (int64_t)dims->valuedouble;
    }
    return 0;
}

/* ---- tool calls ---- */

static const cJSON *tool_name(const cJSON *tool)
{
    const cJSON *fn = get(tool, "function");
    const cJSON *n = get(fn != NULL ? fn : tool, "name");
    return cJSON_IsString(n) ? n : NULL;
}

/* The declared tool called name (NULL: none); its schema in *schema. */
static const cJSON *find_tool(const cJSON *tools, av_sim_kind_t kind, const char *name, size_t len,
                              const cJSON **schema)
{
    const cJSON *t;
    cJSON_ArrayForEach(t, tools)
    {
        const cJSON *n = tool_name(t);
        if (n == NULL || strlen(n->valuestring) != len || memcmp(n->valuestring, name, len) != 0)
            continue;
        const cJSON *fn = get(t, "function");
        *schema = kind == AV_SIM_ANTHROPIC ? get(t, "input_schema") : get(fn != NULL ? fn : t, "parameters");
        return t;
    }
    return NULL;
}

static cJSON *schema_value(const cJSON *schema, int depth);

/* An object with the schema's required properties (all of them when it names none). */
static cJSON *schema_object(const cJSON *schema, int depth)
{
    cJSON *o = cJSON_CreateObject();
    const cJSON *req = get(schema, "required"), *props = get(schema, "properties"), *p;
    if (!cJSON_IsObject(props))
        return o;
    cJSON_ArrayForEach(p, props)
    {
        int wanted = !cJSON_IsArray(req);
        const cJSON *q;
        cJSON_ArrayForEach(q, req) wanted |= cJSON_IsString(q) && strcmp(q->valuestring, p->string) == 0;
        if (wanted)
            cJSON_AddItemToObject(o, p->string, schema_value(p, depth + 1));
    }
    return o;
}

/* A value the schema allows, the same every time: its enum's first, or one of its type. */
static cJSON *schema_value(const cJSON *schema, int depth)
{
    const cJSON *en = get(schema, "enum"), *t = get(schema, "type");
    if (cJSON_IsArray(en) && en->child != NULL)
        return cJSON_Duplicate(en->child, 1);
    if (get(schema, "const") != NULL)
        return cJSON_Duplicate(get(schema, "const"), 1);
    const char *type = cJSON_IsString(t) ? t->valuestring : NULL;
    if (cJSON_IsArray(t)) {
        const cJSON *x;
        cJSON_ArrayForEach(x, t) if (type == NULL && cJSON_IsString(x) && strcmp(x->valuestring, "null") != 0)
            type = x->valuestring;
    }
    if (type == NULL)
        type = get(schema, "properties") != NULL ? "object" : "string";
    if (strcmp(type, "object") == 0)
        return depth < 8 ? schema_object(schema, depth) : cJSON_CreateObject();
    if (strcmp(type, "integer") == 0)
        return cJSON_CreateNumber(1);
    if (strcmp(type, "number") == 0)
        return cJSON_CreateNumber(1.5);
    if (strcmp(type, "boolean") == 0)
        return cJSON_CreateTrue();
    if (strcmp(type, "array") == 0)
        return cJSON_CreateArray();
    if (strcmp(type, "null") == 0)
        return cJSON_CreateNull();
    return cJSON_CreateString("sim");
}

/* The tool a tool_choice forces, as a name (its length in *len), or NULL. */
static const char *forced_tool(const cJSON *j, av_sim_kind_t kind, const cJSON *tools, size_t *len)
{
    const cJSON *tc = get(j, "tool_choice"), *n = NULL;
    int first = 0;
    if (kind == AV_SIM_ANTHROPIC) {
        const cJSON *type = get(tc, "type");
        if (cJSON_IsString(type) && strcmp(type->valuestring, "any") == 0)
            first = 1;
        else if (cJSON_IsString(type) && strcmp(type->valuestring, "tool") == 0)
            n = get(tc, "name");
    } else if (cJSON_IsString(tc)) {
        first = strcmp(tc->valuestring, "required") == 0;
    } else {
        const cJSON *fn = get(tc, "function"); /* chat: {"type": "function", "function": {"name"}} */
        n = get(fn != NULL ? fn : tc, "name");
    }
    if (first && tools->child != NULL)
        n = tool_name(tools->child);
    if (!cJSON_IsString(n))
        return NULL;
    *len = strlen(n->valuestring);
    return n->valuestring;
}

static int64_t piece_start(const char *s, size_t n, int64_t j)
{
    size_t p = (size_t)j * PIECE;
    while (p < n && ((unsigned char)s[p] & 0xc0) == 0x80)
        p++;
    return p < n ? (int64_t)p : (int64_t)n;
}

/* Decides the answer's tool calls; returns 0, or -1 with a message in err. */
static int plan_calls(av_sim_req_t *r, const cJSON *j, const av_sim_knobs_t *k, char *err, size_t errlen)
{
    const cJSON *tools = get(j, "tools");
    if (!cJSON_IsArray(tools))
        tools = NULL;
    const char *names = k->tool_call, *forced = NULL;
    size_t flen = 0;
    if (names == NULL && tools != NULL && (forced = forced_tool(j, r->kind, tools, &flen)) == NULL)
        return 0;
    if (names == NULL && forced == NULL)
        return 0;
    if (forced != NULL && (flen == 0 || flen >= sizeof(r->calls[0].name))) {
        snprintf(err, errlen, "tool_choice names no tool the simulator can call");
        return -1;
    }
    cJSON *fixed = NULL;
    if (k->tool_args != NULL && ((fixed = cJSON_Parse(k->tool_args)) == NULL || !cJSON_IsObject(fixed))) {
        cJSON_Delete(fixed);
        snprintf(err, errlen, "x-sim-tool-args is not a JSON object");
        return -1;
    }
    char *fixed_text = fixed != NULL ? cJSON_PrintUnformatted(fixed) : NULL;
    cJSON_Delete(fixed);
    char *args[AV_SIM_MAX_CALLS];
    size_t total = 0;
    const char *p = names != NULL ? names : forced;
    while (r->ncalls < AV_SIM_MAX_CALLS) {
        size_t len = names != NULL ? strcspn(p, ",") : flen;
        av_sim_call_t *c = &r->calls[r->ncalls];
        memcpy(c->name, p, len);
        c->name[len] = '\0';
        const cJSON *schema = NULL;
        if (fixed_text != NULL) {
            args[r->ncalls] = av_strdup(fixed_text);
        } else {
            cJSON *a = find_tool(tools, r->kind, p, len, &schema) != NULL ? schema_object(schema, 0)
                                                                          : cJSON_CreateObject();
            args[r->ncalls] = cJSON_PrintUnformatted(a);
            cJSON_Delete(a);
        }
        if (args[r->ncalls] == NULL)
            av_oom();
        c->args_len = strlen(args[r->ncalls]);
        total += c->args_len;
        r->ncalls++;
        p += len;
        if (names == NULL || *p != ',')
            break;
        p++;
    }
    free(fixed_text);
    r->args = av_malloc(total + 1);
    size_t off = 0;
    for (int i = 0; i < r->ncalls; i++) {
        av_sim_call_t *c = &r->calls[i];
        c->args_off = off;
        memcpy(r->args + off, args[i], c->args_len);
        off += c->args_len;
        free(args[i]);
        while (piece_start(r->args + c->args_off, c->args_len, c->pieces) < (int64_t)c->args_len)
            c->pieces++;
        if (c->pieces == 0)
            c->pieces = 1;
    }
    r->args[off] = '\0';
    return 0;
}

void av_sim_req_free(av_sim_req_t *r)
{
    free(r->args);
    r->args = NULL;
    r->ncalls = 0;
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
    const cJSON *model = get(j, "model");
    if (!cJSON_IsString(model) || model->valuestring[0] == '\0') {
        snprintf(err, errlen, "you must provide a model parameter");
        cJSON_Delete(j);
        return -1;
    }
    snprintf(r->model, sizeof(r->model), "%s", model->valuestring);
    int messages = kind == AV_SIM_CHAT || kind == AV_SIM_ANTHROPIC || kind == AV_SIM_COUNT_TOKENS;
    int anthropic = kind == AV_SIM_ANTHROPIC || kind == AV_SIM_COUNT_TOKENS;
    const char *input_key = messages ? "messages" : kind == AV_SIM_COMPLETIONS ? "prompt" : "input";
    const cJSON *input = get(j, input_key);
    if (input == NULL) {
        snprintf(err, errlen, "'%s' is a required property", input_key);
        cJSON_Delete(j);
        return -1;
    }
    if (kind == AV_SIM_EMBEDDINGS) {
        int rc = parse_embeddings(r, j, input, err, errlen);
        cJSON_Delete(j);
        return rc;
    }
    r->prompt_tokens = text_tokens(input) + (messages ? 7 : 1);
    r->prompt_tokens += text_tokens(get(j, anthropic ? "system" : "instructions"));
    r->prompt_tokens += text_tokens(get(j, "tools")); /* the tools' declarations are part of the prompt */
    r->usage_off = (int)k->usage_off;
    r->cached_tokens = k->cached < r->prompt_tokens ? k->cached : r->prompt_tokens;
    if (kind == AV_SIM_COUNT_TOKENS) {
        cJSON_Delete(j);
        return 0;
    }
    r->stream = cJSON_IsTrue(get(j, "stream"));
    r->include_usage = cJSON_IsTrue(get(get(j, "stream_options"), "include_usage")) && !k->usage_off;
    r->usage_null = r->include_usage && k->usage_null;
    r->text_tokens = k->tokens;
    r->finish_reason = kind == AV_SIM_ANTHROPIC ? "end_turn" : kind == AV_SIM_RESPONSES ? "completed" : "stop";
    const cJSON *mt = get(j, kind == AV_SIM_RESPONSES ? "max_output_tokens" : "max_tokens");
    if (mt == NULL)
        mt = get(j, "max_completion_tokens");
    if (cJSON_IsNumber(mt) && mt->valuedouble >= 0 && mt->valuedouble < (double)r->text_tokens) {
        r->text_tokens = (int64_t)mt->valuedouble;
        r->finish_reason = kind == AV_SIM_ANTHROPIC ? "max_tokens" : kind == AV_SIM_RESPONSES ? "incomplete" : "length";
    }
    if (kind != AV_SIM_COMPLETIONS && plan_calls(r, j, k, err, errlen) != 0) {
        cJSON_Delete(j);
        return -1;
    }
    cJSON_Delete(j);
    if (r->ncalls > 0) {
        if (!k->tool_text)
            r->text_tokens = 0;
        r->finish_reason = kind == AV_SIM_ANTHROPIC ? "tool_use" : kind == AV_SIM_RESPONSES ? "completed" : "tool_calls";
    }
    r->completion_tokens = r->steps = r->text_tokens;
    for (int i = 0; i < r->ncalls; i++) {
        r->completion_tokens += r->calls[i].pieces + 1; /* each piece a token, and one for the name */
        r->steps += r->calls[i].pieces;
    }
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

/* ---- pieces shared by the dialects ---- */

static void answer_text(struct evbuffer *out, const av_sim_req_t *r, const av_sim_knobs_t *k)
{
    for (int64_t i = 0; i < r->text_tokens; i++) {
        const char *w = av_sim_token(k->seed, i);
        evbuffer_add(out, w, strlen(w));
    }
}

static void str(struct evbuffer *out, const char *s)
{
    av_json_str(out, s, strlen(s));
}

static void call_args(struct evbuffer *out, const av_sim_req_t *r, int c)
{
    evbuffer_add(out, r->args + r->calls[c].args_off, r->calls[c].args_len);
}

/* The arguments' text as a JSON string. */
static void call_args_str(struct evbuffer *out, const av_sim_req_t *r, int c)
{
    av_json_str(out, r->args + r->calls[c].args_off, r->calls[c].args_len);
}

/* Piece j of call c's arguments, as a JSON string. */
static void call_piece(struct evbuffer *out, const av_sim_req_t *r, int c, int64_t j)
{
    const av_sim_call_t *call = &r->calls[c];
    const char *s = r->args + call->args_off;
    int64_t a = piece_start(s, call->args_len, j), b = piece_start(s, call->args_len, j + 1);
    av_json_str(out, s + a, (size_t)(b - a));
}

/* Which step i is: text token *piece (*call -1), or piece *piece of call *call. */
static void locate(const av_sim_req_t *r, int64_t i, int *call, int64_t *piece)
{
    *call = -1;
    *piece = i;
    if (i < r->text_tokens)
        return;
    i -= r->text_tokens;
    for (int c = 0; c < r->ncalls; c++) {
        if (i < r->calls[c].pieces) {
            *call = c;
            *piece = i;
            return;
        }
        i -= r->calls[c].pieces;
    }
    *call = r->ncalls - 1; /* past the end: the last call's last piece */
    *piece = r->calls[*call].pieces - 1;
}

/* ---- OpenAI chat and completions ---- */

static void head(struct evbuffer *out, const av_sim_req_t *r, const char *object)
{
    evbuffer_add_printf(out, "{\"id\":\"%s-sim-%llu\",\"object\":\"%s\",\"created\":%lld,\"model\":",
                        r->kind == AV_SIM_CHAT ? "chatcmpl" : "cmpl", (unsigned long long)r->id,
                        object, (long long)r->created);
    str(out, r->model);
}

static void usage(struct evbuffer *out, const av_sim_req_t *r)
{
    evbuffer_add_printf(out, "\"usage\":{\"prompt_tokens\":%lld,\"completion_tokens\":%lld,\"total_tokens\":%lld,"
                             "\"prompt_tokens_details\":{\"cached_tokens\":%lld},"
                             "\"completion_tokens_details\":{\"reasoning_tokens\":0}}",
                        (long long)r->prompt_tokens, (long long)r->completion_tokens,
                        (long long)(r->prompt_tokens + r->completion_tokens), (long long)r->cached_tokens);
}

static void call_id(struct evbuffer *out, const av_sim_req_t *r, int c)
{
    evbuffer_add_printf(out, "\"call_sim_%llu_%d\"", (unsigned long long)r->id, c);
}

static void chat_body(struct evbuffer *out, const av_sim_req_t *r, const av_sim_knobs_t *k)
{
    int chat = r->kind == AV_SIM_CHAT;
    head(out, r, chat ? "chat.completion" : "text_completion");
    if (!chat) {
        ADD_LIT(out, ",\"choices\":[{\"index\":0,\"text\":\"");
        answer_text(out, r, k);
        evbuffer_add_printf(out, "\",\"logprobs\":null,\"finish_reason\":\"%s\"}],", r->finish_reason);
    } else {
        ADD_LIT(out, ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":");
        if (r->ncalls > 0 && r->text_tokens == 0) {
            ADD_LIT(out, "null");
        } else {
            ADD_LIT(out, "\"");
            answer_text(out, r, k);
            ADD_LIT(out, "\"");
        }
        if (r->ncalls > 0) {
            ADD_LIT(out, ",\"refusal\":null,\"tool_calls\":[");
            for (int c = 0; c < r->ncalls; c++) {
                if (c > 0)
                    ADD_LIT(out, ",");
                ADD_LIT(out, "{\"id\":");
                call_id(out, r, c);
                ADD_LIT(out, ",\"type\":\"function\",\"function\":{\"name\":");
                str(out, r->calls[c].name);
                ADD_LIT(out, ",\"arguments\":");
                call_args_str(out, r, c);
                ADD_LIT(out, "}}");
            }
            ADD_LIT(out, "]");
        }
        evbuffer_add_printf(out, "},\"logprobs\":null,\"finish_reason\":\"%s\"}],", r->finish_reason);
    }
    if (!r->usage_off)
        usage(out, r);
    else
        ADD_LIT(out, "\"usage\":null");
    ADD_LIT(out, "}\n");
}

static void chunk_head(struct evbuffer *out, const av_sim_req_t *r)
{
    ADD_LIT(out, "data: ");
    head(out, r, r->kind == AV_SIM_CHAT ? "chat.completion.chunk" : "text_completion");
}

/* A chunk's end: with include_usage OpenAI gives every chunk but the last "usage": null */
static void chunk_tail(struct evbuffer *out, const av_sim_req_t *r)
{
    if (r->usage_null)
        ADD_LIT(out, ",\"usage\":null");
    ADD_LIT(out, "}\n\n");
}

/* A chat chunk whose delta holds call c's piece j (and first, at j 0, a chunk naming the call). */
static void chat_call_piece(struct evbuffer *out, const av_sim_req_t *r, int c, int64_t j)
{
    if (j == 0) {
        chunk_head(out, r);
        evbuffer_add_printf(out, ",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":%d,\"id\":", c);
        call_id(out, r, c);
        ADD_LIT(out, ",\"type\":\"function\",\"function\":{\"name\":");
        str(out, r->calls[c].name);
        ADD_LIT(out, ",\"arguments\":\"\"}}]},\"logprobs\":null,\"finish_reason\":null}]");
        chunk_tail(out, r);
    }
    chunk_head(out, r);
    evbuffer_add_printf(out, ",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":%d,\"function\":"
                             "{\"arguments\":", c);
    call_piece(out, r, c, j);
    ADD_LIT(out, "}}]},\"logprobs\":null,\"finish_reason\":null}]");
    chunk_tail(out, r);
}

/* ---- OpenAI Responses ---- */

/* Opens an event: "event: NAME", then its data up to its sequence_number; the caller adds the rest and "}\n\n". */
static void resp_event(struct evbuffer *out, av_sim_req_t *r, const char *name)
{
    evbuffer_add_printf(out, "event: %s\ndata: {\"type\":\"%s\",\"sequence_number\":%lld", name, name,
                        (long long)r->seq++);
}

static int resp_has_message(const av_sim_req_t *r)
{
    return r->text_tokens > 0 || r->ncalls == 0;
}

static int resp_call_index(const av_sim_req_t *r, int c)
{
    return resp_has_message(r) + c;
}

static int resp_incomplete(const av_sim_req_t *r)
{
    return strcmp(r->finish_reason, "incomplete") == 0;
}

/* The output_text part: with the text (k), or empty (k NULL). */
static void resp_text_part(struct evbuffer *out, const av_sim_req_t *r, const av_sim_knobs_t *k)
{
    ADD_LIT(out, "{\"type\":\"output_text\",\"text\":\"");
    if (k != NULL)
        answer_text(out, r, k);
    ADD_LIT(out, "\",\"annotations\":[],\"logprobs\":[]}");
}

/* The message item: whole (k), or as it starts (k NULL: in progress, no content). */
static void resp_message_item(struct evbuffer *out, const av_sim_req_t *r, const av_sim_knobs_t *k)
{
    evbuffer_add_printf(out, "{\"id\":\"msg_sim_%llu\",\"type\":\"message\",\"status\":\"%s\",\"role\":\"assistant\","
                             "\"content\":[",
                        (unsigned long long)r->id,
                        k == NULL ? "in_progress" : resp_incomplete(r) ? "incomplete" : "completed");
    if (k != NULL)
        resp_text_part(out, r, k);
    ADD_LIT(out, "]}");
}

/* A function_call item: whole, or as it starts (in progress, no arguments). */
static void resp_call_item(struct evbuffer *out, const av_sim_req_t *r, int c, int whole)
{
    evbuffer_add_printf(out, "{\"id\":\"fc_sim_%llu_%d\",\"type\":\"function_call\",\"status\":\"%s\",\"call_id\":",
                        (unsigned long long)r->id, c, whole ? "completed" : "in_progress");
    call_id(out, r, c);
    ADD_LIT(out, ",\"name\":");
    str(out, r->calls[c].name);
    ADD_LIT(out, ",\"arguments\":");
    if (whole)
        call_args_str(out, r, c);
    else
        ADD_LIT(out, "\"\"");
    ADD_LIT(out, "}");
}

/* A Responses API object; whole with its output and usage (k not NULL), or as it starts. */
static void responses_object(struct evbuffer *out, const av_sim_req_t *r, const av_sim_knobs_t *k, const char *status)
{
    evbuffer_add_printf(out, "{\"id\":\"resp_sim_%llu\",\"object\":\"response\",\"created_at\":%lld,\"status\":\"%s\","
                             "\"error\":null,\"incomplete_details\":%s,\"instructions\":null,\"metadata\":{},\"model\":",
                        (unsigned long long)r->id, (long long)r->created, status,
                        k != NULL && resp_incomplete(r) ? "{\"reason\":\"max_output_tokens\"}" : "null");
    str(out, r->model);
    ADD_LIT(out, ",\"output\":[");
    if (k != NULL) {
        if (resp_has_message(r))
            resp_message_item(out, r, k);
        for (int c = 0; c < r->ncalls; c++) {
            if (c > 0 || resp_has_message(r))
                ADD_LIT(out, ",");
            resp_call_item(out, r, c, 1);
        }
    }
    ADD_LIT(out, "],\"parallel_tool_calls\":true,\"temperature\":1.0,\"tool_choice\":\"auto\",\"tools\":[],"
                 "\"top_p\":1.0");
    if (k != NULL && !r->usage_off)
        evbuffer_add_printf(out, ",\"usage\":{\"input_tokens\":%lld,\"input_tokens_details\":{\"cached_tokens\":%lld},"
                                 "\"output_tokens\":%lld,\"output_tokens_details\":{\"reasoning_tokens\":0},"
                                 "\"total_tokens\":%lld}",
                            (long long)r->prompt_tokens, (long long)r->cached_tokens, (long long)r->completion_tokens,
                            (long long)(r->prompt_tokens + r->completion_tokens));
    else
        ADD_LIT(out, ",\"usage\":null");
    ADD_LIT(out, "}");
}

/* output_text.done, content_part.done and output_item.done for the message. */
static void resp_message_done(struct evbuffer *out, av_sim_req_t *r, const av_sim_knobs_t *k)
{
    resp_event(out, r, "response.output_text.done");
    evbuffer_add_printf(out, ",\"item_id\":\"msg_sim_%llu\",\"output_index\":0,\"content_index\":0,\"text\":\"",
                        (unsigned long long)r->id);
    answer_text(out, r, k);
    ADD_LIT(out, "\",\"logprobs\":[]}\n\n");
    resp_event(out, r, "response.content_part.done");
    evbuffer_add_printf(out, ",\"item_id\":\"msg_sim_%llu\",\"output_index\":0,\"content_index\":0,\"part\":",
                        (unsigned long long)r->id);
    resp_text_part(out, r, k);
    ADD_LIT(out, "}\n\n");
    resp_event(out, r, "response.output_item.done");
    ADD_LIT(out, ",\"output_index\":0,\"item\":");
    resp_message_item(out, r, k);
    ADD_LIT(out, "}\n\n");
}

static void resp_call_added(struct evbuffer *out, av_sim_req_t *r, int c)
{
    resp_event(out, r, "response.output_item.added");
    evbuffer_add_printf(out, ",\"output_index\":%d,\"item\":", resp_call_index(r, c));
    resp_call_item(out, r, c, 0);
    ADD_LIT(out, "}\n\n");
}

static void resp_call_done(struct evbuffer *out, av_sim_req_t *r, int c)
{
    resp_event(out, r, "response.function_call_arguments.done");
    evbuffer_add_printf(out, ",\"item_id\":\"fc_sim_%llu_%d\",\"output_index\":%d,\"name\":",
                        (unsigned long long)r->id, c, resp_call_index(r, c));
    str(out, r->calls[c].name);
    ADD_LIT(out, ",\"arguments\":");
    call_args_str(out, r, c);
    ADD_LIT(out, "}\n\n");
    resp_event(out, r, "response.output_item.done");
    evbuffer_add_printf(out, ",\"output_index\":%d,\"item\":", resp_call_index(r, c));
    resp_call_item(out, r, c, 1);
    ADD_LIT(out, "}\n\n");
}

static void resp_step(struct evbuffer *out, av_sim_req_t *r, const av_sim_knobs_t *k, int64_t i)
{
    int c;
    int64_t j;
    locate(r, i, &c, &j);
    if (c < 0) {
        resp_event(out, r, "response.output_text.delta");
        evbuffer_add_printf(out, ",\"item_id\":\"msg_sim_%llu\",\"output_index\":0,\"content_index\":0,\"delta\":\"%s\","
                                 "\"logprobs\":[]}\n\n",
                            (unsigned long long)r->id, av_sim_token(k->seed, j));
        return;
    }
    if (j == 0) { /* the item before ends, this call's starts */
        if (c > 0)
            resp_call_done(out, r, c - 1);
        else if (resp_has_message(r))
            resp_message_done(out, r, k);
        resp_call_added(out, r, c);
    }
    resp_event(out, r, "response.function_call_arguments.delta");
    evbuffer_add_printf(out, ",\"item_id\":\"fc_sim_%llu_%d\",\"output_index\":%d,\"delta\":",
                        (unsigned long long)r->id, c, resp_call_index(r, c));
    call_piece(out, r, c, j);
    ADD_LIT(out, "}\n\n");
}

/* ---- Anthropic ---- */

static void anthropic_usage(struct evbuffer *out, const av_sim_req_t *r, int64_t output)
{
    evbuffer_add_printf(out, ",\"usage\":{\"input_tokens\":%lld,\"cache_creation_input_tokens\":0,"
                             "\"cache_read_input_tokens\":%lld,\"output_tokens\":%lld}",
                        (long long)(r->prompt_tokens - r->cached_tokens), (long long)r->cached_tokens,
                        (long long)output);
}

static int anthropic_has_text(const av_sim_req_t *r)
{
    return r->text_tokens > 0 || r->ncalls == 0;
}

static void tool_use_id(struct evbuffer *out, const av_sim_req_t *r, int c)
{
    evbuffer_add_printf(out, "\"toolu_sim_%llu_%d\"", (unsigned long long)r->id, c);
}

static void anthropic_body(struct evbuffer *out, const av_sim_req_t *r, const av_sim_knobs_t *k)
{
    evbuffer_add_printf(out, "{\"id\":\"msg_sim_%llu\",\"type\":\"message\",\"role\":\"assistant\",\"model\":",
                        (unsigned long long)r->id);
    str(out, r->model);
    ADD_LIT(out, ",\"content\":[");
    if (anthropic_has_text(r)) {
        ADD_LIT(out, "{\"type\":\"text\",\"text\":\"");
        answer_text(out, r, k);
        ADD_LIT(out, "\"}");
    }
    for (int c = 0; c < r->ncalls; c++) {
        if (c > 0 || anthropic_has_text(r))
            ADD_LIT(out, ",");
        ADD_LIT(out, "{\"type\":\"tool_use\",\"id\":");
        tool_use_id(out, r, c);
        ADD_LIT(out, ",\"name\":");
        str(out, r->calls[c].name);
        ADD_LIT(out, ",\"input\":");
        call_args(out, r, c);
        ADD_LIT(out, "}");
    }
    evbuffer_add_printf(out, "],\"stop_reason\":\"%s\",\"stop_sequence\":null", r->finish_reason);
    if (!r->usage_off)
        anthropic_usage(out, r, r->completion_tokens);
    ADD_LIT(out, "}\n");
}

static void anthropic_step(struct evbuffer *out, const av_sim_req_t *r, const av_sim_knobs_t *k, int64_t i)
{
    int c;
    int64_t j;
    locate(r, i, &c, &j);
    if (c < 0) {
        evbuffer_add_printf(out, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,"
                                 "\"delta\":{\"type\":\"text_delta\",\"text\":\"%s\"}}\n\n",
                            av_sim_token(k->seed, j));
        return;
    }
    int index = anthropic_has_text(r) + c;
    if (j == 0) {
        if (index > 0)
            evbuffer_add_printf(out, "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":%d}\n\n",
                                index - 1);
        evbuffer_add_printf(out, "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":%d,"
                                 "\"content_block\":{\"type\":\"tool_use\",\"id\":", index);
        tool_use_id(out, r, c);
        ADD_LIT(out, ",\"name\":");
        str(out, r->calls[c].name);
        ADD_LIT(out, ",\"input\":{}}}\n\n");
    }
    evbuffer_add_printf(out, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":%d,"
                             "\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":", index);
    call_piece(out, r, c, j);
    ADD_LIT(out, "}}\n\n");
}

/* ---- embeddings ---- */

/* Component d of vector i: a multiple of 1/1024 in [-1, 1], so float32 holds it exactly
 * and the float and base64 encodings give the same numbers. */
static int embed_value(uint64_t seed, int64_t i, int64_t d)
{
    const char *w = av_sim_token(seed + (uint64_t)i * 7919u, d);
    uint32_t h = 2166136261u;
    for (; *w; w++)
        h = (h ^ (unsigned char)*w) * 16777619u;
    h ^= (uint32_t)d * 2654435761u;
    h = (h ^ (h >> 15)) * 2246822519u;
    return (int)(h % 2049u) - 1024;
}

static void base64_vector(struct evbuffer *out, uint64_t seed, int64_t i, int64_t dims)
{
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    unsigned char b[3];
    int n = 0;
    for (int64_t d = 0; d < dims; d++) {
        float f = (float)embed_value(seed, i, d) / 1024.0f;
        uint32_t u;
        memcpy(&u, &f, 4);
        for (int s = 0; s < 32; s += 8) { /* little-endian whatever the host */
            b[n++] = (unsigned char)(u >> s);
            if (n == 3) {
                char q[4] = {abc[b[0] >> 2], abc[((b[0] & 3) << 4) | (b[1] >> 4)], abc[((b[1] & 15) << 2) | (b[2] >> 6)],
                             abc[b[2] & 63]};
                evbuffer_add(out, q, 4);
                n = 0;
            }
        }
    }
    if (n > 0) {
        if (n == 1)
            b[1] = 0;
        char q[4] = {abc[b[0] >> 2], abc[((b[0] & 3) << 4) | (b[1] >> 4)], n == 2 ? abc[(b[1] & 15) << 2] : '=', '='};
        evbuffer_add(out, q, 4);
    }
}

static void embeddings_body(struct evbuffer *out, const av_sim_req_t *r, const av_sim_knobs_t *k)
{
    ADD_LIT(out, "{\"object\":\"list\",\"data\":[");
    for (int64_t i = 0; i < r->inputs; i++) {
        evbuffer_add_printf(out, "%s{\"object\":\"embedding\",\"index\":%lld,\"embedding\":", i ? "," : "", (long long)i);
        if (r->base64) {
            ADD_LIT(out, "\"");
            base64_vector(out, k->seed, i, r->dims);
            ADD_LIT(out, "\"}");
            continue;
        }
        for (int64_t d = 0; d < r->dims; d++)
            evbuffer_add_printf(out, "%c%.10g", d ? ',' : '[', embed_value(k->seed, i, d) / 1024.0);
        ADD_LIT(out, "]}");
    }
    ADD_LIT(out, "],\"model\":");
    str(out, r->model);
    evbuffer_add_printf(out, ",\"usage\":{\"prompt_tokens\":%lld,\"total_tokens\":%lld}}\n",
                        (long long)r->prompt_tokens, (long long)r->prompt_tokens);
}

/* ---- the entry points ---- */

void av_sim_body(struct evbuffer *out, const av_sim_req_t *r, const av_sim_knobs_t *k)
{
    switch (r->kind) {
    case AV_SIM_EMBEDDINGS:
        embeddings_body(out, r, k);
        return;
    case AV_SIM_RESPONSES:
        responses_object(out, r, k, r->finish_reason);
        ADD_LIT(out, "\n");
        return;
    case AV_SIM_ANTHROPIC:
        anthropic_body(out, r, k);
        return;
    case AV_SIM_COUNT_TOKENS:
        evbuffer_add_printf(out, "{\"input_tokens\":%lld}\n", (long long)r->prompt_tokens);
        return;
    default:
        chat_body(out, r, k);
    }
}

void av_sim_event_open(struct evbuffer *out, av_sim_req_t *r)
{
    if (r->kind == AV_SIM_RESPONSES) {
        resp_event(out, r, "response.created");
        ADD_LIT(out, ",\"response\":");
        responses_object(out, r, NULL, "in_progress");
        ADD_LIT(out, "}\n\n");
        resp_event(out, r, "response.in_progress");
        ADD_LIT(out, ",\"response\":");
        responses_object(out, r, NULL, "in_progress");
        ADD_LIT(out, "}\n\n");
        if (resp_has_message(r)) {
            resp_event(out, r, "response.output_item.added");
            ADD_LIT(out, ",\"output_index\":0,\"item\":");
            resp_message_item(out, r, NULL);
            ADD_LIT(out, "}\n\n");
            resp_event(out, r, "response.content_part.added");
            evbuffer_add_printf(out, ",\"item_id\":\"msg_sim_%llu\",\"output_index\":0,\"content_index\":0,\"part\":",
                                (unsigned long long)r->id);
            resp_text_part(out, r, NULL);
            ADD_LIT(out, "}\n\n");
        }
        return;
    }
    if (r->kind == AV_SIM_ANTHROPIC) {
        evbuffer_add_printf(out, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_sim_%llu\","
                                 "\"type\":\"message\",\"role\":\"assistant\",\"model\":",
                            (unsigned long long)r->id);
        str(out, r->model);
        ADD_LIT(out, ",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null");
        if (!r->usage_off)
            anthropic_usage(out, r, 1);
        ADD_LIT(out, "}}\n\n");
        if (anthropic_has_text(r))
            ADD_LIT(out, "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,"
                         "\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
        ADD_LIT(out, "event: ping\ndata: {\"type\":\"ping\"}\n\n");
        return;
    }
    if (r->kind != AV_SIM_CHAT)
        return;
    chunk_head(out, r);
    if (r->text_tokens == 0 && r->ncalls > 0)
        ADD_LIT(out, ",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null},"
                     "\"logprobs\":null,\"finish_reason\":null}]");
    else
        ADD_LIT(out, ",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"
                     "\"logprobs\":null,\"finish_reason\":null}]");
    chunk_tail(out, r);
}

void av_sim_event_token(struct evbuffer *out, av_sim_req_t *r, const av_sim_knobs_t *k, int64_t i)
{
    if (r->kind == AV_SIM_RESPONSES) {
        resp_step(out, r, k, i);
        return;
    }
    if (r->kind == AV_SIM_ANTHROPIC) {
        anthropic_step(out, r, k, i);
        return;
    }
    int c;
    int64_t j;
    locate(r, i, &c, &j);
    if (c >= 0 && r->kind == AV_SIM_CHAT) {
        chat_call_piece(out, r, c, j);
        return;
    }
    chunk_head(out, r);
    if (r->kind == AV_SIM_CHAT)
        evbuffer_add_printf(out, ",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"%s\"},"
                                 "\"logprobs\":null,\"finish_reason\":null}]", av_sim_token(k->seed, j));
    else
        evbuffer_add_printf(out, ",\"choices\":[{\"text\":\"%s\",\"index\":0,\"logprobs\":null,"
                                 "\"finish_reason\":null}]", av_sim_token(k->seed, j));
    chunk_tail(out, r);
}

void av_sim_event_finish(struct evbuffer *out, av_sim_req_t *r, const av_sim_knobs_t *k)
{
    if (r->kind == AV_SIM_RESPONSES) {
        if (r->ncalls > 0)
            resp_call_done(out, r, r->ncalls - 1);
        else
            resp_message_done(out, r, k);
        char name[32];
        snprintf(name, sizeof(name), "response.%s", r->finish_reason);
        resp_event(out, r, name);
        ADD_LIT(out, ",\"response\":");
        responses_object(out, r, k, r->finish_reason);
        ADD_LIT(out, "}\n\n");
        return;
    }
    if (r->kind == AV_SIM_ANTHROPIC) {
        evbuffer_add_printf(out, "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":%d}\n\n"
                                 "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"%s\","
                                 "\"stop_sequence\":null}",
                            anthropic_has_text(r) + r->ncalls - 1, r->finish_reason);
        if (!r->usage_off)
            evbuffer_add_printf(out, ",\"usage\":{\"output_tokens\":%lld}", (long long)r->completion_tokens);
        ADD_LIT(out, "}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
        return;
    }
    chunk_head(out, r);
    if (r->kind == AV_SIM_CHAT)
        evbuffer_add_printf(out, ",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,"
                                 "\"finish_reason\":\"%s\"}]", r->finish_reason);
    else
        evbuffer_add_printf(out, ",\"choices\":[{\"text\":\"\",\"index\":0,\"logprobs\":null,"
                                 "\"finish_reason\":\"%s\"}]", r->finish_reason);
    chunk_tail(out, r);
}

void av_sim_event_usage(struct evbuffer *out, const av_sim_req_t *r)
{
    chunk_head(out, r);
    ADD_LIT(out, ",\"choices\":[],");
    usage(out, r);
    ADD_LIT(out, "}\n\n");
}

void av_sim_event_done(struct evbuffer *out, const av_sim_req_t *r)
{
    if (r->kind == AV_SIM_CHAT || r->kind == AV_SIM_COMPLETIONS)
        ADD_LIT(out, "data: [DONE]\n\n");
}

/* Anthropic's error type for a status, as its API documents them. */
static const char *anthropic_error_type(int status)
{
    switch (status) {
    case 400: return "invalid_request_error";
    case 401: return "authentication_error";
    case 402: return "billing_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 413: return "request_too_large";
    case 429: return "rate_limit_error";
    case 504: return "timeout_error";
    case 529: return "overloaded_error";
    default: return status >= 500 ? "api_error" : "invalid_request_error";
    }
}

void av_sim_error_body(struct evbuffer *out, av_sim_kind_t kind, int status, const char *message)
{
    if (kind == AV_SIM_ANTHROPIC || kind == AV_SIM_COUNT_TOKENS) {
        evbuffer_add_printf(out, "{\"type\":\"error\",\"error\":{\"type\":\"%s\",\"message\":",
                            anthropic_error_type(status));
        str(out, message);
        ADD_LIT(out, "}}\n");
        return;
    }
    const char *type = status == 429 ? "rate_limit_error" : status >= 500 ? "server_error" : "invalid_request_error";
    ADD_LIT(out, "{\"error\":{\"message\":");
    str(out, message);
    evbuffer_add_printf(out, ",\"type\":\"%s\",\"param\":null,\"code\":\"sim_%d\"}}\n", type, status);
}
