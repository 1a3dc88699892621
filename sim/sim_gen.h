/* sim_gen.h: what aviary-sim answers: knobs (from flags and x-sim-* headers)
 * and the bodies and stream events it writes in each API's documented shape. */
#ifndef AV_SIM_GEN_H
#define AV_SIM_GEN_H

#include <event2/buffer.h>
#include <stdint.h>

typedef struct {
    int64_t latency_ms;   /* before the response head */
    int64_t ttft_ms;      /* stream: head to first content token */
    int64_t tps;          /* stream: tokens per second, 0 = as fast as possible */
    int64_t tokens;       /* completion tokens (max_tokens caps it) */
    double error_rate;    /* share of requests answered 500 */
    double rate_429;      /* share of requests answered 429 */
    uint64_t seed;        /* same seed, same text */
    int echo;             /* answer with what was received */
    int status;           /* force this status (0 = no) */
    int64_t drop_after;   /* stream: close the connection after this many events (-1 = never) */
    int64_t usage_off;    /* 1: never send usage (a server without it) */
    int64_t cached;       /* prompt tokens reported as read from a prompt cache */
    int64_t usage_null;   /* 1: with include_usage, every other chunk says "usage":null (as OpenAI's do) */
    int64_t tool_text;    /* 1: a tool-call answer has the text first */
    const char *tool_call; /* x-sim-tool-call: NAME[,NAME...]: answer with calls to these tools */
    const char *tool_args; /* x-sim-tool-args: the calls' arguments (a JSON object) */
} av_sim_knobs_t;

typedef enum {
    AV_SIM_CHAT = 1, AV_SIM_COMPLETIONS, AV_SIM_EMBEDDINGS, AV_SIM_RESPONSES, AV_SIM_ANTHROPIC,
    AV_SIM_COUNT_TOKENS /* Anthropic's POST /v1/messages/count_tokens */
} av_sim_kind_t;

#define AV_SIM_MAX_CALLS 4
#define AV_SIM_MAX_INPUTS 2048 /* embeddings: inputs in one request, as OpenAI's limit */

/* One tool call of an answer. */
typedef struct {
    char name[128];
    size_t args_off, args_len; /* its arguments (a JSON object's text) in the request's args */
    int64_t pieces;            /* stream: the arguments come in this many deltas */
} av_sim_call_t;

/* A parsed request, enough to answer it. */
typedef struct {
    av_sim_kind_t kind;
    char model[128];
    int stream, include_usage, usage_off, usage_null;
    int64_t prompt_tokens, completion_tokens, cached_tokens;
    int64_t text_tokens; /* the answer's text; the rest of completion_tokens are tool calls */
    int64_t steps;       /* stream: content events after the opening (text tokens, then argument pieces) */
    const char *finish_reason;
    uint64_t id;
    int64_t created;
    int ncalls;
    av_sim_call_t calls[AV_SIM_MAX_CALLS];
    char *args;          /* the calls' arguments, one after another; NULL without calls (av_sim_req_free) */
    int64_t inputs, dims; /* embeddings: vectors and their length */
    int base64;          /* embeddings: encoding_format "base64" (little-endian float32) */
    int64_t seq;         /* Responses stream: the next event's sequence_number */
} av_sim_req_t;

void av_sim_knobs_default(av_sim_knobs_t *k);
/* Applies one x-sim-* header (name lower-case); returns 0, or -1 for a bad
 * value. String knobs keep pointing at value. */
int av_sim_knob_header(av_sim_knobs_t *k, const char *name, const char *value);

/* Parses a JSON request body for kind; returns 0, or -1 with a message in
 * err (and nothing to free). Tool calls: the tools x-sim-tool-call names,
 * else the one a tool_choice forces (by name; "required" or Anthropic's
 * "any": the first declared), with x-sim-tool-args or arguments made from
 * the tool's declared schema. */
int av_sim_parse(av_sim_req_t *r, av_sim_kind_t kind, const char *body, size_t len,
                 const av_sim_knobs_t *k, char *err, size_t errlen);
/* Frees what av_sim_parse allocated (tool call arguments); safe to repeat. */
void av_sim_req_free(av_sim_req_t *r);

/* The i-th token's text (" word"), the same for the same seed. */
const char *av_sim_token(uint64_t seed, int64_t i);

void av_sim_body(struct evbuffer *out, const av_sim_req_t *r, const av_sim_knobs_t *k);
/* Stream events in the kind's dialect, each ending in a blank line: the
 * opening (a role chunk; response.created, response.in_progress and the
 * message item's start; message_start, the text block's start and a ping),
 * the i-th of r->steps content steps (a text token, or a piece of a tool
 * call's arguments, with the events that open and close items and blocks
 * around it), the closing (finish chunk; the open item's done events and
 * response.completed or .incomplete with the whole response; the block's
 * stop, message_delta with usage, message_stop), the OpenAI usage chunk,
 * and [DONE] (OpenAI only). Responses events carry sequence_number from
 * r->seq, so these take r writable. */
void av_sim_event_open(struct evbuffer *out, av_sim_req_t *r);
void av_sim_event_token(struct evbuffer *out, av_sim_req_t *r, const av_sim_knobs_t *k, int64_t i);
void av_sim_event_finish(struct evbuffer *out, av_sim_req_t *r, const av_sim_knobs_t *k);
void av_sim_event_usage(struct evbuffer *out, const av_sim_req_t *r);
void av_sim_event_done(struct evbuffer *out, const av_sim_req_t *r);
/* An error body in the kind's dialect: OpenAI's {"error": {...}}, or for
 * Anthropic's paths {"type": "error", "error": {"type", "message"}}. */
void av_sim_error_body(struct evbuffer *out, av_sim_kind_t kind, int status, const char *message);

#endif
