/* sock.c: the socket under both HTTP/1.1 sides. A read event reads until the
 * kernel has no more (or 64 KiB), a write goes straight to the kernel, and
 * the write event is armed only for what the kernel left. A socket freed
 * inside one of its own callbacks is closed at once and its memory released
 * when the callback returns. */
#include "sock.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <sys/uio.h>
#include <unistd.h>

#include "av.h"
#include "tls.h"

#define READ_CHUNK (16u * 1024u)
#define TLS_WRITE_CHUNK (16u * 1024u) /* one record */
#define READS_PER_EVENT 4

#define PEND_READ 0x1
#define PEND_WRITE 0x2
#define PEND_ERROR 0x4

struct av_sock_s {
    struct event_base *base;
    int fd, err;
    SSL *ssl;
    char tls_err[160];
    struct event *rev, *wev, *dev;
    struct evbuffer *in, *out;
    av_sock_cb on_read, on_write;
    av_sock_event_cb on_event;
    void *arg;
    size_t read_high, write_low;
    struct timeval rtv, wtv;
    int busy;     /* callbacks on the stack */
    unsigned pend; /* PEND_*: deferred callbacks */
    unsigned want_read : 1, read_armed : 1, write_armed : 1, connecting : 1, closed_in : 1, dead : 1,
        has_rtv : 1, has_wtv : 1, handshaking : 1, read_wants_write : 1, write_wants_read : 1, tls_client : 1,
        closed_err : 1; /* the read side ended in an error (a reset), not an orderly close */
};

static void read_ev(evutil_socket_t fd, short what, void *arg);
static void write_ev(evutil_socket_t fd, short what, void *arg);
static void defer_ev(evutil_socket_t fd, short what, void *arg);

static void attach_fd(av_sock_t *s, int fd)
{
    s->fd = fd;
    s->rev = event_new(s->base, fd, EV_READ | EV_PERSIST, read_ev, s);
    s->wev = event_new(s->base, fd, EV_WRITE | EV_PERSIST, write_ev, s);
    if (s->rev == NULL || s->wev == NULL)
        av_oom();
}

av_sock_t *av_sock_new(struct event_base *base, int fd)
{
    av_sock_t *s = av_calloc(1, sizeof(*s));
    s->base = base;
    s->fd = -1;
    s->in = evbuffer_new();
    s->out = evbuffer_new();
    s->dev = event_new(base, -1, 0, defer_ev, s);
    if (s->in == NULL || s->out == NULL || s->dev == NULL)
        av_oom();
    if (fd >= 0) {
        evutil_make_socket_nonblocking(fd);
        attach_fd(s, fd);
    }
    return s;
}

static void release(av_sock_t *s)
{
    if (s->ssl != NULL)
        SSL_free(s->ssl);
    evbuffer_free(s->in);
    evbuffer_free(s->out);
    free(s);
}

void av_sock_free(av_sock_t *s)
{
    if (s->dead)
        return;
    s->dead = 1;
    if (s->rev != NULL) {
        event_free(s->rev);
        event_free(s->wev);
    }
    event_free(s->dev);
    if (s->ssl != NULL && !s->handshaking && !s->connecting && s->fd >= 0) {
        SSL_set_quiet_shutdown(s->ssl, 0);
        SSL_shutdown(s->ssl); /* a close_notify if the kernel takes it now; never waits */
        ERR_clear_error();
    }
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
    if (s->busy == 0)
        release(s);
}

/* Brackets a callback; returns nonzero when the socket was freed inside it. */
static void enter(av_sock_t *s)
{
    s->busy++;
}

static int leave(av_sock_t *s)
{
    if (--s->busy > 0)
        return s->dead;
    if (s->dead) {
        release(s);
        return 1;
    }
    return 0;
}

void av_sock_setcb(av_sock_t *s, av_sock_cb on_read, av_sock_cb on_write, av_sock_event_cb on_event, void *arg)
{
    s->on_read = on_read;
    s->on_write = on_write;
    s->on_event = on_event;
    s->arg = arg;
}

struct evbuffer *av_sock_input(av_sock_t *s)
{
    return s->in;
}

struct evbuffer *av_sock_output(av_sock_t *s)
{
    return s->out;
}

int av_sock_fd(const av_sock_t *s)
{
    return s->fd;
}

int av_sock_error(const av_sock_t *s)
{
    return s->err;
}

int av_sock_read_closed(const av_sock_t *s)
{
    return !s->closed_in ? 0 : s->closed_err ? AV_SOCK_ERROR : AV_SOCK_EOF;
}

const char *av_sock_error_str(const av_sock_t *s)
{
    if (s->tls_err[0] != '\0')
        return s->tls_err;
    return s->err ? strerror(s->err) : "closed";
}

SSL *av_sock_ssl(const av_sock_t *s)
{
    return s->ssl;
}

size_t av_sock_pending(const av_sock_t *s)
{
    return evbuffer_get_length(s->out);
}

/* Arms or disarms the read event as wanted, the watermark and the state allow. */
static void update_read(av_sock_t *s)
{
    int should = (s->handshaking || s->write_wants_read ||
                  (s->want_read && (s->read_high == 0 || evbuffer_get_length(s->in) < s->read_high))) &&
                 !s->connecting && !s->closed_in && s->fd >= 0;
    if (should && !s->read_armed)
        event_add(s->rev, s->has_rtv ? &s->rtv : NULL);
    else if (!should && s->read_armed)
        event_del(s->rev);
    s->read_armed = (unsigned)should;
}

static void arm_write(av_sock_t *s)
{
    if (!s->write_armed && s->fd >= 0) {
        event_add(s->wev, s->has_wtv ? &s->wtv : NULL);
        s->write_armed = 1;
    }
}

static void disarm_write(av_sock_t *s)
{
    if (s->write_armed) {
        event_del(s->wev);
        s->write_armed = 0;
    }
}

void av_sock_read(av_sock_t *s, int on)
{
    s->want_read = (unsigned)(on != 0);
    update_read(s);
}

void av_sock_set_read_high(av_sock_t *s, size_t high)
{
    s->read_high = high;
    update_read(s);
}

void av_sock_set_write_low(av_sock_t *s, size_t low)
{
    s->write_low = low;
}

static void set_tv(struct timeval *tv, int64_t ms)
{
    tv->tv_sec = (time_t)(ms / 1000);
    tv->tv_usec = (suseconds_t)((ms % 1000) * 1000);
}

void av_sock_set_timeouts(av_sock_t *s, int64_t read_ms, int64_t write_ms)
{
    s->has_rtv = read_ms > 0;
    s->has_wtv = write_ms > 0;
    set_tv(&s->rtv, read_ms);
    set_tv(&s->wtv, write_ms);
    /* re-adding a pending event moves its timer and touches no epoll state */
    if (s->read_armed) {
        if (s->has_rtv)
            event_add(s->rev, &s->rtv);
        else
            event_remove_timer(s->rev);
    }
    if (s->write_armed) {
        if (s->has_wtv)
            event_add(s->wev, &s->wtv);
        else
            event_remove_timer(s->wev);
    }
}

static void defer(av_sock_t *s, unsigned what)
{
    if (s->dead)
        return;
    if (s->pend == 0)
        event_active(s->dev, EV_TIMEOUT, 0);
    s->pend |= what;
}

void av_sock_trigger_read(av_sock_t *s)
{
    defer(s, PEND_READ);
}

void av_sock_trigger_write(av_sock_t *s)
{
    defer(s, PEND_WRITE);
}

int av_sock_connect(av_sock_t *s, const struct sockaddr *sa, socklen_t len)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        s->err = errno;
        return AV_EIO;
    }
    attach_fd(s, fd);
    s->connecting = 1;
    if (connect(fd, sa, len) == 0 || errno == EINPROGRESS) {
        arm_write(s); /* writable when connected, or failed */
        return 0;
    }
    s->err = errno; /* refused at once: reported from the loop, like a late failure */
    defer(s, PEND_ERROR);
    return 0;
}

/* A TLS failure: the reason goes to tls_err, the event says ERROR. */
static void tls_fail(av_sock_t *s, int code)
{
    unsigned long e = ERR_peek_last_error();
    if (code == SSL_ERROR_SYSCALL && e == 0)
        snprintf(s->tls_err, sizeof(s->tls_err), "TLS: %s", errno ? strerror(errno) : "connection closed");
    else if (s->ssl != NULL && SSL_get_verify_result(s->ssl) != X509_V_OK)
        snprintf(s->tls_err, sizeof(s->tls_err), "TLS: certificate verify failed: %s",
                 X509_verify_cert_error_string(SSL_get_verify_result(s->ssl)));
    else
        snprintf(s->tls_err, sizeof(s->tls_err), "TLS: %s", av_tls_error((char[128]){0}, 128));
    ERR_clear_error();
    s->err = EPROTO;
}

int av_sock_tls_server(av_sock_t *s, SSL_CTX *ctx)
{
    s->ssl = SSL_new(ctx);
    if (s->ssl == NULL || SSL_set_fd(s->ssl, s->fd) != 1) {
        tls_fail(s, SSL_ERROR_SSL);
        return AV_EIO;
    }
    SSL_set_accept_state(s->ssl);
    s->handshaking = 1;
    update_read(s);
    return 0;
}

int av_sock_tls_client(av_sock_t *s, SSL_CTX *ctx, const char *host)
{
    s->ssl = SSL_new(ctx);
    if (s->ssl == NULL || s->fd < 0 || SSL_set_fd(s->ssl, s->fd) != 1) {
        tls_fail(s, SSL_ERROR_SSL);
        return AV_EIO;
    }
    SSL_set_connect_state(s->ssl);
    unsigned char addr[16];
    int is_ip = inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1;
    if (!is_ip && SSL_set_tlsext_host_name(s->ssl, host) != 1) {
        tls_fail(s, SSL_ERROR_SSL);
        return AV_EIO;
    }
    if (SSL_CTX_get_verify_mode(ctx) & SSL_VERIFY_PEER) {
        int ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(s->ssl), host) : SSL_set1_host(s->ssl, host);
        if (ok != 1) {
            tls_fail(s, SSL_ERROR_SSL);
            return AV_EIO;
        }
    }
    s->tls_client = 1; /* the handshake starts when the connect is done */
    return 0;
}

static void emit(av_sock_t *s, int what)
{
    enter(s);
    s->on_event(s, what, s->arg);
    leave(s);
}

/* TLS: a record's worth at a time, so small pieces go out as one record. */
static int write_tls(av_sock_t *s)
{
    size_t len;
    while ((len = evbuffer_get_length(s->out)) > 0) {
        size_t n = len < TLS_WRITE_CHUNK ? len : TLS_WRITE_CHUNK;
        unsigned char *p = evbuffer_pullup(s->out, (ev_ssize_t)n);
        ERR_clear_error();
        int r = SSL_write(s->ssl, p, (int)n);
        if (r > 0) {
            evbuffer_drain(s->out, (size_t)r);
            continue;
        }
        int e = SSL_get_error(s->ssl, r);
        if (e == SSL_ERROR_WANT_WRITE)
            return 0;
        if (e == SSL_ERROR_WANT_READ) { /* the peer must speak first: retried from the read event */
            s->write_wants_read = 1;
            update_read(s);
            return 0;
        }
        tls_fail(s, e);
        return -1;
    }
    return 0;
}

/* Writes what the kernel takes. Returns 0, or -1 on a hard error (in err). */
static int write_some(av_sock_t *s)
{
    if (s->ssl != NULL)
        return write_tls(s);
    while (evbuffer_get_length(s->out) > 0) {
        int n = evbuffer_write(s->out, s->fd);
        if (n > 0)
            continue;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        s->err = n < 0 ? errno : EPIPE;
        return -1;
    }
    return 0;
}

void av_sock_flush(av_sock_t *s)
{
    if (s->connecting || s->handshaking || s->write_armed || s->write_wants_read || s->fd < 0 ||
        evbuffer_get_length(s->out) == 0)
        return;
    if (write_some(s) != 0 || (evbuffer_get_length(s->out) > 0 && !s->write_wants_read))
        arm_write(s); /* the rest, or the error, comes from the write event */
}

static void handshake(av_sock_t *s)
{
    ERR_clear_error();
    int r = SSL_do_handshake(s->ssl);
    if (r == 1) {
        s->handshaking = 0;
        disarm_write(s);
        enter(s);
        s->on_event(s, AV_SOCK_CONNECTED, s->arg);
        if (leave(s))
            return;
        update_read(s);
        av_sock_flush(s);
        return;
    }
    int e = SSL_get_error(s->ssl, r);
    if (e == SSL_ERROR_WANT_READ) {
        disarm_write(s);
        update_read(s);
        return;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
        arm_write(s);
        return;
    }
    tls_fail(s, e);
    emit(s, AV_SOCK_ERROR);
}

/* Reads into the input; returns 0, AV_SOCK_EOF or AV_SOCK_ERROR. */
static int read_plain(av_sock_t *s, size_t *total)
{
    for (int i = 0; i < READS_PER_EVENT; i++) {
        struct evbuffer_iovec v[2];
        struct iovec iov[2];
        int nv = evbuffer_reserve_space(s->in, READ_CHUNK, v, 2);
        if (nv < 1)
            av_oom();
        for (int k = 0; k < nv; k++) {
            iov[k].iov_base = v[k].iov_base;
            iov[k].iov_len = v[k].iov_len;
        }
        size_t room = iov[0].iov_len + (nv > 1 ? iov[1].iov_len : 0);
        ssize_t n = readv(s->fd, iov, nv);
        if (n < 0 && errno == EINTR) {
            i--;
            continue;
        }
        if (n <= 0) {
            evbuffer_commit_space(s->in, v, 0);
            if (n == 0)
                return AV_SOCK_EOF;
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                s->err = errno;
                return AV_SOCK_ERROR;
            }
            return 0;
        }
        size_t left = (size_t)n;
        for (int k = 0; k < nv; k++) {
            if (v[k].iov_len > left)
                v[k].iov_len = left;
            left -= v[k].iov_len;
        }
        evbuffer_commit_space(s->in, v, nv);
        *total += (size_t)n;
        if ((size_t)n < room)
            return 0; /* the kernel has no more: saves the read that would say EAGAIN */
    }
    return 0;
}

static int read_tls(av_sock_t *s, size_t *total)
{
    while (*total < READ_CHUNK * READS_PER_EVENT) {
        struct evbuffer_iovec v;
        if (evbuffer_reserve_space(s->in, READ_CHUNK, &v, 1) != 1)
            av_oom();
        ERR_clear_error();
        int n = SSL_read(s->ssl, v.iov_base, (int)v.iov_len);
        if (n > 0) {
            v.iov_len = (size_t)n;
            evbuffer_commit_space(s->in, &v, 1);
            *total += (size_t)n;
            continue;
        }
        evbuffer_commit_space(s->in, &v, 0);
        int e = SSL_get_error(s->ssl, n);
        if (e == SSL_ERROR_WANT_READ)
            return 0;
        if (e == SSL_ERROR_WANT_WRITE) { /* the read needs a write first: retried from the write event */
            s->read_wants_write = 1;
            arm_write(s);
            return 0;
        }
        if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 && errno == 0))
            return AV_SOCK_EOF; /* close_notify, or a close without one */
        tls_fail(s, e);
        return AV_SOCK_ERROR;
    }
    if (SSL_pending(s->ssl) > 0)
        av_sock_trigger_read(s); /* decrypted bytes no readiness event will announce */
    return 0;
}

static void read_ev(evutil_socket_t fd, short what, void *arg)
{
    av_sock_t *s = arg;
    if (what & EV_TIMEOUT) {
        emit(s, AV_SOCK_TIMEOUT | AV_SOCK_READING);
        return;
    }
    if (s->handshaking) {
        handshake(s);
        return;
    }
    if (s->write_wants_read) {
        s->write_wants_read = 0;
        av_sock_flush(s);
    }
    size_t total = 0;
    int end = s->ssl != NULL ? read_tls(s, &total) : read_plain(s, &total);
    enter(s);
    if (end != 0) { /* known to on_read: the bytes it gets are the last */
        s->closed_in = 1;
        s->closed_err = end == AV_SOCK_ERROR;
    }
    if (total > 0 && s->on_read != NULL)
        s->on_read(s, s->arg);
    if (!s->dead && end != 0) {
        update_read(s);
        s->on_event(s, end, s->arg);
    }
    if (leave(s))
        return;
    update_read(s);
}

static void write_ev(evutil_socket_t fd, short what, void *arg)
{
    av_sock_t *s = arg;
    if (what & EV_TIMEOUT) {
        emit(s, AV_SOCK_TIMEOUT | AV_SOCK_WRITING);
        return;
    }
    if (s->handshaking) {
        handshake(s);
        return;
    }
    if (s->read_wants_write) {
        s->read_wants_write = 0;
        disarm_write(s);
        event_active(s->rev, EV_READ, 0);
        if (evbuffer_get_length(s->out) == 0)
            return;
    }
    if (s->connecting) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
            err = errno;
        if (err == EINPROGRESS)
            return;
        s->connecting = 0;
        disarm_write(s);
        if (err != 0) {
            s->err = err;
            emit(s, AV_SOCK_ERROR);
            return;
        }
        if (s->tls_client) { /* CONNECTED once the handshake is done too */
            s->handshaking = 1;
            handshake(s);
            return;
        }
        enter(s);
        s->on_event(s, AV_SOCK_CONNECTED, s->arg);
        if (leave(s))
            return;
        update_read(s);
        av_sock_flush(s);
        return;
    }
    if (write_some(s) != 0) {
        disarm_write(s);
        /* the peer may have said why it closed (an HTTP/2 GOAWAY, an error
         * response): what it sent is read and handed on before the error */
        if (s->want_read && !s->closed_in && s->on_read != NULL) {
            size_t total = 0;
            int err = s->err;
            if (s->ssl != NULL)
                read_tls(s, &total);
            else
                read_plain(s, &total);
            s->err = err;
            if (total > 0) {
                enter(s);
                s->on_read(s, s->arg);
                if (leave(s))
                    return;
            }
        }
        emit(s, AV_SOCK_ERROR);
        return;
    }
    size_t left = evbuffer_get_length(s->out);
    if (left == 0 || s->write_wants_read)
        disarm_write(s);
    if (left <= s->write_low && s->on_write != NULL) {
        enter(s);
        s->on_write(s, s->arg);
        leave(s);
    }
}

static void defer_ev(evutil_socket_t fd, short what, void *arg)
{
    av_sock_t *s = arg;
    unsigned pend = s->pend;
    s->pend = 0;
    enter(s);
    if (pend & PEND_ERROR) {
        s->connecting = 0;
        s->on_event(s, AV_SOCK_ERROR, s->arg);
    }
    if (!s->dead && (pend & PEND_READ) && s->want_read && s->on_read != NULL)
        s->on_read(s, s->arg);
    if (!s->dead && (pend & PEND_WRITE) && s->on_write != NULL)
        s->on_write(s, s->arg);
    if (leave(s))
        return;
    update_read(s);
}
