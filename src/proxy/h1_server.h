/* h1_server.h: HTTP/1.1 to clients with http-parser:
 * keep-alive, pipelining in order, limits and timeouts. */
#ifndef AV_H1_SERVER_H
#define AV_H1_SERVER_H

#include <sys/socket.h>

#include "req_t.h"

/* Takes a client socket (and what was read from it so far) from front.c. */
typedef struct av_sock_s av_sock_t;
void av_h1_accept(av_worker_t *w, av_sock_t *sock, const char *client_ip, int tls);
/* Closes connections with no request in progress; the rest close after their response. */
void av_h1_drain(av_worker_t *w);
/* Closes every connection at once (worker exit). */
void av_h1_close_all(av_worker_t *w);

#endif
