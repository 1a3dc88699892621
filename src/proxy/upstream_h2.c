/* upstream_h2.c: HTTP/2 to backends (h2 over TLS, h2c). Per worker and
 * backend, a few multiplexed connections: a request takes a stream on the
 * oldest connection with room under the peer's MAX_CONCURRENT_STREAMS; a new
 * connection opens when all are full (up to max_connections), and a bounded
 * queue waits beyond that. Response bytes are consumed (the backend's window
 * reopened) only once the client side has taken them, so a slow client slows
 * its own stream and nothing else. Streams a GOAWAY or REFUSED_STREAM says
 * were never processed are sent again; connect failures back off. */
#include "upstream_h2.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include "arena.h"
#include "av.h"
#include "config.h"
#include "headers.h"
#include "log.h"
#include "req.h"
#include "sock.h"
#include "tls.h"
#include "upstream.h"
#include "loop.h"

#define UP2_STREAM_WINDOW (256u * 1024u) /* per stream: what a paused client can leave unread */
#define UP2_CONN_WINDOW (32u << 20)      /* per connection: room for every stream's window */
#define UP2_SOCK_HIGH (64u * 1024u)
#define UP2_MAX_HEADER_BYTES (64u * 1024u) /* a response head, counted decoded */
#define UP2_MAX_WAITERS 1024
#define UP2_MAX_ATTEMPTS 20               /* streams sent, counting those refused unprocessed */
#define UP2_BACKOFF_MIN_MS 100
#define UP2_BACKOFF_MAX_MS 10000

typedef enum { C_CONNECTING, C_READY, C_GOAWAY } cstate_t;
typedef struct up2_conn_s up2_conn_t;

struct av_h2pool_s {
    av_h2pool_t *next;
    av_worker_t *w;
    char *key;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    TAILQ_HEAD(, up2_conn_s) conns; /* oldest first: new streams fill the oldest */
    int nconns;
    TAILQ_HEAD(, av_req_s) waiters;
    size_t nwaiters;
    unsigned failures;        /* connects failed in a row */
    uint64_t retry_at_us;     /* no new connection before this */
    struct event *retry_timer;
};

struct up2_conn_s {
    av_h2pool_t *pool;
    av_sock_t *sock;
    nghttp2_session *ng;
    TAILQ_ENTRY(up2_conn_s) link;
    TAILQ_HEAD(, av_up2_stream_s) streams;
    int nstreams;
    cstate_t state;
    int tls, in_io, dead, got_settings, ping_out;
    int ended;                /* the session ended with streams open: they fail from the loop */
    struct event *timer;      /* while idle: PING, and the idle limit */
    int64_t ping_ms, idle_ms;
    uint64_t idle_since_us;
};

struct av_up2_stream_s {
    up2_conn_t *c;
    av_req_t *req;            /* NULL once the request is done with the stream */
    int32_t id;
    TAILQ_ENTRY(av_up2_stream_s) link;
    size_t body_off;          /* request body handed to nghttp2 so far */
    size_t unconsumed;        /* response bytes the client side has not taken */
    av_headers_t hdrs;
    size_t header_bytes;
    int status, head_done, dirty;
    struct event *timer;      /* first byte, then between reads */
};

static void conn_send(up2_conn_t *c);
static void conn_close(up2_conn_t *c);
static void send_req(av_req_t *req, int again);
static void pool_kick(av_h2pool_t *pool);

static struct timeval ms_tv(int64_t ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    return tv;
}

static int per_worker_max(const av_req_t *req)
{
    int64_t max = req->variant->backend->max_connections, n = req->worker->nworkers;
    int64_t m = (max + n - 1) / n;
    return m < 1 ? 1 : (int)m;
}

static av_h2pool_t *pool_get(av_worker_t *w, const av_backend_t *b, int shadow)
{
    const char *key = shadow ? b->shadow_pool_key : b->pool_key;
    for (av_h2pool_t *p = w->h2pools; p != NULL; p = p->next)
        if (strcmp(p->key, key) == 0)
            return p;
    av_h2pool_t *p = av_calloc(1, sizeof(*p));
    p->w = w;
    p->key = av_strdup(key);
    memcpy(&p->addr, &b->addr, b->addrlen);
    p->addrlen = b->addrlen;
    TAILQ_INIT(&p->conns);
    TAILQ_INIT(&p->waiters);
    p->next = w->h2pools;
    w->h2pools = p;
    return p;
}

/* ---- streams ---- */

static void detach(av_up2_stream_t *st)
{
    if (st->req != NULL)
        st->req->up2 = NULL;
    st->req = NULL;
    evtimer_del(st->timer);
}

/* Gives the connection window back for bytes nobody will take now. */
static void give_back(av_up2_stream_t *st)
{
    if (st->unconsumed > 0) {
        nghttp2_session_consume_connection(st->c->ng, st->unconsumed);
        st->unconsumed = 0;
    }
}

static void stream_free(av_up2_stream_t *st)
{
    up2_conn_t *c = st->c;
    give_back(st);
    TAILQ_REMOVE(&c->streams, st, link);
    c->nstreams--;
    event_free(st->timer);
    free(st);
    if (c->nstreams == 0 && !c->dead) {
        c->idle_since_us = av_now_us();
        struct timeval tv = ms_tv(c->ping_ms < c->idle_ms ? c->ping_ms : c->idle_ms);
        evtimer_add(c->timer, &tv);
    }
}

static void stream_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    av_up2_stream_t *st = arg;
    av_req_t *req = st->req;
    if (req == NULL)
        return;
    const char *err = st->head_done ? AV_ERR_READ_TIMEOUT : AV_ERR_FIRST_BYTE_TIMEOUT;
    detach(st);
    give_back(st);
    nghttp2_submit_rst_stream(st->c->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_CANCEL);
    conn_send(st->c); /* nghttp2 closes the stream as the reset goes: st is freed */
    av_req_backend_error(req, err);
}

static ssize_t body_read(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                         nghttp2_data_source *src, void *user)
{
    (void)ng;
    (void)id;
    (void)user;
    av_up2_stream_t *st = src->ptr;
    if (st->req == NULL)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* cancelled: the stream is reset */
    struct evbuffer *body = st->req->body;
    size_t total = evbuffer_get_length(body), n = total - st->body_off;
    if (n > len)
        n = len;
    if (n > 0) {
        struct evbuffer_ptr pos;
        evbuffer_ptr_set(body, &pos, st->body_off, EVBUFFER_PTR_SET);
        evbuffer_copyout_from(body, &pos, buf, n);
        st->body_off += n;
    }
    if (st->body_off == total)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

/* Opens a stream for req on c. The body stays in req->body (read from an
 * offset), so a refused stream can be sent again. */
static void stream_start(up2_conn_t *c, av_req_t *req)
{
    const av_backend_t *b = req->variant->backend;
    av_up2_stream_t *st = av_calloc(1, sizeof(*st));
    st->c = c;
    st->req = req;
    st->timer = evtimer_new(c->pool->w->base, stream_timer_cb, st);
    req->up2 = st;
    req->attempts++;
    size_t blen = evbuffer_get_length(req->body);
    nghttp2_nv *nv;
    size_t n = av_headers_backend_nv(req, b, blen, &nv);
    nghttp2_data_provider prd = {.source.ptr = st, .read_callback = body_read};
    int32_t id = nghttp2_submit_request(c->ng, NULL, nv, n, blen > 0 ? &prd : NULL, st);
    if (id < 0) {
        AV_WARN("request %s: backend %s: cannot open a stream: %s", req->id, c->pool->key, nghttp2_strerror(id));
        req->up2 = NULL;
        event_free(st->timer);
        free(st);
        if (id == NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE) { /* this connection has used up its ids */
            c->state = C_GOAWAY;
            if (req->attempts < UP2_MAX_ATTEMPTS) {
                av_up2_send(req);
                return;
            }
        }
        av_req_backend_error(req, AV_ERR_BACKEND_PROTOCOL);
        return;
    }
    st->id = id;
    TAILQ_INSERT_TAIL(&c->streams, st, link);
    c->nstreams++;
    evtimer_del(c->timer);
    c->ping_out = 0;
    struct timeval tv = ms_tv(b->first_byte_timeout_ms);
    evtimer_add(st->timer, &tv);
    conn_send(c);
}

/* The response is complete. */
static void stream_end(av_up2_stream_t *st)
{
    av_req_t *req = st->req;
    if (req == NULL)
        return;
    detach(st);
    av_req_backend_end(req); /* may free req */
}

/* ---- nghttp2 callbacks ---- */

static int on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
                     const uint8_t *value, size_t vlen, uint8_t flags, void *user)
{
    (void)flags;
    (void)user;
    if (f->hd.type != NGHTTP2_HEADERS)
        return 0;
    av_up2_stream_t *st = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    if (st == NULL || st->req == NULL || st->head_done)
        return 0; /* trailers say nothing the client side forwards */
    if (nlen == 7 && memcmp(name, ":status", 7) == 0) {
        int status = 0;
        for (size_t i = 0; i < vlen && i < 3; i++)
            status = value[i] >= '0' && value[i] <= '9' ? status * 10 + (value[i] - '0') : -1000;
        st->status = vlen == 3 && status >= 100 ? status : 0; /* 0: not a status, refused below */
        return 0;
    }
    if (nlen > 0 && name[0] == ':')
        return 0;
    st->header_bytes += nlen + vlen + 4;
    if (st->header_bytes > UP2_MAX_HEADER_BYTES) {
        AV_INFO("request %s: backend %s sent more than %u bytes of headers", st->req->id, st->c->pool->key,
                UP2_MAX_HEADER_BYTES);
        av_req_t *req = st->req;
        detach(st);
        av_req_backend_error(req, AV_ERR_BACKEND_PROTOCOL);
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* resets the stream */
    }
    av_headers_add(st->req->arena, &st->hdrs, (const char *)name, nlen, (const char *)value, vlen);
    return 0;
}

static void head_done(av_up2_stream_t *st)
{
    av_req_t *req = st->req;
    if (st->status >= 100 && st->status < 200) { /* informational: the real head follows */
        st->status = 0;
        st->hdrs = (av_headers_t){0};
        return;
    }
    st->head_done = 1;
    const av_backend_t *b = req->variant->backend;
    struct timeval tv = ms_tv(b->read_timeout_ms);
    evtimer_add(st->timer, &tv);
    int64_t clen = -1;
    const av_header_t *cl = av_headers_get(&st->hdrs, "content-length");
    if (cl != NULL)
        clen = strtoll(cl->value, NULL, 10);
    av_req_backend_head(req, st->status, &st->hdrs, clen);
    st->dirty = 1; /* the client gets the head with this read's flush, body or not */
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *user)
{
    up2_conn_t *c = user;
    switch (f->hd.type) {
    case NGHTTP2_SETTINGS:
        if (!(f->hd.flags & NGHTTP2_FLAG_ACK) && !c->got_settings) {
            c->got_settings = 1;
            pool_kick(c->pool); /* its room is known now */
            if (c->nstreams == 0) { /* opened for requests that went elsewhere: idle from now */
                c->idle_since_us = av_now_us();
                struct timeval tv = ms_tv(c->ping_ms < c->idle_ms ? c->ping_ms : c->idle_ms);
                evtimer_add(c->timer, &tv);
            }
        } else if (!(f->hd.flags & NGHTTP2_FLAG_ACK)) {
            pool_kick(c->pool); /* the peer may allow more streams now */
        }
        return 0;
    case NGHTTP2_PING:
        if (f->hd.flags & NGHTTP2_FLAG_ACK)
            c->ping_out = 0;
        return 0;
    case NGHTTP2_GOAWAY:
        /* no new streams here; nghttp2 refuses the ones past last_stream_id,
         * and on_stream_close sends them again elsewhere */
        AV_INFO("backend %s sent GOAWAY (%s, last stream %d): the connection drains", c->pool->key,
                nghttp2_http2_strerror(f->goaway.error_code), f->goaway.last_stream_id);
        c->state = C_GOAWAY;
        return 0;
    case NGHTTP2_HEADERS:
    case NGHTTP2_DATA: {
        av_up2_stream_t *st = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
        if (st == NULL || st->req == NULL)
            return 0;
        if (f->hd.type == NGHTTP2_HEADERS && !st->head_done) {
            if (st->status == 0) {
                AV_INFO("request %s: backend %s answered without a valid :status", st->req->id, c->pool->key);
                nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_PROTOCOL_ERROR);
                av_req_t *req = st->req;
                detach(st);
                av_req_backend_error(req, AV_ERR_BACKEND_PROTOCOL);
                return 0;
            }
            head_done(st);
            if (st->req == NULL)
                return 0;
        }
        if ((f->hd.flags & NGHTTP2_FLAG_END_STREAM) && st->head_done)
            stream_end(st);
        return 0;
    }
    default:
        return 0;
    }
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data, size_t len, void *user)
{
    (void)flags;
    (void)user;
    av_up2_stream_t *st = nghttp2_session_get_stream_user_data(ng, id);
    if (st == NULL || st->req == NULL || !st->head_done) {
        nghttp2_session_consume(ng, id, len); /* nobody will take it */
        return 0;
    }
    av_req_t *req = st->req;
    st->dirty = 1;
    av_req_backend_body(req, (const char *)data, len);
    /* the window reopens only as the client takes the bytes */
    if (req->client->pending(req) > AV_CLIENT_HIGH_WATER)
        st->unconsumed += len;
    else
        nghttp2_session_consume(ng, id, len);
    struct timeval tv = ms_tv(req->variant->backend->read_timeout_ms);
    evtimer_add(st->timer, &tv);
    return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t error_code, void *user)
{
    up2_conn_t *c = user;
    av_up2_stream_t *st = nghttp2_session_get_stream_user_data(ng, id);
    if (st == NULL)
        return 0;
    nghttp2_session_set_stream_user_data(ng, id, NULL);
    av_req_t *req = st->req;
    int head = st->head_done;
    detach(st);
    stream_free(st);
    if (req != NULL) {
        if (error_code == NGHTTP2_REFUSED_STREAM && !head && req->attempts < UP2_MAX_ATTEMPTS) {
            /* the backend says it never processed it: safe to send again, ahead of newer requests */
            AV_DEBUG("request %s: backend %s refused stream %d; sending it again", req->id, c->pool->key, id);
            send_req(req, 1);
        } else {
            AV_INFO("request %s: backend %s reset stream %d: %s", req->id, c->pool->key, id,
                    nghttp2_http2_strerror(error_code));
            av_req_backend_error(req, AV_ERR_BACKEND_CLOSED);
        }
    }
    if (c->state != C_GOAWAY)
        pool_kick(c->pool);
    return 0;
}

/* ---- connections ---- */

static void conn_send(up2_conn_t *c)
{
    if (c->in_io || c->dead)
        return; /* the I/O loop sends once nghttp2's callbacks return */
    for (;;) {
        size_t made = 0;
        while (av_sock_pending(c->sock) < UP2_SOCK_HIGH && nghttp2_session_want_write(c->ng)) {
            const uint8_t *data;
            ssize_t n = nghttp2_session_mem_send(c->ng, &data);
            if (n < 0) {
                AV_WARN("backend %s: HTTP/2 send failed: %s", c->pool->key, nghttp2_strerror((int)n));
                conn_close(c);
                return;
            }
            if (n == 0)
                break;
            evbuffer_add(av_sock_output(c->sock), data, (size_t)n);
            made += (size_t)n;
        }
        av_sock_flush(c->sock);
        /* the kernel took all of it: no write event will ask for the rest */
        if (made == 0 || av_sock_pending(c->sock) > 0 || !nghttp2_session_want_write(c->ng))
            break;
    }
    int over = !nghttp2_session_want_read(c->ng) && !nghttp2_session_want_write(c->ng);
    if (over && c->nstreams == 0) {
        conn_close(c);
    } else if (over && !c->ended) {
        /* nghttp2 ended the session (the backend sent what is not HTTP/2, or
         * broke it) and will say nothing more of its streams; they fail from
         * the loop, not under whoever called here */
        c->ended = 1;
        av_sock_trigger_write(c->sock);
    } else if (c->state == C_GOAWAY && c->nstreams == 0 && !nghttp2_session_want_write(c->ng))
        conn_close(c); /* drained */
}

/* Fails or re-sends every stream still waiting on c, then closes it.
 * never_sent: the requests cannot have reached the backend (no connection). */
static void conn_fail(up2_conn_t *c, const char *err, int never_sent)
{
    av_up2_stream_t *st;
    c->dead = 1;
    TAILQ_FOREACH(st, &c->streams, link)
        if (st->req != NULL)
            st->req->up2 = NULL;
    while ((st = TAILQ_FIRST(&c->streams)) != NULL) {
        av_req_t *req = st->req;
        st->req = NULL;
        nghttp2_session_set_stream_user_data(c->ng, st->id, NULL);
        stream_free(st);
        if (req == NULL)
            continue;
        if (never_sent && err != AV_ERR_TLS && req->attempts < 2)
            av_up2_send(req); /* one more try, as on HTTP/1.1 */
        else
            av_req_backend_error(req, err);
    }
    conn_close(c);
}

static void conn_free(up2_conn_t *c)
{
    av_h2pool_t *pool = c->pool;
    av_up2_stream_t *st;
    while ((st = TAILQ_FIRST(&c->streams)) != NULL) {
        av_req_t *req = st->req;
        detach(st);
        stream_free(st);
        if (req != NULL)
            av_req_backend_error(req, AV_ERR_BACKEND_CLOSED);
    }
    TAILQ_REMOVE(&pool->conns, c, link);
    pool->nconns--;
    nghttp2_session_del(c->ng);
    event_free(c->timer);
    av_sock_free(c->sock);
    free(c);
    pool_kick(pool);
}

/* Closes c once nothing it holds is in use: from the loop, never from under
 * nghttp2's callbacks. */
static void conn_close(up2_conn_t *c)
{
    c->dead = 1;
    c->state = C_GOAWAY;
    evtimer_del(c->timer);
    av_sock_read(c->sock, 0);
    av_sock_set_timeouts(c->sock, 0, 5000); /* a last GOAWAY the backend will not take is given up */
    av_sock_trigger_write(c->sock);
}

static void read_cb(av_sock_t *s, void *arg)
{
    up2_conn_t *c = arg;
    struct evbuffer *in = av_sock_input(s);
    c->in_io = 1;
    while (!c->dead && evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            break;
        ssize_t n = nghttp2_session_mem_recv(c->ng, v.iov_base, v.iov_len);
        if (n < 0) {
            AV_WARN("backend %s: HTTP/2 protocol error: %s", c->pool->key, nghttp2_strerror((int)n));
            evbuffer_drain(in, evbuffer_get_length(in));
            c->in_io = 0;
            conn_fail(c, AV_ERR_BACKEND_PROTOCOL, 0);
            return;
        }
        evbuffer_drain(in, (size_t)n);
    }
    c->in_io = 0;
    /* one write to each client for all this input; a flush can end streams,
     * so the walk starts over after each */
    for (;;) {
        av_up2_stream_t *st;
        TAILQ_FOREACH(st, &c->streams, link)
            if (st->dirty && st->req != NULL)
                break;
        if (st == NULL || c->dead)
            break;
        st->dirty = 0;
        st->req->client->flush(st->req);
    }
    conn_send(c);
}

static void write_cb(av_sock_t *s, void *arg)
{
    up2_conn_t *c = arg;
    if (c->dead) {
        if (av_sock_pending(s) == 0 || av_sock_error(s) != 0)
            conn_free(c);
        return;
    }
    if (c->ended) {
        AV_WARN("backend %s: the HTTP/2 session ended with %d stream%s open (the backend broke the protocol)",
                c->pool->key, c->nstreams, c->nstreams == 1 ? "" : "s");
        conn_fail(c, AV_ERR_BACKEND_PROTOCOL, 0);
        return;
    }
    conn_send(c);
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    pool_kick(arg);
}

static void event_cb(av_sock_t *s, int what, void *arg)
{
    up2_conn_t *c = arg;
    av_h2pool_t *pool = c->pool;
    if (what & AV_SOCK_CONNECTED) {
        if (c->tls && !av_tls_is_h2(av_sock_ssl(s))) {
            AV_WARN("backend %s did not agree to HTTP/2 in the TLS handshake (ALPN); use \"protocol\": "
                    "\"http1\" for it", pool->key);
            conn_fail(c, AV_ERR_BACKEND_PROTOCOL, 0);
            return;
        }
        int one = 1;
        setsockopt(av_sock_fd(s), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        av_sock_set_timeouts(s, 0, 0); /* streams keep their own clocks; idle is the timer's */
        c->state = C_READY;
        pool->failures = 0;
        conn_send(c);
        return;
    }
    if (c->dead) {
        conn_free(c);
        return;
    }
    if (c->state == C_CONNECTING) {
        int tls = av_sock_ssl(s) != NULL && av_sock_error(s) == EPROTO;
        const char *why = (what & AV_SOCK_TIMEOUT) ? "timed out" : av_sock_error_str(s);
        pool->failures++;
        unsigned shift = pool->failures - 1 < 7 ? pool->failures - 1 : 7;
        int64_t delay = (int64_t)UP2_BACKOFF_MIN_MS << shift;
        if (delay > UP2_BACKOFF_MAX_MS)
            delay = UP2_BACKOFF_MAX_MS;
        pool->retry_at_us = av_now_us() + (uint64_t)delay * 1000;
        if (tls)
            AV_WARN("backend %s: TLS failed: %s", pool->key, why);
        else
            AV_INFO("backend %s: connect failed: %s; next try in %lld ms", pool->key, why, (long long)delay);
        conn_fail(c, tls ? AV_ERR_TLS : (what & AV_SOCK_TIMEOUT) ? AV_ERR_CONNECT_TIMEOUT : AV_ERR_CONNECT,
                  !(what & AV_SOCK_TIMEOUT));
        return;
    }
    if (what & AV_SOCK_EOF) {
        /* a last piece of input may say GOAWAY or end streams */
        read_cb(s, c);
        if (c->dead)
            return;
    }
    AV_INFO("backend %s: HTTP/2 connection closed: %s", pool->key,
            (what & AV_SOCK_EOF) ? "by the backend" : av_sock_error_str(s));
    conn_fail(c, AV_ERR_BACKEND_CLOSED, 0);
}

/* While idle: a PING every ping interval (a missing answer closes the
 * connection), and the connection closes after the idle timeout. */
static void conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    up2_conn_t *c = arg;
    if (c->nstreams > 0 || c->dead)
        return;
    uint64_t idle_ms = (av_now_us() - c->idle_since_us) / 1000;
    if (c->ping_out) {
        AV_INFO("backend %s: no answer to PING: closing the connection", c->pool->key);
        conn_close(c);
        return;
    }
    if ((int64_t)idle_ms >= c->idle_ms) {
        nghttp2_session_terminate_session(c->ng, NGHTTP2_NO_ERROR);
        c->state = C_GOAWAY;
        conn_send(c);
        return;
    }
    if (c->state == C_READY && nghttp2_submit_ping(c->ng, NGHTTP2_FLAG_NONE, NULL) == 0) {
        c->ping_out = 1;
        conn_send(c);
    }
    int64_t left = c->idle_ms - (int64_t)idle_ms;
    struct timeval tv = ms_tv(c->ping_ms < left ? c->ping_ms : left);
    evtimer_add(c->timer, &tv);
}

static up2_conn_t *conn_open(av_h2pool_t *pool, const av_backend_t *b)
{
    up2_conn_t *c = av_calloc(1, sizeof(*c));
    c->pool = pool;
    c->state = C_CONNECTING;
    c->tls = b->tls_ctx != NULL;
    c->ping_ms = b->ping_interval_ms;
    c->idle_ms = b->idle_timeout_ms;
    TAILQ_INIT(&c->streams);
    c->sock = av_sock_new(pool->w->base, -1);
    av_sock_setcb(c->sock, read_cb, write_cb, event_cb, c);
    if (av_sock_connect(c->sock, (struct sockaddr *)&pool->addr, pool->addrlen) != 0 ||
        (c->tls && av_sock_tls_client(c->sock, b->tls_ctx, b->tls_name) != 0)) {
        AV_WARN("backend %s: cannot open a connection: %s", pool->key, av_sock_error_str(c->sock));
        av_sock_free(c->sock);
        free(c);
        return NULL;
    }
    av_sock_set_timeouts(c->sock, b->connect_timeout_ms, b->connect_timeout_ms);
    nghttp2_session_callbacks *cb;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_option *opt;
    nghttp2_option_new(&opt);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    if (nghttp2_session_client_new2(&c->ng, cb, c, opt) != 0)
        av_oom();
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cb);
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, UP2_STREAM_WINDOW},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, UP2_MAX_HEADER_BYTES},
    };
    nghttp2_submit_settings(c->ng, NGHTTP2_FLAG_NONE, iv, AV_NELEMS(iv));
    nghttp2_session_set_local_window_size(c->ng, NGHTTP2_FLAG_NONE, 0, UP2_CONN_WINDOW);
    c->timer = evtimer_new(pool->w->base, conn_timer_cb, c);
    TAILQ_INSERT_TAIL(&pool->conns, c, link);
    pool->nconns++;
    av_sock_read(c->sock, 1);
    conn_send(c); /* the preface waits in the output until the connection is up */
    return c;
}

/* Streams c can still take. None until the peer's SETTINGS say how many:
 * streams sent past a limit we did not know yet would come back refused. */
static int room(up2_conn_t *c)
{
    if (c->dead || c->state != C_READY || !c->got_settings)
        return 0;
    uint32_t max = nghttp2_session_get_remote_settings(c->ng, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
    return (int64_t)max > c->nstreams ? (int)(max - (uint32_t)c->nstreams) : 0;
}

/* The oldest connection with room; sets *opening when one is still starting. */
static up2_conn_t *pick(av_h2pool_t *pool, int *opening)
{
    up2_conn_t *c;
    *opening = 0;
    TAILQ_FOREACH(c, &pool->conns, link) {
        if (room(c) > 0)
            return c;
        if (!c->dead && c->state != C_GOAWAY && !c->got_settings)
            *opening = 1;
    }
    return NULL;
}

/* A connection with room, or a new one when the pool may open one now
 * (not while another is still starting: its room is not known yet). */
static up2_conn_t *conn_for(av_h2pool_t *pool, const av_req_t *req)
{
    int opening;
    up2_conn_t *c = pick(pool, &opening);
    if (c != NULL || opening || pool->nconns >= per_worker_max(req) || pool->w->closing)
        return c;
    uint64_t now = av_now_us();
    if (now < pool->retry_at_us) {
        if (pool->retry_timer == NULL)
            pool->retry_timer = evtimer_new(pool->w->base, retry_cb, pool);
        struct timeval tv = ms_tv((int64_t)((pool->retry_at_us - now) / 1000) + 1);
        evtimer_add(pool->retry_timer, &tv);
        return NULL; /* backing off after failed connects */
    }
    return conn_open(pool, req->variant->backend);
}

static void wait_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    av_req_t *req = arg;
    av_h2pool_t *pool = pool_get(req->worker, req->variant->backend, req->shadow);
    TAILQ_REMOVE(&pool->waiters, req, wait_link);
    pool->nwaiters--;
    req->waiting = 0;
    av_req_backend_error(req, pool->failures > 0 ? AV_ERR_CONNECT : AV_ERR_BUSY);
}

static void free_event(void *p)
{
    event_free(p);
}

static void pool_kick(av_h2pool_t *pool)
{
    av_req_t *req;
    while ((req = TAILQ_FIRST(&pool->waiters)) != NULL) {
        up2_conn_t *c = conn_for(pool, req);
        if (c == NULL)
            return;
        TAILQ_REMOVE(&pool->waiters, req, wait_link);
        pool->nwaiters--;
        req->waiting = 0;
        event_del(req->wait_timer);
        stream_start(c, req);
    }
}

void av_up2_send(av_req_t *req)
{
    send_req(req, 0);
}

/* again: a request sent before and refused unprocessed, which waits at the
 * head of the queue rather than behind requests that came after it */
static void send_req(av_req_t *req, int again)
{
    av_h2pool_t *pool = pool_get(req->worker, req->variant->backend, req->shadow);
    if (again || TAILQ_EMPTY(&pool->waiters)) {
        up2_conn_t *c = conn_for(pool, req);
        if (c != NULL) {
            stream_start(c, req);
            return;
        }
    }
    if (pool->nwaiters >= UP2_MAX_WAITERS) {
        av_req_backend_error(req, AV_ERR_BUSY);
        return;
    }
    if (req->wait_timer == NULL) {
        req->wait_timer = evtimer_new(req->worker->base, wait_timeout_cb, req);
        av_arena_on_free(req->arena, free_event, req->wait_timer);
    }
    struct timeval tv = ms_tv(req->variant->backend->connect_timeout_ms);
    evtimer_add(req->wait_timer, &tv);
    if (again)
        TAILQ_INSERT_HEAD(&pool->waiters, req, wait_link);
    else
        TAILQ_INSERT_TAIL(&pool->waiters, req, wait_link);
    pool->nwaiters++;
    req->waiting = 1;
}

void av_up2_cancel(av_req_t *req)
{
    if (req->waiting) {
        av_h2pool_t *pool = pool_get(req->worker, req->variant->backend, req->shadow);
        TAILQ_REMOVE(&pool->waiters, req, wait_link);
        pool->nwaiters--;
        req->waiting = 0;
        event_del(req->wait_timer);
    }
    av_up2_stream_t *st = req->up2;
    if (st == NULL)
        return;
    detach(st);
    give_back(st);
    nghttp2_submit_rst_stream(st->c->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_CANCEL);
    conn_send(st->c);
}

void av_up2_resume(av_req_t *req)
{
    av_up2_stream_t *st = req->up2;
    if (st == NULL || st->unconsumed == 0)
        return;
    nghttp2_session_consume(st->c->ng, st->id, st->unconsumed);
    st->unconsumed = 0;
    conn_send(st->c);
}

void av_up2_free_all(av_worker_t *w)
{
    av_h2pool_t *p = w->h2pools;
    while (p != NULL) {
        up2_conn_t *c;
        while ((c = TAILQ_FIRST(&p->conns)) != NULL)
            conn_free(c); /* w->closing: nothing new opens for waiters */
        av_h2pool_t *next = p->next;
        if (p->retry_timer != NULL)
            event_free(p->retry_timer);
        free(p->key);
        free(p);
        p = next;
    }
    w->h2pools = NULL;
}
