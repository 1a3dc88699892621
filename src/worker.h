/* worker.h: one thread, one event_base, its own listeners, backend pools and
 * client connections. Modules take the worker as their context. */
#ifndef AV_WORKER_H
#define AV_WORKER_H

#include <pthread.h>
#include <stdint.h>
#include <sys/queue.h>

#include "config.h"
#include "req_t.h"

struct event_base;
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

/* Creates a worker that will accept on fds (one per listener; the worker closes them). */
av_worker_t *av_worker_new(int id, int nworkers, av_config_t *cfg, av_kpilog_t *kpilog, const int *fds,
                           size_t nfds);
/* Returns 0 or AV_EIO. */
int av_worker_start(av_worker_t *w);
/* Hands a new generation to the worker (takes a reference); thread-safe. */
void av_worker_set_config(av_worker_t *w, av_config_t *cfg);
/* Stop accepting, finish in-flight requests up to the drain timeout, then exit the loop. */
void av_worker_stop(av_worker_t *w);
/* Ends the loop now, without waiting for requests in flight; thread-safe. */
void av_worker_abort(av_worker_t *w);
/* Whether the worker's loop has ended. */
int av_worker_done(av_worker_t *w);
void av_worker_join_free(av_worker_t *w);

/* Called by the client side when a connection closes. Ends the loop when draining and idle. */
void av_worker_conn_closed(av_worker_t *w);
uint64_t av_worker_random(av_worker_t *w);
/* Queues a request's KPI line; lines go to the writer thread in batches
 * (at 64 KiB or every 100 ms), so no request waits on the writer's lock. */
struct av_kpi_rec_s;
void av_worker_kpi_line(av_worker_t *w, const struct av_kpi_rec_s *r);

/* A policy's counter in this worker: adds by, returns the sum. Counters
 * outlive config generations; past AV_PCOUNT_MAX names new ones count in
 * one overflow slot. The admin thread reads them (relaxed atomics). */
#define AV_PCOUNT_MAX 256
typedef struct av_pcount_s {
    char policy[65], name[65];
    uint64_t v;
} av_pcount_t;
uint64_t av_worker_policy_count(av_worker_t *w, const char *policy, const char *name, int64_t by);
/* Queues one preformatted line (newline included). */
void av_worker_kpi_raw(av_worker_t *w, const char *line, size_t len);

#endif
