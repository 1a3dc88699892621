/* loop.h: a worker as the layers below the top see it: one thread, one
 * event_base, and what the thread owns (its config generation, backend
 * pools, client connections, KPI batch, policy counters), with the few
 * services they use from it. worker.h (the top) starts, reloads and stops
 * workers; nothing below it includes worker.h. */
#ifndef AV_LOOP_H
#define AV_LOOP_H

#include <pthread.h>
#include <stdint.h>
#include <sys/queue.h>

struct event_base;
typedef struct av_worker_s av_worker_t;   /* as req_t.h names them, which is above this layer */
typedef struct av_config_s av_config_t;
struct av_req_s;
struct evconnlistener;
typedef struct av_kpilog_s av_kpilog_t;
typedef struct av_upstream_s av_upstream_t;
typedef struct av_h2pool_s av_h2pool_t;
typedef struct av_h1conn_s av_h1conn_t;
typedef struct av_front_s av_front_t;
typedef struct av_h2conn_s av_h2conn_t;

typedef struct {
    uint64_t requests, active_requests, client_conns;
    uint64_t unpriced;                     /* requests with tokens but no price for their model */
} av_worker_stats_t;

struct av_worker_s {
    int id, nworkers;
    pthread_t thread;
    struct event_base *base;
    av_config_t *cfg;                      /* current generation, owned reference */
    av_kpilog_t *kpilog;
    av_kpilog_t *audit;                    /* log.audit, or NULL */
    int *listen_fds;
    struct evconnlistener **listeners;
    struct av_worker_listener_s *listener_args; /* (worker, index) per listener */
    size_t nlisteners;
    av_upstream_t *pools;                  /* HTTP/1.1 backend pools, by address */
    av_h2pool_t *h2pools;                  /* HTTP/2 backend pools */
    char *up_body;                         /* upstream.c: the body pieces of the parse under way */
    size_t up_body_cap;
    char *h1_chunk;                        /* h1_server.c: the chunk being staged, one connection's at a time */
    size_t h1_chunk_len, h1_chunk_cap;
    struct av_h1conn_s *h1_chunk_owner;    /* whose it is, or NULL */
    TAILQ_HEAD(, av_front_s) fronts;      /* connections still choosing a protocol */
    TAILQ_HEAD(, av_h1conn_s) h1conns;
    TAILQ_HEAD(, av_h2conn_s) h2conns;
    TAILQ_HEAD(, av_req_s) shadows;        /* shadow copies in flight (each counts as a client connection) */
    av_worker_stats_t stats;
    struct av_pcount_s *pcounts;           /* policies' counters (aviary.count), AV_PCOUNT_MAX */
    size_t npcounts;
    uint64_t rng[2];
    struct evbuffer *kpi_batch;            /* KPI lines not yet handed to the writer */
    size_t kpi_batch_lines;
    struct event *kpi_timer;
    int draining;
    int closing;                           /* loop ended: tear down, open nothing new */

    /* from the main thread */
    pthread_mutex_t lock;
    av_config_t *next_cfg;
    int stop_requested;
    int done;                              /* the loop has ended (atomic) */
    struct event *wake;
    struct event *drain_timer;
};

/* Called by the client side when a connection closes. Ends the loop when draining and idle. */
void av_worker_conn_closed(av_worker_t *w);
/* A fast random number (xorshift128+): unique, not secret. */
uint64_t av_worker_random(av_worker_t *w);

/* A policy's counter in this worker: adds by, returns the sum. Counters
 * outlive config generations; past AV_PCOUNT_MAX names new ones count in
 * one overflow slot. The admin thread reads them (relaxed atomics). */
#define AV_PCOUNT_MAX 256
typedef struct av_pcount_s {
    char policy[65], name[65];
    uint64_t v;
} av_pcount_t;
uint64_t av_worker_policy_count(av_worker_t *w, const char *policy, const char *name, int64_t by);
#endif
