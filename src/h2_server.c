/* h2_server.c: HTTP/2 to clients (h2 over TLS, h2c with prior knowledge) on
 * an nghttp2 server session. Each stream feeds the same protocol-neutral
 * request as HTTP/1.1. Frames are produced with mem_send into the socket's
 * output and consumed with mem_recv from its input; sending stops while the
 * socket holds more than a high mark and resumes as the kernel takes it.
 * A stream's response body waits in the stream's own buffer until nghttp2
 * takes it within the client's flow-control window; the backend is paused
 * while that buffer is above the client high mark (upstream.c), so a slow
 * reader slows its backend stream instead of growing memory. */
#include "h2_server.h"

#include <ctype.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <http_parser.h>
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "arena.h"
#include "av.h"
#include "config.h"
#include "headers.h"
#include "log.h"
#include "req.h"
#include "sock.h"
#include "upstream.h"
#include "worker.h"

#define H2_SOCK_HIGH (64u * 1024u) /* stop producing frames above this much unwritten */
#define H2_SOCK_LOW (16u * 1024u)
#define H2_MAX_STREAMS 128
#define H2_INITIAL_WINDOW (1u << 20)

/* Frames that cost us work and give the client nothing are metered per
 * connection (RFC 9113 section 10.5): a bucket of burst tokens refilled at
 * rate per second. A client that empties one gets GOAWAY ENHANCE_YOUR_CALM.
 * The rates leave room for what browsers, curl, gRPC keepalives and SDKs do. */
typedef struct {
    uint32_t tokens;
    uint64_t at_ms;
} h2_bucket_t;

typedef struct {
    const char *what;
    uint32_t burst, rate;
} h2_meter_t;

enum { H2_M_RESET, H2_M_SETTINGS, H2_M_PING, H2_M_PRIORITY, H2_M_EMPTY, H2_M_REFUSED, H2_M_N };

static const h2_meter_t h2_meters[H2_M_N] = {
    [H2_M_RESET] = {"streams reset by the client (rapid reset)", 400, 40},
    [H2_M_SETTINGS] = {"SETTINGS frames", 32, 4},
    [H2_M_PING] = {"PING frames", 100, 10},
    [H2_M_PRIORITY] = {"PRIORITY frames", 500, 100},
    [H2_M_EMPTY] = {"empty DATA, HEADERS or CONTINUATION frames", 64, 16},
    [H2_M_REFUSED] = {"streams over SETTINGS_MAX_CONCURRENT_STREAMS", 16, 4},
};

typedef struct h2_stream_s h2_stream_t;

struct av_h2conn_s {
    av_worker_t *w;
    av_sock_t *sock;
    nghttp2_session *ng;
    TAILQ_ENTRY(av_h2conn_s) link;
    TAILQ_HEAD(, h2_stream_s) streams;
    size_t nstreams;
    struct event *timer; /* idle: no open stream for idle_timeout_ms */
    int tls, dead, in_io, goaway_sent, calm, lingering;
    h2_bucket_t meter[H2_M_N];
    /* the header block being received: wire bytes and frames */
    size_t block_bytes, block_frames;
    int32_t last_stream;                  /* highest stream id the client opened */
    char client_ip[48];
};

struct h2_stream_s {
    av_h2conn_t *c;
    int32_t id;
    av_req_t *req;                  /* NULL once answered */
    struct evbuffer *out;           /* response body nghttp2 has not taken yet */
    TAILQ_ENTRY(h2_stream_s) link;
    size_t header_bytes, nheaders;
    int reject_status;
    const char *reject_code;
    int no_body, eof, deferred, ran, stream_sse;
};

static void conn_send(av_h2conn_t *c);
static void conn_free(av_h2conn_t *c);

/* ---- responding (the client ops) ---- */

static ssize_t body_read(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                         nghttp2_data_source *src, void *user)
{
    (void)ng;
    (void)id;
    (void)user;
    h2_stream_t *st = src->ptr;
    size_t have = evbuffer_get_length(st->out);
    if (have == 0) {
        if (st->eof) {
            *flags |= NGHTTP2_DATA_FLAG_EOF;
            return 0;
        }
        st->deferred = 1;
        return NGHTTP2_ERR_DEFERRED;
    }
    size_t n = have < len ? have : len;
    evbuffer_remove(st->out, buf, n);
    if (st->eof && evbuffer_get_length(st->out) == 0)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    if (st->req != NULL && have >= AV_CLIENT_HIGH_WATER && have - n < AV_CLIENT_HIGH_WATER)
        av_req_client_drained(st->req); /* the backend may go on */
    return (ssize_t)n;
}

static void resume(h2_stream_t *st)
{
    if (st->deferred) {
        st->deferred = 0;
        nghttp2_session_resume_data(st->c->ng, st->id);
    }
}

static void respond_head(av_req_t *req, int status, const av_headers_t *hdrs, int64_t clen)
{
    h2_stream_t *st = req->client_ctx;
    av_h2conn_t *c = st->c;
    st->no_body = req->method == HTTP_HEAD || status == 204 || status == 304;
    size_t n = 0, cap = hdrs->n + 3;
    nghttp2_nv *nv = av_arena_alloc(req->arena, cap * sizeof(*nv));
    char st_text[AV_PUT_NUM_MAX]; /* nghttp2 copies names and values */
    size_t st_len = (size_t)(av_put_u64(st_text, (uint64_t)status) - st_text);
    nv[n++] = (nghttp2_nv){(uint8_t *)":status", (uint8_t *)st_text, 7, st_len, NGHTTP2_NV_FLAG_NONE};
    for (size_t i = 0; i < hdrs->n; i++) {
        const av_header_t *h = &hdrs->v[i];
        if (av_streq_ci(h->name, h->name_len, "content-length") || av_streq_ci(h->name, h->name_len, "x-request-id"))
            continue; /* written below, once */
        char *name = av_arena_alloc(req->arena, h->name_len + 1); /* HTTP/2 field names are lower case */
        for (size_t k = 0; k < h->name_len; k++)
            name[k] = (char)tolower((unsigned char)h->name[k]);
        /* copied by nghttp2: the request (and its arena) may end before the frame is sent */
        nv[n++] = (nghttp2_nv){(uint8_t *)name, (uint8_t *)h->value, h->name_len, h->value_len,
                               NGHTTP2_NV_FLAG_NONE};
    }
    char cl[AV_PUT_NUM_MAX];
    if (clen >= 0 && !st->no_body) {
        size_t k = (size_t)(av_put_u64(cl, (uint64_t)clen) - cl);
        nv[n++] = (nghttp2_nv){(uint8_t *)"content-length", (uint8_t *)cl, 14, k, NGHTTP2_NV_FLAG_NONE};
    }
    nv[n++] = (nghttp2_nv){(uint8_t *)"x-request-id", (uint8_t *)req->id, 12, strlen(req->id), NGHTTP2_NV_FLAG_NONE};
    nghttp2_data_provider prd = {.source.ptr = st, .read_callback = body_read};
    int rv = nghttp2_submit_response(c->ng, st->id, nv, n, st->no_body ? NULL : &prd);
    if (rv != 0)
        AV_INFO("request %s: cannot send the response head on stream %d: %s", req->id, st->id,
                nghttp2_strerror(rv));
}

static void respond_body(av_req_t *req, const char *data, size_t len)
{
    h2_stream_t *st = req->client_ctx;
    if (st->no_body || len == 0)
        return;
    evbuffer_add(st->out, data, len);
    resume(st);
}

/* The request is answered (or given up); the stream lives on until nghttp2
 * has sent what is queued and closes it. */
static void finish(h2_stream_t *st)
{
    av_req_t *req = st->req;
    st->req = NULL;
    av_req_free(req);
}

static void respond_end(av_req_t *req)
{
    h2_stream_t *st = req->client_ctx;
    st->eof = 1;
    resume(st);
    finish(st);
    conn_send(st->c);
}

static void respond_abort(av_req_t *req)
{
    h2_stream_t *st = req->client_ctx;
    av_h2conn_t *c = st->c;
    if (req->stream && req->head_sent) {
        /* SSE clients get a last event saying why, and a clean end */
        evbuffer_add(st->out, "data: ", 6);
        av_error_json(st->out, "server_error", req->error ? req->error : "backend_closed",
                      "the backend ended the stream before it was complete", req->id);
        evbuffer_add(st->out, "\n", 1);
        st->eof = 1;
        resume(st);
    } else {
        nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
    }
    finish(st);
    conn_send(c);
}

static size_t pending(av_req_t *req)
{
    h2_stream_t *st = req->client_ctx;
    return evbuffer_get_length(st->out);
}

static void flush(av_req_t *req)
{
    h2_stream_t *st = req->client_ctx;
    conn_send(st->c);
}

static const av_client_ops_t h2_ops = {
    .respond_head = respond_head,
    .respond_body = respond_body,
    .respond_end = respond_end,
    .respond_abort = respond_abort,
    .pending = pending,
    .flush = flush,
};

/* ---- streams ---- */

static void stream_free(h2_stream_t *st)
{
    av_h2conn_t *c = st->c;
    if (st->req != NULL) {
        if (st->ran)
            av_req_client_gone(st->req);
        av_req_free(st->req);
    }
    TAILQ_REMOVE(&c->streams, st, link);
    c->nstreams--;
    evbuffer_free(st->out);
    free(st);
    if (c->nstreams == 0 && !c->dead && !c->lingering) {
        struct timeval tv = {c->w->cfg->idle_timeout_ms / 1000, (c->w->cfg->idle_timeout_ms % 1000) * 1000};
        evtimer_add(c->timer, &tv);
    }
}

static int method_of(const char *m, size_t n)
{
    for (int i = 0; i < 64; i++) {
        const char *s = http_method_str((enum http_method)i);
        if (strlen(s) == n && memcmp(s, m, n) == 0)
            return i;
    }
    return -1;
}

static void stream_run(h2_stream_t *st)
{
    av_req_t *req = st->req;
    st->ran = 1;
    if (st->reject_status != 0) {
        av_req_reject(req, st->reject_status, st->reject_code,
                      st->reject_status == 413   ? "request body exceeds client.max_body_bytes"
                      : st->reject_status == 431 ? "request headers exceed client.max_header_bytes or max_headers"
                                                 : "malformed HTTP/2 request");
        return;
    }
    av_req_run(req);
}

/* ---- defences ---- */

/* Ends the connection for abuse: GOAWAY ENHANCE_YOUR_CALM, input ignored from here on. */
static void calm_down(av_h2conn_t *c, const char *why)
{
    if (c->calm)
        return;
    c->calm = 1;
    AV_INFO("client %s: HTTP/2 connection ended with ENHANCE_YOUR_CALM: %s", c->client_ip, why);
    nghttp2_session_terminate_session(c->ng, NGHTTP2_ENHANCE_YOUR_CALM);
}

/* Takes a token for one frame of a metered kind; empties end the connection. */
static void meter(av_h2conn_t *c, int kind)
{
    const h2_meter_t *m = &h2_meters[kind];
    h2_bucket_t *b = &c->meter[kind];
    uint64_t now = av_now_ms();
    uint64_t add = (now - b->at_ms) * m->rate / 1000;
    if (add > 0) {
        b->tokens = add >= m->burst - b->tokens ? m->burst : b->tokens + (uint32_t)add;
        b->at_ms = now;
    }
    if (b->tokens == 0) {
        calm_down(c, m->what);
        return;
    }
    b->tokens--;
}

static int on_begin_frame(nghttp2_session *ng, const nghttp2_frame_hd *hd, void *user)
{
    (void)ng;
    av_h2conn_t *c = user;
    const av_config_t *cfg = c->w->cfg;
    int end_stream = (hd->flags & NGHTTP2_FLAG_END_STREAM) != 0;
    switch (hd->type) {
    case NGHTTP2_HEADERS:
        c->block_bytes = hd->length;
        c->block_frames = 1;
        if (hd->length == 0 && !(hd->flags & NGHTTP2_FLAG_END_HEADERS))
            meter(c, H2_M_EMPTY);
        if (hd->stream_id > c->last_stream) {
            c->last_stream = hd->stream_id;
            /* nghttp2 refuses the stream; a client that keeps trying is a flood */
            if (c->nstreams >= H2_MAX_STREAMS)
                meter(c, H2_M_REFUSED);
        }
        break;
    case NGHTTP2_CONTINUATION:
        /* a header block needs no more 16 KiB frames than the list limit
         * allows (with room to spare); many small or empty frames are a
         * CONTINUATION flood */
        c->block_bytes += hd->length;
        c->block_frames++;
        if (hd->length == 0)
            meter(c, H2_M_EMPTY);
        if (c->block_frames > 3 + (size_t)cfg->max_header_bytes / 16384 ||
            c->block_bytes > 2 * (size_t)cfg->max_header_bytes + 16384)
            calm_down(c, "header block in too many CONTINUATION frames (CONTINUATION flood)");
        break;
    case NGHTTP2_DATA:
        if (hd->length == 0 && !end_stream)
            meter(c, H2_M_EMPTY);
        break;
    case NGHTTP2_RST_STREAM:
        meter(c, H2_M_RESET);
        break;
    case NGHTTP2_SETTINGS:
        if (!(hd->flags & NGHTTP2_FLAG_ACK))
            meter(c, H2_M_SETTINGS);
        break;
    case NGHTTP2_PING:
        if (!(hd->flags & NGHTTP2_FLAG_ACK))
            meter(c, H2_M_PING);
        break;
    case NGHTTP2_PRIORITY:
        meter(c, H2_M_PRIORITY);
        break;
    default:
        break;
    }
    return 0;
}

/* ---- nghttp2 callbacks ---- */

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *f, void *user)
{
    av_h2conn_t *c = user;
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    h2_stream_t *st = av_calloc(1, sizeof(*st));
    st->c = c;
    st->id = f->hd.stream_id;
    st->out = evbuffer_new();
    st->req = av_req_new(c->w, &h2_ops, st);
    memcpy(st->req->client_ip, c->client_ip, sizeof(c->client_ip));
    st->req->tls = c->tls;
    st->req->http_major = 2;
    st->req->http_minor = 0;
    st->req->method = -1;
    TAILQ_INSERT_TAIL(&c->streams, st, link);
    c->nstreams++;
    evtimer_del(c->timer);
    nghttp2_session_set_stream_user_data(ng, st->id, st);
    return 0;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
                     const uint8_t *value, size_t vlen, uint8_t flags, void *user)
{
    (void)flags;
    av_h2conn_t *c = user;
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    h2_stream_t *st = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    if (st == NULL || c->calm)
        return 0;
    av_req_t *req = st->req;
    const av_config_t *cfg = c->w->cfg;
    /* counted decoded, as HTTP/1.1 counts them: an HPACK-compressed flood meets the same limit */
    st->header_bytes += nlen + vlen + 4;
    st->nheaders++;
    if (st->header_bytes > 4 * (size_t)cfg->max_header_bytes || st->nheaders > 4 * (size_t)cfg->max_headers) {
        /* far past the SETTINGS_MAX_HEADER_LIST_SIZE we announced: an HPACK bomb */
        calm_down(c, "header list decodes far past the announced limit (HPACK bomb)");
        return 0;
    }
    if (st->reject_status != 0)
        return 0;
    if (st->header_bytes > (size_t)cfg->max_header_bytes || req->headers.n >= (size_t)cfg->max_headers) {
        st->reject_status = 431;
        st->reject_code = st->header_bytes > (size_t)cfg->max_header_bytes ? "headers_too_large" : "too_many_headers";
        return 0;
    }
    const char *n = (const char *)name, *v = (const char *)value;
    if (nlen > 0 && n[0] == ':') {
        if (nlen == 7 && memcmp(n, ":method", 7) == 0) {
            req->method = method_of(v, vlen);
            req->method_str = req->method >= 0 ? http_method_str((enum http_method)req->method)
                                               : av_arena_strndup(req->arena, v, vlen);
        } else if (nlen == 5 && memcmp(n, ":path", 5) == 0) {
            req->target = av_arena_strndup(req->arena, v, vlen);
            req->target_len = vlen;
        } else if (nlen == 10 && memcmp(n, ":authority", 10) == 0) {
            req->host = av_arena_strndup(req->arena, v, vlen);
            av_headers_add(req->arena, &req->headers, "host", 4, v, vlen);
        }
        return 0; /* :scheme and :protocol say nothing a backend request needs */
    }
    if (nlen == 4 && memcmp(n, "host", 4) == 0 && req->host != NULL)
        return 0; /* :authority wins */
    av_headers_add(req->arena, &req->headers, n, nlen, v, vlen);
    if (nlen == 4 && memcmp(n, "host", 4) == 0)
        req->host = req->headers.v[req->headers.n - 1].value;
    return 0;
}

/* The request head is complete: checks it, then runs it or waits for the body. */
static void headers_done(h2_stream_t *st, int end_stream)
{
    av_req_t *req = st->req;
    av_h2conn_t *c = st->c;
    av_req_set_id(req);
    if (st->reject_status == 0) {
        if (req->method_str == NULL || req->target == NULL || req->target_len == 0 || req->target[0] != '/') {
            st->reject_status = 400;
            st->reject_code = "bad_request";
        } else if (req->method < 0) {
            st->reject_status = 501;
            st->reject_code = "method_not_supported";
        } else {
            const av_header_t *cl = av_headers_get(&req->headers, "content-length");
            if (cl != NULL && strtoll(cl->value, NULL, 10) > c->w->cfg->max_body_bytes) {
                st->reject_status = 413;
                st->reject_code = "body_too_large";
            }
        }
    }
    if (end_stream || st->reject_status != 0)
        stream_run(st);
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *user)
{
    (void)user;
    h2_stream_t *st = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    if (st == NULL || st->req == NULL || st->ran)
        return 0;
    int end_stream = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST)
        headers_done(st, end_stream);
    else if (f->hd.type == NGHTTP2_DATA && end_stream)
        stream_run(st);
    return 0;
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data, size_t len, void *user)
{
    (void)flags;
    av_h2conn_t *c = user;
    /* request bodies are read whole (bounded by max_body_bytes) before the
     * backend sees them, so the window reopens as they arrive */
    nghttp2_session_consume(ng, id, len);
    h2_stream_t *st = nghttp2_session_get_stream_user_data(ng, id);
    if (st == NULL || st->req == NULL || st->ran)
        return 0;
    if (evbuffer_get_length(st->req->body) + len > (size_t)c->w->cfg->max_body_bytes) {
        st->reject_status = 413;
        st->reject_code = "body_too_large";
        stream_run(st);
        return 0;
    }
    evbuffer_add(st->req->body, data, len);
    return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t error_code, void *user)
{
    (void)error_code;
    (void)user;
    h2_stream_t *st = nghttp2_session_get_stream_user_data(ng, id);
    if (st != NULL) {
        nghttp2_session_set_stream_user_data(ng, id, NULL);
        stream_free(st);
    }
    return 0;
}

/* ---- the connection ---- */

static void conn_send(av_h2conn_t *c)
{
    if (c->dead || c->in_io)
        return; /* the I/O loop sends once the callbacks return */
    while (av_sock_pending(c->sock) < H2_SOCK_HIGH && nghttp2_session_want_write(c->ng)) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(c->ng, &data);
        if (n < 0) {
            AV_INFO("client %s: HTTP/2 send failed: %s", c->client_ip, nghttp2_strerror((int)n));
            c->dead = 1;
            break;
        }
        if (n == 0)
            break;
        evbuffer_add(av_sock_output(c->sock), data, (size_t)n);
    }
    av_sock_flush(c->sock);
    if (c->dead || (!nghttp2_session_want_read(c->ng) && !nghttp2_session_want_write(c->ng) &&
                    av_sock_pending(c->sock) == 0)) {
        c->dead = 1;
        if (av_sock_pending(c->sock) == 0)
            av_sock_trigger_write(c->sock); /* freed from the loop, not from under a caller */
    }
}

/* The session has said its last word. Closing a socket with unread input
 * makes the kernel send a reset, which can destroy the GOAWAY on its way;
 * so the write side is shut and the client's input read and discarded until
 * it closes, for a second at most. */
static void linger(av_h2conn_t *c)
{
    h2_stream_t *st;
    while ((st = TAILQ_FIRST(&c->streams)) != NULL) {
        nghttp2_session_set_stream_user_data(c->ng, st->id, NULL);
        stream_free(st);
    }
    c->lingering = 1;
    shutdown(av_sock_fd(c->sock), SHUT_WR);
    av_sock_read(c->sock, 1);
    struct timeval tv = {1, 0};
    evtimer_add(c->timer, &tv);
}

static void read_cb(av_sock_t *s, void *arg)
{
    av_h2conn_t *c = arg;
    struct evbuffer *in = av_sock_input(s);
    if (c->lingering) {
        evbuffer_drain(in, evbuffer_get_length(in));
        return;
    }
    c->in_io = 1;
    while (!c->dead && evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            break;
        ssize_t n = nghttp2_session_mem_recv(c->ng, v.iov_base, v.iov_len);
        if (c->calm) {
            evbuffer_drain(in, evbuffer_get_length(in));
            break;
        }
        if (n < 0) {
            AV_INFO("client %s: HTTP/2 protocol error: %s", c->client_ip, nghttp2_strerror((int)n));
            if (n != NGHTTP2_ERR_BAD_CLIENT_MAGIC)
                nghttp2_session_terminate_session(c->ng, NGHTTP2_PROTOCOL_ERROR);
            evbuffer_drain(in, evbuffer_get_length(in));
            break;
        }
        evbuffer_drain(in, (size_t)n);
    }
    c->in_io = 0;
    conn_send(c);
}

static void write_cb(av_sock_t *s, void *arg)
{
    av_h2conn_t *c = arg;
    if (c->dead) {
        if (av_sock_pending(s) == 0 && !c->lingering) {
            if (av_sock_error(s) == 0 && av_sock_fd(s) >= 0)
                linger(c);
            else
                conn_free(c);
        }
        return;
    }
    conn_send(c);
}

static void event_cb(av_sock_t *s, int what, void *arg)
{
    (void)s;
    av_h2conn_t *c = arg;
    if (what & AV_SOCK_ERROR)
        AV_DEBUG("client %s: HTTP/2 connection: %s", c->client_ip, av_sock_error_str(s));
    conn_free(c);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    av_h2conn_t *c = arg;
    if (c->lingering) {
        conn_free(c);
        return;
    }
    if (c->nstreams == 0) {
        nghttp2_session_terminate_session(c->ng, NGHTTP2_NO_ERROR);
        conn_send(c);
    }
}

static void conn_free(av_h2conn_t *c)
{
    av_worker_t *w = c->w;
    c->dead = 1;
    /* streams go first: their requests may still hold backend connections */
    h2_stream_t *st;
    while ((st = TAILQ_FIRST(&c->streams)) != NULL) {
        nghttp2_session_set_stream_user_data(c->ng, st->id, NULL);
        stream_free(st);
    }
    nghttp2_session_del(c->ng);
    TAILQ_REMOVE(&w->h2conns, c, link);
    event_free(c->timer);
    av_sock_free(c->sock);
    free(c);
    av_worker_conn_closed(w);
}

void av_h2_accept(av_worker_t *w, av_sock_t *sock, const char *client_ip, int tls)
{
    av_h2conn_t *c = av_calloc(1, sizeof(*c));
    c->w = w;
    c->sock = sock;
    c->tls = tls;
    snprintf(c->client_ip, sizeof(c->client_ip), "%s", client_ip);
    TAILQ_INIT(&c->streams);
    uint64_t now = av_now_ms();
    for (int i = 0; i < H2_M_N; i++)
        c->meter[i] = (h2_bucket_t){h2_meters[i].burst, now};
    c->timer = evtimer_new(w->base, timer_cb, c);
    nghttp2_session_callbacks *cb;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_on_begin_frame_callback(cb, on_begin_frame);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_option *opt;
    nghttp2_option_new(&opt);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_max_send_header_block_length(opt, 64u * 1024u);
    if (nghttp2_session_server_new2(&c->ng, cb, c, opt) != 0)
        av_oom();
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cb);
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, H2_MAX_STREAMS},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2_INITIAL_WINDOW},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)w->cfg->max_header_bytes},
    };
    nghttp2_submit_settings(c->ng, NGHTTP2_FLAG_NONE, iv, AV_NELEMS(iv));
    TAILQ_INSERT_TAIL(&w->h2conns, c, link);
    av_sock_set_write_low(sock, H2_SOCK_LOW);
    av_sock_setcb(sock, read_cb, write_cb, event_cb, c);
    av_sock_read(sock, 1);
    struct timeval tv = {w->cfg->idle_timeout_ms / 1000, (w->cfg->idle_timeout_ms % 1000) * 1000};
    evtimer_add(c->timer, &tv);
    if (evbuffer_get_length(av_sock_input(sock)) > 0)
        av_sock_trigger_read(sock); /* the preface front.c looked at */
    conn_send(c);
}

void av_h2_drain(av_worker_t *w)
{
    av_h2conn_t *c, *next;
    for (c = TAILQ_FIRST(&w->h2conns); c != NULL; c = next) {
        next = TAILQ_NEXT(c, link);
        if (c->goaway_sent)
            continue;
        c->goaway_sent = 1;
        /* streams already open finish; the client opens new ones elsewhere */
        nghttp2_submit_goaway(c->ng, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(c->ng),
                              NGHTTP2_NO_ERROR, NULL, 0);
        conn_send(c); /* nghttp2 ends the session once the last stream closes */
    }
}

void av_h2_close_all(av_worker_t *w)
{
    av_h2conn_t *c;
    while ((c = TAILQ_FIRST(&w->h2conns)) != NULL)
        conn_free(c);
}
