/* sim_h1.c: aviary-sim's HTTP/1.1 side: http-parser in, keep-alive, one
 * request at a time, streamed answers sent chunked. */
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>

#include "av.h"
#include "sim.h"

typedef struct {
    sim_req_t r; /* first: the request is the connection's only one at a time */
    struct bufferevent *bev;
    http_parser parser;
    int keepalive, chunked, in_value, closing;
    /* the header being read: http-parser may hand names and values in pieces */
    char field[256], value[8192];
    size_t field_len, value_len;
} h1_conn_t;

static void read_cb(struct bufferevent *bev, void *arg);

static void conn_free(h1_conn_t *c)
{
    c->r.sim->stats.connections_open--;
    sim_req_cleanup(&c->r);
    bufferevent_free(c->bev);
    free(c);
}

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Payload Too Large";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    default: return "Status";
    }
}

static void head(sim_req_t *r, int status, const char *ctype, long long clen)
{
    h1_conn_t *c = (h1_conn_t *)r;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n", status, reason(status), ctype);
    c->chunked = clen < 0;
    if (clen >= 0)
        evbuffer_add_printf(out, "Content-Length: %lld\r\n", clen);
    else
        evbuffer_add(out, "Transfer-Encoding: chunked\r\nCache-Control: no-cache\r\n", 53);
    if (status == 429)
        evbuffer_add(out, "Retry-After: 1\r\n", 16);
    const char *idh = sim_req_id_header(r);
    if (idh != NULL)
        evbuffer_add_printf(out, "%s: %s\r\n", idh, r->rid);
    if (!c->keepalive)
        evbuffer_add(out, "Connection: close\r\n", 19);
    evbuffer_add(out, "\r\n", 2);
}

static void data(sim_req_t *r, struct evbuffer *b)
{
    h1_conn_t *c = (h1_conn_t *)r;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    size_t n = evbuffer_get_length(b);
    if (n == 0)
        return;
    if (c->chunked)
        evbuffer_add_printf(out, "%zx\r\n", n);
    evbuffer_add_buffer(out, b);
    if (c->chunked)
        evbuffer_add(out, "\r\n", 2);
}

static void write_done_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    conn_free(arg);
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    (void)what;
    conn_free(arg);
}

static void close_after_flush(h1_conn_t *c)
{
    c->closing = 1;
    bufferevent_disable(c->bev, EV_READ);
    bufferevent_setcb(c->bev, NULL, write_done_cb, event_cb, c);
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
        conn_free(c);
}

static void end(sim_req_t *r)
{
    h1_conn_t *c = (h1_conn_t *)r;
    if (c->chunked)
        evbuffer_add(bufferevent_get_output(c->bev), "0\r\n\r\n", 5);
    if (!c->keepalive) {
        close_after_flush(c);
        return;
    }
    sim_req_reset(&c->r);
    http_parser_pause(&c->parser, 0);
    read_cb(c->bev, c);
}

static void drop(sim_req_t *r)
{
    close_after_flush((h1_conn_t *)r);
}

static const sim_proto_t h1_proto = {head, data, end, drop};

/* ---- request parsing ---- */

static int on_message_begin(http_parser *p)
{
    h1_conn_t *c = p->data;
    sim_req_reset(&c->r);
    c->field_len = c->value_len = 0;
    c->in_value = 0;
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    h1_conn_t *c = p->data;
    sim_req_t *r = &c->r;
    if (r->urllen + n >= sizeof(r->url))
        return -1;
    memcpy(r->url + r->urllen, at, n);
    r->urllen += n;
    r->url[r->urllen] = '\0';
    return 0;
}

static int header_done(h1_conn_t *c)
{
    if (c->field_len == 0)
        return 0;
    int rv = sim_req_add_header(&c->r, c->field, c->field_len, c->value, c->value_len);
    c->field_len = c->value_len = 0;
    return rv;
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    h1_conn_t *c = p->data;
    if (c->in_value) {
        if (header_done(c) != 0)
            return -1;
        c->in_value = 0;
    }
    if (c->field_len + n > sizeof(c->field))
        return -1;
    memcpy(c->field + c->field_len, at, n);
    c->field_len += n;
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    h1_conn_t *c = p->data;
    c->in_value = 1;
    if (c->value_len + n > sizeof(c->value))
        return -1;
    memcpy(c->value + c->value_len, at, n);
    c->value_len += n;
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    h1_conn_t *c = p->data;
    if (header_done(c) != 0)
        return -1;
    c->keepalive = http_should_keep_alive(p);
    c->r.method = http_method_str((enum http_method)p->method);
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    h1_conn_t *c = p->data;
    if (evbuffer_get_length(c->r.body) + n > SIM_MAX_BODY)
        return -1;
    evbuffer_add(c->r.body, at, n);
    return 0;
}

static int on_message_complete(http_parser *p)
{
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* Parses buffered input up to the end of one request, then answers it. */
static void read_cb(struct bufferevent *bev, void *arg)
{
    h1_conn_t *c = arg;
    if (c->r.phase != SIM_IDLE || c->closing)
        return;
    struct evbuffer *in = bufferevent_get_input(bev);
    while (evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            break;
        size_t n = http_parser_execute(&c->parser, &settings, v.iov_base, v.iov_len);
        evbuffer_drain(in, n);
        enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
        if (e == HPE_PAUSED) {
            sim_req_handle(&c->r); /* may free c */
            return;
        }
        if (e != HPE_OK) {
            c->keepalive = 0;
            sim_req_error(&c->r, 400, http_errno_description(e));
            return;
        }
    }
}

void sim_h1_start(sim_t *s, struct bufferevent *bev)
{
    h1_conn_t *c = av_calloc(1, sizeof(*c));
    sim_req_init(&c->r, s, &h1_proto, c);
    c->bev = bev;
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    bufferevent_setwatermark(bev, EV_READ, 0, 1u << 20);
    bufferevent_setcb(bev, read_cb, NULL, event_cb, c);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
    read_cb(bev, c);
}
