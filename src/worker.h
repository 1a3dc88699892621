/* worker.h: the workers' lives: one thread each, with one event_base, its
 * own listeners, backend pools and client connections, started, given new
 * config generations, drained and stopped from the main thread. What the
 * layers below see of a worker is loop.h. */
#ifndef AV_WORKER_H
#define AV_WORKER_H

#include "config.h"
#include "loop.h"

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

#endif
