/* usage.h: what a model's answer cost and how it flowed, read from the
 * response as it passes: token usage in each dialect (OpenAI chat,
 * completions, embeddings, Responses; Anthropic messages), streamed or not;
 * the time of the first content token and the gaps between tokens; the
 * finish reason, tool calls, and the answer's text as a length and hash.
 * Server-sent events are reassembled across reads. Optionally it holds back
 * the usage chunk the gateway asked for on the client's behalf. */
#ifndef AV_USAGE_H
#define AV_USAGE_H

#include <stddef.h>
#include <stdint.h>

#include "jscan.h"

#define AV_USAGE_MAX_EVENT (1u << 20)  /* an event or JSON body longer than this is not read */
#define AV_USAGE_GAP_BUCKETS 96        /* inter-token gaps: hist.h buckets */

/* What the walk of an OpenAI object has seen so far (usage.c's own). */
typedef struct {
    size_t content, text, finish; /* value offsets: delta/message content, choice text, finish reason */
    size_t content_key, msg_open; /* offsets of content's key (its quote) and of its delta or message's brace */
    int contents, texts, finishes, tool_ids;
    unsigned has;
} av_usage_seen_t;
typedef struct {
    av_jwalk_mark_t at;
    av_usage_seen_t seen;
    int valid;
} av_usage_mark_t;

typedef struct av_usage_s {
    int dialect;           /* AV_DIALECT_* (config.h) */
    int stream;            /* text/event-stream */
    int strip;             /* drop the usage-only chunk from what the client gets */
    /* token counts; -1 until the backend reports them */
    int64_t input, output, cached, cache_write, reasoning;
    int reported;          /* some usage came from the backend */
    int untrusted;         /* ... and a count in it could not be right: the tokens are estimated */
    char untrusted_key[32]; /* the first such count's name, for the log */
    int output_final;      /* an Anthropic stream's message_delta came with its output count */
    char finish[32];
    int tool_calls;
    /* timing of content tokens */
    uint64_t body_us;      /* the body's first byte */
    uint64_t first_token_us, last_token_us;
    uint64_t token_events;
    uint32_t gaps[AV_USAGE_GAP_BUCKETS];
    uint64_t ngaps;        /* the gaps counted in gaps[] */
    /* the answer's text */
    size_t chars;
    uint64_t hash;
    int incomplete;        /* an event or body too long to read: counts and text may be short */
    int want_text;         /* decode the text to hash it (a shadow pair compares); else chars is the escaped length */
    int full_reading;      /* no shortcuts for OpenAI objects (tests compare the two readings) */
    /* reading */
    char *buf;             /* the line being read (stream) or the body (JSON) */
    size_t len, cap;
    int skip_line;         /* the current line is too long: ignored to its end */
    char *data;            /* the event's data lines, joined */
    size_t data_len, data_cap;
    const char *pend;      /* the event's only data line, still in the caller's buffer */
    size_t pend_len;
    char *held;            /* strip: the raw bytes of an event begun in an earlier read */
    size_t held_len, held_cap;
    /* the last OpenAI token chunk around its text, as an event: "data: ",
     * the chunk's bytes up to and with the text's opening quote (tmpl_pre
     * of them), those from its closing quote on (tmpl_suf), a blank line. An
     * event with the same bytes around a well-formed string is read without
     * a walk: in a stream they differ only in the text. */
    uint16_t tmpl_pre, tmpl_suf;
    char tmpl[336];
    /* where in the template the walk of a chunk unlike it can begin (before
     * the choices; inside the first choice's delta), with what the walk had
     * seen there: the finish and usage chunks share the template's first
     * bytes. usage.c's own. */
    av_usage_mark_t marks[2];
} av_usage_t;

/* Where strip sends what the client should get: in order, in as few calls as
 * the events allow (one per read, unless the usage chunk is in it). */
typedef void (*av_usage_emit_cb)(void *arg, const char *data, size_t len);

void av_usage_init(av_usage_t *u, int dialect, int stream, int strip);
void av_usage_free(av_usage_t *u);
/* Reads a piece of the response body that arrived at now_us. With strip,
 * what the client should get (everything but the usage chunk, byte for
 * byte) goes to emit; without, emit is not called. */
void av_usage_feed(av_usage_t *u, const char *data, size_t len, uint64_t now_us, av_usage_emit_cb emit, void *arg);
/* The body is complete (or cut): reads a last event without its blank line
 * or the JSON body; with strip and emit, hands over what it held. */
void av_usage_end(av_usage_t *u, uint64_t now_us, av_usage_emit_cb emit, void *arg);
/* What a request used, as logged: input counts every input token (cached
 * and cache writes included, whatever the dialect's own split); without a
 * report from the backend, or with a count in it that cannot be right
 * (negative, fractional, past AV_TOKENS_MAX), input is estimated from the
 * request body's bytes and output from the answer's text, at four bytes a
 * token. */
#define AV_TOKENS_MAX ((int64_t)1 << 53)
typedef struct av_tokens_s {
    int64_t input, output, cached, cache_write, reasoning;
    int estimated;
} av_tokens_t;
void av_usage_tokens(const av_usage_t *u, size_t request_bytes, av_tokens_t *t);
/* The cost in picodollars at prices given in picodollars per token: the
 * uncached input, the cached input, the cache writes, output and reasoning
 * each at its own price; INT64_MAX if it would not fit. */
typedef struct av_price_s av_price_t;
int64_t av_usage_cost_pico(const av_tokens_t *t, const av_price_t *p);
/* The same in nanodollars, rounded. */
static inline int64_t av_usage_cost_nano(const av_tokens_t *t, const av_price_t *p)
{
    int64_t pico = av_usage_cost_pico(t, p);
    return pico / 1000 + (pico % 1000 >= 500);
}

/* The median inter-token gap in microseconds (the middle of its bucket,
 * within about 10 %), or -1 with fewer than two content events. */
int64_t av_usage_gap_p50_us(const av_usage_t *u);

#endif
