/* upstream.h: the backend side: per-worker keep-alive pools per backend
 * address, with a maximum, a bounded wait queue, timeouts and one retry for a
 * request that never reached the backend. HTTP/1.1 here; HTTP/2 backends are
 * handed to upstream_h2.c. */
#ifndef AV_UPSTREAM_H
#define AV_UPSTREAM_H

#include "req_t.h"

/* Sends req->backend_out to req->variant's backend; the outcome arrives
 * through av_req_backend_head/body/end/error. */
void av_upstream_send(av_req_t *req);
/* Detaches req from its connection (which is closed: it is mid-exchange) or
 * from the wait queue. */
void av_upstream_cancel(av_req_t *req);
/* Resumes reading a backend paused because the client was slow. */
void av_upstream_resume(av_req_t *req);
/* Closes idle connections and frees the worker's pools (at worker exit). */
void av_upstream_free_all(av_worker_t *w);

/* Above this many bytes queued to the client, the backend is not read. */
#define AV_CLIENT_HIGH_WATER (256u * 1024u)

#endif
