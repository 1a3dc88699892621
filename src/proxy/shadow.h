/* shadow.h: shadow traffic: a share of a route's requests is copied to a
 * shadow variant. The copy is a request of its own, on its own connections,
 * answered to nobody: it never delays, fails or holds open the original. */
#ifndef AV_SHADOW_H
#define AV_SHADOW_H

#include "req_t.h"

struct av_body_s;

/* Starts a copy of req (routed and given its variant; its body as the
 * client sent it) when the route shadows and a place is free. */
void av_shadow_maybe(av_req_t *req);
/* From av_req_free: the original or the copy is over; the second to end
 * writes the comparison line. */
void av_shadow_done(av_req_t *req);
/* Ends the worker's copies still in flight (at worker exit). */
void av_shadow_close_all(av_worker_t *w);

#endif
