/* h2_server.c: HTTP/2 to clients (h2 over TLS, h2c with prior knowledge) on
 * an nghttp2 server session. Each stream feeds the same protocol-neutral
 * request as HTTP/1.1. Frames are produced with mem_send into the socket's
 * output and consumed with mem_recv from its input; sending stops while the
 * socket holds more than a high mark and resumes as the kernel takes it.
 * A stream's response body waits in the stream's own buffer until nghttp2
 * takes it within the client's flow-control window; the backend is paused
 * while that buffer is above the client high mark (upstream.c), so a slow
 * reader slows its backend stream instead of growing memory.
 *
 * A request must arrive whole within the client timeouts, as over HTTP/1.1:
 * its header block within header_timeout_ms of its first frame, its body
 * (up to END_STREAM, on DATA or trailers) within idle_timeout_ms of the end
 * of its head; otherwise it is answered 408 and the stream reset. What the
 * requests of one connection hold (heads and bodies) is bounded too, and a
 * connection that has no stream, or whose client takes nothing, for
 * idle_timeout_ms is closed with GOAWAY. */
#include "h2_server.h"

#include <ctype.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <http_parser.h>
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "arena.h"
#include "av.h"
#include "config.h"
#include "headers.h"
#include "log.h"
#include "req.h"
#include "sock.h"
#include "upstream.h"
#include "loop.h"

#define H2_SOCK_HIGH (64u * 1024u) /* stop producing frames above this much unwritten */
#define H2_SOCK_LOW (16u * 1024u)
#define H2_MAX_STREAMS 128
#define H2_INITIAL_WINDOW (1u << 20)
#define H2_HELD_FLOOR (1u << 20) /* a connection may hold at least this much request body */
#define H2_CLOSE_GRACE_MS 2000   /* after the last GOAWAY, for a client that does not read it */
#define H2_IDS_SEEN 512          /* stream ids below the highest known as opened by the client or skipped */

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
    /* one timer: the streams' deadlines, idleness, progress, the close */
    struct event *timer;
    uint64_t wake_at;     /* when the timer fires; 0: not armed */
    uint64_t idle_at;     /* no stream since: GOAWAY at this time */
    uint64_t progress_ms; /* the client last took response bytes */
    uint64_t kill_at;     /* the GOAWAY that ends the session is out: closed by then regardless */
    int tls, dead, in_io, goaway_sent, lingering;
    int failed;           /* ended for the client's fault: its input is ignored */
    h2_bucket_t meter[H2_M_N];
    /* the header block being received: wire bytes and frames */
    size_t block_bytes, block_frames;
    int32_t last_stream;                  /* highest stream id the client opened */
    uint64_t ids_seen[H2_IDS_SEEN / 64];  /* bit i: stream last_stream - 2i was opened by a HEADERS */
    size_t held;                          /* request heads and bodies held by unanswered streams */
    /* a SETTINGS frame being received: the largest stream send window and the initial window before it */
    int64_t settings_max_window;
    uint32_t settings_initial_window;
    char client_ip[48];
};

struct h2_stream_s {
    av_h2conn_t *c;
    int32_t id;
    av_req_t *req;                  /* NULL once answered */
    struct evbuffer *out;           /* response body nghttp2 has not taken yet */
    TAILQ_ENTRY(h2_stream_s) link;
    size_t header_bytes, nheaders;
    size_t held;          /* this stream's share of c->held */
    uint64_t deadline_ms; /* the request must be whole by then; 0: it is, or no longer matters */
    int reject_status;
    const char *reject_code, *reject_why;
    int no_body, eof, deferred, ran, stream_sse;
    int head_done;        /* the request's header block ended */
    int req_done;         /* the client's END_STREAM arrived */
    int dropped;          /* refused: its frames are ignored until nghttp2 closes it */
};

static void conn_send(av_h2conn_t *c);
static void conn_free(av_h2conn_t *c);
static void conn_arm(av_h2conn_t *c, uint64_t at);

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
    st->c->progress_ms = av_now_ms(); /* the socket had room: the client reads */
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

/* Request bytes a stream holds count against its connection's budget until
 * the request is freed. */
static void hold(h2_stream_t *st, size_t n)
{
    st->held += n;
    st->c->held += n;
}

static void release(h2_stream_t *st)
{
    st->c->held -= st->held;
    st->held = 0;
}

/* The request is answered (or given up); the stream lives on until nghttp2
 * has sent what is queued and closes it. */
static void finish(h2_stream_t *st)
{
    av_req_t *req = st->req;
    st->req = NULL;
    release(st);
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
        av_req_error_event(req, st->out);
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
        release(st);
        av_req_free(st->req);
    }
    TAILQ_REMOVE(&c->streams, st, link);
    c->nstreams--;
    evbuffer_free(st->out);
    free(st);
    if (c->nstreams == 0 && !c->dead && !c->lingering) {
        c->idle_at = av_now_ms() + (uint64_t)c->w->cfg->idle_timeout_ms;
        conn_arm(c, c->idle_at);
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

/* The request is answered with status (once it runs) instead of going to a backend. */
static void reject(h2_stream_t *st, int status, const char *code, const char *why)
{
    st->reject_status = status;
    st->reject_code = code;
    st->reject_why = why;
}

static void stream_run(h2_stream_t *st)
{
    av_req_t *req = st->req;
    st->ran = 1;
    st->deadline_ms = 0;
    if (st->reject_status != 0) {
        av_req_reject(req, st->reject_status, st->reject_code, st->reject_why);
        return;
    }
    av_req_run(req);
}

/* What one connection may hold of requests not yet answered, heads and
 * bodies: one request as large as the limits allow, and room beside it.
 * Past it a stream is refused rather than memory growing with the streams. */
static size_t held_max(const av_config_t *cfg)
{
    size_t body = (size_t)cfg->max_body_bytes;
    return (body > H2_HELD_FLOOR ? body : H2_HELD_FLOOR) + (size_t)cfg->max_header_bytes;
}

/* Resets a stream the connection has no room for; REFUSED_STREAM tells the
 * client nothing was done with it, so it may send it again. */
static void refuse(h2_stream_t *st)
{
    av_h2conn_t *c = st->c;
    AV_INFO("client %s: HTTP/2 stream %d refused: the connection's requests hold more than %zu bytes", c->client_ip,
            st->id, held_max(c->w->cfg));
    st->dropped = 1;
    st->deadline_ms = 0;
    evbuffer_drain(st->req->body, evbuffer_get_length(st->req->body));
    release(st);
    nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_REFUSED_STREAM);
}

/* The stream's request did not arrive in time: 408, as HTTP/1.1 answers. A
 * header block that never ended stalls the whole connection (nothing may
 * come between its frames), so that one also ends the connection, gently. */
static void expire(h2_stream_t *st)
{
    av_h2conn_t *c = st->c;
    if (st->head_done)
        reject(st, 408, "request_timeout", "the request body did not arrive in time (client.idle_timeout_ms)");
    else
        reject(st, 408, "request_timeout", "the request headers did not arrive in time (client.header_timeout_ms)");
    stream_run(st);
    if (!st->head_done && !c->goaway_sent) {
        c->goaway_sent = 1;
        nghttp2_submit_goaway(c->ng, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(c->ng),
                              NGHTTP2_NO_ERROR, NULL, 0);
    }
}

/* ---- defences ---- */

/* Ends the session with a GOAWAY of code; the connection closes once it is
 * written, or H2_CLOSE_GRACE_MS later if the client does not read it. */
static void conn_terminate(av_h2conn_t *c, uint32_t code)
{
    nghttp2_session_terminate_session(c->ng, code);
    if (c->kill_at == 0) {
        c->kill_at = av_now_ms() + H2_CLOSE_GRACE_MS;
        conn_arm(c, c->kill_at);
    }
}

/* Ends the connection for a fault of the client's: GOAWAY with code, input ignored from here on. */
static void conn_error(av_h2conn_t *c, uint32_t code, const char *why)
{
    if (c->failed)
        return;
    c->failed = 1;
    AV_INFO("client %s: HTTP/2 connection ended with %s: %s", c->client_ip, nghttp2_http2_strerror(code), why);
    conn_terminate(c, code);
}

/* Ends the connection for abuse: GOAWAY ENHANCE_YOUR_CALM. */
static void calm_down(av_h2conn_t *c, const char *why)
{
    conn_error(c, NGHTTP2_ENHANCE_YOUR_CALM, why);
}

/* A new highest stream id, odd (the client's): the ids it skipped stay unmarked. */
static void ids_open(av_h2conn_t *c, int32_t id)
{
    uint64_t *w = c->ids_seen, shift = (uint64_t)(id - c->last_stream) / 2;
    const size_t n = H2_IDS_SEEN / 64;
    size_t ws = (size_t)(shift / 64);
    unsigned bs = (unsigned)(shift % 64);
    for (size_t i = n; i-- > 0;) {
        uint64_t v = shift < H2_IDS_SEEN && i >= ws ? w[i - ws] << bs : 0;
        if (shift < H2_IDS_SEEN && bs != 0 && i >= ws + 1)
            v |= w[i - ws - 1] >> (64 - bs);
        w[i] = v;
    }
    w[0] |= 1;
}

/* Whether the client opened stream id (not above last_stream) before, as
 * opposed to skipping it: the latest ids are remembered here (nghttp2 forgets
 * the streams it refused or ignored); older ones as far as nghttp2 knows them. */
static int ids_opened(av_h2conn_t *c, int32_t id)
{
    uint64_t d = (uint64_t)(c->last_stream - id) / 2;
    if (d < H2_IDS_SEEN)
        return (int)(c->ids_seen[d / 64] >> (d % 64)) & 1;
    nghttp2_stream *s = nghttp2_session_find_stream(c->ng, id);
    return s != NULL && nghttp2_stream_get_state(s) != NGHTTP2_STREAM_STATE_IDLE;
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
            if (hd->stream_id & 1) /* an even one is nghttp2's connection error */
                ids_open(c, hd->stream_id);
            c->last_stream = hd->stream_id;
            /* nghttp2 refuses the stream; a client that keeps trying is a flood */
            if (c->nstreams >= H2_MAX_STREAMS)
                meter(c, H2_M_REFUSED);
        } else if ((hd->stream_id & 1) && !ids_opened(c, hd->stream_id)) {
            /* nghttp2 ignores such a header block; RFC 9113 5.1.1 makes it a connection error */
            conn_error(c, NGHTTP2_PROTOCOL_ERROR, "HEADERS open a stream with a lower id than one already opened");
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
        if (!(hd->flags & NGHTTP2_FLAG_ACK)) {
            meter(c, H2_M_SETTINGS);
            /* what a new SETTINGS_INITIAL_WINDOW_SIZE will be added to (checked in on_settings) */
            c->settings_initial_window =
                nghttp2_session_get_remote_settings(c->ng, NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE);
            c->settings_max_window = INT32_MIN;
            h2_stream_t *st;
            TAILQ_FOREACH(st, &c->streams, link) {
                int32_t win = nghttp2_session_get_stream_remote_window_size(c->ng, st->id);
                if (win > c->settings_max_window)
                    c->settings_max_window = win;
            }
        }
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
    st->deadline_ms = av_now_ms() + (uint64_t)c->w->cfg->header_timeout_ms;
    st->out = evbuffer_new();
    st->req = av_req_new(c->w, &h2_ops, st);
    memcpy(st->req->client_ip, c->client_ip, sizeof(c->client_ip));
    st->req->tls = c->tls;
    st->req->http_major = 2;
    st->req->http_minor = 0;
    st->req->method = -1;
    TAILQ_INSERT_TAIL(&c->streams, st, link);
    c->nstreams++;
    conn_arm(c, st->deadline_ms);
    nghttp2_session_set_stream_user_data(ng, st->id, st);
    return 0;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
                     const uint8_t *value, size_t vlen, uint8_t flags, void *user)
{
    (void)flags;
    av_h2conn_t *c = user;
    if (f->hd.type != NGHTTP2_HEADERS || c->failed)
        return 0;
    h2_stream_t *st = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    if (st == NULL)
        return 0;
    const av_config_t *cfg = c->w->cfg;
    /* counted decoded, as HTTP/1.1 counts them: an HPACK-compressed flood
     * meets the same limit; trailers count on with the head */
    size_t cost = nlen + vlen + 4;
    st->header_bytes += cost;
    st->nheaders++;
    if (st->header_bytes > 4 * (size_t)cfg->max_header_bytes || st->nheaders > 4 * (size_t)cfg->max_headers) {
        /* far past the SETTINGS_MAX_HEADER_LIST_SIZE we announced: an HPACK bomb */
        calm_down(c, "header list decodes far past the announced limit (HPACK bomb)");
        return 0;
    }
    /* trailers are dropped: a backend request is sent whole, with a content-length */
    if (f->headers.cat != NGHTTP2_HCAT_REQUEST || st->req == NULL || st->ran || st->dropped || st->reject_status != 0)
        return 0;
    av_req_t *req = st->req;
    if (st->header_bytes > (size_t)cfg->max_header_bytes || req->headers.n >= (size_t)cfg->max_headers) {
        if (st->header_bytes > (size_t)cfg->max_header_bytes)
            reject(st, 431, "headers_too_large", "request headers exceed client.max_header_bytes");
        else
            reject(st, 431, "too_many_headers", "too many request headers (client.max_headers)");
        return 0;
    }
    if (c->held + cost > held_max(cfg)) {
        refuse(st);
        return 0;
    }
    hold(st, cost);
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
    if (nlen == 4 && memcmp(n, "host", 4) == 0 && req->host != NULL) {
        /* RFC 9113 8.3.1: a Host naming another authority makes the request malformed */
        if (strlen(req->host) != vlen || strncasecmp(req->host, v, vlen) != 0)
            reject(st, 400, "bad_request", "the Host header names another authority than :authority");
        return 0;
    }
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
    st->head_done = 1;
    if (st->reject_status == 0) {
        if (req->method_str == NULL || req->target == NULL || req->target_len == 0 || req->target[0] != '/') {
            reject(st, 400, "bad_request", "malformed HTTP/2 request: the target must be an absolute path");
        } else if (req->method < 0) {
            reject(st, 501, "method_not_supported", "malformed HTTP/2 request: unknown method");
        } else {
            const av_header_t *cl = av_headers_get(&req->headers, "content-length");
            if (cl != NULL && strtoll(cl->value, NULL, 10) > c->w->cfg->max_body_bytes)
                reject(st, 413, "body_too_large", "request body exceeds client.max_body_bytes");
        }
    }
    if (end_stream || st->reject_status != 0) {
        stream_run(st);
        return;
    }
    /* the body, as over HTTP/1.1: client.idle_timeout_ms from the end of the head */
    st->deadline_ms = av_now_ms() + (uint64_t)c->w->cfg->idle_timeout_ms;
    conn_arm(c, st->deadline_ms);
}

/* RFC 9113 6.9.2: a SETTINGS_INITIAL_WINDOW_SIZE that takes a stream's send
 * window past 2^31-1 is a connection error; nghttp2 1.52 only resets the
 * stream. Checked against the largest window before the frame (on_begin_frame). */
static void on_settings(av_h2conn_t *c, const nghttp2_settings *f)
{
    int64_t top = c->settings_max_window, initial = c->settings_initial_window;
    for (size_t i = 0; i < f->niv; i++) {
        if (f->iv[i].settings_id != NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE || top == INT32_MIN)
            continue;
        top += (int64_t)f->iv[i].value - initial;
        initial = f->iv[i].value;
        if (top > NGHTTP2_MAX_WINDOW_SIZE) {
            conn_error(c, NGHTTP2_FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE overflows a stream's window");
            return;
        }
    }
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *user)
{
    av_h2conn_t *c = user;
    if (f->hd.type == NGHTTP2_SETTINGS && !(f->hd.flags & NGHTTP2_FLAG_ACK))
        on_settings(c, &f->settings);
    if (f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA)
        return 0;
    h2_stream_t *st = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    if (st == NULL)
        return 0;
    int end_stream = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    if (end_stream)
        st->req_done = 1;
    if (st->req == NULL || st->ran || st->dropped)
        return 0;
    if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST)
        headers_done(st, end_stream);
    else if (end_stream)
        stream_run(st); /* END_STREAM on the last DATA frame or on trailers */
    return 0;
}

/* A response ended before its request did (a rejection, a timeout): RFC
 * 9113 8.1 lets the server tell the client to stop sending with
 * RST_STREAM NO_ERROR, which also frees the stream at once. */
static int on_frame_send(nghttp2_session *ng, const nghttp2_frame *f, void *user)
{
    (void)user;
    if ((f->hd.type != NGHTTP2_DATA && f->hd.type != NGHTTP2_HEADERS) || !(f->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    h2_stream_t *st = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    if (st != NULL && !st->req_done)
        nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_NO_ERROR);
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
    if (st == NULL || st->req == NULL || st->ran || st->dropped)
        return 0;
    const av_config_t *cfg = c->w->cfg;
    if (evbuffer_get_length(st->req->body) + len > (size_t)cfg->max_body_bytes) {
        reject(st, 413, "body_too_large", "request body exceeds client.max_body_bytes");
        stream_run(st);
        return 0;
    }
    if (c->held + len > held_max(cfg)) {
        refuse(st);
        return 0;
    }
    evbuffer_add(st->req->body, data, len);
    hold(st, len);
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

/* A frame nghttp2 could not send: a response head too large for a header
 * block (a backend's 5,000 headers) left its stream open and the client
 * waiting. The stream is reset and the request logged as the backend's
 * fault. */
static int on_frame_not_send(nghttp2_session *ng, const nghttp2_frame *f, int lib_error, void *user)
{
    av_h2conn_t *c = user;
    if (f->hd.type != NGHTTP2_HEADERS)
        return 0;
    h2_stream_t *st = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    AV_INFO("client %s: HTTP/2 stream %d: the response head could not be sent: %s", c->client_ip,
            f->hd.stream_id, nghttp2_strerror(lib_error));
    if (st != NULL && st->req != NULL && st->req->error == NULL) {
        st->req->error = AV_ERR_BACKEND_PROTOCOL;
        st->req->status = 502;
    }
    nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_INTERNAL_ERROR);
    return 0;
}

/* ---- the connection ---- */

static void conn_send(av_h2conn_t *c)
{
    if (c->dead || c->in_io)
        return; /* the I/O loop sends once the callbacks return */
    for (;;) {
        size_t made = 0;
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
            made += (size_t)n;
        }
        av_sock_flush(c->sock);
        /* the kernel took all of it: no write event will come to ask for the
         * rest, so it is made now (a 200 KB answer once stopped at the mark) */
        if (c->dead || made == 0 || av_sock_pending(c->sock) > 0 || !nghttp2_session_want_write(c->ng))
            break;
    }
    if (c->dead || (!nghttp2_session_want_read(c->ng) && !nghttp2_session_want_write(c->ng) &&
                    av_sock_pending(c->sock) == 0)) {
        c->dead = 1;
        if (av_sock_pending(c->sock) == 0)
            av_sock_trigger_write(c->sock); /* freed from the loop, not from under a caller */
        else if (c->kill_at == 0) { /* closed anyway if the client never reads it */
            c->kill_at = av_now_ms() + H2_CLOSE_GRACE_MS;
            conn_arm(c, c->kill_at);
        }
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
        if (c->failed) {
            evbuffer_drain(in, evbuffer_get_length(in));
            break;
        }
        if (n < 0) {
            /* a bad preface too: RFC 9113 3.4 makes it a PROTOCOL_ERROR, and a
             * client that is not speaking HTTP/2 is told so at once */
            conn_error(c, n == NGHTTP2_ERR_FLOODED ? NGHTTP2_ENHANCE_YOUR_CALM : NGHTTP2_PROTOCOL_ERROR,
                       nghttp2_strerror((int)n));
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
    c->progress_ms = av_now_ms(); /* the kernel took what was waiting: the client reads */
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

/* Arms the timer for at, unless it fires sooner already. */
static void conn_arm(av_h2conn_t *c, uint64_t at)
{
    if (c->lingering || (c->wake_at != 0 && c->wake_at <= at))
        return;
    uint64_t now = av_now_ms(), ms = at > now ? at - now : 0;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    c->wake_at = at;
    evtimer_add(c->timer, &tv);
}

/* The client takes nothing of what waits for it: the socket is backed up,
 * or a response waits for flow-control window the client does not open. */
static int client_stalled(av_h2conn_t *c)
{
    if (av_sock_pending(c->sock) > 0)
        return 1;
    int conn_shut = nghttp2_session_get_remote_window_size(c->ng) <= 0;
    h2_stream_t *st;
    TAILQ_FOREACH(st, &c->streams, link) {
        if (evbuffer_get_length(st->out) > 0 &&
            (conn_shut || nghttp2_session_get_stream_remote_window_size(c->ng, st->id) <= 0))
            return 1;
    }
    return 0;
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    av_h2conn_t *c = arg;
    uint64_t now = av_now_ms();
    c->wake_at = 0;
    if (c->lingering || (c->kill_at != 0 && now >= c->kill_at)) {
        conn_free(c);
        return;
    }
    if (c->kill_at != 0) {
        conn_arm(c, c->kill_at);
        return;
    }
    if (c->dead)
        return; /* write_cb closes it */
    uint64_t idle = (uint64_t)c->w->cfg->idle_timeout_ms, next = UINT64_MAX;
    /* answers go out once, after the loop: nothing closes a stream under it */
    c->in_io = 1;
    h2_stream_t *st, *st_next;
    for (st = TAILQ_FIRST(&c->streams); st != NULL; st = st_next) {
        st_next = TAILQ_NEXT(st, link);
        if (st->deadline_ms != 0 && st->deadline_ms <= now && st->req != NULL && !st->ran && !st->dropped)
            expire(st);
        else if (st->deadline_ms != 0 && st->deadline_ms < next)
            next = st->deadline_ms;
    }
    c->in_io = 0;
    if (c->nstreams == 0 && now >= c->idle_at) {
        conn_terminate(c, NGHTTP2_NO_ERROR);
    } else if (c->nstreams > 0 && now >= c->progress_ms + idle && client_stalled(c)) {
        AV_INFO("client %s: HTTP/2 connection closed: the client took nothing for %llu ms (client.idle_timeout_ms)",
                c->client_ip, (unsigned long long)(now - c->progress_ms));
        conn_terminate(c, NGHTTP2_NO_ERROR);
    } else if (c->nstreams == 0) {
        next = c->idle_at < next ? c->idle_at : next;
    } else {
        /* looked at again when the client could first count as stalled */
        uint64_t check = c->progress_ms + idle > now + idle / 4 ? c->progress_ms + idle : now + idle / 4;
        next = check < next ? check : next;
    }
    conn_send(c);
    if (next != UINT64_MAX && c->kill_at == 0)
        conn_arm(c, next);
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
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
    nghttp2_session_callbacks_set_on_frame_not_send_callback(cb, on_frame_not_send);
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
    c->progress_ms = av_now_ms();
    c->idle_at = c->progress_ms + (uint64_t)w->cfg->idle_timeout_ms;
    conn_arm(c, c->idle_at);
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
