/* feedback.h: which variant served a recent request, so that a score the
 * application posts later (POST /v1/feedback) counts for that variant. A
 * process-wide direct-mapped table of the last requests (65536 places in 64
 * stripes, each under its own lock): a request id evicted by a newer one
 * that hashes to its place is "unknown", as is one from before a restart. */
#ifndef AV_FEEDBACK_H
#define AV_FEEDBACK_H

#include <stddef.h>

struct av_split_state_s;

void av_feedback_remember(const char *id, size_t len, struct av_split_state_s *split, size_t variant);
/* Returns 0 and the split state and variant that served id, or -1. */
int av_feedback_lookup(const char *id, size_t len, struct av_split_state_s **split, size_t *variant);

#endif
