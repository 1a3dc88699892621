/* sim_gen.h: what aviary-sim answers: knobs (from flags and x-sim-* headers)
 * and the OpenAI-compatible bodies and stream events it writes. */
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
} av_sim_knobs_t;

typedef enum { AV_SIM_CHAT = 1, AV_SIM_COMPLETIONS, AV_SIM_EMBEDDINGS, AV_SIM_RESPONSES, AV_SIM_ANTHROPIC } av_sim_kind_t;

/* A parsed request, enough to answer it. */
typedef struct {
    av_sim_kind_t kind;
    char model[128];
    int stream, include_usage, usage_off;
    int64_t prompt_tokens, completion_tokens, cached_tokens;
    const char *finish_reason;
    uint64_t id;
    int64_t created;
} av_sim_req_t;

void av_sim_knobs_default(av_sim_knobs_t *k);
/* Applies one x-sim-* header (name lower-case); returns 0, or -1 for a bad value. */
int av_sim_knob_header(av_sim_knobs_t *k, const char *name, const char *value);

/* Parses a JSON request body for kind; returns 0, or -1 with a message in err. */
int av_sim_parse(av_sim_req_t *r, av_sim_kind_t kind, const char *body, size_t len,
                 const av_sim_knobs_t *k, char *err, size_t errlen);

/* The i-th token's text (" word"), the same for the same seed. */
const char *av_sim_token(uint64_t seed, int64_t i);

void av_sim_body(struct evbuffer *out, const av_sim_req_t *r, const av_sim_knobs_t *k);
/* Stream events in the kind's dialect, each ending in a blank line: the
 * opening (a role chunk; response.created; message_start and the text
 * block's start), the i-th token, the closing (finish chunk;
 * response.completed with usage; the block's stop, message_delta with usage,
 * message_stop), the OpenAI usage chunk, and [DONE] (OpenAI only). */
void av_sim_event_open(struct evbuffer *out, const av_sim_req_t *r);
void av_sim_event_token(struct evbuffer *out, const av_sim_req_t *r, const av_sim_knobs_t *k, int64_t i);
void av_sim_event_finish(struct evbuffer *out, const av_sim_req_t *r, const av_sim_knobs_t *k);
void av_sim_event_usage(struct evbuffer *out, const av_sim_req_t *r);
void av_sim_event_done(struct evbuffer *out, const av_sim_req_t *r);
void av_sim_error_body(struct evbuffer *out, int status, const char *message);

#endif
