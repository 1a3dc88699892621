/* listener.h: listening sockets, bound before the workers start so errors
 * surface at start-up; SO_REUSEPORT gives each worker its own socket. */
#ifndef AV_LISTENER_H
#define AV_LISTENER_H

#include <stddef.h>
#include <sys/socket.h>

/* Returns a listening, non-blocking fd, or -1 with the reason in err. */
int av_listen_fd(const struct sockaddr *sa, socklen_t len, char *err, size_t errlen);
/* The port a socket is bound to, or -1. */
int av_fd_port(int fd);
/* Writes "host:port" for a socket's bound address. */
void av_fd_addr_str(int fd, char *out, size_t outlen);
/* Sets the port of an address in place. */
void av_sockaddr_set_port(struct sockaddr_storage *ss, int port);

#endif
