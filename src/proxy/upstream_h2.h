/* upstream_h2.h: HTTP/2 to backends ("h2" over TLS, "h2c" in cleartext):
 * per worker and backend, a few multiplexed connections. */
#ifndef AV_UPSTREAM_H2_H
#define AV_UPSTREAM_H2_H

#include "req_t.h"

/* Sends req (its headers and req->body) on a stream to req->variant's
 * backend; the outcome arrives through av_req_backend_head/body/end/error. */
void av_up2_send(av_req_t *req);
/* Resets req's stream (the connection lives on) or takes it off the queue. */
void av_up2_cancel(av_req_t *req);
/* The client has taken what was queued: reopen the backend's window. */
void av_up2_resume(av_req_t *req);
/* Closes the worker's HTTP/2 backend connections and frees its pools. */
void av_up2_free_all(av_worker_t *w);

#endif
