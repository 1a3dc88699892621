/* jsonw.h: writing JSON. The av_jw_* calls, like av_put (av.h), write into
 * memory the caller has sized with their *_MAX bounds and return the end;
 * av_json_str wraps them for evbuffers. One escaping routine for the KPI log, error bodies and
 * aviary-sim. */
#ifndef AV_JSONW_H
#define AV_JSONW_H

#include <stddef.h>
#include <stdint.h>

struct evbuffer;

/* Room av_jw_str needs for len bytes: quotes plus six bytes per byte (\u00XX). */
#define AV_JW_STR_MAX(len) ((len) * 6 + 2)
/* Room for any av_jw_i64 or av_jw_ms write. */
#define AV_JW_NUM_MAX 24

/* Writes s (len bytes) as a quoted JSON string; NULL writes null. Control
 * characters, quotes and backslashes are escaped; a byte that is not part of
 * well-formed UTF-8 becomes \ufffd; other bytes pass as they are. */
char *av_jw_str(char *p, const char *s, size_t len);
char *av_jw_i64(char *p, int64_t v);
/* Microseconds as milliseconds with three decimals; negative writes null. */
char *av_jw_ms(char *p, int64_t us);
/* v / 10^decimals with that many decimals (1 to 9); negative writes null. */
char *av_jw_fixed(char *p, int64_t v, unsigned decimals);
/* A count; negative writes null. */
char *av_jw_count(char *p, int64_t v);

void av_json_str(struct evbuffer *out, const char *s, size_t len);

#endif
