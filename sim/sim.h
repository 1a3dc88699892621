/* sim.h: aviary-sim's parts: the simulator (knobs, counters), one request as
 * the protocol-neutral answer logic sees it, and the HTTP/1.1 and HTTP/2
 * connection types that feed it. */
#ifndef AV_SIM_H
#define AV_SIM_H

#include <stdint.h>
#include <stdio.h>

#include "sim_gen.h"

struct event_base;
struct event;
struct evbuffer;
struct bufferevent;
typedef struct ssl_ctx_st SSL_CTX;

#define SIM_MAX_HEADERS 64
#define SIM_HBUF 16384
#define SIM_MAX_BODY (64u << 20)

typedef struct {
    uint64_t connections_total, connections_open, tls_connections_total;
    uint64_t requests_total, requests_in_flight, errors_injected;
    uint64_t streams_total, streams_cancelled, streams_dropped; /* SSE responses */
    uint64_t h2_connections_total, h2_streams_total, h2_streams_max_concurrent, h2_goaways_sent;
    uint64_t h2_pings_received;
} sim_stats_t;

typedef struct {
    struct event_base *base;
    av_sim_knobs_t knobs;
    sim_stats_t stats;
    uint64_t rng, next_id;
    const char *models;
    FILE *log;                 /* --log: each request as received, a JSON line */
    SSL_CTX *tls;              /* NULL: cleartext (HTTP/1.1, or h2c by its preface) */
    int h2;                    /* offer h2 (ALPN, or accept the h2c preface) */
    uint32_t h2_max_streams;   /* SETTINGS_MAX_CONCURRENT_STREAMS */
    uint64_t h2_goaway_after;  /* GOAWAY after this many streams on a connection (0: never) */
    /* --turn-bad-after-s: from then on, these knobs (a rehearsal of a regression) */
    uint64_t bad_at_us;        /* 0: never */
    double bad_error_rate;     /* < 0: unchanged */
    int64_t bad_ttft_ms;       /* < 0: unchanged */
    double jitter;             /* --jitter: the log spread of each delay (0: none) */
} sim_t;

typedef struct sim_req_s sim_req_t;

/* How a response goes out on one protocol. Calls come in order: head, data*,
 * then end or drop. end and drop may free the request (and its connection). */
typedef struct {
    void (*head)(sim_req_t *r, int status, const char *ctype, long long content_length); /* -1: streamed */
    void (*data)(sim_req_t *r, struct evbuffer *b); /* takes all of b; one call per stream event */
    void (*end)(sim_req_t *r);
    void (*drop)(sim_req_t *r); /* cut the response short on purpose */
} sim_proto_t;

typedef struct {
    uint16_t name_off, name_len, val_off, val_len;
} sim_hdr_t;

typedef enum { SIM_IDLE, SIM_HEAD_WAIT, SIM_STREAMING, SIM_DONE } sim_phase_t;

struct sim_req_s {
    sim_t *sim;
    const sim_proto_t *proto;
    void *conn;
    sim_phase_t phase;
    const char *method;
    char url[2048];
    size_t urllen;
    char hbuf[SIM_HBUF];       /* header names and values, each NUL-terminated */
    size_t hlen;
    sim_hdr_t hdrs[SIM_MAX_HEADERS];
    int nhdrs;
    struct evbuffer *body;
    av_sim_knobs_t knobs;
    av_sim_kind_t kind;        /* by the path: the dialect of the answer and of its errors (0: OpenAI's) */
    char rid[40];              /* the response's own request id header (OpenAI's x-request-id, Anthropic's request-id) */
    av_sim_req_t req;
    int64_t sent_tokens, sent_events;
    struct event *timer;
};

void sim_req_init(sim_req_t *r, sim_t *s, const sim_proto_t *proto, void *conn);
/* The response header naming the request, as the API does (NULL: none);
 * the protocol layers add it to every head. */
const char *sim_req_id_header(const sim_req_t *r);
/* Frees what init made (the request struct is the caller's). Counts a
 * response in progress as cancelled by the peer. */
void sim_req_cleanup(sim_req_t *r);
/* Forgets the previous request on a kept-alive connection. */
void sim_req_reset(sim_req_t *r);
/* Adds a header; returns 0, or -1 when the request's header space is full. */
int sim_req_add_header(sim_req_t *r, const char *name, size_t nlen, const char *value, size_t vlen);
/* The request has been read whole: answer it (may free it through proto->end). */
void sim_req_handle(sim_req_t *r);
/* Answers with an error now (a request the protocol layer found malformed). */
void sim_req_error(sim_req_t *r, int status, const char *msg);

/* Takes over an accepted connection (TLS or not), which starts with the
 * input already buffered in bev. */
void sim_h1_start(sim_t *s, struct bufferevent *bev);
void sim_h2_start(sim_t *s, struct bufferevent *bev);

#endif
