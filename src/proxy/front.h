/* front.h: a new client connection until it has a protocol: the TLS
 * handshake and its ALPN choice, or on cleartext the first bytes (the HTTP/2
 * connection preface, or anything else for HTTP/1.1). Then the socket goes to
 * h1_server or h2_server with what was read so far. */
#ifndef AV_FRONT_H
#define AV_FRONT_H

#include <sys/socket.h>

#include "req_t.h"

/* Takes an accepted socket on listener index li of the worker's config. */
void av_front_accept(av_worker_t *w, int fd, const struct sockaddr *sa, size_t li);
/* Closes every connection still in its first phase (drain and exit). */
void av_front_close_all(av_worker_t *w);

#endif
