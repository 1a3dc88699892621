/* h1_server.c: one HTTP/1.1 client connection: parse one request at a time
 * (pipelined ones wait in the input buffer), hand it to req, frame the answer. */
#include "h1_server.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <http_parser.h>
#include <stdio.h>
#include <string.h>

#include "av.h"
#include "config.h"
#include "headers.h"
#include "log.h"
#include "req.h"
#include "sock.h"
#include "loop.h"

#define H1_WRITE_LOW_WATER (64u * 1024u)
#define H1_READ_HIGH_WATER (256u * 1024u)

typedef enum { H1_IDLE, H1_READING, H1_WAITING, H1_CLOSING } h1_state_t;

typedef struct {
    char *p;
    size_t len, cap;
} h1_acc_t;

struct av_h1conn_s {
    av_worker_t *w;
    av_sock_t *sock;
    http_parser parser;
    TAILQ_ENTRY(av_h1conn_s) link;
    h1_state_t state;
    av_req_t *req;
    h1_acc_t url, name, value;
    int in_value, headers_done;
    size_t header_bytes;
    int reject_status;
    const char *reject_code;
    int keepalive;      /* the client wants the connection kept */
    int resp_keepalive; /* and this response allows it */
    int chunked, no_body; /* a chunked body's pieces since the last flush are in w->h1_chunk */
    struct event *timer;
    char client_ip[48];
    int tls;
};

static void conn_free(av_h1conn_t *c);
static void read_cb(av_sock_t *s, void *arg);

static int acc_add(h1_acc_t *a, const char *p, size_t n)
{
    av_grow(&a->p, &a->cap, a->len + n + 1, 256);
    memcpy(a->p + a->len, p, n);
    a->len += n;
    a->p[a->len] = '\0';
    return 0;
}

static void arm_timer(av_h1conn_t *c, int64_t ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(c->timer, &tv);
}

/* ---- responding (the client ops) ---- */

static const char *reason(int s)
{
    switch (s) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return s < 300 ? "OK" : s < 400 ? "Redirect" : s < 500 ? "Client Error" : "Server Error";
    }
}

static void respond_head(av_req_t *req, int status, const av_headers_t *hdrs, int64_t clen)
{
    av_h1conn_t *c = req->client_ctx;
    struct evbuffer *out = av_sock_output(c->sock);
    int keep = c->keepalive && !c->w->draining && c->reject_status == 0;
    c->no_body = req->method == HTTP_HEAD || status == 204 || status == 304 || status < 200;
    c->chunked = 0;
    if (clen < 0 && !c->no_body) {
        if (req->http_major == 1 && req->http_minor >= 1)
            c->chunked = 1;
        else
            keep = 0; /* HTTP/1.0: the close ends the body */
    }
    const char *why = reason(status);
    size_t why_len = strlen(why), id_len = strlen(req->id);
    size_t room = 160 + why_len + id_len;
    for (size_t i = 0; i < hdrs->n; i++)
        room += hdrs->v[i].name_len + hdrs->v[i].value_len + 4;
    struct evbuffer_iovec v;
    if (evbuffer_reserve_space(out, (ev_ssize_t)room, &v, 1) != 1)
        av_oom();
    char *p = v.iov_base;
    p = AV_PUT_LIT(p, "HTTP/1.1 ");
    p = av_put_u64(p, (uint64_t)status);
    *p++ = ' ';
    p = av_put(p, why, why_len);
    p = AV_PUT_LIT(p, "\r\n");
    for (size_t i = 0; i < hdrs->n; i++) {
        p = av_put(p, hdrs->v[i].name, hdrs->v[i].name_len);
        p = AV_PUT_LIT(p, ": ");
        p = av_put(p, hdrs->v[i].value, hdrs->v[i].value_len);
        p = AV_PUT_LIT(p, "\r\n");
    }
    if (clen >= 0 && status != 204 && status != 304 && status >= 200) {
        p = AV_PUT_LIT(p, "Content-Length: ");
        p = av_put_u64(p, (uint64_t)clen);
        p = AV_PUT_LIT(p, "\r\n");
    }
    if (c->chunked)
        p = AV_PUT_LIT(p, "Transfer-Encoding: chunked\r\n");
    p = AV_PUT_LIT(p, "X-Request-Id: ");
    p = av_put(p, req->id, id_len);
    p = AV_PUT_LIT(p, "\r\n");
    if (!keep)
        p = AV_PUT_LIT(p, "Connection: close\r\n");
    else if (req->http_minor == 0)
        p = AV_PUT_LIT(p, "Connection: keep-alive\r\n");
    p = AV_PUT_LIT(p, "\r\n");
    v.iov_len = (size_t)(p - (char *)v.iov_base);
    evbuffer_commit_space(out, &v, 1);
    c->resp_keepalive = keep;
}

/* Room before a staged chunk's bytes for its size line: sixteen hex digits and CRLF. */
#define CHUNK_HEAD 18
/* The stage grown past this is let go once sent: an idle worker keeps at most this much. */
#define CHUNK_KEEP (64u * 1024u)

static void flush_out(av_h1conn_t *c);

/* A chunked body's pieces are staged and sent as one chunk at the flush
 * that ends the backend's read (or at the end): a read of twenty events
 * costs one chunk's framing, not twenty; nothing waits past the read. The
 * stage is the worker's, not the connection's, so the bytes copied into it
 * land in memory the last read used, still in the cache; a connection
 * staging while another's chunk waits there flushes that one first. */
static void respond_body(av_req_t *req, const char *data, size_t len)
{
    av_h1conn_t *c = req->client_ctx;
    if (c->no_body || len == 0)
        return;
    if (!c->chunked) {
        evbuffer_add(av_sock_output(c->sock), data, len);
        return;
    }
    av_worker_t *w = c->w;
    if (w->h1_chunk_owner != c) {
        if (w->h1_chunk_owner != NULL)
            flush_out(w->h1_chunk_owner);
        w->h1_chunk_owner = c;
        w->h1_chunk_len = CHUNK_HEAD;
    }
    av_grow(&w->h1_chunk, &w->h1_chunk_cap, w->h1_chunk_len + len + 2, 4096); /* and the CRLF after it */
    memcpy(w->h1_chunk + w->h1_chunk_len, data, len);
    w->h1_chunk_len += len;
}

/* The staged pieces as one chunk: its size line written into the room
 * before them, CRLF after. */
static void send_chunk(av_h1conn_t *c)
{
    av_worker_t *w = c->w;
    if (w->h1_chunk_owner != c)
        return;
    char *p = w->h1_chunk;
    size_t n = w->h1_chunk_len - CHUNK_HEAD, start = CHUNK_HEAD - 2;
    p[CHUNK_HEAD - 2] = '\r';
    p[CHUNK_HEAD - 1] = '\n';
    do {
        p[--start] = "0123456789abcdef"[n & 15];
        n >>= 4;
    } while (n > 0);
    p[w->h1_chunk_len] = '\r';
    p[w->h1_chunk_len + 1] = '\n';
    evbuffer_add(av_sock_output(c->sock), p + start, w->h1_chunk_len + 2 - start);
    w->h1_chunk_owner = NULL;
    w->h1_chunk_len = 0;
    if (w->h1_chunk_cap > CHUNK_KEEP) {
        free(w->h1_chunk);
        w->h1_chunk = NULL;
        w->h1_chunk_cap = 0;
    }
}

/* Writes queued output at once; the socket arms its write event only when
 * the kernel did not take it all (saves two epoll_ctl per response). */
static void flush_out(av_h1conn_t *c)
{
    send_chunk(c);
    av_sock_flush(c->sock);
}

static void flush(av_req_t *req)
{
    flush_out(req->client_ctx);
}

/* Closes once the output is written; never frees synchronously. */
static void close_after_flush(av_h1conn_t *c)
{
    flush_out(c);
    c->state = H1_CLOSING;
    evtimer_del(c->timer);
    av_sock_read(c->sock, 0);
    av_sock_set_write_low(c->sock, 0);
    av_sock_trigger_write(c->sock);
}

static void finish_exchange(av_h1conn_t *c)
{
    av_req_t *req = c->req;
    c->req = NULL;
    av_req_free(req);
    if (!c->resp_keepalive || c->w->draining) {
        close_after_flush(c);
        return;
    }
    c->state = H1_IDLE;
    http_parser_pause(&c->parser, 0);
    arm_timer(c, c->w->cfg->idle_timeout_ms);
    if (evbuffer_get_length(av_sock_input(c->sock)) > 0)
        av_sock_trigger_read(c->sock); /* a pipelined request, parsed from the loop */
}

static void respond_end(av_req_t *req)
{
    av_h1conn_t *c = req->client_ctx;
    send_chunk(c);
    if (c->chunked)
        evbuffer_add(av_sock_output(c->sock), "0\r\n\r\n", 5);
    flush_out(c);
    finish_exchange(c);
}

static void respond_abort(av_req_t *req)
{
    av_h1conn_t *c = req->client_ctx;
    send_chunk(c);
    if (c->chunked && req->stream) {
        /* SSE clients get a last event saying why, and a well-formed end */
        struct evbuffer *ev = evbuffer_new();
        av_req_error_event(req, ev);
        size_t n = evbuffer_get_length(ev);
        struct evbuffer *out = av_sock_output(c->sock);
        evbuffer_add_printf(out, "%zx\r\n", n);
        evbuffer_add_buffer(out, ev);
        evbuffer_add(out, "\r\n0\r\n\r\n", 7);
        evbuffer_free(ev);
    }
    /* anything else: closing without the end marker tells the client it is cut */
    c->resp_keepalive = 0;
    finish_exchange(c);
}

static size_t pending(av_req_t *req)
{
    av_h1conn_t *c = req->client_ctx;
    size_t staged = c->w->h1_chunk_owner == c ? c->w->h1_chunk_len - CHUNK_HEAD : 0;
    return av_sock_pending(c->sock) + staged;
}

static const av_client_ops_t h1_ops = {
    .respond_head = respond_head,
    .respond_body = respond_body,
    .respond_end = respond_end,
    .respond_abort = respond_abort,
    .pending = pending,
    .flush = flush,
};

/* ---- parsing ---- */

static int reject(av_h1conn_t *c, int status, const char *code)
{
    c->reject_status = status;
    c->reject_code = code;
    return -1;
}

static int on_message_begin(http_parser *p)
{
    av_h1conn_t *c = p->data;
    c->req = av_req_new(c->w, &h1_ops, c);
    memcpy(c->req->client_ip, c->client_ip, sizeof(c->client_ip));
    c->req->tls = c->tls;
    c->url.len = c->name.len = c->value.len = 0;
    c->in_value = c->headers_done = 0;
    c->header_bytes = 0;
    c->state = H1_READING;
    arm_timer(c, c->w->cfg->header_timeout_ms);
    return 0;
}

static int count_header_bytes(av_h1conn_t *c, size_t n)
{
    c->header_bytes += n;
    return c->header_bytes > (size_t)c->w->cfg->max_header_bytes;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    av_h1conn_t *c = p->data;
    if (count_header_bytes(c, n))
        return reject(c, 431, "headers_too_large");
    return acc_add(&c->url, at, n);
}

static int commit_header(av_h1conn_t *c)
{
    if (c->name.len == 0)
        return 0;
    if (c->req->headers.n >= (size_t)c->w->cfg->max_headers)
        return reject(c, 431, "too_many_headers");
    if (!av_header_name_valid(c->name.p, c->name.len))
        return reject(c, 400, "bad_header_name");
    if (!av_header_value_valid(c->value.p, c->value.len))
        return reject(c, 400, "bad_header_value");
    av_headers_add(c->req->arena, &c->req->headers, c->name.p, c->name.len, c->value.p ? c->value.p : "",
                   c->value.len);
    c->name.len = c->value.len = 0;
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    av_h1conn_t *c = p->data;
    if (count_header_bytes(c, n))
        return reject(c, 431, "headers_too_large");
    if (c->in_value) {
        if (commit_header(c) != 0)
            return -1;
        c->in_value = 0;
    }
    return acc_add(&c->name, at, n);
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    av_h1conn_t *c = p->data;
    if (count_header_bytes(c, n))
        return reject(c, 431, "headers_too_large");
    c->in_value = 1;
    return acc_add(&c->value, at, n);
}

static int on_headers_complete(http_parser *p)
{
    av_h1conn_t *c = p->data;
    av_req_t *req = c->req;
    if (commit_header(c) != 0)
        return -1;
    c->headers_done = 1;
    req->method = p->method;
    req->method_str = http_method_str((enum http_method)p->method);
    req->target = av_arena_strndup(req->arena, c->url.p ? c->url.p : "/", c->url.len);
    req->target_len = c->url.len;
    req->http_major = p->http_major;
    req->http_minor = p->http_minor;
    const av_header_t *host = av_headers_get(&req->headers, "host");
    req->host = host ? host->value : NULL;
    c->keepalive = http_should_keep_alive(p);
    av_req_set_id(req);
    if (req->target_len == 0 || req->target[0] != '/')
        return reject(c, 400, "bad_request_target");
    size_t hosts = 0;
    for (size_t i = 0; i < req->headers.n; i++)
        hosts += av_streq_ci(req->headers.v[i].name, req->headers.v[i].name_len, "host");
    if (hosts > 1 || (hosts == 0 && p->http_minor >= 1)) /* RFC 9112 3.2: exactly one, from HTTP/1.1 on */
        return reject(c, 400, hosts ? "duplicate_host" : "missing_host");
    if ((p->flags & F_CONTENTLENGTH) && p->content_length > (uint64_t)c->w->cfg->max_body_bytes)
        return reject(c, 413, "body_too_large");
    const av_header_t *expect = av_headers_get(&req->headers, "expect");
    if (expect != NULL) {
        if (!av_streq_ci(expect->value, expect->value_len, "100-continue"))
            return reject(c, 417, "expectation_failed");
        if (p->http_minor >= 1) {
            evbuffer_add(av_sock_output(c->sock), "HTTP/1.1 100 Continue\r\n\r\n", 25);
            flush_out(c);
        }
    }
    arm_timer(c, c->w->cfg->idle_timeout_ms); /* the body may take a while, but not forever idle */
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    av_h1conn_t *c = p->data;
    if (evbuffer_get_length(c->req->body) + n > (size_t)c->w->cfg->max_body_bytes)
        return reject(c, 413, "body_too_large");
    evbuffer_add(c->req->body, at, n);
    return 0;
}

static int on_message_complete(http_parser *p)
{
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings h1_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* Answers a request that could not be read whole, then closes. */
static void respond_reject(av_h1conn_t *c, int status, const char *code, const char *why)
{
    if (c->req == NULL) {
        c->req = av_req_new(c->w, &h1_ops, c);
        memcpy(c->req->client_ip, c->client_ip, sizeof(c->client_ip));
        c->req->tls = c->tls;
    }
    av_req_t *req = c->req;
    req->http_major = 1;
    req->http_minor = 1;
    c->reject_status = status;
    c->state = H1_WAITING;
    evtimer_del(c->timer);
    av_req_reject(req, status, code, why);
}

static void reject_parse(av_h1conn_t *c, enum http_errno e)
{
    switch (c->reject_status) {
    case 413: {
        char why[128];
        snprintf(why, sizeof(why), "request body exceeds client.max_body_bytes (%lld bytes)",
                 (long long)c->w->cfg->max_body_bytes);
        respond_reject(c, 413, c->reject_code, why);
        return;
    }
    case 431:
        respond_reject(c, 431, c->reject_code,
                       strcmp(c->reject_code, "too_many_headers") == 0
                           ? "too many request headers (client.max_headers)"
                           : "request headers exceed client.max_header_bytes");
        return;
    case 417:
        respond_reject(c, 417, c->reject_code, "only Expect: 100-continue is supported");
        return;
    case 400: {
        static const struct {
            const char *code, *why;
        } reasons[] = {
            {"bad_request_target", "the request target must be an absolute path"},
            {"bad_header_name", "a header name is not a token (no spaces, colons or control characters)"},
            {"bad_header_value", "a header value holds a control character"},
            {"duplicate_host", "the request has more than one Host header"},
            {"missing_host", "an HTTP/1.1 request needs a Host header"},
        };
        const char *why = "bad request";
        for (size_t i = 0; i < AV_NELEMS(reasons); i++)
            if (strcmp(reasons[i].code, c->reject_code) == 0)
                why = reasons[i].why;
        respond_reject(c, 400, c->reject_code, why);
        return;
    }
    default: {
        char why[160];
        snprintf(why, sizeof(why), "malformed HTTP/1.1 request: %s", http_errno_description(e));
        respond_reject(c, 400, "bad_request", why);
    }
    }
}

static void read_cb(av_sock_t *s, void *arg)
{
    av_h1conn_t *c = arg;
    struct evbuffer *in = av_sock_input(s);
    while (c->state == H1_IDLE || c->state == H1_READING) {
        struct evbuffer_iovec v;
        if (evbuffer_get_length(in) == 0 || evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            return;
        size_t n = http_parser_execute(&c->parser, &h1_settings, v.iov_base, v.iov_len);
        evbuffer_drain(in, n);
        enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
        if (e == HPE_PAUSED) {
            c->state = H1_WAITING;
            evtimer_del(c->timer);
            av_req_run(c->req); /* may answer at once; c stays valid (closing is deferred) */
            return;
        }
        if (e != HPE_OK) {
            reject_parse(c, e);
            return;
        }
    }
}

static void write_cb(av_sock_t *s, void *arg)
{
    av_h1conn_t *c = arg;
    if (c->state == H1_CLOSING) {
        if (av_sock_pending(s) == 0)
            conn_free(c);
        return;
    }
    if (c->state == H1_WAITING && c->req != NULL)
        av_req_client_drained(c->req);
}

static void event_cb(av_sock_t *s, int what, void *arg)
{
    av_h1conn_t *c = arg;
    if (c->req != NULL && c->state == H1_WAITING)
        av_req_client_gone(c->req);
    conn_free(c);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    av_h1conn_t *c = arg;
    if (c->state == H1_READING) {
        respond_reject(c, 408, "request_timeout",
                       c->headers_done ? "the request body did not arrive in time (client.idle_timeout_ms)"
                                       : "the request headers did not arrive in time (client.header_timeout_ms)");
        c->resp_keepalive = 0;
        return;
    }
    if (c->state == H1_IDLE)
        conn_free(c);
}

static void conn_free(av_h1conn_t *c)
{
    av_worker_t *w = c->w;
    if (c->req != NULL)
        av_req_free(c->req);
    TAILQ_REMOVE(&w->h1conns, c, link);
    event_free(c->timer);
    av_sock_free(c->sock);
    free(c->url.p);
    free(c->name.p);
    free(c->value.p);
    if (w->h1_chunk_owner == c)
        w->h1_chunk_owner = NULL; /* its staged bytes go with it */
    free(c);
    av_worker_conn_closed(w);
}

void av_h1_accept(av_worker_t *w, av_sock_t *sock, const char *client_ip, int tls)
{
    av_h1conn_t *c = av_calloc(1, sizeof(*c));
    c->w = w;
    c->tls = tls;
    snprintf(c->client_ip, sizeof(c->client_ip), "%s", client_ip);
    c->sock = sock;
    c->timer = evtimer_new(w->base, timer_cb, c);
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    c->state = H1_IDLE;
    av_sock_set_read_high(c->sock, H1_READ_HIGH_WATER);
    av_sock_set_write_low(c->sock, H1_WRITE_LOW_WATER);
    /* a client that takes none of its answer for idle_timeout_ms is gone: it
     * would hold its paused backend exchange (and memory) for ever */
    av_sock_set_timeouts(c->sock, 0, w->cfg->idle_timeout_ms);
    av_sock_setcb(c->sock, read_cb, write_cb, event_cb, c);
    av_sock_read(c->sock, 1);
    TAILQ_INSERT_TAIL(&w->h1conns, c, link);
    arm_timer(c, w->cfg->idle_timeout_ms);
    if (evbuffer_get_length(av_sock_input(sock)) > 0)
        av_sock_trigger_read(sock); /* the bytes front.c looked at */
}

void av_h1_drain(av_worker_t *w)
{
    av_h1conn_t *c = TAILQ_FIRST(&w->h1conns);
    while (c != NULL) {
        av_h1conn_t *next = TAILQ_NEXT(c, link);
        if (c->state == H1_IDLE && evbuffer_get_length(av_sock_input(c->sock)) == 0)
            conn_free(c);
        c = next;
    }
}

void av_h1_close_all(av_worker_t *w)
{
    av_h1conn_t *c;
    while ((c = TAILQ_FIRST(&w->h1conns)) != NULL) {
        if (c->req != NULL && c->state == H1_WAITING)
            av_req_client_gone(c->req);
        conn_free(c);
    }
    free(w->h1_chunk);
    w->h1_chunk = NULL;
    w->h1_chunk_cap = 0;
}
