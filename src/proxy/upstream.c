/* upstream.c: HTTP/1.1 to backends. Per worker, one pool per backend address:
 * idle keep-alive connections (most recently used first), at most
 * ceil(max_connections / workers) open, and a bounded queue of waiting requests. */
#include "upstream.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <http_parser.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>

#include "arena.h"
#include "av.h"
#include "config.h"
#include "headers.h"
#include "log.h"
#include "req.h"
#include "sock.h"
#include "upstream_h2.h"
#include "loop.h"

#define AV_POOL_MAX_WAITERS 1024
#define AV_BACKEND_MAX_HEADER_BYTES (64u * 1024u)

typedef enum { UC_CONNECTING, UC_BUSY, UC_IDLE } uc_state_t;

struct av_upstream_s {
    av_upstream_t *next;
    av_worker_t *w;
    char *key;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    int nconns;
    TAILQ_HEAD(, av_upconn_s) idle;
    TAILQ_HEAD(, av_req_s) waiters;
    size_t nwaiters;
};

struct av_upconn_s {
    av_upstream_t *pool;
    av_sock_t *sock;
    http_parser parser;
    uc_state_t state;
    av_req_t *req;
    TAILQ_ENTRY(av_upconn_s) link;
    /* per response */
    av_headers_t hdrs;
    char *acc;             /* header name then value, NUL between */
    size_t acc_len, acc_cap, name_len, header_bytes;
    int in_value, got_bytes, head_done, msg_done, paused, informational;
    int reused;   /* this request went on a kept-alive connection */
    int no_reuse; /* what the backend may still send makes the connection unfit for another request */
    uint64_t idle_since_us;
    int64_t read_timeout_ms;
    /* the body pieces of one parse (a chunked answer's chunks), handed on
     * together: the first in place, more copied behind it into the worker's
     * buffer (one parse at a time per worker, and it stays in cache) */
    const char *body_at;
    size_t body_len;
};

static void conn_close(av_upconn_t *u);
static void conn_drop(av_upconn_t *u);
static void pool_kick(av_upstream_t *pool);

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

static av_upstream_t *pool_get(av_worker_t *w, const av_backend_t *b, int shadow)
{
    const char *key = shadow ? b->shadow_pool_key : b->pool_key;
    for (av_upstream_t *p = w->pools; p != NULL; p = p->next)
        if (strcmp(p->key, key) == 0)
            return p;
    av_upstream_t *p = av_calloc(1, sizeof(*p));
    p->w = w;
    p->key = av_strdup(key);
    memcpy(&p->addr, &b->addr, b->addrlen);
    p->addrlen = b->addrlen;
    TAILQ_INIT(&p->idle);
    TAILQ_INIT(&p->waiters);
    p->next = w->pools;
    w->pools = p;
    return p;
}

/* ---- response parsing ---- */

static int acc_add(av_upconn_t *u, const char *p, size_t n)
{
    u->header_bytes += n;
    if (u->header_bytes > AV_BACKEND_MAX_HEADER_BYTES)
        return -1;
    av_grow(&u->acc, &u->acc_cap, u->acc_len + n + 2, 512);
    memcpy(u->acc + u->acc_len, p, n);
    u->acc_len += n;
    return 0;
}

static int commit_header(av_upconn_t *u)
{
    if (u->name_len == 0)
        return 0;
    /* counted as HTTP/2 backends count them: four more per field, so a
     * head of thousands of tiny fields meets the same limit */
    u->header_bytes += 4;
    if (u->header_bytes > AV_BACKEND_MAX_HEADER_BYTES)
        return -1;
    if (!av_header_name_valid(u->acc, u->name_len) ||
        !av_header_value_valid(u->acc + u->name_len, u->acc_len - u->name_len))
        return -1; /* never passed on to a client */
    av_headers_add(u->req->arena, &u->hdrs, u->acc, u->name_len, u->acc + u->name_len,
                   u->acc_len - u->name_len);
    u->acc_len = u->name_len = 0;
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    av_upconn_t *u = p->data;
    if (u->in_value) {
        if (commit_header(u) != 0)
            return -1;
        u->in_value = 0;
    }
    if (acc_add(u, at, n) != 0)
        return -1;
    u->name_len = u->acc_len;
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    av_upconn_t *u = p->data;
    u->in_value = 1;
    return acc_add(u, at, n);
}

static int on_headers_complete(http_parser *p)
{
    av_upconn_t *u = p->data;
    if (commit_header(u) != 0)
        return -1;
    u->in_value = 0;
    if (p->status_code / 100 == 1) { /* informational: the real head follows */
        u->informational = 1;
        u->hdrs = (av_headers_t){0};
        u->header_bytes = 0;
        return 0;
    }
    u->head_done = 1;
    int64_t clen = -1;
    if (!(p->flags & F_CHUNKED) && (p->flags & F_CONTENTLENGTH))
        clen = (int64_t)p->content_length;
    av_req_t *req = u->req;
    av_sock_set_timeouts(u->sock, u->read_timeout_ms, u->read_timeout_ms);
    av_req_backend_head(req, p->status_code, &u->hdrs, clen);
    if (req->method != HTTP_HEAD)
        return 0;
    /* no body follows; but a backend that announced one may send it anyway,
     * later, where the next request's answer would be read: not reused */
    if ((p->flags & F_CHUNKED) || clen > 0)
        u->no_reuse = 1;
    return 1;
}

/* The worker's body buffer grown past this by one large read is let go once handed on. */
#define BODY_KEEP (256u * 1024u)

static char *body_room(av_worker_t *w, size_t need)
{
    av_grow(&w->up_body, &w->up_body_cap, need, 16384);
    return w->up_body;
}

/* Pieces are gathered, not handed on one by one: a read of twenty SSE
 * events in twenty chunks is read for usage and written to the client
 * once, and pays the way through req, usage and the client side once. */
static int on_body(http_parser *p, const char *at, size_t n)
{
    av_upconn_t *u = p->data;
    av_worker_t *w = u->pool->w;
    if (u->body_len == 0) {
        u->body_at = at; /* in the read's buffer until the parse is over */
    } else {
        int first_in_place = u->body_at != w->up_body; /* the second piece: the first moves too */
        char *b = body_room(w, u->body_len + n);
        if (first_in_place)
            memcpy(b, u->body_at, u->body_len);
        u->body_at = b;
        memcpy(b + u->body_len, at, n);
    }
    u->body_len += n;
    av_req_t *req = u->req;
    if (req->client->pending(req) + u->body_len > AV_CLIENT_HIGH_WATER) {
        u->paused = 1;
        http_parser_pause(p, 1);
    }
    return 0;
}

/* What the parse gathered, to the request: before the read's buffer is
 * drained and before the answer's end. The worker's buffer is taken out
 * while the request reads it, so nothing the request sets off can write
 * over it. */
static void body_flush(av_upconn_t *u)
{
    if (u->body_len == 0)
        return;
    av_worker_t *w = u->pool->w;
    char *own = NULL;
    size_t own_cap = 0;
    if (u->body_at == w->up_body) {
        own = w->up_body;
        own_cap = w->up_body_cap;
        w->up_body = NULL;
        w->up_body_cap = 0;
    }
    av_req_backend_body(u->req, u->body_at, u->body_len);
    u->body_len = 0;
    u->body_at = NULL;
    if (own != NULL && w->up_body == NULL && own_cap <= BODY_KEEP) {
        w->up_body = own;
        w->up_body_cap = own_cap;
    } else {
        free(own);
    }
}

static int on_message_complete(http_parser *p)
{
    av_upconn_t *u = p->data;
    if (u->informational) {
        u->informational = 0;
        return 0;
    }
    u->msg_done = 1;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings up_settings = {
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---- connection life ---- */

static void detach(av_upconn_t *u)
{
    if (u->req != NULL)
        u->req->up = NULL;
    u->req = NULL;
}

static void fail(av_upconn_t *u, const char *err)
{
    av_req_t *req = u->req;
    detach(u);
    conn_close(u);
    if (req != NULL)
        av_req_backend_error(req, err);
}

static void make_idle(av_upconn_t *u)
{
    av_upstream_t *pool = u->pool;
    const av_backend_t *b = u->req ? u->req->variant->backend : NULL;
    detach(u);
    u->state = UC_IDLE;
    u->idle_since_us = av_now_us();
    av_sock_set_timeouts(u->sock, b ? b->idle_timeout_ms : 60000, 0);
    av_sock_read(u->sock, 1);
    TAILQ_INSERT_HEAD(&pool->idle, u, link);
    pool_kick(pool);
}

/* The answer is whole: u is kept for the next request (idle, or already
 * serving a waiter) or closed. Returns AV_CLOSED either way: u is not this
 * caller's any more. */
static int complete(av_upconn_t *u)
{
    av_req_t *req = u->req;
    int reuse = !u->no_reuse && http_should_keep_alive(&u->parser) && !av_sock_read_closed(u->sock) &&
                evbuffer_get_length(av_sock_input(u->sock)) == 0;
    if (reuse) {
        make_idle(u);
    } else {
        detach(u);
        conn_close(u);
    }
    av_req_backend_end(req); /* may free req */
    return AV_CLOSED;
}

/* Parses what the backend sent. Returns AV_CLOSED when u is not this
 * caller's any more: the answer is whole (u is closed, idle or serving the
 * next request) or the backend broke the protocol (u is closed). */
static int parse_input(av_upconn_t *u)
{
    struct evbuffer *in = av_sock_input(u->sock);
    while (u->req != NULL && !u->paused) {
        struct evbuffer_iovec v;
        if (evbuffer_get_length(in) == 0 || evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            return 0;
        size_t n = http_parser_execute(&u->parser, &up_settings, v.iov_base, v.iov_len);
        body_flush(u);
        evbuffer_drain(in, n);
        enum http_errno e = HTTP_PARSER_ERRNO(&u->parser);
        if (u->msg_done)
            return complete(u);
        if (e == HPE_PAUSED) { /* the client is slow: stop reading until it drains */
            av_sock_read(u->sock, 0);
            return 0;
        }
        if (e != HPE_OK) {
            AV_INFO("request %s: backend %s sent a malformed response: %s", u->req->id,
                    u->req->variant->backend->name, http_errno_description(e));
            fail(u, AV_ERR_BACKEND_PROTOCOL);
            return AV_CLOSED;
        }
    }
    return 0;
}

/* Whether a request may go to the backend twice: its method is idempotent
 * (RFC 9110 9.2.2), or the client gave it an Idempotency-Key (the OpenAI and
 * Anthropic SDKs do on every POST), so that a backend which did see it can
 * tell the second from the first. */
static int may_resend(const av_req_t *req)
{
    switch (req->method) {
    case HTTP_GET:
    case HTTP_HEAD:
    case HTTP_OPTIONS:
    case HTTP_PUT:
    case HTTP_DELETE:
        return 1;
    default:
        return av_headers_get(&req->headers, "idempotency-key") != NULL;
    }
}

/* Closes every idle connection of the pool: one the backend closed under a
 * request says the others, as old, are likely gone too (a restart, an idle
 * sweep). */
static void drop_idle(av_upstream_t *pool)
{
    av_upconn_t *i;
    while ((i = TAILQ_FIRST(&pool->idle)) != NULL)
        conn_drop(i);
}

/* The backend closed or broke the connection. A request sent on a kept-alive
 * connection that the backend closed before answering a byte (it timed the
 * connection out as the request went) goes again once, on a new connection,
 * when it may be sent twice; anything else is the request's error. Closes u. */
static void lost(av_upconn_t *u, const char *err)
{
    av_req_t *req = u->req;
    if (req != NULL && u->reused && !u->got_bytes && !req->retried && may_resend(req)) {
        AV_INFO("request %s: backend %s closed a kept-alive connection before answering; sending again",
                req->id, u->pool->key);
        av_upstream_t *pool = u->pool;
        req->retried = 1;
        detach(u);
        conn_drop(u);
        drop_idle(pool);
        av_upstream_send(req); /* no idle connection left: a new one, or the queue */
        pool_kick(pool);       /* the room left over, to the waiters */
        return;
    }
    fail(u, err);
}

/* The backend's side has ended: what it sent is parsed first (a body
 * delimited by the close ends here). Returns AV_CLOSED when u is gone; 0
 * when a slow client holds the rest, parsed when it drains. */
static int input_closed(av_upconn_t *u)
{
    if (parse_input(u) == AV_CLOSED)
        return AV_CLOSED;
    if (u->paused)
        return 0;
    if (u->req != NULL) {
        http_parser_execute(&u->parser, &up_settings, NULL, 0);
        body_flush(u);
        if (u->msg_done)
            return complete(u);
    }
    if (u->req == NULL || u->state == UC_IDLE) {
        conn_close(u);
        return AV_CLOSED;
    }
    lost(u, AV_ERR_BACKEND_CLOSED);
    return AV_CLOSED;
}

static void read_cb(av_sock_t *s, void *arg)
{
    av_upconn_t *u = arg;
    if (u->state == UC_IDLE) { /* nothing is owed on an idle connection */
        if (evbuffer_get_length(av_sock_input(s)) > 0 || av_sock_read_closed(s))
            conn_close(u);
        return; /* a read deferred from before the answer ended: nothing came */
    }
    if (!u->got_bytes) {
        u->got_bytes = 1;
        av_sock_set_timeouts(s, u->read_timeout_ms, u->read_timeout_ms);
    }
    /* an orderly close ends a body delimited by it; a reset ends nothing:
     * what came is parsed, and the event that follows says the rest */
    int rc = av_sock_read_closed(s) == AV_SOCK_EOF ? input_closed(u) : parse_input(u);
    if (rc == AV_CLOSED) /* the request's end wrote to its client */
        return;
    av_req_t *req = u->req;
    if (req != NULL) /* one write to the client for all this input */
        req->client->flush(req);
}

static void event_cb(av_sock_t *s, int what, void *arg)
{
    av_upconn_t *u = arg;
    if (what & AV_SOCK_CONNECTED) {
        u->state = UC_BUSY;
        int one = 1;
        setsockopt(av_sock_fd(s), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (u->req != NULL) { /* from now on the first-byte clock runs */
            const av_backend_t *b = u->req->variant->backend;
            av_sock_set_timeouts(s, b->first_byte_timeout_ms, b->read_timeout_ms);
        }
        return;
    }
    if (u->state == UC_IDLE) { /* the backend closed or timed out an idle connection */
        conn_close(u);
        return;
    }
    av_req_t *req = u->req;
    if (u->state == UC_CONNECTING) {
        if (what & AV_SOCK_TIMEOUT) {
            fail(u, AV_ERR_CONNECT_TIMEOUT);
            return;
        }
        int tls = av_sock_ssl(s) != NULL && av_sock_error(s) == EPROTO;
        if (tls)
            AV_WARN("request %s: TLS with backend %s failed: %s", req->id, u->pool->key, av_sock_error_str(s));
        else
            AV_INFO("request %s: connect to backend %s failed: %s", req->id, u->pool->key, av_sock_error_str(s));
        detach(u);
        conn_close(u);
        if (tls) /* a certificate does not get better on a second try */
            av_req_backend_error(req, AV_ERR_TLS);
        else if (req->attempts < 2) /* it never reached the backend: one more try */
            av_upstream_send(req);
        else
            av_req_backend_error(req, AV_ERR_CONNECT);
        return;
    }
    if (what & AV_SOCK_TIMEOUT) {
        fail(u, u->got_bytes ? AV_ERR_READ_TIMEOUT : AV_ERR_FIRST_BYTE_TIMEOUT);
        return;
    }
    if (what & AV_SOCK_EOF) {
        input_closed(u);
        return;
    }
    lost(u, AV_ERR_BACKEND_CLOSED);
}

/* Closes u; the room it leaves is the caller's to give (pool_kick). */
static void conn_drop(av_upconn_t *u)
{
    av_upstream_t *pool = u->pool;
    if (u->state == UC_IDLE)
        TAILQ_REMOVE(&pool->idle, u, link);
    av_sock_free(u->sock);
    free(u->acc);
    free(u);
    pool->nconns--;
}

static void conn_close(av_upconn_t *u)
{
    av_upstream_t *pool = u->pool;
    conn_drop(u);
    pool_kick(pool);
}

/* An idle connection that rested this long is looked at before it is used:
 * the backend may have closed it, the close not yet read. Younger ones are
 * taken as they are (under load they all are: no system call on that path). */
#define IDLE_CHECK_US 1000000u

static int idle_alive(av_upconn_t *u)
{
    av_sock_t *s = u->sock;
    if (av_sock_read_closed(s) || evbuffer_get_length(av_sock_input(s)) > 0)
        return 0;
    if (av_now_us() - u->idle_since_us < IDLE_CHECK_US)
        return 1;
    char b;
    ssize_t n = recv(av_sock_fd(s), &b, 1, MSG_PEEK | MSG_DONTWAIT); /* 0: closed; a byte: nothing is owed */
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

/* The most recently used idle connection still open, taken (busy), or NULL. */
static av_upconn_t *take_idle(av_upstream_t *pool)
{
    av_upconn_t *u;
    while ((u = TAILQ_FIRST(&pool->idle)) != NULL) {
        TAILQ_REMOVE(&pool->idle, u, link);
        u->state = UC_BUSY;
        if (idle_alive(u))
            return u;
        conn_drop(u);
    }
    return NULL;
}

static void attach(av_upconn_t *u, av_req_t *req)
{
    const av_backend_t *b = req->variant->backend;
    u->req = req;
    req->up = u;
    req->attempts++;
    http_parser_init(&u->parser, HTTP_RESPONSE);
    u->parser.data = u;
    u->hdrs = (av_headers_t){0};
    u->acc_len = u->name_len = u->header_bytes = u->body_len = 0;
    u->in_value = u->got_bytes = u->head_done = u->msg_done = u->paused = u->informational = 0;
    u->reused = u->state != UC_CONNECTING;
    u->no_reuse = 0;
    u->read_timeout_ms = b->read_timeout_ms;
    av_sock_set_timeouts(u->sock, b->first_byte_timeout_ms,
                         u->state == UC_CONNECTING ? b->connect_timeout_ms : b->first_byte_timeout_ms);
    evbuffer_add_buffer_reference(av_sock_output(u->sock), req->backend_out);
    av_sock_flush(u->sock); /* when connected: now, the write event armed only for a rest */
    av_sock_read(u->sock, 1);
}

static av_upconn_t *conn_open(av_upstream_t *pool, const av_backend_t *b)
{
    av_upconn_t *u = av_calloc(1, sizeof(*u));
    u->pool = pool;
    u->state = UC_CONNECTING;
    u->sock = av_sock_new(pool->w->base, -1);
    av_sock_setcb(u->sock, read_cb, NULL, event_cb, u);
    if (av_sock_connect(u->sock, (struct sockaddr *)&pool->addr, pool->addrlen) != 0 ||
        (b->tls_ctx != NULL && av_sock_tls_client(u->sock, b->tls_ctx, b->tls_name) != 0)) {
        AV_WARN("backend %s: cannot open a connection: %s", pool->key, av_sock_error_str(u->sock));
        av_sock_free(u->sock);
        free(u);
        return NULL;
    }
    pool->nconns++;
    return u;
}

static void wait_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    av_req_t *req = arg;
    av_upstream_t *pool = pool_get(req->worker, req->variant->backend, req->shadow);
    TAILQ_REMOVE(&pool->waiters, req, wait_link);
    pool->nwaiters--;
    req->waiting = 0;
    av_req_backend_error(req, AV_ERR_BUSY);
}

/* Gives free capacity to the oldest waiters. */
static void pool_kick(av_upstream_t *pool)
{
    av_req_t *req;
    if (pool->w->closing)
        return;
    while ((req = TAILQ_FIRST(&pool->waiters)) != NULL) {
        av_upconn_t *u = take_idle(pool);
        if (u == NULL && pool->nconns < per_worker_max(req)) {
            u = conn_open(pool, req->variant->backend);
            if (u == NULL)
                return;
        }
        if (u == NULL)
            return;
        TAILQ_REMOVE(&pool->waiters, req, wait_link);
        pool->nwaiters--;
        req->waiting = 0;
        event_del(req->wait_timer);
        attach(u, req);
    }
}

static void free_event(void *p)
{
    event_free(p);
}

void av_upstream_send(av_req_t *req)
{
    if (req->variant->backend->protocol != AV_PROTO_HTTP1) {
        av_up2_send(req);
        return;
    }
    av_upstream_t *pool = pool_get(req->worker, req->variant->backend, req->shadow);
    av_upconn_t *u = TAILQ_EMPTY(&pool->waiters) ? take_idle(pool) : NULL;
    if (u != NULL) {
        attach(u, req);
        return;
    }
    if (pool->nconns < per_worker_max(req) && TAILQ_EMPTY(&pool->waiters)) {
        u = conn_open(pool, req->variant->backend);
        if (u == NULL) {
            av_req_backend_error(req, AV_ERR_CONNECT);
            return;
        }
        attach(u, req);
        return;
    }
    if (pool->nwaiters >= AV_POOL_MAX_WAITERS) {
        av_req_backend_error(req, AV_ERR_BUSY);
        return;
    }
    if (req->wait_timer == NULL) {
        req->wait_timer = evtimer_new(req->worker->base, wait_timeout_cb, req);
        av_arena_on_free(req->arena, free_event, req->wait_timer);
    }
    struct timeval tv = ms_tv(req->variant->backend->connect_timeout_ms);
    evtimer_add(req->wait_timer, &tv);
    TAILQ_INSERT_TAIL(&pool->waiters, req, wait_link);
    pool->nwaiters++;
    req->waiting = 1;
}

void av_upstream_cancel(av_req_t *req)
{
    if (req->variant->backend->protocol != AV_PROTO_HTTP1) {
        av_up2_cancel(req);
        return;
    }
    if (req->waiting) {
        av_upstream_t *pool = pool_get(req->worker, req->variant->backend, req->shadow);
        TAILQ_REMOVE(&pool->waiters, req, wait_link);
        pool->nwaiters--;
        req->waiting = 0;
        event_del(req->wait_timer);
    }
    av_upconn_t *u = req->up;
    if (u != NULL) {
        detach(u);
        conn_close(u); /* mid-exchange: the connection cannot be reused */
    }
}

void av_upstream_resume(av_req_t *req)
{
    if (req->up2 != NULL) {
        av_up2_resume(req);
        return;
    }
    av_upconn_t *u = req->up;
    if (u == NULL || !u->paused)
        return;
    u->paused = 0;
    http_parser_pause(&u->parser, 0);
    av_sock_read(u->sock, 1);
    /* what is already buffered is parsed from the loop, not from inside the client's callback */
    av_sock_trigger_read(u->sock);
}

void av_upstream_free_all(av_worker_t *w)
{
    av_upstream_t *p = w->pools;
    while (p != NULL) {
        av_upconn_t *u;
        while ((u = TAILQ_FIRST(&p->idle)) != NULL)
            conn_close(u); /* w->closing: it opens nothing for waiters */
        av_upstream_t *next = p->next;
        free(p->key);
        free(p);
        p = next;
    }
    w->pools = NULL;
    free(w->up_body);
    w->up_body = NULL;
    w->up_body_cap = 0;
    av_up2_free_all(w);
}
