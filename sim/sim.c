/* sim.c: aviary-sim, a model server simulator speaking the OpenAI and Anthropic
 * APIs: settable latency, TTFT, token rate, errors and tool calls, over HTTP/1.1,
 * h2c and TLS (h2 or HTTP/1.1 by ALPN); counts what it serves. This file holds
 * the answers and the listener; sim_h1.c and sim_h2.c speak the protocols. */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <getopt.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
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
#include "sim.h"

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

/* ---- one request ---- */

static void timer_cb(evutil_socket_t fd, short what, void *arg);

void sim_req_init(sim_req_t *r, sim_t *s, const sim_proto_t *proto, void *conn)
{
    r->sim = s;
    r->proto = proto;
    r->conn = conn;
    r->phase = SIM_IDLE;
    r->body = evbuffer_new();
    r->timer = evtimer_new(s->base, timer_cb, r);
}

const char *sim_req_id_header(const sim_req_t *r)
{
    if (r->rid[0] == '\0')
        return NULL;
    return r->kind == AV_SIM_ANTHROPIC || r->kind == AV_SIM_COUNT_TOKENS ? "request-id" : "x-request-id";
}

void sim_req_cleanup(sim_req_t *r)
{
    sim_stats_t *st = &r->sim->stats;
    av_sim_req_free(&r->req);
    if (r->phase == SIM_STREAMING || r->phase == SIM_HEAD_WAIT) {
        st->requests_in_flight--;
        if (r->phase == SIM_STREAMING)
            st->streams_cancelled++;
    }
    r->phase = SIM_DONE;
    event_free(r->timer);
    evbuffer_free(r->body);
}

void sim_req_reset(sim_req_t *r)
{
    av_sim_req_free(&r->req);
    r->phase = SIM_IDLE;
    r->kind = 0;
    r->rid[0] = '\0';
    r->method = NULL;
    r->urllen = r->hlen = 0;
    r->url[0] = '\0';
    r->nhdrs = 0;
    evbuffer_drain(r->body, evbuffer_get_length(r->body));
}

int sim_req_add_header(sim_req_t *r, const char *name, size_t nlen, const char *value, size_t vlen)
{
    if (r->nhdrs == SIM_MAX_HEADERS || r->hlen + nlen + vlen + 2 > SIM_HBUF || nlen > 65535 || vlen > 65535)
        return -1;
    sim_hdr_t *h = &r->hdrs[r->nhdrs++];
    h->name_off = (uint16_t)r->hlen;
    h->name_len = (uint16_t)nlen;
    memcpy(r->hbuf + r->hlen, name, nlen);
    r->hlen += nlen;
    r->hbuf[r->hlen++] = '\0';
    h->val_off = (uint16_t)r->hlen;
    h->val_len = (uint16_t)vlen;
    memcpy(r->hbuf + r->hlen, value, vlen);
    r->hlen += vlen;
    r->hbuf[r->hlen++] = '\0';
    return 0;
}

static const char *hdr_name(const sim_req_t *r, int i)
{
    return r->hbuf + r->hdrs[i].name_off;
}

static const char *hdr_val(const sim_req_t *r, int i)
{
    return r->hbuf + r->hdrs[i].val_off;
}

/* ends the response: the request is over for the counters */
static void finish(sim_req_t *r)
{
    r->sim->stats.requests_in_flight--;
    r->phase = SIM_DONE;
    evtimer_del(r->timer);
    av_sim_req_free(&r->req);
    r->proto->end(r);
}

static void send_full(sim_req_t *r, int status, const char *ctype, struct evbuffer *body)
{
    r->proto->head(r, status, ctype, (long long)evbuffer_get_length(body));
    r->proto->data(r, body);
    evbuffer_free(body);
    finish(r);
}

static void send_error(sim_req_t *r, int status, const char *msg)
{
    struct evbuffer *b = evbuffer_new();
    av_sim_error_body(b, r->kind, status, msg);
    send_full(r, status, "application/json", b);
}

void sim_req_error(sim_req_t *r, int status, const char *msg)
{
    r->sim->stats.requests_in_flight++;
    r->phase = SIM_HEAD_WAIT;
    send_error(r, status, msg);
}

static void send_event(sim_req_t *r, struct evbuffer *ev)
{
    if (evbuffer_get_length(ev) == 0)
        return;
    r->proto->data(r, ev);
    r->sent_events++;
}

/* The request as received: method, path, headers and body, as JSON. */
static struct evbuffer *echo_json(sim_req_t *r)
{
    struct evbuffer *b = evbuffer_new();
    evbuffer_add_printf(b, "{\"object\":\"sim.echo\",\"method\":\"%s\",\"path\":", r->method);
    av_json_str(b, r->url, r->urllen);
    evbuffer_add(b, ",\"headers\":{", 12);
    for (int i = 0; i < r->nhdrs; i++) {
        if (i)
            evbuffer_add(b, ",", 1);
        av_json_str(b, hdr_name(r, i), r->hdrs[i].name_len);
        evbuffer_add(b, ":", 1);
        av_json_str(b, hdr_val(r, i), r->hdrs[i].val_len);
    }
    evbuffer_add(b, "},\"body\":", 9);
    size_t n = evbuffer_get_length(r->body);
    av_json_str(b, (const char *)evbuffer_pullup(r->body, -1), n);
    evbuffer_add(b, "}\n", 2);
    return b;
}

static void send_echo(sim_req_t *r)
{
    send_full(r, 200, "application/json", echo_json(r));
}

static void stream_step(sim_req_t *r);

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sim_req_t *r = arg;
    if (r->phase == SIM_HEAD_WAIT) {
        if (!r->req.stream) {
            struct evbuffer *b = evbuffer_new();
            av_sim_body(b, &r->req, &r->knobs);
            send_full(r, 200, "application/json", b);
            return;
        }
        r->proto->head(r, 200, "text/event-stream", -1);
        r->phase = SIM_STREAMING;
        r->sim->stats.streams_total++;
        struct evbuffer *ev = evbuffer_new();
        av_sim_event_open(ev, &r->req);
        send_event(r, ev);
        evbuffer_free(ev);
        if (r->knobs.ttft_ms > 0) {
            struct timeval tv = {r->knobs.ttft_ms / 1000, (r->knobs.ttft_ms % 1000) * 1000};
            /* from now, not from the loop's cached time: a wait is never short */
            event_base_update_cache_time(r->sim->base);
            evtimer_add(r->timer, &tv);
            return;
        }
    }
    stream_step(r);
}

/* Sends the next token (or all of them when unpaced), then the closing events. */
static void stream_step(sim_req_t *r)
{
    struct evbuffer *ev = evbuffer_new();
    int64_t n = r->req.steps;
    for (;;) {
        if (r->knobs.drop_after >= 0 && r->sent_events >= r->knobs.drop_after) {
            evbuffer_free(ev);
            r->sim->stats.streams_dropped++;
            r->sim->stats.requests_in_flight--;
            r->phase = SIM_DONE; /* dropped on purpose, not cancelled by the peer */
            av_sim_req_free(&r->req);
            r->proto->drop(r);
            return;
        }
        if (r->sent_tokens < n) {
            av_sim_event_token(ev, &r->req, &r->knobs, r->sent_tokens++);
            send_event(r, ev);
            if (r->knobs.tps > 0 && r->sent_tokens < n) {
                int64_t us = 1000000 / r->knobs.tps;
                struct timeval tv = {us / 1000000, us % 1000000};
                evtimer_add(r->timer, &tv);
                evbuffer_free(ev);
                return;
            }
            continue;
        }
        av_sim_event_finish(ev, &r->req, &r->knobs);
        send_event(r, ev);
        if (r->req.include_usage) {
            av_sim_event_usage(ev, &r->req);
            send_event(r, ev);
        }
        av_sim_event_done(ev, &r->req);
        send_event(r, ev);
        evbuffer_free(ev);
        finish(r);
        return;
    }
}

static void send_stats(sim_req_t *r)
{
    const sim_stats_t *st = &r->sim->stats;
    struct evbuffer *b = evbuffer_new();
    const struct {
        const char *name;
        uint64_t v;
    } f[] = {
        {"connections_total", st->connections_total},
        {"connections_open", st->connections_open},
        {"tls_connections_total", st->tls_connections_total},
        {"requests_total", st->requests_total},
        {"requests_in_flight", st->requests_in_flight},
        {"streams_total", st->streams_total},
        {"streams_cancelled", st->streams_cancelled},
        {"streams_dropped", st->streams_dropped},
        {"errors_injected", st->errors_injected},
        {"h2_connections_total", st->h2_connections_total},
        {"h2_streams_total", st->h2_streams_total},
        {"h2_streams_max_concurrent", st->h2_streams_max_concurrent},
        {"h2_goaways_sent", st->h2_goaways_sent},
        {"h2_pings_received", st->h2_pings_received},
    };
    for (size_t i = 0; i < AV_NELEMS(f); i++)
        evbuffer_add_printf(b, "%s\"%s\":%llu", i ? "," : "{", f[i].name, (unsigned long long)f[i].v);
    evbuffer_add(b, "}\n", 2);
    send_full(r, 200, "application/json", b);
}

static void send_models(sim_req_t *r)
{
    struct evbuffer *b = evbuffer_new();
    evbuffer_add(b, "{\"object\":\"list\",\"data\":[", 25);
    const char *p = r->sim->models;
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
    send_full(r, 200, "application/json", b);
}

void sim_req_handle(sim_req_t *r)
{
    sim_t *s = r->sim;
    if (s->log != NULL) {
        struct evbuffer *b = echo_json(r);
        fwrite(evbuffer_pullup(b, -1), 1, evbuffer_get_length(b), s->log);
        fflush(s->log);
        evbuffer_free(b);
    }
    s->stats.requests_total++;
    s->stats.requests_in_flight++;
    r->phase = SIM_HEAD_WAIT;
    r->knobs = s->knobs;
    if (s->bad_at_us != 0 && av_now_us() >= s->bad_at_us) { /* the instance has turned bad */
        if (s->bad_error_rate >= 0)
            r->knobs.error_rate = s->bad_error_rate;
        if (s->bad_ttft_ms >= 0)
            r->knobs.ttft_ms = s->bad_ttft_ms;
    }
    if (s->jitter > 0) { /* each delay times e^(jitter Z), Z standard normal: a lognormal spread */
        double u = rng_unit(s), v = rng_unit(s);
        double f = exp(s->jitter * sqrt(-2.0 * log(u + 1e-300)) * cos(6.283185307179586 * v));
        if (r->knobs.latency_ms > 0)
            r->knobs.latency_ms = (int64_t)((double)r->knobs.latency_ms * f + 0.5);
        if (r->knobs.ttft_ms > 0)
            r->knobs.ttft_ms = (int64_t)((double)r->knobs.ttft_ms * f + 0.5);
    }
    char path[2048];
    size_t plen = strcspn(r->url, "?");
    snprintf(path, sizeof(path), "%.*s", (int)plen, r->url);
    av_sim_kind_t kind = 0;
    if (strcmp(path, "/v1/chat/completions") == 0)
        kind = AV_SIM_CHAT;
    else if (strcmp(path, "/v1/completions") == 0)
        kind = AV_SIM_COMPLETIONS;
    else if (strcmp(path, "/v1/embeddings") == 0)
        kind = AV_SIM_EMBEDDINGS;
    else if (strcmp(path, "/v1/responses") == 0)
        kind = AV_SIM_RESPONSES;
    else if (strcmp(path, "/v1/messages") == 0)
        kind = AV_SIM_ANTHROPIC;
    else if (strcmp(path, "/v1/messages/count_tokens") == 0)
        kind = AV_SIM_COUNT_TOKENS;
    /* errors on Anthropic's paths are worded as its API words them */
    r->kind = kind != 0 ? kind : strncmp(path, "/v1/messages/", 13) == 0 ? AV_SIM_ANTHROPIC : 0;
    snprintf(r->rid, sizeof(r->rid), "req_sim_%llu", (unsigned long long)s->stats.requests_total);
    for (int i = 0; i < r->nhdrs; i++)
        if (strncasecmp(hdr_name(r, i), "x-sim-", 6) == 0) {
            char name[64];
            size_t n = r->hdrs[i].name_len < 63 ? r->hdrs[i].name_len : 63;
            for (size_t k = 0; k < n; k++)
                name[k] = (char)(hdr_name(r, i)[k] | 0x20);
            name[n] = '\0';
            if (av_sim_knob_header(&r->knobs, name, hdr_val(r, i)) != 0) {
                char msg[128];
                snprintf(msg, sizeof(msg), "bad value for %s", name);
                send_error(r, 400, msg);
                return;
            }
        }
    int post = strcmp(r->method, "POST") == 0;
    if (strcmp(path, "/sim/stats") == 0) {
        send_stats(r);
        return;
    }
    if (r->knobs.echo) { /* any path: tests see exactly what reached the backend */
        send_echo(r);
        return;
    }
    if (strcmp(path, "/v1/models") == 0 && strcmp(r->method, "GET") == 0) {
        send_models(r);
        return;
    }
    if (kind == 0) {
        send_error(r, 404, "no such endpoint on aviary-sim");
        return;
    }
    if (!post) {
        send_error(r, 405, "use POST");
        return;
    }
    if (r->knobs.status != 0 && r->knobs.status != 200) {
        s->stats.errors_injected++;
        send_error(r, r->knobs.status, "status forced by x-sim-status");
        return;
    }
    if (r->knobs.rate_429 > 0 && rng_unit(s) < r->knobs.rate_429) {
        s->stats.errors_injected++;
        send_error(r, 429, "simulated rate limit");
        return;
    }
    if (r->knobs.error_rate > 0 && rng_unit(s) < r->knobs.error_rate) {
        s->stats.errors_injected++;
        send_error(r, 500, "simulated server error");
        return;
    }
    char err[256];
    size_t blen = evbuffer_get_length(r->body);
    if (av_sim_parse(&r->req, kind, (const char *)evbuffer_pullup(r->body, -1), blen, &r->knobs, err,
                     sizeof(err)) != 0) {
        send_error(r, 400, err);
        return;
    }
    r->req.id = ++s->next_id;
    r->req.created = (int64_t)time(NULL);
    r->sent_tokens = r->sent_events = 0;
    if (r->knobs.latency_ms > 0) {
        struct timeval tv = {r->knobs.latency_ms / 1000, (r->knobs.latency_ms % 1000) * 1000};
        event_base_update_cache_time(s->base);
        evtimer_add(r->timer, &tv);
        return;
    }
    timer_cb(-1, 0, r);
}

/* ---- connections: TLS handshake and ALPN, or the h2c preface ---- */

static const char h2_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

static void pending_free(struct bufferevent *bev, sim_t *s)
{
    s->stats.connections_open--;
    bufferevent_free(bev);
}

/* Cleartext: HTTP/2 when the connection opens with the preface, else HTTP/1.1. */
static void sniff_cb(struct bufferevent *bev, void *arg)
{
    sim_t *s = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t n = evbuffer_get_length(in), want = sizeof(h2_preface) - 1;
    size_t k = n < want ? n : want;
    int match = memcmp(evbuffer_pullup(in, (ssize_t)k), h2_preface, k) == 0;
    if (match && n < want)
        return; /* more of the preface to come */
    if (match && s->h2)
        sim_h2_start(s, bev);
    else
        sim_h1_start(s, bev);
}

static void pending_event_cb(struct bufferevent *bev, short what, void *arg)
{
    sim_t *s = arg;
    if (what & BEV_EVENT_CONNECTED) {
        /* the TLS handshake is done: ALPN decides */
        const unsigned char *proto = NULL;
        unsigned len = 0;
        SSL_get0_alpn_selected(bufferevent_openssl_get_ssl(bev), &proto, &len);
        if (len == 2 && memcmp(proto, "h2", 2) == 0)
            sim_h2_start(s, bev);
        else
            sim_h1_start(s, bev);
        return;
    }
    pending_free(bev, s);
}

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
    (void)l;
    (void)sa;
    (void)salen;
    sim_t *s = arg;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    s->stats.connections_total++;
    s->stats.connections_open++;
    struct bufferevent *bev;
    if (s->tls != NULL) {
        s->stats.tls_connections_total++;
        bev = bufferevent_openssl_socket_new(s->base, fd, SSL_new(s->tls), BUFFEREVENT_SSL_ACCEPTING,
                                             BEV_OPT_CLOSE_ON_FREE);
        bufferevent_setcb(bev, NULL, NULL, pending_event_cb, s);
    } else {
        bev = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE);
        bufferevent_setcb(bev, sniff_cb, NULL, pending_event_cb, s);
    }
    bufferevent_enable(bev, EV_READ | EV_WRITE);
}

static int alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                   unsigned inlen, void *arg)
{
    (void)ssl;
    sim_t *s = arg;
    static const unsigned char both[] = "\x02h2\x08http/1.1";
    const unsigned char *offer = s->h2 ? both : both + 3;
    unsigned offer_len = s->h2 ? sizeof(both) - 1 : sizeof(both) - 4;
    if (SSL_select_next_proto((unsigned char **)out, outlen, offer, offer_len, in, inlen) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    return SSL_TLSEXT_ERR_OK;
}

static SSL_CTX *tls_ctx(sim_t *s, const char *cert, const char *key)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL || SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
        char buf[256];
        ERR_error_string_n(ERR_get_error(), buf, sizeof(buf));
        fprintf(stderr, "aviary-sim: TLS certificate %s, key %s: %s\n", cert, key, buf);
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, s);
    return ctx;
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    event_base_loopexit(arg, NULL);
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: aviary-sim [options]\n"
            "A model server simulator for tests, demos and benchmarks: OpenAI chat, completions,\n"
            "embeddings and Responses, Anthropic messages and count_tokens, as their SDKs expect.\n\n"
            "  -l, --listen HOST:PORT   address to serve (default 127.0.0.1:8000; port 0 picks one)\n"
            "      --port-file FILE     write the bound port to FILE once listening\n"
            "      --latency-ms N       delay before the response head (x-sim-latency-ms)\n"
            "      --ttft-ms N          stream: delay to the first token (x-sim-ttft-ms)\n"
            "      --tps N              stream: tokens per second, 0 = unpaced (x-sim-tps)\n"
            "      --tokens N           completion tokens per answer (x-sim-tokens; default 16)\n"
            "      --error-rate R       share of requests answered 500 (x-sim-error-rate)\n"
            "      --turn-bad-after-s N after N seconds, answer with the --bad-* knobs instead:\n"
            "      --bad-error-rate R   ...this share of 500s\n"
            "      --bad-ttft-ms N      ...this time to the first token\n"
            "      --jitter S           multiply each delay by e^(S Z), Z standard normal (0.3: most\n"
            "                           within 0.55x to 1.8x)\n"
            "      --rate-429 R         share of requests answered 429 (x-sim-429-rate)\n"
            "      --seed N             output text seed (x-sim-seed)\n"
            "      --echo               answer with the request received (x-sim-echo: 1)\n"
            "      --log FILE           append each request received (method, path, headers, body) as a\n"
            "                           JSON line, the way --echo answers it\n"
            "      --models LIST        comma-separated names for GET /v1/models (default sim-1)\n"
            "      --tls-cert FILE      serve TLS with this certificate chain (PEM)...\n"
            "      --tls-key FILE       ...and this key; ALPN offers h2 and http/1.1\n"
            "      --no-h2              HTTP/1.1 only (no h2c preface, no h2 in ALPN)\n"
            "      --h2-max-streams N   HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS (default 100)\n"
            "      --h2-goaway-after N  HTTP/2: send GOAWAY after N streams on a connection; streams\n"
            "                           the client opened past it are refused (default 0: never)\n"
            "  -h, --help               this help\n"
            "      --version            print the version\n\n"
            "Cleartext connections that open with the HTTP/2 preface speak h2c; others HTTP/1.1.\n"
            "Per request: x-sim-status (force a status), x-sim-drop-after N (cut a stream after\n"
            "N events: the connection closes, or the HTTP/2 stream is reset), x-sim-no-usage 1,\n"
            "x-sim-cached-tokens N, x-sim-usage-null 1 (\"usage\": null in every chunk but the usage\n"
            "chunk, as OpenAI sends with include_usage), x-sim-tool-call NAME[,NAME...] (answer\n"
            "with tool calls; without it a tool_choice that forces a tool is obeyed), x-sim-tool-args\n"
            "JSON (their arguments; else made from the declared schema), x-sim-tool-text 1 (text\n"
            "before the calls).\n"
            "GET /sim/stats counts connections (TLS, HTTP/2), requests and streams.\n");
}

static int parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v > max)
        return -1;
    *out = v;
    return 0;
}

int main(int argc, char **argv)
{
    sim_t s = {0};
    av_sim_knobs_default(&s.knobs);
    s.models = "sim-1";
    s.h2 = 1;
    s.h2_max_streams = 100;
    const char *listen = "127.0.0.1:8000", *port_file = NULL, *cert = NULL, *key = NULL;
    enum {
        O_PORTFILE = 256, O_LAT, O_TTFT, O_TPS, O_TOK, O_ERR, O_429, O_SEED, O_ECHO, O_MODELS, O_VER,
        O_CERT, O_KEY, O_NOH2, O_H2MAX, O_GOAWAY, O_LOG, O_BAD_AFTER, O_BAD_ERR, O_BAD_TTFT, O_JITTER
    };
    static const struct option opts[] = {
        {"listen", required_argument, NULL, 'l'}, {"port-file", required_argument, NULL, O_PORTFILE},
        {"latency-ms", required_argument, NULL, O_LAT}, {"ttft-ms", required_argument, NULL, O_TTFT},
        {"tps", required_argument, NULL, O_TPS}, {"tokens", required_argument, NULL, O_TOK},
        {"error-rate", required_argument, NULL, O_ERR}, {"rate-429", required_argument, NULL, O_429},
        {"seed", required_argument, NULL, O_SEED}, {"echo", no_argument, NULL, O_ECHO},
        {"models", required_argument, NULL, O_MODELS}, {"tls-cert", required_argument, NULL, O_CERT},
        {"tls-key", required_argument, NULL, O_KEY}, {"no-h2", no_argument, NULL, O_NOH2},
        {"h2-max-streams", required_argument, NULL, O_H2MAX}, {"h2-goaway-after", required_argument, NULL, O_GOAWAY},
        {"log", required_argument, NULL, O_LOG},
        {"turn-bad-after-s", required_argument, NULL, O_BAD_AFTER}, {"bad-error-rate", required_argument, NULL, O_BAD_ERR},
        {"bad-ttft-ms", required_argument, NULL, O_BAD_TTFT},
        {"jitter", required_argument, NULL, O_JITTER},
        {"help", no_argument, NULL, 'h'}, {"version", no_argument, NULL, O_VER}, {NULL, 0, NULL, 0},
    };
    static const char *const knob_headers[] = {
        [O_LAT - O_LAT] = "x-sim-latency-ms", [O_TTFT - O_LAT] = "x-sim-ttft-ms",
        [O_TPS - O_LAT] = "x-sim-tps", [O_TOK - O_LAT] = "x-sim-tokens",
        [O_ERR - O_LAT] = "x-sim-error-rate", [O_429 - O_LAT] = "x-sim-429-rate",
        [O_SEED - O_LAT] = "x-sim-seed",
    };
    int o;
    uint64_t v;
    int64_t bad_after_s = -1;
    s.bad_error_rate = -1;
    s.bad_ttft_ms = -1;
    while ((o = getopt_long(argc, argv, "l:h", opts, NULL)) != -1) {
        switch (o) {
        case 'l': listen = optarg; break;
        case O_PORTFILE: port_file = optarg; break;
        case O_ECHO: s.knobs.echo = 1; break;
        case O_MODELS: s.models = optarg; break;
        case O_CERT: cert = optarg; break;
        case O_KEY: key = optarg; break;
        case O_NOH2: s.h2 = 0; break;
        case O_LOG:
            if ((s.log = fopen(optarg, "a")) == NULL) {
                fprintf(stderr, "aviary-sim: --log %s: %s\n", optarg, strerror(errno));
                return 2;
            }
            break;
        case O_H2MAX:
            if (parse_u64(optarg, UINT32_MAX, &v) != 0 || v == 0) {
                fprintf(stderr, "aviary-sim: --h2-max-streams wants a number from 1 to %u: %s\n", UINT32_MAX, optarg);
                return 2;
            }
            s.h2_max_streams = (uint32_t)v;
            break;
        case O_GOAWAY:
            if (parse_u64(optarg, UINT32_MAX, &v) != 0) {
                fprintf(stderr, "aviary-sim: --h2-goaway-after wants a number: %s\n", optarg);
                return 2;
            }
            s.h2_goaway_after = v;
            break;
        case O_BAD_AFTER:
            if (parse_u64(optarg, 86400, &v) != 0) {
                fprintf(stderr, "aviary-sim: --turn-bad-after-s wants seconds (0 to 86400): %s\n", optarg);
                return 2;
            }
            bad_after_s = (int64_t)v;
            break;
        case O_BAD_ERR: {
            char *end;
            s.bad_error_rate = strtod(optarg, &end);
            if (*end != '\0' || s.bad_error_rate < 0 || s.bad_error_rate > 1) {
                fprintf(stderr, "aviary-sim: --bad-error-rate wants a share from 0 to 1: %s\n", optarg);
                return 2;
            }
            break;
        }
        case O_BAD_TTFT:
            if (parse_u64(optarg, 600000, &v) != 0) {
                fprintf(stderr, "aviary-sim: --bad-ttft-ms wants milliseconds: %s\n", optarg);
                return 2;
            }
            s.bad_ttft_ms = (int64_t)v;
            break;
        case O_JITTER: {
            char *end;
            s.jitter = strtod(optarg, &end);
            if (*end != '\0' || !(s.jitter >= 0 && s.jitter <= 3)) {
                fprintf(stderr, "aviary-sim: --jitter wants a spread from 0 to 3: %s\n", optarg);
                return 2;
            }
            break;
        }
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
    if (bad_after_s >= 0)
        s.bad_at_us = av_now_us() + (uint64_t)bad_after_s * 1000000u;
    if ((cert == NULL) != (key == NULL)) {
        fprintf(stderr, "aviary-sim: --tls-cert and --tls-key go together\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    if (cert != NULL && (s.tls = tls_ctx(&s, cert, key)) == NULL)
        return 2;
    s.rng = s.knobs.seed * 0x9e3779b97f4a7c15ull | 1;
    struct sockaddr_storage ss;
    unsigned sslen;
    if (av_parse_hostport(listen, 0, 1, &ss, &sslen) != 0) {
        fprintf(stderr, "aviary-sim: --listen %s: not a numeric host:port\n", listen);
        return 2;
    }
    /* libevent's default clock is the coarse one (a tick of up to 4 ms): a
     * 300 ms wait could end at 296.9 ms. The simulator's waits are what tests
     * measure the gateway against, so they use the precise clock. */
    struct event_config *ec = event_config_new();
    event_config_set_flag(ec, EVENT_BASE_FLAG_PRECISE_TIMER);
    s.base = event_base_new_with_config(ec);
    event_config_free(ec);
    if (s.base == NULL) {
        fprintf(stderr, "aviary-sim: cannot create the event loop\n");
        return 1;
    }
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
    fprintf(stderr, "aviary-sim: listening on port %d (%s%s)\n", port, s.tls ? "TLS, " : "",
            s.h2 ? (s.tls ? "h2 and HTTP/1.1 by ALPN" : "HTTP/1.1 and h2c") : "HTTP/1.1");
    struct event *sigterm = evsignal_new(s.base, SIGTERM, signal_cb, s.base);
    struct event *sigint = evsignal_new(s.base, SIGINT, signal_cb, s.base);
    evsignal_add(sigterm, NULL);
    evsignal_add(sigint, NULL);
    event_base_dispatch(s.base);
    event_free(sigterm);
    event_free(sigint);
    evconnlistener_free(l);
    event_base_free(s.base);
    SSL_CTX_free(s.tls);
    if (s.log != NULL)
        fclose(s.log);
    return 0;
}
