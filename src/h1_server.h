/* h1_server.h: HTTP/1.1 to clients on bufferevents with http-parser:
 * keep-alive, pipelining in order, limits and timeouts. */
#ifndef AV_H1_SERVER_H
#define AV_H1_SERVER_H

#include <sys/socket.h>

#include "req_t.h"

/* Takes an accepted socket. */
void av_h1_accept(av_worker_t *w, int fd, const struct sockaddr *sa);
/* Closes connections with no request in progress; the rest close after their response. */
void av_h1_drain(av_worker_t *w);
/* Closes every connection at once (worker exit). */
void av_h1_close_all(av_worker_t *w);

#endif
