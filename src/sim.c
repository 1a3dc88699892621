/* sim.c: aviary-sim, an OpenAI-compatible model server simulator on libevent and
 * http-parser: settable latency, TTFT, token rate, errors; counts what it serves. */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <getopt.h>
#include <http_parser.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "av.h"
#include "jsonw.h"
#include "sim_gen.h"

#define SIM_MAX_HEADERS 64
#define SIM_HBUF 16384
#define SIM_MAX_BODY (64u << 20)

typedef struct {
    uint64_t connections_total, connections_open, requests_total, streams_total;
    uint64_t streams_cancelled, streams_dropped, errors_injected, requests_in_flight;
} sim_stats_t;

typedef struct {
    struct event_base *base;
    av_sim_knobs_t knobs;
    sim_stats_t stats;
    uint64_t rng, next_id;
    const char *models;
} sim_t;

typedef struct {
    uint16_t name_off, name_len, val_off, val_len;
} sim_hdr_t;

typedef enum { IDLE, HEAD_WAIT, STREAMING, CLOSING } sim_phase_t;

typedef struct {
    sim_t *sim;
    struct bufferevent *bev;
    http_parser parser;
    sim_phase_t phase;
    /* the request being read or answered */
    char url[2048];
    size_t urllen;
    char hbuf[SIM_HBUF];
    size_t hlen;
    sim_hdr_t hdrs[SIM_MAX_HEADERS];
    int nhdrs, in_value;
    struct evbuffer *body;
    int keepalive, bad;
    av_sim_knobs_t knobs;
    av_sim_req_t req;
    int64_t sent_tokens, sent_events;
    struct event *timer;
} sim_conn_t;

static void conn_free(sim_conn_t *c)
{
    sim_t *s = c->sim;
    if (c->phase == STREAMING || c->phase == HEAD_WAIT) {
        s->stats.requests_in_flight--;
        if (c->phase == STREAMING)
            s->stats.streams_cancelled++;
    }
    s->stats.connections_open--;
    event_free(c->timer);
    evbuffer_free(c->body);
    bufferevent_free(c->bev);
    free(c);
}

static uint64_t rng_next(sim_t *s)
{
    s->rng ^= s->rng << 13;
    s->rng ^= s->rng >> 7;
    s->rng ^= s->rng << 17;
    return s->rng;
}

static double rng_unit(sim_t *s)
{
    return (double)(rng_next(s) >> 11) / 9007199254740992.0;
}

/* ---- response writing ---- */

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

static void write_head(sim_conn_t *c, int status, const char *ctype, long long clen)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n", status, reason(status), ctype);
    if (clen >= 0)
        evbuffer_add_printf(out, "Content-Length: %lld\r\n", clen);
    else
        evbuffer_add(out, "Transfer-Encoding: chunked\r\nCache-Control: no-cache\r\n", 53);
    if (status == 429)
        evbuffer_add(out, "Retry-After: 1\r\n", 16);
    if (!c->keepalive)
        evbuffer_add(out, "Connection: close\r\n", 19);
    evbuffer_add(out, "\r\n", 2);
}

static void request_done(sim_conn_t *c);

static void send_full(sim_conn_t *c, int status, const char *ctype, struct evbuffer *body)
{
    write_head(c, status, ctype, (long long)evbuffer_get_length(body));
    bufferevent_write_buffer(c->bev, body);
    evbuffer_free(body);
    request_done(c);
}

static void send_error(sim_conn_t *c, int status, const char *msg)
{
    struct evbuffer *b = evbuffer_new();
    av_sim_error_body(b, status, msg);
    send_full(c, status, "application/json", b);
}

/* Frames one SSE event (already in ev) as a chunk. */
static void send_chunk(sim_conn_t *c, struct evbuffer *ev)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    size_t n = evbuffer_get_length(ev);
    if (n == 0)
        return;
    evbuffer_add_printf(out, "%zx\r\n", n);
    evbuffer_add_buffer(out, ev);
    evbuffer_add(out, "\r\n", 2);
    c->sent_events++;
}

static const char *hdr_name(sim_conn_t *c, int i)
{
    return c->hbuf + c->hdrs[i].name_off;
}

static const char *hdr_val(sim_conn_t *c, int i)
{
    return c->hbuf + c->hdrs[i].val_off;
}

static void send_echo(sim_conn_t *c)
{
    struct evbuffer *b = evbuffer_new();
    evbuffer_add_printf(b, "{\"object\":\"sim.echo\",\"method\":\"%s\",\"path\":",
                        http_method_str((enum http_method)c->parser.method));
    av_json_str(b, c->url, c->urllen);
    evbuffer_add(b, ",\"headers\":{", 12);
    for (int i = 0; i < c->nhdrs; i++) {
        if (i)
            evbuffer_add(b, ",", 1);
        av_json_str(b, hdr_name(c, i), c->hdrs[i].name_len);
        evbuffer_add(b, ":", 1);
        av_json_str(b, hdr_val(c, i), c->hdrs[i].val_len);
    }
    evbuffer_add(b, "},\"body\":", 9);
    size_t n = evbuffer_get_length(c->body);
    av_json_str(b, (const char *)evbuffer_pullup(c->body, -1), n);
    evbuffer_add(b, "}\n", 2);
    send_full(c, 200, "application/json", b);
}

static void stream_step(sim_conn_t *c);
static void close_after_flush(sim_conn_t *c);

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    sim_conn_t *c = arg;
    if (c->phase == HEAD_WAIT) {
        if (!c->req.stream) {
            struct evbuffer *b = evbuffer_new();
            av_sim_body(b, &c->req, &c->knobs);
            send_full(c, 200, "application/json", b);
            return;
        }
        write_head(c, 200, "text/event-stream", -1);
        c->phase = STREAMING;
        c->sim->stats.streams_total++;
        struct evbuffer *ev = evbuffer_new();
        av_sim_event_open(ev, &c->req);
        send_chunk(c, ev);
        evbuffer_free(ev);
        if (c->knobs.ttft_ms > 0) {
            struct timeval tv = {c->knobs.ttft_ms / 1000, (c->knobs.ttft_ms % 1000) * 1000};
            evtimer_add(c->timer, &tv);
            return;
        }
    }
    stream_step(c);
}

/* Sends the next token (or all of them when unpaced), then the closing events. */
static void stream_step(sim_conn_t *c)
{
    struct evbuffer *ev = evbuffer_new();
    int64_t n = c->req.completion_tokens;
    do {
        if (c->knobs.drop_after >= 0 && c->sent_events >= c->knobs.drop_after) {
            evbuffer_free(ev);
            c->sim->stats.streams_dropped++;
            c->sim->stats.requests_in_flight--;
            c->phase = CLOSING; /* dropped on purpose, not cancelled by the peer */
            close_after_flush(c);
            return;
        }
        if (c->sent_tokens < n) {
            av_sim_event_token(ev, &c->req, &c->knobs, c->sent_tokens++);
            send_chunk(c, ev);
            if (c->knobs.tps > 0 && c->sent_tokens < n) {
                int64_t us = 1000000 / c->knobs.tps;
                struct timeval tv = {us / 1000000, us % 1000000};
                evtimer_add(c->timer, &tv);
                evbuffer_free(ev);
                return;
            }
            continue;
        }
        av_sim_event_finish(ev, &c->req);
        send_chunk(c, ev);
        if (c->req.include_usage) {
            av_sim_event_usage(ev, &c->req);
            send_chunk(c, ev);
        }
        av_sim_event_done(ev);
        send_chunk(c, ev);
        evbuffer_add(bufferevent_get_output(c->bev), "0\r\n\r\n", 5);
        evbuffer_free(ev);
        request_done(c);
        return;
    } while (1);
}

static void send_stats(sim_conn_t *c)
{
    sim_stats_t *st = &c->sim->stats;
    struct evbuffer *b = evbuffer_new();
    evbuffer_add_printf(b,
                        "{\"connections_total\":%llu,\"connections_open\":%llu,\"requests_total\":%llu,"
                        "\"requests_in_flight\":%llu,\"streams_total\":%llu,\"streams_cancelled\":%llu,"
                        "\"streams_dropped\":%llu,\"errors_injected\":%llu}\n",
                        (unsigned long long)st->connections_total, (unsigned long long)st->connections_open,
                        (unsigned long long)st->requests_total, (unsigned long long)st->requests_in_flight,
                        (unsigned long long)st->streams_total, (unsigned long long)st->streams_cancelled,
                        (unsigned long long)st->streams_dropped, (unsigned long long)st->errors_injected);
    send_full(c, 200, "application/json", b);
}

static void send_models(sim_conn_t *c)
{
    struct evbuffer *b = evbuffer_new();
    evbuffer_add(b, "{\"object\":\"list\",\"data\":[", 25);
    const char *p = c->sim->models;
    int first = 1;
    while (*p) {
        size_t n = strcspn(p, ",");
        evbuffer_add_printf(b, "%s{\"id\":", first ? "" : ",");
        av_json_str(b, p, n);
        evbuffer_add_printf(b, ",\"object\":\"model\",\"created\":0,\"owned_by\":\"aviary-sim\"}");
        first = 0;
        p += n;
        if (*p == ',')
            p++;
    }
    evbuffer_add(b, "]}\n", 3);
    send_full(c, 200, "application/json", b);
}

static void handle(sim_conn_t *c)
{
    sim_t *s = c->sim;
    s->stats.requests_total++;
    s->stats.requests_in_flight++;
    c->phase = HEAD_WAIT;
    c->knobs = s->knobs;
    for (int i = 0; i < c->nhdrs; i++)
        if (strncasecmp(hdr_name(c, i), "x-sim-", 6) == 0) {
            char name[64];
            size_t n = c->hdrs[i].name_len < 63 ? c->hdrs[i].name_len : 63;
            for (size_t k = 0; k < n; k++)
                name[k] = (char)(hdr_name(c, i)[k] | 0x20);
            name[n] = '\0';
            if (av_sim_knob_header(&c->knobs, name, hdr_val(c, i)) != 0) {
                char msg[128];
                snprintf(msg, sizeof(msg), "bad value for %s", name);
                send_error(c, 400, msg);
                return;
            }
        }
    char path[2048];
    size_t plen = strcspn(c->url, "?");
    snprintf(path, sizeof(path), "%.*s", (int)plen, c->url);
    int post = c->parser.method == HTTP_POST;
    if (strcmp(path, "/sim/stats") == 0) {
        send_stats(c);
        return;
    }
    if (strcmp(path, "/v1/models") == 0 && c->parser.method == HTTP_GET) {
        send_models(c);
        return;
    }
    av_sim_kind_t kind = 0;
    if (strcmp(path, "/v1/chat/completions") == 0)
        kind = AV_SIM_CHAT;
    else if (strcmp(path, "/v1/completions") == 0)
        kind = AV_SIM_COMPLETIONS;
    else if (strcmp(path, "/v1/embeddings") == 0)
        kind = AV_SIM_EMBEDDINGS;
    if (kind == 0) {
        send_error(c, 404, "no such endpoint on aviary-sim");
        return;
    }
    if (!post) {
        send_error(c, 405, "use POST");
        return;
    }
    if (c->knobs.echo) {
        send_echo(c);
        return;
    }
    if (c->knobs.status != 0 && c->knobs.status != 200) {
        s->stats.errors_injected++;
        send_error(c, c->knobs.status, "status forced by x-sim-status");
        return;
    }
    if (c->knobs.rate_429 > 0 && rng_unit(s) < c->knobs.rate_429) {
        s->stats.errors_injected++;
        send_error(c, 429, "simulated rate limit");
        return;
    }
    if (c->knobs.error_rate > 0 && rng_unit(s) < c->knobs.error_rate) {
        s->stats.errors_injected++;
        send_error(c, 500, "simulated server error");
        return;
    }
    char err[256];
    size_t blen = evbuffer_get_length(c->body);
    if (av_sim_parse(&c->req, kind, (const char *)evbuffer_pullup(c->body, -1), blen, &c->knobs, err,
                     sizeof(err)) != 0) {
        send_error(c, 400, err);
        return;
    }
    c->req.id = ++s->next_id;
    c->req.created = (int64_t)time(NULL);
    c->sent_tokens = c->sent_events = 0;
    if (c->knobs.latency_ms > 0) {
        struct timeval tv = {c->knobs.latency_ms / 1000, (c->knobs.latency_ms % 1000) * 1000};
        evtimer_add(c->timer, &tv);
        return;
    }
    timer_cb(-1, 0, c);
}

/* ---- request parsing ---- */

static int on_message_begin(http_parser *p)
{
    sim_conn_t *c = p->data;
    c->urllen = c->hlen = 0;
    c->nhdrs = 0;
    c->in_value = 0;
    c->bad = 0;
    evbuffer_drain(c->body, evbuffer_get_length(c->body));
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    sim_conn_t *c = p->data;
    if (c->urllen + n >= sizeof(c->url))
        return -1;
    memcpy(c->url + c->urllen, at, n);
    c->urllen += n;
    c->url[c->urllen] = '\0';
    return 0;
}

static int hbuf_add(sim_conn_t *c, const char *at, size_t n)
{
    if (c->hlen + n + 1 >= SIM_HBUF)
        return -1;
    memcpy(c->hbuf + c->hlen, at, n);
    c->hlen += n;
    c->hbuf[c->hlen] = '\0';
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    sim_conn_t *c = p->data;
    if (c->in_value || c->nhdrs == 0) {
        if (c->nhdrs == SIM_MAX_HEADERS)
            return -1;
        if (c->nhdrs > 0)
            c->hlen++; /* keep the previous value's NUL */
        c->hdrs[c->nhdrs++] = (sim_hdr_t){(uint16_t)c->hlen, 0, 0, 0};
        c->in_value = 0;
    }
    if (hbuf_add(c, at, n) != 0)
        return -1;
    c->hdrs[c->nhdrs - 1].name_len += (uint16_t)n;
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    sim_conn_t *c = p->data;
    sim_hdr_t *h = &c->hdrs[c->nhdrs - 1];
    if (!c->in_value) {
        c->hlen++;
        h->val_off = (uint16_t)c->hlen;
        c->in_value = 1;
    }
    if (hbuf_add(c, at, n) != 0)
        return -1;
    h->val_len += (uint16_t)n;
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    sim_conn_t *c = p->data;
    c->keepalive = http_should_keep_alive(p);
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    sim_conn_t *c = p->data;
    if (evbuffer_get_length(c->body) + n > SIM_MAX_BODY)
        return -1;
    evbuffer_add(c->body, at, n);
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

static void read_cb(struct bufferevent *bev, void *arg);
static void event_cb(struct bufferevent *bev, short what, void *arg);

static void write_done_cb(struct bufferevent *bev, void *arg)
{
    conn_free(arg);
}

static void close_after_flush(sim_conn_t *c)
{
    c->phase = CLOSING;
    bufferevent_disable(c->bev, EV_READ);
    bufferevent_setcb(c->bev, NULL, write_done_cb, event_cb, c);
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
        conn_free(c);
}

static void request_done(sim_conn_t *c)
{
    c->sim->stats.requests_in_flight--;
    if (!c->keepalive) {
        close_after_flush(c);
        return;
    }
    c->phase = IDLE;
    http_parser_pause(&c->parser, 0);
    read_cb(c->bev, c);
}

/* Parses buffered input up to the end of one request, then answers it. */
static void read_cb(struct bufferevent *bev, void *arg)
{
    sim_conn_t *c = arg;
    if (c->phase != IDLE)
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
            handle(c); /* may free c */
            return;
        }
        if (e != HPE_OK) {
            c->keepalive = 0;
            c->sim->stats.requests_in_flight++;
            c->phase = HEAD_WAIT;
            send_error(c, 400, http_errno_description(e));
            return;
        }
    }
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    conn_free(arg);
}

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                      void *arg)
{
    sim_t *s = arg;
    sim_conn_t *c = av_calloc(1, sizeof(*c));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->sim = s;
    c->bev = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE);
    c->body = evbuffer_new();
    c->timer = evtimer_new(s->base, timer_cb, c);
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    bufferevent_setwatermark(c->bev, EV_READ, 0, 1u << 20);
    bufferevent_setcb(c->bev, read_cb, NULL, event_cb, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    s->stats.connections_total++;
    s->stats.connections_open++;
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
    event_base_loopexit(arg, NULL);
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: aviary-sim [options]\n"
            "An OpenAI-compatible model server simulator for tests, demos and benchmarks.\n\n"
            "  -l, --listen HOST:PORT   address to serve (default 127.0.0.1:8000; port 0 picks one)\n"
            "      --port-file FILE     write the bound port to FILE once listening\n"
            "      --latency-ms N       delay before the response head (x-sim-latency-ms)\n"
            "      --ttft-ms N          stream: delay to the first token (x-sim-ttft-ms)\n"
            "      --tps N              stream: tokens per second, 0 = unpaced (x-sim-tps)\n"
            "      --tokens N           completion tokens per answer (x-sim-tokens; default 16)\n"
            "      --error-rate R       share of requests answered 500 (x-sim-error-rate)\n"
            "      --rate-429 R         share of requests answered 429 (x-sim-429-rate)\n"
            "      --seed N             output text seed (x-sim-seed)\n"
            "      --echo               answer with the request received (x-sim-echo: 1)\n"
            "      --models LIST        comma-separated names for GET /v1/models (default sim-1)\n"
            "  -h, --help               this help\n"
            "      --version            print the version\n\n"
            "Per request: x-sim-status (force a status), x-sim-drop-after N (close a stream after\n"
            "N events), x-sim-no-usage 1. GET /sim/stats counts connections, requests and streams.\n");
}

int main(int argc, char **argv)
{
    sim_t s = {0};
    av_sim_knobs_default(&s.knobs);
    s.models = "sim-1";
    const char *listen = "127.0.0.1:8000", *port_file = NULL;
    enum { O_PORTFILE = 256, O_LAT, O_TTFT, O_TPS, O_TOK, O_ERR, O_429, O_SEED, O_ECHO, O_MODELS, O_VER };
    static const struct option opts[] = {
        {"listen", required_argument, NULL, 'l'}, {"port-file", required_argument, NULL, O_PORTFILE},
        {"latency-ms", required_argument, NULL, O_LAT}, {"ttft-ms", required_argument, NULL, O_TTFT},
        {"tps", required_argument, NULL, O_TPS}, {"tokens", required_argument, NULL, O_TOK},
        {"error-rate", required_argument, NULL, O_ERR}, {"rate-429", required_argument, NULL, O_429},
        {"seed", required_argument, NULL, O_SEED}, {"echo", no_argument, NULL, O_ECHO},
        {"models", required_argument, NULL, O_MODELS}, {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, O_VER}, {NULL, 0, NULL, 0},
    };
    static const char *const knob_headers[] = {
        [O_LAT - O_LAT] = "x-sim-latency-ms", [O_TTFT - O_LAT] = "x-sim-ttft-ms",
        [O_TPS - O_LAT] = "x-sim-tps", [O_TOK - O_LAT] = "x-sim-tokens",
        [O_ERR - O_LAT] = "x-sim-error-rate", [O_429 - O_LAT] = "x-sim-429-rate",
        [O_SEED - O_LAT] = "x-sim-seed",
    };
    int o;
    while ((o = getopt_long(argc, argv, "l:h", opts, NULL)) != -1) {
        switch (o) {
        case 'l': listen = optarg; break;
        case O_PORTFILE: port_file = optarg; break;
        case O_ECHO: s.knobs.echo = 1; break;
        case O_MODELS: s.models = optarg; break;
        case 'h': usage(stdout); return 0;
        case O_VER: printf("aviary-sim %s\n", AV_VERSION); return 0;
        case O_LAT: case O_TTFT: case O_TPS: case O_TOK: case O_ERR: case O_429: case O_SEED:
            if (av_sim_knob_header(&s.knobs, knob_headers[o - O_LAT], optarg) != 0) {
                fprintf(stderr, "aviary-sim: bad value for --%s: %s\n", knob_headers[o - O_LAT] + 6, optarg);
                return 2;
            }
            break;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "aviary-sim: unexpected argument: %s\n", argv[optind]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    s.rng = s.knobs.seed * 0x9e3779b97f4a7c15ull | 1;
    struct sockaddr_storage ss;
    unsigned sslen;
    if (av_parse_hostport(listen, 0, 1, &ss, &sslen) != 0) {
        fprintf(stderr, "aviary-sim: --listen %s: not a numeric host:port\n", listen);
        return 2;
    }
    s.base = event_base_new();
    struct evconnlistener *l = evconnlistener_new_bind(
        s.base, accept_cb, &s, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 1024, (struct sockaddr *)&ss, (int)sslen);
    if (l == NULL) {
        fprintf(stderr, "aviary-sim: cannot listen on %s: %s\n", listen, strerror(errno));
        return 1;
    }
    struct sockaddr_storage bound;
    socklen_t blen = sizeof(bound);
    getsockname(evconnlistener_get_fd(l), (struct sockaddr *)&bound, &blen);
    int port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                 : ((struct sockaddr_in *)&bound)->sin_port);
    if (port_file != NULL) {
        char tmp[4096];
        snprintf(tmp, sizeof(tmp), "%s.tmp", port_file);
        FILE *f = fopen(tmp, "w");
        if (f == NULL || fprintf(f, "%d\n", port) < 0 || fclose(f) != 0 || rename(tmp, port_file) != 0) {
            fprintf(stderr, "aviary-sim: cannot write %s: %s\n", port_file, strerror(errno));
            return 1;
        }
    }
    fprintf(stderr, "aviary-sim: listening on port %d\n", port);
    struct event *sigterm = evsignal_new(s.base, SIGTERM, signal_cb, s.base);
    struct event *sigint = evsignal_new(s.base, SIGINT, signal_cb, s.base);
    evsignal_add(sigterm, NULL);
    evsignal_add(sigint, NULL);
    event_base_dispatch(s.base);
    event_free(sigterm);
    event_free(sigint);
    evconnlistener_free(l);
    event_base_free(s.base);
    return 0;
}
