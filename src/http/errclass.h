/* errclass.h: the exchange's error classes: what went wrong with a
 * request, in its KPI line ("error") and its metrics' outcome. Compared by
 * pointer. Below the exchange, so that the layers which count and log
 * outcomes need not include it. */
#ifndef AV_ERRCLASS_H
#define AV_ERRCLASS_H

/* Error classes passed to av_req_backend_error(), compared by pointer. */
extern const char AV_ERR_CONNECT[];        /* could not connect: 502 */
extern const char AV_ERR_TLS[];            /* TLS handshake or certificate check failed: 502 */
extern const char AV_ERR_CONNECT_TIMEOUT[];/* connect timed out: 504 */
extern const char AV_ERR_FIRST_BYTE_TIMEOUT[]; /* no answer in time: 504 */
extern const char AV_ERR_READ_TIMEOUT[];   /* stalled mid-response: 504 or abort */
extern const char AV_ERR_BACKEND_CLOSED[]; /* closed before the end: 502 or abort */
extern const char AV_ERR_BACKEND_PROTOCOL[]; /* not HTTP: 502 */
extern const char AV_ERR_BUSY[];           /* pool full and queue wait expired: 503 */
extern const char AV_ERR_CLIENT_ABORT[];   /* the client went away */
extern const char AV_ERR_INVALID_JSON[];   /* a JSON-looking body that is not JSON: 400 */

#endif
