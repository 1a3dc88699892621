/* headers.h: header lists and the rewriting between client and backend:
 * hop-by-hop removal, X-Forwarded-*, request id, the backend's API key. */
#ifndef AV_HEADERS_H
#define AV_HEADERS_H

#include <nghttp2/nghttp2.h>

#include "config.h"
#include "req_t.h"

void av_headers_add(av_arena_t *a, av_headers_t *h, const char *name, size_t nlen, const char *value,
                    size_t vlen);
/* Appends e as it is: its strings must already outlive h (live in the same arena). */
void av_headers_push(av_arena_t *a, av_headers_t *h, const av_header_t *e);
/* First header of that name (case-insensitive), or NULL. */
const av_header_t *av_headers_get(const av_headers_t *h, const char *name);

/* Hop-by-hop: the fixed set (RFC 9110 7.6.1) plus any name listed in a Connection header of h. */
int av_header_is_hop(const av_headers_t *h, const char *name, size_t len);

/* A field name is a token (RFC 9110 5.1): 1 or more of the tchar set, so no
 * space, colon or control byte; a value has no control byte but tab
 * (RFC 9110 5.5). */
int av_header_name_valid(const char *name, size_t len);
int av_header_value_valid(const char *value, size_t len);

/* A request id the client may set: 1 to 128 of [A-Za-z0-9._:-]. */
int av_request_id_valid(const char *s, size_t len);

/* Writes the request line and headers sent to backend b for req, whose body
 * (already rewritten) is body_len bytes long. */
void av_headers_backend_request(struct evbuffer *out, const av_req_t *req, const av_backend_t *b,
                                size_t body_len);

/* The same request as HTTP/2 fields for backend b: pseudo-headers first,
 * names in lower case, everything allocated in the request's arena (nghttp2
 * copies them). Returns the number of fields in *out. */
size_t av_headers_backend_nv(const av_req_t *req, const av_backend_t *b, size_t body_len, nghttp2_nv **out);

/* Whether a backend response header goes on to the client. */
int av_header_forward_response(const av_headers_t *resp, const av_header_t *hdr);

#endif
