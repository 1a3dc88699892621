/* jsonw.h: writing JSON strings into evbuffers: one escaping routine for
 * the KPI log, error bodies and aviary-sim. */
#ifndef AV_JSONW_H
#define AV_JSONW_H

#include <stddef.h>

struct evbuffer;

/* Writes s (len bytes) as a quoted JSON string; NULL writes null. Control
 * characters, quotes and backslashes are escaped; other bytes pass as they are. */
void av_json_str(struct evbuffer *out, const char *s, size_t len);

#endif
