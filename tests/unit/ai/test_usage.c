/* test_usage.c: usage, text and timing read from fixture transcripts of each
 * dialect, streamed and not, fed split at every byte boundary (and a byte at
 * a time): every figure counted exactly once; the usage chunk held back from
 * the client leaves its bytes exactly those of the stream without it. */
#include <event2/buffer.h>
#include <stdlib.h>

#include "config.h"
#include "../test.h"
#include "usage.h"

typedef struct {
    int64_t input, output, cached, cache_write, reasoning;
    const char *finish;
    int tool_calls;
    size_t chars;
    uint64_t token_events;
} want_t;

static const char chat_stream[] =
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n"
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}]}\n\n"
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo \\u00e9\"},\"finish_reason\":null}]}\n\n"
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"!\"},\"finish_reason\":null}]}\n\n"
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n";
static const char chat_usage_event[] =
    "data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":20,\"completion_tokens\":3,\"total_tokens\":23,"
    "\"prompt_tokens_details\":{\"cached_tokens\":5},\"completion_tokens_details\":{\"reasoning_tokens\":1}}}\n\n";
static const char done_event[] = "data: [DONE]\n\n";
static const want_t chat_want = {20, 3, 5, -1, 1, "stop", 0, 9, 3}; /* bytes: the e-acute is two */

/* the same in CRLF, "data:" without its space, the last event without its blank line */
static const char chat_crlf[] =
    "data:{\"choices\":[{\"delta\":{\"content\":\"ab\"}}]}\r\n\r\n"
    ": a comment\r\n"
    "data:{\"choices\":[{\"delta\":{\"content\":\"c\"},\"finish_reason\":\"length\"}]}\r\n\r\n"
    "data:{\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2}}";
static const want_t crlf_want = {7, 2, -1, -1, -1, "length", 0, 3, 2};

static const char chat_json[] =
    "{\"id\":\"c2\",\"object\":\"chat.completion\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
    "\"content\":null,\"tool_calls\":[{\"id\":\"t1\",\"type\":\"function\",\"function\":{\"name\":\"a\",\"arguments\":\"{}\"}},"
    "{\"id\":\"t2\",\"type\":\"function\",\"function\":{\"name\":\"b\",\"arguments\":\"{}\"}}]},\"finish_reason\":\"tool_calls\"}],"
    "\"usage\":{\"prompt_tokens\":30,\"completion_tokens\":12,\"total_tokens\":42}}";
static const want_t chat_json_want = {30, 12, -1, -1, -1, "tool_calls", 2, 0, 0};

static const char embeddings_json[] =
    "{\"object\":\"list\",\"data\":[{\"object\":\"embedding\",\"index\":0,\"embedding\":[0.1,0.2]}],\"model\":\"e\","
    "\"usage\":{\"prompt_tokens\":8,\"total_tokens\":8}}";
static const want_t embeddings_want = {8, -1, -1, -1, -1, "", 0, 0, 0};

/* shaped like OpenAI's and vLLM's streams: the role said once in the first
 * chunk, then chunks alike but for their text (read by the bytes around it),
 * a keep-alive comment between events */
#define LIKE_HEAD "data: {\"id\":\"chatcmpl-7\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"m\",\"choices\":"
#define LIKE_TOKEN(t) LIKE_HEAD "[{\"index\":0,\"delta\":{\"content\":\"" t "\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n"
static const char like_stream[] =
    LIKE_HEAD "[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n"
    LIKE_TOKEN("One") LIKE_TOKEN(" two") ": keep-alive\n\n" LIKE_TOKEN(" thr\\\"ee")
    LIKE_HEAD "[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}]}\n\n";
static const char like_usage_event[] =
    LIKE_HEAD "[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4,\"total_tokens\":13}}\n\n";
static const want_t like_want = {9, 4, -1, -1, -1, "stop", 0, 14, 3};

/* a stream whose chunks change shape: a new id (the template and its marks
 * made again), a tool call beside the text, logprobs after it (walked from
 * inside the delta), an escaped key after the delta (the full reading) */
#define SHIFT_HEAD(id) "data: {\"id\":\"" id "\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"m\",\"choices\":"
#define SHIFT_LOGPROBS(t) SHIFT_HEAD("b") "[{\"index\":0,\"delta\":{\"content\":\"" t "\"},\"logprobs\":{\"content\":[{\"token\":\"" t \
    "\",\"logprob\":-0.5}]},\"finish_reason\":null}]}\n\n"
static const char shift_stream[] =
    SHIFT_HEAD("a") "[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n"
    SHIFT_HEAD("a") "[{\"index\":0,\"delta\":{\"content\":\"x\"},\"finish_reason\":null}]}\n\n"
    SHIFT_HEAD("b") "[{\"index\":0,\"delta\":{\"content\":\"yy\"},\"finish_reason\":null}]}\n\n"
    SHIFT_HEAD("b") "[{\"index\":0,\"delta\":{\"content\":\"z\",\"tool_calls\":[{\"index\":0,\"id\":\"call_9\",\"type\":"
    "\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]},\"finish_reason\":null}]}\n\n"
    SHIFT_LOGPROBS("w") SHIFT_LOGPROBS("v")
    SHIFT_HEAD("b") "[{\"index\":0,\"delta\":{},\"log\\u0070robs\":null,\"finish_reason\":\"stop\"}]}\n\n";
static const char shift_usage_event[] =
    SHIFT_HEAD("b") "[],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":5,\"total_tokens\":16,"
    "\"completion_tokens_details\":{\"reasoning_tokens\":2}}}\n\n";
static const want_t shift_want = {11, 5, -1, -1, 2, "stop", 1, 6, 5};

/* tool calls streamed, the JSON spaced out, a null usage before the real one */
static const char chat_tools_stream[] =
    "data: {\"id\": \"c3\", \"choices\": [{\"index\": 0, \"delta\": {\"role\": \"assistant\", \"content\": null, "
    "\"tool_calls\": [{\"index\": 0, \"id\": \"call_1\", \"type\": \"function\", \"function\": {\"name\": \"f\", "
    "\"arguments\": \"\"}}]}, \"finish_reason\": null}]}\n\n"
    "data: {\"id\": \"c3\", \"choices\": [{\"index\": 0, \"delta\": {\"tool_calls\": [{\"index\": 0, \"function\": "
    "{\"arguments\": \"{\\\"a\\\":\"}}]}, \"finish_reason\": null}]}\n\n"
    "data: {\"id\": \"c3\", \"choices\": [{\"index\": 0, \"delta\": {\"tool_calls\": [{\"index\": 1, \"id\": \"call_2\", "
    "\"function\": {\"name\": \"g\", \"arguments\": \"{}\"}}]}, \"finish_reason\": null}]}\n\n"
    "data: {\"id\": \"c3\", \"choices\": [{\"index\": 0, \"delta\": {}, \"finish_reason\": \"tool_calls\"}], \"usage\": null}\n\n"
    "data: {\"id\": \"c3\", \"choices\": [], \"usage\": {\"prompt_tokens\": 15, \"completion_tokens\": 6, \"total_tokens\": 21}}\n\n"
    "data: [DONE]\n\n";
static const want_t chat_tools_want = {15, 6, -1, -1, -1, "tool_calls", 2, 0, 0};

static const char completions_stream[] =
    "data: {\"id\":\"x\",\"object\":\"text_completion\",\"choices\":[{\"text\":\"Once\",\"index\":0,\"logprobs\":null,\"finish_reason\":null}]}\n\n"
    "data: {\"id\":\"x\",\"object\":\"text_completion\",\"choices\":[{\"text\":\" upon\",\"index\":0,\"logprobs\":null,\"finish_reason\":\"length\"}]}\n\n"
    "data: {\"id\":\"x\",\"object\":\"text_completion\",\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":2,\"total_tokens\":6}}\n\n"
    "data: [DONE]\n\n";
static const want_t completions_want = {4, 2, -1, -1, -1, "length", 0, 9, 2};

/* two choices (the first one counts), pretty-printed, a usage key escaped */
static const char chat_two_json[] =
    "{\n  \"id\": \"c4\",\n  \"choices\": [\n"
    "    {\"index\": 0, \"message\": {\"role\": \"assistant\", \"content\": \"A\\nB\"}, \"finish_reason\": \"stop\"},\n"
    "    {\"index\": 1, \"message\": {\"role\": \"assistant\", \"content\": \"second\"}, \"finish_reason\": \"length\"}\n"
    "  ],\n  \"usage\": {\"prompt_tok\\u0065ns\": 5, \"completion_tokens\": 4}\n}\n";
/* every choice's text counts (n answers are billed for all); the finish reason is the first's */
static const want_t chat_two_want = {5, 4, -1, -1, -1, "stop", 0, 9, 2};

/* a body cut short counts nothing from it (the request is then estimated) */
static const char chat_cut_json[] =
    "{\"id\":\"c5\",\"choices\":[{\"index\":0,\"message\":{\"content\":\"x\"},\"finish_reason\":\"stop\"}],"
    "\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}";
static const want_t chat_cut_want = {-1, -1, -1, -1, -1, "", 0, 0, 0};

static const char anthropic_stream[] =
    "event: message_start\n"
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"m1\",\"type\":\"message\",\"usage\":{\"input_tokens\":10,"
    "\"cache_read_input_tokens\":4,\"cache_creation_input_tokens\":2,\"output_tokens\":1}}}\n\n"
    "event: content_block_start\n"
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" there\"}}\n\n"
    "event: content_block_stop\n"
    "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
    "event: content_block_start\n"
    "data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"tu\",\"name\":\"f\",\"input\":{}}}\n\n"
    "event: message_delta\n"
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":9}}\n\n"
    "event: message_delta\n"
    "data: {\"type\":\"message_delta\",\"delta\":{},\"usage\":{\"output_tokens\":15}}\n\n"
    "event: message_stop\n"
    "data: {\"type\":\"message_stop\"}\n\n";
static const want_t anthropic_want = {10, 15, 4, 2, -1, "tool_use", 1, 8, 2};

static const char anthropic_json[] =
    "{\"id\":\"m2\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"Yes.\"},"
    "{\"type\":\"tool_use\",\"id\":\"x\",\"name\":\"g\",\"input\":{}}],\"stop_reason\":\"end_turn\","
    "\"usage\":{\"input_tokens\":5,\"output_tokens\":3,\"cache_read_input_tokens\":0}}";
static const want_t anthropic_json_want = {5, 3, 0, -1, -1, "end_turn", 1, 4, 1};

static const char responses_stream[] =
    "event: response.created\n"
    "data: {\"type\":\"response.created\",\"response\":{\"id\":\"r1\",\"status\":\"in_progress\"}}\n\n"
    "event: response.output_text.delta\n"
    "data: {\"type\":\"response.output_text.delta\",\"item_id\":\"i\",\"delta\":\"One\"}\n\n"
    "event: response.output_text.delta\n"
    "data: {\"type\":\"response.output_text.delta\",\"item_id\":\"i\",\"delta\":\" two\"}\n\n"
    "event: response.completed\n"
    "data: {\"type\":\"response.completed\",\"response\":{\"id\":\"r1\",\"status\":\"completed\",\"usage\":{\"input_tokens\":12,"
    "\"input_tokens_details\":{\"cached_tokens\":3},\"output_tokens\":2,\"output_tokens_details\":{\"reasoning_tokens\":0},"
    "\"total_tokens\":14}}}\n\n";
static const want_t responses_want = {12, 2, 3, -1, 0, "completed", 0, 7, 2};

static const char responses_json[] =
    "{\"id\":\"r2\",\"object\":\"response\",\"status\":\"incomplete\",\"output\":[{\"type\":\"function_call\",\"name\":\"f\"},"
    "{\"type\":\"message\",\"content\":[{\"type\":\"output_text\",\"text\":\"Done\"}]}],"
    "\"usage\":{\"input_tokens\":9,\"output_tokens\":4}}";
static const want_t responses_json_want = {9, 4, -1, -1, -1, "incomplete", 1, 4, 1};

static int same(const av_usage_t *u, const want_t *w)
{
    return u->input == w->input && u->output == w->output && u->cached == w->cached &&
           u->cache_write == w->cache_write && u->reasoning == w->reasoning && strcmp(u->finish, w->finish) == 0 &&
           u->tool_calls == w->tool_calls && (!u->want_text || u->chars == w->chars) &&
           u->token_events == w->token_events;
}

static void show(const av_usage_t *u, const want_t *w)
{
    printf("# got  in %lld out %lld cached %lld write %lld reasoning %lld finish %s tools %d chars %zu events %llu\n",
           (long long)u->input, (long long)u->output, (long long)u->cached, (long long)u->cache_write,
           (long long)u->reasoning, u->finish, u->tool_calls, u->chars, (unsigned long long)u->token_events);
    printf("# want in %lld out %lld cached %lld write %lld reasoning %lld finish %s tools %d chars %zu events %llu\n",
           (long long)w->input, (long long)w->output, (long long)w->cached, (long long)w->cache_write,
           (long long)w->reasoning, w->finish, w->tool_calls, w->chars, (unsigned long long)w->token_events);
}

/* Feeds text split at every byte boundary (two pieces), then a byte at a
 * time; with the text decoded and without, each by the shortcuts for
 * OpenAI objects and by the full reading: all four must count alike. */
static void every_split(const char *text, int dialect, int stream, const want_t *w)
{
    size_t n = strlen(text);
    for (int mode = 0; mode < 4; mode++) {
        for (size_t k = 0; k <= n + 1; k++) {
            av_usage_t u;
            av_usage_init(&u, dialect, stream, 0);
            u.want_text = !(mode & 1); /* decoded: chars are bytes of the text itself */
            u.full_reading = (mode & 2) != 0;
            if (k <= n) {
                av_usage_feed(&u, text, k, 1000 + k, NULL, NULL);
                av_usage_feed(&u, text + k, n - k, 2000 + k, NULL, NULL);
            } else {
                for (size_t i = 0; i < n; i++)
                    av_usage_feed(&u, text + i, 1, 1000 + i, NULL, NULL);
            }
            av_usage_end(&u, 5000, NULL, NULL);
            int ok = same(&u, w);
            CHECK(ok);
            if (!ok) {
                printf("# split at %zu of %zu, want_text %d, full reading %d\n", k, n, u.want_text, u.full_reading);
                show(&u, w);
                av_usage_free(&u);
                return;
            }
            av_usage_free(&u);
        }
    }
}

static void test_openai(void)
{
    char all[4096];
    snprintf(all, sizeof(all), "%s%s%s", chat_stream, chat_usage_event, done_event);
    every_split(all, AV_DIALECT_CHAT, 1, &chat_want);
    av_usage_t u; /* without want_text the text is not decoded: its escaped length is counted */
    av_usage_init(&u, AV_DIALECT_CHAT, 1, 0);
    av_usage_feed(&u, all, strlen(all), 1, NULL, NULL);
    CHECK_INT(u.chars, 13);
    av_usage_free(&u);
    every_split(chat_crlf, AV_DIALECT_CHAT, 1, &crlf_want);
    every_split(chat_json, AV_DIALECT_CHAT, 0, &chat_json_want);
    every_split(embeddings_json, AV_DIALECT_EMBEDDINGS, 0, &embeddings_want);
    char like[4096];
    snprintf(like, sizeof(like), "%s%s%s", like_stream, like_usage_event, done_event);
    every_split(like, AV_DIALECT_CHAT, 1, &like_want);
    every_split(chat_tools_stream, AV_DIALECT_CHAT, 1, &chat_tools_want);
    char shift[4096];
    snprintf(shift, sizeof(shift), "%s%s%s", shift_stream, shift_usage_event, done_event);
    every_split(shift, AV_DIALECT_CHAT, 1, &shift_want);
    every_split(completions_stream, AV_DIALECT_COMPLETIONS, 1, &completions_want);
    every_split(chat_two_json, AV_DIALECT_CHAT, 0, &chat_two_want);
    every_split(chat_cut_json, AV_DIALECT_CHAT, 0, &chat_cut_want);
}

static void test_anthropic(void)
{
    every_split(anthropic_stream, AV_DIALECT_ANTHROPIC, 1, &anthropic_want);
    every_split(anthropic_json, AV_DIALECT_ANTHROPIC, 0, &anthropic_json_want);
}

static void test_responses(void)
{
    every_split(responses_stream, AV_DIALECT_RESPONSES, 1, &responses_want);
    every_split(responses_json, AV_DIALECT_RESPONSES, 0, &responses_json_want);
}

/* A count no backend could mean is not believed, by either reading, in
 * answers and in streams, in any dialect: the usage is estimated. (A
 * backend's 99999999999999999999 once overflowed into 7.7e18 tokens and a
 * cost of millions.) */
static void test_untrusted_counts(void)
{
    static const struct {
        const char *v;
        int bad;
        int64_t want;
    } cases[] = {
        {"99999999999999999999", 1, 0}, {"9223372036854775808", 1, 0}, {"9007199254740993", 1, 0},
        {"-5", 1, 0}, {"-0", 1, 0}, {"1.5", 1, 0}, {"1e400", 1, 0}, {"2E3", 1, 0}, {"0.0001", 1, 0},
        {"9007199254740992", 0, 9007199254740992LL}, {"12.0", 0, 12}, {"0", 0, 0}, {"7", 0, 7},
    };
    char text[1024];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        for (int shape = 0; shape < 4; shape++) {
            int dialect = shape == 3 ? AV_DIALECT_ANTHROPIC : AV_DIALECT_CHAT, stream = shape == 1 || shape == 3;
            if (shape == 0)
                snprintf(text, sizeof(text), "{\"choices\":[{\"message\":{\"content\":\"hi\"},\"finish_reason\":\"stop\"}],"
                         "\"usage\":{\"prompt_tokens\":%s,\"completion_tokens\":3}}", cases[i].v);
            else if (shape == 1)
                snprintf(text, sizeof(text), "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n"
                         "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":%s,\"completion_tokens\":3}}\n\n", cases[i].v);
            else if (shape == 2) /* in the details: the cached count */
                snprintf(text, sizeof(text), "{\"choices\":[{\"message\":{\"content\":\"hi\"}}],\"usage\":{\"prompt_tokens\":"
                         "9007199254740992,\"completion_tokens\":3,\"prompt_tokens_details\":{\"cached_tokens\":%s}}}", cases[i].v);
            else
                snprintf(text, sizeof(text), "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":"
                         "{\"input_tokens\":%s,\"output_tokens\":1}}}\n\nevent: message_delta\ndata: {\"type\":"
                         "\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":3}}\n\n",
                         cases[i].v);
            for (int full = 0; full < 2; full++) {
                av_usage_t u;
                av_usage_init(&u, dialect, stream, 0);
                u.full_reading = full;
                av_usage_feed(&u, text, strlen(text), 1000, NULL, NULL);
                av_usage_end(&u, 2000, NULL, NULL);
                av_tokens_t t;
                av_usage_tokens(&u, 400, &t);
                int ok = u.untrusted == cases[i].bad && t.estimated == cases[i].bad && t.input >= 0 &&
                         t.input <= 3 * AV_TOKENS_MAX && t.output >= 0 && t.output <= AV_TOKENS_MAX &&
                         t.cached >= 0 && t.cached <= AV_TOKENS_MAX;
                if (!cases[i].bad && shape == 0)
                    ok = ok && t.input == cases[i].want;
                if (!cases[i].bad && shape == 2)
                    ok = ok && t.cached == cases[i].want;
                if (cases[i].bad)
                    ok = ok && t.input == 100 && strcmp(u.untrusted_key, shape == 2 ? "cached_tokens"
                                                                        : shape == 3 ? "input_tokens"
                                                                                     : "prompt_tokens") == 0;
                CHECK(ok);
                if (!ok)
                    printf("#   %s shape %d full %d: untrusted %d (%s) estimated %d in %lld out %lld cached %lld\n",
                           cases[i].v, shape, full, u.untrusted, u.untrusted_key, t.estimated, (long long)t.input,
                           (long long)t.output, (long long)t.cached);
                av_usage_free(&u);
            }
        }
    /* the cost of the largest believed counts at a high price does not overflow */
    av_price_t price = {.input = 1000000000, .output = 1000000000, .cached_input = 1, .cache_write = 1, .reasoning = 1};
    av_tokens_t big = {AV_TOKENS_MAX * 3, AV_TOKENS_MAX, 0, 0, 0, 0};
    CHECK(av_usage_cost_pico(&big, &price) == INT64_MAX);
    CHECK(av_usage_cost_nano(&big, &price) == INT64_MAX / 1000 + 1);
    av_tokens_t small = {1000, 10, 0, 0, 0, 0};
    CHECK_INT(av_usage_cost_pico(&small, &price), 1010000000000LL);
}

/* An Anthropic stream cut before its message_delta: message_start's
 * output_tokens (1) is not the answer's; the text relayed is, estimated. */
static void test_anthropic_cut(void)
{
    static const char cut[] =
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":10,"
        "\"output_tokens\":1}}}\n\n"
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":"
        "\"text_delta\",\"text\":\"Hello there, \"}}\n\n"
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":"
        "\"text_delta\",\"text\":\"how are you today?\"}}\n\n";
    for (int full = 0; full < 2; full++) {
        av_usage_t u;
        av_usage_init(&u, AV_DIALECT_ANTHROPIC, 1, 0);
        u.full_reading = full;
        u.want_text = 1;
        av_usage_feed(&u, cut, strlen(cut), 1000, NULL, NULL);
        av_usage_end(&u, 2000, NULL, NULL);
        av_tokens_t t;
        av_usage_tokens(&u, 100, &t);
        CHECK_INT(t.estimated, 1);
        CHECK_INT(t.input, 10);  /* message_start's count stands */
        CHECK_INT(t.output, 8); /* 31 bytes of text, four a token */
        av_usage_free(&u);
    }
}

/* An answer of tool calls alone has a time to first token: the first
 * call's, in every dialect and by both readings. */
static void test_tool_call_ttft(void)
{
    static const char anthropic_tools[] =
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":5,"
        "\"output_tokens\":1}}}\n\n"
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":"
        "{\"type\":\"tool_use\",\"id\":\"t1\",\"name\":\"f\",\"input\":{}}}\n\n";
    static const char responses_tools[] =
        "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"status\":\"in_progress\"}}\n\n"
        "event: response.output_item.added\ndata: {\"type\":\"response.output_item.added\",\"item\":"
        "{\"type\":\"function_call\",\"name\":\"f\"}}\n\n";
    static const struct {
        const char *text;
        int dialect;
    } cases[] = {{chat_tools_stream, AV_DIALECT_CHAT}, {anthropic_tools, AV_DIALECT_ANTHROPIC},
                 {responses_tools, AV_DIALECT_RESPONSES}};
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++)
        for (int full = 0; full < 2; full++) {
            av_usage_t u;
            av_usage_init(&u, cases[c].dialect, 1, 0);
            u.full_reading = full;
            /* one event a millisecond: the first carries the first call (the second for the others) */
            const char *p = cases[c].text;
            for (uint64_t t = 1000; *p != '\0'; t += 1000) {
                const char *end = strstr(p, "\n\n");
                size_t n = end ? (size_t)(end - p) + 2 : strlen(p);
                av_usage_feed(&u, p, n, t, NULL, NULL);
                p += n;
            }
            av_usage_end(&u, 99000, NULL, NULL);
            CHECK_INT(u.first_token_us, c == 0 ? 1000 : 2000);
            CHECK(u.tool_calls >= 1);
            av_usage_free(&u);
        }
}

static void to_buf(void *arg, const char *data, size_t len)
{
    evbuffer_add(arg, data, len);
}

/* strip: the client's bytes are the stream without the usage event, at every split */
/* The client gets the stream without the usage chunk, byte for byte, however it is split. */
static void strip_every_split(const char *stream, const char *usage_event, const want_t *w)
{
    char all[4096], want[4096];
    snprintf(all, sizeof(all), "%s%s%s", stream, usage_event, done_event);
    snprintf(want, sizeof(want), "%s%s", stream, done_event);
    size_t n = strlen(all);
    for (size_t k = 0; k <= n; k++) {
        av_usage_t u;
        av_usage_init(&u, AV_DIALECT_CHAT, 1, 1);
        u.want_text = 1;
        struct evbuffer *out = evbuffer_new();
        av_usage_feed(&u, all, k, 1, to_buf, out);
        av_usage_feed(&u, all + k, n - k, 2, to_buf, out);
        av_usage_end(&u, 3, to_buf, out);
        size_t got = evbuffer_get_length(out);
        int ok = got == strlen(want) && memcmp(evbuffer_pullup(out, -1), want, got) == 0 && same(&u, w);
        CHECK(ok);
        evbuffer_free(out);
        av_usage_free(&u);
        if (!ok) {
            printf("# split at %zu\n", k);
            return;
        }
    }
}

static void test_strip_usage_chunk(void)
{
    strip_every_split(chat_stream, chat_usage_event, &chat_want);
    strip_every_split(like_stream, like_usage_event, &like_want);
    strip_every_split(shift_stream, shift_usage_event, &shift_want);
}

static void feed_str(av_usage_t *u, const char *s, uint64_t now)
{
    av_usage_feed(u, s, strlen(s), now, NULL, NULL);
}

static void test_timing(void)
{
    av_usage_t u;
    av_usage_init(&u, AV_DIALECT_CHAT, 1, 0);
    /* the role-only chunk does not start the clock; gaps of 1000 us then 3000 us */
    feed_str(&u, "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n", 100);
    feed_str(&u, "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n", 500);
    feed_str(&u, "data: {\"choices\":[{\"delta\":{\"content\":\"b\"}}]}\n\n", 1500);
    feed_str(&u, "data: {\"choices\":[{\"delta\":{\"content\":\"c\"}}]}\n\n", 2500);
    feed_str(&u, "data: {\"choices\":[{\"delta\":{\"content\":\"d\"}}]}\n\n", 5500);
    CHECK_INT(u.first_token_us, 500);
    CHECK_INT(u.last_token_us, 5500);
    int64_t p50 = av_usage_gap_p50_us(&u);
    CHECK(p50 >= 900 && p50 <= 1100); /* gaps 1000, 1000, 3000 */
    av_usage_free(&u);
    /* an event too long to read is skipped and marks the counts incomplete */
    av_usage_init(&u, AV_DIALECT_CHAT, 1, 0);
    char *big = malloc(AV_USAGE_MAX_EVENT + 64);
    memset(big, 'x', AV_USAGE_MAX_EVENT + 64);
    memcpy(big, "data: ", 6);
    av_usage_feed(&u, big, AV_USAGE_MAX_EVENT + 64, 1, NULL, NULL);
    feed_str(&u, "\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"ok\"}}]}\n\n", 2);
    CHECK(u.incomplete);
    CHECK_INT(u.chars, 2);
    free(big);
    av_usage_free(&u);
}

int main(void)
{
    RUN(test_openai);
    RUN(test_anthropic);
    RUN(test_responses);
    RUN(test_untrusted_counts);
    RUN(test_anthropic_cut);
    RUN(test_tool_call_ttft);
    RUN(test_strip_usage_chunk);
    RUN(test_timing);
    TEST_DONE();
}
