/* kpilog.h: the KPI log: one JSON line per request, handed to a writer
 * thread so no event loop waits on the disk, and flushed whole on close. */
#ifndef AV_KPILOG_H
#define AV_KPILOG_H

#include <stddef.h>
#include <stdint.h>

struct evbuffer;
typedef struct av_kpilog_s av_kpilog_t;

/* What one policy did to a request: an audit record. */
typedef struct av_verdict_s {
    const char *policy;
    const char *action;       /* "deny", "rewrite", "flag", "stop", "error" */
    char rule[64];
} av_verdict_t;

/* One request's line. Strings may be NULL (written as null). Times in
 * microseconds; ttft_us < 0 when no body byte arrived. */
typedef struct av_kpi_rec_s {
    uint64_t time_us;            /* wall clock at the request's start */
    const char *request_id, *route, *variant, *backend, *model;
    const char *client_model;    /* the model the client asked for */
    const char *assign;          /* how the variant was chosen: override, sticky, weight */
    const char *prompt_hash;     /* the system prompt put in, or NULL */
    int shadow;                  /* a shadow copy, answered to nobody */
    uint64_t generation;
    const char *method, *path;
    size_t path_len;
    int status;
    int stream;
    int64_t latency_us, first_byte_us;
    int64_t ttft_us;             /* to the first content token; < 0: none */
    /* usage: < 0 writes null */
    int64_t input_tokens, output_tokens, cached_tokens, cache_write_tokens, reasoning_tokens;
    int usage_estimated;
    int64_t cost_nano;           /* nanodollars */
    int64_t inter_token_p50_us;
    int64_t output_tps_milli;    /* output tokens per second x 1000 */
    const char *finish_reason;
    int tool_calls;
    uint64_t bytes_in, bytes_out;
    const char *error;
    const struct av_verdict_s *verdicts; /* what policies did: deny, rewrite, flag, stop, error */
    size_t nverdicts;
    int policy_errors;
} av_kpi_rec_t;

void av_kpi_format(struct evbuffer *out, const av_kpi_rec_t *r);

/* Opens path for appending ("-" is standard output) and starts the writer.
 * Returns NULL with the reason in err. */
av_kpilog_t *av_kpilog_open(const char *path, char *err, size_t errlen);
/* Thread-safe; takes the bytes of nlines whole lines, newlines included. */
void av_kpilog_append(av_kpilog_t *l, struct evbuffer *lines, size_t nlines);
/* Asks the writer to reopen the file (after rotation) before its next batch. Returns 0. */
int av_kpilog_reopen(av_kpilog_t *l);
/* Writes everything appended so far, stops the writer and closes. */
void av_kpilog_close(av_kpilog_t *l);
uint64_t av_kpilog_lines(av_kpilog_t *l);

/* The audit log (log.audit) shares the writer: one JSON line per decision.
 * av_audit_begin writes {"time":"...","type":TYPE and the caller adds
 * members and closes the line with av_audit_end. */
void av_audit_begin(struct evbuffer *out, const char *type);
void av_audit_str(struct evbuffer *out, const char *key, const char *value);
void av_audit_end(struct evbuffer *out);

/* A worker's batch of lines: queued by its requests, handed to the writer
 * at 64 KiB or when the worker's timer flushes it (every AV_KPI_BATCH_MS),
 * so no request waits on the writer's lock. */
#define AV_KPI_BATCH_MS 100
typedef struct av_worker_s av_worker_t;
void av_kpi_queue(av_worker_t *w, const av_kpi_rec_t *r);
/* One preformatted line (newline included). */
void av_kpi_queue_raw(av_worker_t *w, const char *line, size_t len);
void av_kpi_flush_batch(av_worker_t *w);

#endif
