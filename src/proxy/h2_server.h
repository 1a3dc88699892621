/* h2_server.h: HTTP/2 to clients (h2 over TLS, h2c with prior knowledge) on
 * nghttp2: each stream is one protocol-neutral request, as with HTTP/1.1. */
#ifndef AV_H2_SERVER_H
#define AV_H2_SERVER_H

#include "req_t.h"

typedef struct av_sock_s av_sock_t;

/* Takes a client socket from front.c (the preface may already be in its input). */
void av_h2_accept(av_worker_t *w, av_sock_t *sock, const char *client_ip, int tls);
/* Sends GOAWAY on every connection: open streams finish, no new ones start. */
void av_h2_drain(av_worker_t *w);
/* Closes every connection at once (worker exit). */
void av_h2_close_all(av_worker_t *w);

#endif
