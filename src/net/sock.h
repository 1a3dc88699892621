/* sock.h: a non-blocking TCP socket with an input and an output evbuffer, in
 * the shape of a libevent bufferevent but cheaper where it counts: one readv
 * of up to 64 KiB per readiness event (bufferevents ask FIONREAD first and read
 * at most 4 KiB), output written directly with the write event armed only when
 * the kernel did not take it all, and read and write watermarks for
 * backpressure. Callbacks are never run from inside the call that caused
 * them; deferred ones go through the event loop. */
#ifndef AV_SOCK_H
#define AV_SOCK_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct event_base;
struct evbuffer;
typedef struct av_sock_s av_sock_t;

/* what of an event callback */
#define AV_SOCK_CONNECTED 0x01
#define AV_SOCK_EOF       0x02 /* the peer closed its side; input may hold a last piece */
#define AV_SOCK_ERROR     0x04 /* errno-style code in av_sock_error() */
#define AV_SOCK_TIMEOUT   0x08
#define AV_SOCK_READING   0x10 /* with TIMEOUT: no input in time */
#define AV_SOCK_WRITING   0x20 /* with TIMEOUT: output not taken in time, or the connect */

/* on_read: new input (or a requested re-run); on_write: output fell to the
 * low watermark (0: empty); on_event: one of the above. */
typedef void (*av_sock_cb)(av_sock_t *s, void *arg);
typedef void (*av_sock_event_cb)(av_sock_t *s, int what, void *arg);

/* Wraps a connected socket (fd may be -1 for av_sock_connect). Owns fd. */
av_sock_t *av_sock_new(struct event_base *base, int fd);
/* Closes the socket; no callback runs after this. */
void av_sock_free(av_sock_t *s);
void av_sock_setcb(av_sock_t *s, av_sock_cb on_read, av_sock_cb on_write, av_sock_event_cb on_event,
                   void *arg);

/* Starts a non-blocking connect; CONNECTED or ERROR (or TIMEOUT|WRITING, under
 * the write timeout) follows as an event. Returns 0, or AV_EIO when no socket
 * could be made. */
int av_sock_connect(av_sock_t *s, const struct sockaddr *sa, socklen_t len);

struct evbuffer *av_sock_input(av_sock_t *s);
struct evbuffer *av_sock_output(av_sock_t *s);
int av_sock_fd(const av_sock_t *s);
int av_sock_error(const av_sock_t *s);
/* Once the peer's side has ended: AV_SOCK_EOF (an orderly close) or
 * AV_SOCK_ERROR (a reset, a read error); 0 before. Known already inside the
 * read callback that hands on the last bytes. */
int av_sock_read_closed(const av_sock_t *s);
/* The last error as text: the TLS reason, or strerror. */
const char *av_sock_error_str(const av_sock_t *s);

typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_st SSL;
/* Makes an accepted socket TLS: the handshake runs on the socket's events
 * (under the read timeout) and CONNECTED follows when it is done. Returns 0,
 * or AV_EIO. */
int av_sock_tls_server(av_sock_t *s, SSL_CTX *ctx);
/* Makes a connecting socket (after av_sock_connect) TLS: the handshake runs
 * once the TCP connect is done, and CONNECTED follows it. host is sent as
 * SNI (unless it is an IP address) and, when ctx verifies peers, must match
 * the certificate. Returns 0, or AV_EIO. */
int av_sock_tls_client(av_sock_t *s, SSL_CTX *ctx, const char *host);
/* The TLS session, or NULL for cleartext. */
SSL *av_sock_ssl(const av_sock_t *s);

/* Reading on or off. Off also stops the read timeout. */
void av_sock_read(av_sock_t *s, int on);
/* Reading pauses while the input holds high bytes or more (0: no limit) and
 * resumes once on_read has consumed it below. */
void av_sock_set_read_high(av_sock_t *s, size_t high);
/* on_write runs when queued output falls to low bytes or less. */
void av_sock_set_write_low(av_sock_t *s, size_t low);
/* Milliseconds without input while reading / with output stuck or connect
 * pending; 0 turns one off. Restarts the clocks. */
void av_sock_set_timeouts(av_sock_t *s, int64_t read_ms, int64_t write_ms);

/* Writes queued output now; what the kernel leaves is written when the
 * socket is writable, and on_write follows at the low watermark. */
void av_sock_flush(av_sock_t *s);
/* Bytes queued and not yet written. */
size_t av_sock_pending(const av_sock_t *s);
/* Runs on_read (when reading) or on_write from the event loop soon. */
void av_sock_trigger_read(av_sock_t *s);
void av_sock_trigger_write(av_sock_t *s);

#endif
