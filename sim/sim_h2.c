/* sim_h2.c: aviary-sim's HTTP/2 side (h2c by preface, or h2 by ALPN): an
 * nghttp2 server session on a bufferevent; each stream is one request, each
 * stream event goes out as it is made. Can send GOAWAY after N streams, as
 * servers that recycle connections do, refusing streams opened past it. */
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include "av.h"
#include "sim.h"

typedef struct h2_stream_s h2_stream_t;

typedef struct {
    sim_t *sim;
    struct bufferevent *bev;
    nghttp2_session *ng;
    TAILQ_HEAD(, h2_stream_s) streams;
    uint64_t open, begun;
    int32_t goaway_last; /* 0: no GOAWAY sent */
    int in_recv, closing;
} h2_conn_t;

struct h2_stream_s {
    sim_req_t r; /* first */
    h2_conn_t *c;
    int32_t id;
    struct evbuffer *out;
    TAILQ_ENTRY(h2_stream_s) link;
    int eof, deferred;
};

static void conn_send(h2_conn_t *c);

static void stream_free(h2_stream_t *st)
{
    h2_conn_t *c = st->c;
    TAILQ_REMOVE(&c->streams, st, link);
    c->open--;
    sim_req_cleanup(&st->r);
    evbuffer_free(st->out);
    free(st);
}

static void conn_free(h2_conn_t *c)
{
    h2_stream_t *st;
    while ((st = TAILQ_FIRST(&c->streams)) != NULL)
        stream_free(st);
    c->sim->stats.connections_open--;
    nghttp2_session_del(c->ng);
    bufferevent_free(c->bev);
    free(c);
}

/* ---- responding ---- */

static ssize_t body_read(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                         nghttp2_data_source *src, void *user)
{
    (void)ng;
    (void)id;
    (void)user;
    h2_stream_t *st = src->ptr;
    size_t have = evbuffer_get_length(st->out);
    if (have == 0 && !st->eof) {
        st->deferred = 1;
        return NGHTTP2_ERR_DEFERRED;
    }
    size_t n = have < len ? have : len;
    evbuffer_remove(st->out, buf, n);
    if (st->eof && evbuffer_get_length(st->out) == 0)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static void resume(h2_stream_t *st)
{
    if (st->deferred) {
        st->deferred = 0;
        nghttp2_session_resume_data(st->c->ng, st->id);
    }
}

static void head(sim_req_t *r, int status, const char *ctype, long long clen)
{
    h2_stream_t *st = (h2_stream_t *)r;
    char code[16], len[24];
    snprintf(code, sizeof(code), "%d", status);
    snprintf(len, sizeof(len), "%lld", clen);
    nghttp2_nv nv[5];
    size_t n = 0;
#define NV(name, value) \
    nv[n++] = (nghttp2_nv){(uint8_t *)(name), (uint8_t *)(value), strlen(name), strlen(value), NGHTTP2_NV_FLAG_NONE}
    NV(":status", code);
    NV("content-type", ctype);
    if (clen >= 0)
        NV("content-length", len);
    if (status == 429)
        NV("retry-after", "1");
    const char *idh = sim_req_id_header(r);
    if (idh != NULL)
        NV(idh, r->rid);
#undef NV
    nghttp2_data_provider prd = {.source.ptr = st, .read_callback = body_read};
    nghttp2_submit_response(st->c->ng, st->id, nv, n, &prd);
}

static void data(sim_req_t *r, struct evbuffer *b)
{
    h2_stream_t *st = (h2_stream_t *)r;
    evbuffer_add_buffer(st->out, b);
    resume(st);
    conn_send(st->c);
}

static void end(sim_req_t *r)
{
    h2_stream_t *st = (h2_stream_t *)r;
    st->eof = 1;
    resume(st);
    conn_send(st->c);
}

static void drop(sim_req_t *r)
{
    h2_stream_t *st = (h2_stream_t *)r;
    nghttp2_submit_rst_stream(st->c->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
    conn_send(st->c);
}

static const sim_proto_t h2_proto = {head, data, end, drop};

/* ---- nghttp2 callbacks ---- */

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *f, void *user)
{
    h2_conn_t *c = user;
    sim_t *s = c->sim;
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    if (c->goaway_last != 0 && f->hd.stream_id > c->goaway_last) {
        /* past the GOAWAY: never started, so the client may retry it elsewhere */
        nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_REFUSED_STREAM);
        return 0;
    }
    h2_stream_t *st = av_calloc(1, sizeof(*st));
    sim_req_init(&st->r, s, &h2_proto, c);
    st->c = c;
    st->id = f->hd.stream_id;
    st->out = evbuffer_new();
    TAILQ_INSERT_TAIL(&c->streams, st, link);
    nghttp2_session_set_stream_user_data(ng, st->id, st);
    s->stats.h2_streams_total++;
    if (++c->open > s->stats.h2_streams_max_concurrent)
        s->stats.h2_streams_max_concurrent = c->open;
    if (++c->begun == s->h2_goaway_after) {
        c->goaway_last = st->id;
        s->stats.h2_goaways_sent++;
        nghttp2_submit_goaway(ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_NO_ERROR, NULL, 0);
    }
    return 0;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
                     const uint8_t *value, size_t vlen, uint8_t flags, void *user)
{
    (void)flags;
    (void)user;
    h2_stream_t *st = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    if (st == NULL || f->hd.type != NGHTTP2_HEADERS)
        return 0;
    sim_req_t *r = &st->r;
    if (nlen == 7 && memcmp(name, ":method", 7) == 0) {
        r->method = vlen == 4 && memcmp(value, "POST", 4) == 0  ? "POST"
                    : vlen == 3 && memcmp(value, "GET", 3) == 0 ? "GET"
                                                                : "OTHER";
    } else if (nlen == 5 && memcmp(name, ":path", 5) == 0) {
        size_t n = vlen < sizeof(r->url) - 1 ? vlen : sizeof(r->url) - 1;
        memcpy(r->url, value, n);
        r->url[n] = '\0';
        r->urllen = n;
    } else if (nlen > 0 && name[0] != ':') {
        if (sim_req_add_header(r, (const char *)name, nlen, (const char *)value, vlen) != 0)
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* resets the stream */
    }
    return 0;
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *user)
{
    h2_conn_t *c = user;
    if (f->hd.type == NGHTTP2_PING && !(f->hd.flags & NGHTTP2_FLAG_ACK))
        c->sim->stats.h2_pings_received++;
    if ((f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA) || !(f->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    h2_stream_t *st = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    if (st == NULL || st->r.phase != SIM_IDLE)
        return 0;
    if (st->r.method == NULL)
        sim_req_error(&st->r, 400, "no :method");
    else
        sim_req_handle(&st->r);
    return 0;
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *d, size_t len, void *user)
{
    (void)flags;
    (void)user;
    h2_stream_t *st = nghttp2_session_get_stream_user_data(ng, id);
    if (st == NULL)
        return 0;
    if (evbuffer_get_length(st->r.body) + len > SIM_MAX_BODY)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    evbuffer_add(st->r.body, d, len);
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

static void write_cb(struct bufferevent *bev, void *arg)
{
    h2_conn_t *c = arg;
    if (c->closing && evbuffer_get_length(bufferevent_get_output(bev)) == 0) {
        conn_free(c);
        return;
    }
    conn_send(c);
}

static void conn_send(h2_conn_t *c)
{
    if (c->in_recv || c->closing)
        return; /* read_cb sends when mem_recv returns */
    struct evbuffer *out = bufferevent_get_output(c->bev);
    while (evbuffer_get_length(out) < (256u << 10) && nghttp2_session_want_write(c->ng)) {
        const uint8_t *d;
        ssize_t n = nghttp2_session_mem_send(c->ng, &d);
        if (n <= 0)
            break;
        evbuffer_add(out, d, (size_t)n);
    }
    int done = !nghttp2_session_want_read(c->ng) && !nghttp2_session_want_write(c->ng);
    if (c->goaway_last != 0 && c->open == 0 && !nghttp2_session_want_write(c->ng))
        done = 1; /* everything the GOAWAY let in is answered */
    if (done) {
        c->closing = 1;
        bufferevent_disable(c->bev, EV_READ);
        if (evbuffer_get_length(out) == 0)
            bufferevent_trigger(c->bev, EV_WRITE, BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
    }
}

static void read_cb(struct bufferevent *bev, void *arg)
{
    h2_conn_t *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    c->in_recv = 1;
    while (!c->closing && evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            break;
        ssize_t n = nghttp2_session_mem_recv(c->ng, v.iov_base, v.iov_len);
        if (n < 0) {
            evbuffer_drain(in, evbuffer_get_length(in));
            break;
        }
        evbuffer_drain(in, (size_t)n);
    }
    c->in_recv = 0;
    conn_send(c);
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    (void)what;
    conn_free(arg);
}

void sim_h2_start(sim_t *s, struct bufferevent *bev)
{
    h2_conn_t *c = av_calloc(1, sizeof(*c));
    c->sim = s;
    c->bev = bev;
    TAILQ_INIT(&c->streams);
    s->stats.h2_connections_total++;
    nghttp2_session_callbacks *cb;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    if (nghttp2_session_server_new(&c->ng, cb, c) != 0)
        av_oom();
    nghttp2_session_callbacks_del(cb);
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, s->h2_max_streams}};
    nghttp2_submit_settings(c->ng, NGHTTP2_FLAG_NONE, iv, AV_NELEMS(iv));
    bufferevent_setcb(bev, read_cb, write_cb, event_cb, c);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
    read_cb(bev, c); /* the preface already read */
}
