/* req_t.h: types of the protocol-neutral exchange, shared by the client
 * sides (HTTP/1.1 now, HTTP/2 later), the router and the backend side. */
#ifndef AV_REQ_T_H
#define AV_REQ_T_H

#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

typedef struct av_worker_s av_worker_t;
typedef struct av_req_s av_req_t;
typedef struct av_upconn_s av_upconn_t;
typedef struct av_up2_stream_s av_up2_stream_t;
typedef struct av_shadow_pair_s av_shadow_pair_t;
typedef struct av_config_s av_config_t;
typedef struct av_arena_s av_arena_t;
struct evbuffer;
struct event;

typedef struct {
    const char *name, *value;
    size_t name_len, value_len;
} av_header_t;

/* A header list; entries and strings live in the request's arena. */
typedef struct {
    av_header_t *v;
    size_t n, cap;
} av_headers_t;

/* What a client side does for an exchange. Calls come in order: head, body*,
 * then end or abort (or abort alone); the client side frees the request. */
typedef struct {
    /* content_length -1: unknown, the client side frames it (chunked) */
    void (*respond_head)(av_req_t *req, int status, const av_headers_t *hdrs, int64_t content_length);
    void (*respond_body)(av_req_t *req, const char *data, size_t len);
    void (*respond_end)(av_req_t *req);
    /* The body cannot complete (backend gone mid-stream): end it as well as the protocol allows. */
    void (*respond_abort)(av_req_t *req);
    /* Bytes queued to the client and not yet written: the backend side pauses above a mark. */
    size_t (*pending)(av_req_t *req);
    /* Sends what is queued now; called after each batch of backend input. */
    void (*flush)(av_req_t *req);
} av_client_ops_t;

struct av_req_s {
    av_arena_t *arena;
    av_worker_t *worker;
    av_config_t *cfg;                    /* the generation this request began under (a reference) */
    const struct av_route_s *route;
    const struct av_variant_s *variant;
    const char *assign;                  /* how the variant was chosen (split.h) */
    char id[144];                        /* up to 128 from the client, and room for ":shadow" */

    /* request, as the client sent it */
    int method;                          /* enum http_method */
    const char *method_str;
    const char *target;                  /* path and query */
    size_t target_len;
    const char *host;
    int http_major, http_minor;
    av_headers_t headers;
    struct evbuffer *body;
    char client_ip[48];                  /* the peer */
    char real_ip[48];                    /* the client behind trusted proxies (split.c fills it when needed) */
    char geo_country[3], geo_continent[3];
    uint32_t geo_asn;
    int tls;
    const char *client_model;            /* the model the client asked for, if any */
    const char *model;                   /* the model sent to the backend */
    const char *prompt_hash;             /* the variant's system prompt, when one was put in */
    struct av_preq_s *policy;            /* the policies' state for this request (policy.c), or NULL */
    int policy_variant;                  /* a variant a policy chose: its index + 1; 0: none */

    /* client side */
    const av_client_ops_t *client;
    void *client_ctx;

    /* backend side */
    av_upconn_t *up;                     /* HTTP/1.1 backend connection */
    av_up2_stream_t *up2;                /* or HTTP/2 backend stream */
    struct evbuffer *backend_out;        /* HTTP/1.1: the request as sent to the backend */
    int backend_status;                  /* the backend's own status, once its head came (0 before) */
    int attempts;
    int retried;                         /* sent again after a kept-alive connection closed unanswered */
    TAILQ_ENTRY(av_req_s) wait_link;     /* waiting for a pooled connection */
    struct event *wait_timer;
    int waiting;

    /* shadow traffic: a copy (shadow) or the original (pair set, shadow 0) */
    int shadow;
    av_shadow_pair_t *pair;
    struct av_usage_s *usage;            /* tokens, timing and text of the answer */
    int strip_usage;                     /* the usage chunk was asked for by us: the client does not get it */
    TAILQ_ENTRY(av_req_s) shadow_link;   /* the worker's copies in flight */

    /* response */
    int status;
    int stream;                          /* text/event-stream */
    int ran, head_sent, finished, logged, client_gone;
    int blocked;                         /* a policy refused the response: the backend's is dropped */
    struct evbuffer *chunk_in;           /* on_chunk policies: the event being read */
    struct event *stop_ev;               /* after r:stop(): ends the answer from the loop */
    const char *error;                   /* error class, NULL when none */
    uint64_t t_wall_us;
    uint64_t t_start_us, t_head_us, t_first_byte_us, t_end_us;
    uint64_t bytes_in, bytes_out;
};

#endif
