/* hostile.c: a model backend that misbehaves on request, for the gateway's tests.
 * Each request names its misbehaviour in "x-hostile: MODE" (hostile --list).
 *
 * Usage: hostile [-l HOST:PORT] [--port-file FILE] [-v] | hostile --list
 * One port speaks HTTP/1.1 and h2c (prior knowledge, told apart by the
 * client preface). Request headers choose the answer:
 *   x-hostile: MODE         what to do (default "json")
 *   x-hostile-tokens: TEXT  the usage counts, written into the JSON verbatim
 *                           (default 7; digits, sign, '.', 'e' only)
 *   x-hostile-ms: N         how long a stall lasts before the close (default 3000)
 * A path ending in /messages gets the Anthropic shape, anything else the
 * OpenAI chat shape. An answer is a script of steps (write, pause, close,
 * reset, ...) played in order; adjacent writes leave in one send, a pause
 * makes the next write a send of its own.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <getopt.h>
#include <http_parser.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define H2_PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define H2_PREFACE_LEN 24
#define BIG_EVENT_BYTES (3u * 1024u * 1024u)
#define BIG_HEADER_BYTES (200u * 1024u)
#define MANY_HEADERS 5000
#define MAX_STALL_MS 60000
#define DEFAULT_STALL_MS 3000
#define SPLIT_PAUSE_MS 30
#define CUT_PAUSE_MS 50 /* lets the gateway read what came before the cut */

static int verbose;

static void die_oom(void)
{
    fputs("hostile: out of memory\n", stderr);
    abort();
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n, size);
    if (p == NULL)
        die_oom();
    return p;
}

static struct evbuffer *xevbuffer(void)
{
    struct evbuffer *b = evbuffer_new();
    if (b == NULL)
        die_oom();
    return b;
}

/* ---- what was asked ---- */

typedef enum { D_CHAT, D_ANTHROPIC } dialect_t;

typedef struct {
    int head;           /* a HEAD request */
    dialect_t dialect;
    char mode[40];
    char tokens[65];
    int stall_ms;
    int bad;            /* a knob that does not parse: answered 400 */
} ask_t;

static void ask_init(ask_t *a)
{
    memset(a, 0, sizeof(*a));
    strcpy(a->mode, "json");
    strcpy(a->tokens, "7");
    a->stall_ms = DEFAULT_STALL_MS;
}

static void ask_path(ask_t *a, const char *path, size_t n)
{
    const char *q = memchr(path, '?', n);
    if (q != NULL)
        n = (size_t)(q - path);
    while (n > 1 && path[n - 1] == '/')
        n--;
    a->dialect = n >= 9 && memcmp(path + n - 9, "/messages", 9) == 0 ? D_ANTHROPIC : D_CHAT;
}

static int name_is(const char *name, size_t n, const char *lit)
{
    return strlen(lit) == n && strncasecmp(name, lit, n) == 0;
}

/* Takes one request header; the ones that are not ours are ignored. */
static void ask_header(ask_t *a, const char *name, size_t nlen, const char *val, size_t vlen)
{
    if (name_is(name, nlen, "x-hostile")) {
        if (vlen == 0 || vlen >= sizeof(a->mode)) {
            a->bad = 1;
            return;
        }
        memcpy(a->mode, val, vlen);
        a->mode[vlen] = '\0';
    } else if (name_is(name, nlen, "x-hostile-tokens")) {
        int ok = vlen > 0 && vlen < sizeof(a->tokens);
        for (size_t i = 0; ok && i < vlen; i++) /* what a JSON number is made of, well-formed or not */
            ok = strchr("0123456789+-.eE", val[i]) != NULL && val[i] != '\0';
        if (!ok) {
            a->bad = 1;
            return;
        }
        memcpy(a->tokens, val, vlen);
        a->tokens[vlen] = '\0';
    } else if (name_is(name, nlen, "x-hostile-ms")) {
        long ms = 0;
        for (size_t i = 0; i < vlen; i++) {
            if (val[i] < '0' || val[i] > '9' || ms > MAX_STALL_MS) {
                a->bad = 1;
                return;
            }
            ms = ms * 10 + (val[i] - '0');
        }
        if (vlen == 0 || ms > MAX_STALL_MS) {
            a->bad = 1;
            return;
        }
        a->stall_ms = (int)ms;
    }
}

/* ---- scripts ---- */

typedef enum {
    S_WRITE,      /* bytes: raw on HTTP/1.1, DATA on the stream in h2 */
    S_PAUSE,      /* ms */
    S_CLOSE,      /* the connection, once what was written has left */
    S_RST,        /* the connection with SO_LINGER 0: a TCP reset */
    S_H2_HEAD,    /* status, content-type, content-length (or -1) */
    S_H2_END,     /* END_STREAM */
    S_H2_RST,     /* RST_STREAM INTERNAL_ERROR */
    S_H2_GOAWAY,  /* GOAWAY: last stream is this one (arg < 0) or arg; INTERNAL_ERROR or NO_ERROR with 0 */
    S_H2_GARBAGE, /* bytes straight onto the connection, past nghttp2; the connection is dead to us after */
} step_kind_t;

enum { X_NONE, X_BIG, X_MANY }; /* what an h2 head carries besides the usual */

typedef struct {
    step_kind_t kind;
    struct evbuffer *data;
    int ms, status, extra;
    long long arg;
    const char *ctype;
} step_t;

typedef struct {
    step_t *v;
    size_t n, cap, at;
} script_t;

static step_t *step_add(script_t *s, step_kind_t kind)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 16;
        s->v = realloc(s->v, s->cap * sizeof(*s->v));
        if (s->v == NULL)
            die_oom();
    }
    step_t *st = &s->v[s->n++];
    memset(st, 0, sizeof(*st));
    st->kind = kind;
    return st;
}

static void script_clear(script_t *s)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->v[i].data != NULL)
            evbuffer_free(s->v[i].data);
    free(s->v);
    memset(s, 0, sizeof(*s));
}

/* How a script is framed: the same modes play over HTTP/1.1 and h2. */
typedef struct {
    script_t *s;
    const ask_t *a;
    int h2, chunked;
} out_t;

static struct evbuffer *write_step(out_t *o)
{
    step_t *st = step_add(o->s, S_WRITE);
    st->data = xevbuffer();
    return st->data;
}

static void o_raw(out_t *o, const void *p, size_t n)
{
    evbuffer_add(write_step(o), p, n);
}

static void o_rawf(out_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void o_rawf(out_t *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    evbuffer_add_vprintf(write_step(o), fmt, ap);
    va_end(ap);
}

static const char *reason(int status)
{
    return status == 200 ? "OK" : status == 400 ? "Bad Request" : status == 404 ? "Not Found" : "Other";
}

enum { H_CLOSE = 1, H_NO_FRAMING = 2 };

/* The answer's head. clen < 0: chunked on HTTP/1.1 (or, with H_NO_FRAMING,
 * neither length nor chunks: the close ends the body). */
static void o_head(out_t *o, int status, const char *ctype, long long clen, int flags)
{
    if (o->h2) {
        step_t *st = step_add(o->s, S_H2_HEAD);
        st->status = status;
        st->ctype = ctype;
        st->arg = clen;
        return;
    }
    struct evbuffer *b = write_step(o);
    evbuffer_add_printf(b, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n", status, reason(status), ctype);
    if (clen >= 0)
        evbuffer_add_printf(b, "Content-Length: %lld\r\n", clen);
    else if (!(flags & H_NO_FRAMING))
        evbuffer_add_printf(b, "Transfer-Encoding: chunked\r\n");
    if (flags & H_CLOSE)
        evbuffer_add_printf(b, "Connection: close\r\n");
    evbuffer_add(b, "\r\n", 2);
    o->chunked = clen < 0 && !(flags & H_NO_FRAMING);
}

/* Body bytes; buf is taken over. */
static void o_body(out_t *o, struct evbuffer *buf)
{
    struct evbuffer *b = write_step(o);
    size_t n = evbuffer_get_length(buf);
    if (o->chunked && !o->h2)
        evbuffer_add_printf(b, "%zx\r\n", n);
    evbuffer_add_buffer(b, buf);
    if (o->chunked && !o->h2)
        evbuffer_add(b, "\r\n", 2);
    evbuffer_free(buf);
}

static void o_end(out_t *o)
{
    if (o->h2)
        step_add(o->s, S_H2_END);
    else if (o->chunked)
        o_raw(o, "0\r\n\r\n", 5);
}

static void o_pause(out_t *o, int ms)
{
    step_add(o->s, S_PAUSE)->ms = ms;
}

static void o_close(out_t *o)
{
    step_add(o->s, S_CLOSE);
}

static void o_stall(out_t *o)
{
    o_pause(o, o->a->stall_ms);
    o_close(o);
}

/* ---- answer bodies ---- */

#define ANSWER_TEXT "Hello from hostile."
static const char *const words[] = {"Hello", " from", " hostile."};
#define NWORDS 3
#define CHAT_HEAD \
    "{\"id\":\"chatcmpl-hostile\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"hostile-1\""

static struct evbuffer *json_body(const ask_t *a)
{
    struct evbuffer *b = xevbuffer();
    const char *t = a->tokens;
    if (a->dialect == D_ANTHROPIC)
        evbuffer_add_printf(b, "{\"id\":\"msg_hostile\",\"type\":\"message\",\"role\":\"assistant\","
                               "\"model\":\"hostile-1\",\"content\":[{\"type\":\"text\",\"text\":\"" ANSWER_TEXT "\"}],"
                               "\"stop_reason\":\"end_turn\",\"stop_sequence\":null,"
                               "\"usage\":{\"input_tokens\":%s,\"output_tokens\":%s}}\n",
                            t, t);
    else
        evbuffer_add_printf(b, "{\"id\":\"chatcmpl-hostile\",\"object\":\"chat.completion\",\"created\":1700000000,"
                               "\"model\":\"hostile-1\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
                               "\"content\":\"" ANSWER_TEXT "\"},\"finish_reason\":\"stop\"}],"
                               "\"usage\":{\"prompt_tokens\":%s,\"completion_tokens\":%s,\"total_tokens\":%s}}\n",
                            t, t, t);
    return b;
}

/* A content event carrying text (or, with big, BIG_EVENT_BYTES of it). */
static struct evbuffer *sse_content(const ask_t *a, const char *text, int big)
{
    struct evbuffer *b = xevbuffer();
    if (a->dialect == D_ANTHROPIC)
        evbuffer_add_printf(b, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,"
                               "\"delta\":{\"type\":\"text_delta\",\"text\":\"%s",
                            text);
    else
        evbuffer_add_printf(b, "data: " CHAT_HEAD ",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"%s", text);
    if (big) {
        static char run[4096];
        memset(run, 'x', sizeof(run));
        for (size_t n = 0; n < BIG_EVENT_BYTES; n += sizeof(run))
            evbuffer_add(b, run, sizeof(run));
    }
    if (a->dialect == D_ANTHROPIC)
        evbuffer_add_printf(b, "\"}}\n\n");
    else
        evbuffer_add_printf(b, "\"},\"finish_reason\":null}]}\n\n");
    return b;
}

/* The events of a whole stream, each in its own buffer; returns how many. */
#define MAX_EVENTS 16
static size_t sse_events(const ask_t *a, struct evbuffer **ev, int big)
{
    size_t n = 0;
    const char *t = a->tokens;
    if (a->dialect == D_ANTHROPIC) {
        ev[n] = xevbuffer();
        evbuffer_add_printf(ev[n++], "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":"
                                     "\"msg_hostile\",\"type\":\"message\",\"role\":\"assistant\","
                                     "\"model\":\"hostile-1\","
                                     "\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":%s,"
                                     "\"output_tokens\":1}}}\n\n",
                            t);
        ev[n] = xevbuffer();
        evbuffer_add_printf(ev[n++], "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,"
                                     "\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
    } else {
        ev[n] = xevbuffer();
        evbuffer_add_printf(ev[n++], "data: " CHAT_HEAD ",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\","
                                     "\"content\":\"\"},\"finish_reason\":null}]}\n\n");
    }
    for (int i = 0; i < NWORDS; i++)
        ev[n++] = sse_content(a, words[i], big && i == 1);
    ev[n] = xevbuffer();
    if (a->dialect == D_ANTHROPIC) {
        evbuffer_add_printf(ev[n++], "event: content_block_stop\ndata: {\"type\":\"content_block_stop\","
                                     "\"index\":0}\n\n");
        ev[n] = xevbuffer();
        evbuffer_add_printf(ev[n++], "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{"
                                     "\"stop_reason\":"
                                     "\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":%s}}\n\n",
                            t);
        ev[n] = xevbuffer();
        evbuffer_add_printf(ev[n++], "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    } else {
        evbuffer_add_printf(ev[n++], "data: " CHAT_HEAD ",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":"
                                     "\"stop\"}]}\n\n");
        ev[n] = xevbuffer();
        evbuffer_add_printf(ev[n++], "data: " CHAT_HEAD ",\"choices\":[],\"usage\":{\"prompt_tokens\":%s,"
                                     "\"completion_tokens\":%s,\"total_tokens\":%s}}\n\n",
                            t, t, t);
        ev[n] = xevbuffer();
        evbuffer_add_printf(ev[n++], "data: [DONE]\n\n");
    }
    return n;
}

static void free_events(struct evbuffer **ev, size_t from, size_t n)
{
    for (size_t i = from; i < n; i++)
        evbuffer_free(ev[i]);
}

/* ---- modes ---- */

enum { P_H1 = 1, P_H2 = 2 };

typedef void (*build_cb)(out_t *o);

static void m_json(out_t *o)
{
    struct evbuffer *b = json_body(o->a);
    o_head(o, 200, "application/json", (long long)evbuffer_get_length(b), 0);
    o_body(o, b);
    o_end(o);
}

/* SSE head and events [0, upto); the rest are dropped. */
static void sse_part(out_t *o, size_t upto, int flags)
{
    struct evbuffer *ev[MAX_EVENTS];
    size_t n = sse_events(o->a, ev, 0);
    o_head(o, 200, "text/event-stream", -1, flags);
    for (size_t i = 0; i < n && i < upto; i++)
        o_body(o, ev[i]);
    free_events(ev, upto < n ? upto : n, n);
}

static void m_sse(out_t *o)
{
    sse_part(o, MAX_EVENTS, 0);
    o_end(o);
}

static void m_close_json_cl(out_t *o)
{
    struct evbuffer *b = json_body(o->a);
    o_head(o, 200, "application/json", (long long)evbuffer_get_length(b), H_CLOSE);
    o_body(o, b);
    o_close(o);
}

static void m_close_json(out_t *o)
{
    o_head(o, 200, "application/json", -1, H_CLOSE | H_NO_FRAMING);
    o_body(o, json_body(o->a));
    o_close(o);
}

static void m_close_sse(out_t *o)
{
    sse_part(o, MAX_EVENTS, H_CLOSE | H_NO_FRAMING);
    o_close(o);
}

static void m_close_sse_chunked(out_t *o)
{
    sse_part(o, MAX_EVENTS, H_CLOSE);
    o_end(o);
    o_close(o);
}

/* HEAD answered as it should be: the length of the body a GET would get, no body */
static void m_head(out_t *o)
{
    if (!o->a->head) {
        m_json(o);
        return;
    }
    struct evbuffer *b = json_body(o->a);
    o_head(o, 200, "application/json", (long long)evbuffer_get_length(b), 0);
    evbuffer_free(b);
    o_end(o);
}

/* HEAD answered with its body anyway, on a connection kept alive */
static void m_head_body(out_t *o)
{
    struct evbuffer *b = json_body(o->a);
    o_head(o, 200, "application/json", (long long)evbuffer_get_length(b), 0);
    o_body(o, b);
}

static void m_garbage_before(out_t *o)
{
    o_rawf(o, "SSH-2.0-hostile\r\n\x01\x02\x03");
    m_json(o);
}

/* a whole second answer nobody asked for, in the same send as the first */
static void m_garbage_after(out_t *o)
{
    m_json(o);
    o_rawf(o, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 28\r\n\r\n"
              "{\"spurious\":\"from hostile\"}\n");
}

static void m_trunc_cl(out_t *o)
{
    struct evbuffer *b = json_body(o->a), *first = xevbuffer();
    size_t n = evbuffer_get_length(b);
    o_head(o, 200, "application/json", (long long)n + 1000, 0);
    evbuffer_remove_buffer(b, first, n / 2);
    evbuffer_free(b);
    o_body(o, first);
    o_pause(o, CUT_PAUSE_MS);
    if (o->h2) /* the stream ends short of its content-length */
        o_end(o);
    else
        o_close(o);
}

/* a chunk announced at 1024 bytes, 20 sent, then the close */
static void m_trunc_chunk(out_t *o)
{
    o_head(o, 200, "application/json", -1, 0);
    o_rawf(o, "400\r\n{\"id\":\"chatcmpl-ho");
    o_pause(o, CUT_PAUSE_MS);
    o_close(o);
}

static void m_no_last_chunk(out_t *o)
{
    sse_part(o, MAX_EVENTS, 0);
    o_pause(o, CUT_PAUSE_MS);
    o_close(o);
}

static void m_stall_head(out_t *o)
{
    o_stall(o);
}

static void m_stall_after_head(out_t *o)
{
    struct evbuffer *b = json_body(o->a);
    o_head(o, 200, "application/json", (long long)evbuffer_get_length(b), 0);
    evbuffer_free(b);
    o_stall(o);
}

static void m_stall_body(out_t *o)
{
    struct evbuffer *b = json_body(o->a), *first = xevbuffer();
    size_t n = evbuffer_get_length(b);
    o_head(o, 200, "application/json", (long long)n, 0);
    evbuffer_remove_buffer(b, first, n / 2);
    evbuffer_free(b);
    o_body(o, first);
    o_stall(o);
}

static void m_stall_sse(out_t *o)
{
    sse_part(o, 2, 0);
    o_stall(o);
}

static void m_big_header(out_t *o)
{
    struct evbuffer *b = json_body(o->a);
    if (o->h2) {
        step_t *st = step_add(o->s, S_H2_HEAD);
        st->status = 200;
        st->ctype = "application/json";
        st->arg = (long long)evbuffer_get_length(b);
        st->extra = X_BIG;
        o_body(o, b);
        o_end(o);
        return;
    }
    struct evbuffer *h = write_step(o);
    evbuffer_add_printf(h, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                           "X-Hostile-Big: ", evbuffer_get_length(b));
    static char run[4096];
    memset(run, 'a', sizeof(run));
    for (size_t n = 0; n < BIG_HEADER_BYTES; n += sizeof(run))
        evbuffer_add(h, run, sizeof(run));
    evbuffer_add(h, "\r\n\r\n", 4);
    o_body(o, b);
}

static void m_many_headers(out_t *o)
{
    struct evbuffer *b = json_body(o->a);
    if (o->h2) {
        step_t *st = step_add(o->s, S_H2_HEAD);
        st->status = 200;
        st->ctype = "application/json";
        st->arg = (long long)evbuffer_get_length(b);
        st->extra = X_MANY;
        o_body(o, b);
        o_end(o);
        return;
    }
    struct evbuffer *h = write_step(o);
    evbuffer_add_printf(h, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n",
                        evbuffer_get_length(b));
    for (int i = 0; i < MANY_HEADERS; i++)
        evbuffer_add_printf(h, "x-h%d: %d\r\n", i, i);
    evbuffer_add(h, "\r\n", 2);
    o_body(o, b);
}

static void m_dup_cl(out_t *o)
{
    struct evbuffer *b = json_body(o->a);
    size_t n = evbuffer_get_length(b);
    o_rawf(o, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %zu\r\nContent-Length: %zu\r\n\r\n",
           n, n + 5);
    o_body(o, b);
}

static void m_cl_te(out_t *o)
{
    struct evbuffer *b = json_body(o->a);
    o_rawf(o, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5\r\n"
              "Transfer-Encoding: chunked\r\n\r\n");
    o->chunked = 1;
    o_body(o, b);
    o_end(o);
}

static void m_big_sse(out_t *o)
{
    struct evbuffer *ev[MAX_EVENTS];
    size_t n = sse_events(o->a, ev, 1);
    o_head(o, 200, "text/event-stream", -1, 0);
    for (size_t i = 0; i < n; i++)
        o_body(o, ev[i]);
    o_end(o);
}

/* each event in two sends: up to its last line's end, then the blank line */
static void m_sse_split(out_t *o)
{
    struct evbuffer *ev[MAX_EVENTS];
    size_t n = sse_events(o->a, ev, 0);
    o_head(o, 200, "text/event-stream", -1, 0);
    for (size_t i = 0; i < n; i++) {
        struct evbuffer *first = xevbuffer();
        evbuffer_remove_buffer(ev[i], first, evbuffer_get_length(ev[i]) - 1);
        o_body(o, first);
        o_pause(o, SPLIT_PAUSE_MS);
        o_body(o, ev[i]);
        o_pause(o, SPLIT_PAUSE_MS);
    }
    o_end(o);
}

static void m_rst_head(out_t *o)
{
    step_add(o->s, S_RST);
}

static void m_rst_mid(out_t *o)
{
    sse_part(o, 2, 0);
    o_pause(o, CUT_PAUSE_MS);
    step_add(o->s, S_RST);
}

static void m_close_mid(out_t *o)
{
    sse_part(o, 2, 0);
    o_pause(o, CUT_PAUSE_MS);
    o_close(o);
}

static void m_h2_goaway(out_t *o)
{
    sse_part(o, 2, 0);
    o_pause(o, CUT_PAUSE_MS);
    step_add(o->s, S_H2_GOAWAY)->arg = -1;
    o_pause(o, CUT_PAUSE_MS);
    o_close(o);
}

/* GOAWAY saying no stream was processed, after this one's head and events */
static void m_h2_goaway_0(out_t *o)
{
    sse_part(o, 2, 0);
    o_pause(o, CUT_PAUSE_MS);
    step_add(o->s, S_H2_GOAWAY)->arg = 0;
    o_stall(o);
}

static void m_h2_rst(out_t *o)
{
    sse_part(o, 2, 0);
    o_pause(o, CUT_PAUSE_MS);
    step_add(o->s, S_H2_RST);
}

static void garbage(out_t *o)
{
    step_t *st = step_add(o->s, S_H2_GARBAGE);
    st->data = xevbuffer();
    evbuffer_add_printf(st->data, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nthis is not HTTP/2\r\n");
}

static void m_h2_garbage(out_t *o)
{
    garbage(o);
    o_stall(o);
}

static void m_h2_garbage_mid(out_t *o)
{
    sse_part(o, 2, 0);
    o_pause(o, CUT_PAUSE_MS);
    garbage(o);
    o_stall(o);
}

static const struct mode {
    const char *name;
    unsigned protos;
    build_cb build;
    const char *what;
} modes[] = {
    {"json", P_H1 | P_H2, m_json, "a completion with Content-Length (the control)"},
    {"sse", P_H1 | P_H2, m_sse, "a chunked event stream with usage (the control)"},
    {"close-json-cl", P_H1, m_close_json_cl, "Connection: close, Content-Length, then the close (legal)"},
    {"close-json", P_H1, m_close_json, "Connection: close, the body ended by the close (legal)"},
    {"close-sse", P_H1, m_close_sse, "Connection: close, an event stream ended by the close (legal)"},
    {"close-sse-chunked", P_H1, m_close_sse_chunked, "Connection: close, a chunked event stream (legal)"},
    {"head", P_H1 | P_H2, m_head, "HEAD answered right: Content-Length, no body"},
    {"head-body", P_H1, m_head_body, "HEAD answered with a body, the connection kept alive"},
    {"garbage-before", P_H1, m_garbage_before, "bytes before the status line"},
    {"garbage-after", P_H1, m_garbage_after, "a second, unasked-for answer after a complete one"},
    {"trunc-cl", P_H1 | P_H2, m_trunc_cl, "half the Content-Length, then the close (h2: END_STREAM)"},
    {"trunc-chunk", P_H1, m_trunc_chunk, "a chunk cut short, then the close"},
    {"no-last-chunk", P_H1, m_no_last_chunk, "a whole event stream without the last chunk, then the close"},
    {"stall-head", P_H1 | P_H2, m_stall_head, "nothing at all for x-hostile-ms, then the close"},
    {"stall-after-head", P_H1 | P_H2, m_stall_after_head, "the head, then nothing"},
    {"stall-body", P_H1 | P_H2, m_stall_body, "half the body, then nothing"},
    {"stall-sse", P_H1 | P_H2, m_stall_sse, "two events, then nothing"},
    {"big-header", P_H1 | P_H2, m_big_header, "a 200 KB header"},
    {"many-headers", P_H1 | P_H2, m_many_headers, "5,000 headers"},
    {"dup-cl", P_H1, m_dup_cl, "two Content-Length headers that disagree"},
    {"cl-te", P_H1, m_cl_te, "Content-Length with Transfer-Encoding: chunked"},
    {"big-sse", P_H1 | P_H2, m_big_sse, "an event stream with one 3 MB event"},
    {"sse-split", P_H1 | P_H2, m_sse_split, "each event's data line and its blank line in two sends"},
    {"rst-head", P_H1 | P_H2, m_rst_head, "a TCP reset instead of an answer"},
    {"rst-mid", P_H1 | P_H2, m_rst_mid, "two events, then a TCP reset"},
    {"close-mid", P_H1 | P_H2, m_close_mid, "two events, then the close"},
    {"h2-goaway", P_H2, m_h2_goaway, "two events, GOAWAY INTERNAL_ERROR, the close"},
    {"h2-goaway-0", P_H2, m_h2_goaway_0, "two events, GOAWAY with last stream 0, the socket kept open"},
    {"h2-rst", P_H2, m_h2_rst, "two events, then RST_STREAM"},
    {"h2-garbage", P_H2, m_h2_garbage, "bytes that are not HTTP/2 instead of an answer, the socket kept open"},
    {"h2-garbage-mid", P_H2, m_h2_garbage_mid, "two events, then bytes that are not HTTP/2"},
};

static void m_error(out_t *o, int status, const char *msg)
{
    struct evbuffer *b = xevbuffer();
    evbuffer_add_printf(b, "{\"error\":{\"message\":\"%s\",\"type\":\"invalid_request_error\","
                           "\"code\":\"hostile_%d\"}}\n",
                        msg, status);
    o_head(o, status, "application/json", (long long)evbuffer_get_length(b), 0);
    o_body(o, b);
    o_end(o);
}

/* Fills s with the answer to a; h2: framed for an HTTP/2 stream. */
static void build(script_t *s, const ask_t *a, int h2)
{
    out_t o = {.s = s, .a = a, .h2 = h2};
    if (a->bad) {
        m_error(&o, 400, "x-hostile, x-hostile-tokens or x-hostile-ms does not parse");
        return;
    }
    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        if (strcmp(modes[i].name, a->mode) != 0)
            continue;
        if (!(modes[i].protos & (h2 ? P_H2 : P_H1))) {
            m_error(&o, 400, h2 ? "this mode is HTTP/1.1 only" : "this mode is h2c only");
            return;
        }
        modes[i].build(&o);
        return;
    }
    m_error(&o, 404, "no such x-hostile mode (hostile --list)");
}

/* ---- connections ---- */

typedef struct conn_s conn_t;
typedef struct stream_s stream_t;

struct stream_s {
    conn_t *c;
    int32_t id;
    ask_t ask;
    script_t script;
    struct evbuffer *out; /* DATA not yet taken by nghttp2 */
    int eof, started, deferred;
    /* nghttp2 closed it; it lives on while its script has steps left (a
     * GOAWAY closes the stream before the pause and close that follow) */
    int closed, in_play;
    struct event *timer;
    stream_t *next;
};

struct conn_s {
    struct event_base *base;
    struct bufferevent *bev;
    int sniffed, h2;
    /* HTTP/1.1 */
    http_parser parser;
    ask_t ask;
    char hname[64];
    size_t hname_len;
    int hname_long;
    char hval[80];
    size_t hval_len;
    int hval_long, in_value;
    script_t script;
    int playing, drain_wait;
    struct event *timer;
    /* h2 */
    nghttp2_session *ng;
    stream_t *streams;
    int broken; /* wrote bytes past nghttp2: no HTTP/2 read or sent from here on */
};

static int conn_free(conn_t *c);
static void h1_parse(conn_t *c);
static void h2_send(conn_t *c);

static void stream_free(stream_t *st)
{
    conn_t *c = st->c;
    for (stream_t **p = &c->streams; *p != NULL; p = &(*p)->next)
        if (*p == st) {
            *p = st->next;
            break;
        }
    event_free(st->timer);
    evbuffer_free(st->out);
    script_clear(&st->script);
    free(st);
}

/* Frees c (and every stream of it). Returns 1: c is gone. */
static int conn_free(conn_t *c)
{
    while (c->streams != NULL)
        stream_free(c->streams);
    if (c->ng != NULL)
        nghttp2_session_del(c->ng);
    event_free(c->timer);
    script_clear(&c->script);
    bufferevent_free(c->bev);
    free(c);
    return 1;
}

/* A close or reset step: once the output has left. Returns 1 when c is gone. */
static int conn_end(conn_t *c, int rst)
{
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) > 0) {
        c->drain_wait = 1;
        return 0;
    }
    if (rst) {
        struct linger lg = {1, 0};
        setsockopt(bufferevent_getfd(c->bev), SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    if (verbose)
        fprintf(stderr, "hostile: %s\n", rst ? "reset" : "close");
    return conn_free(c);
}

/* ---- HTTP/1.1 ---- */

/* Plays c's script from where it stopped. Returns 1 when c is gone. */
static int h1_play(conn_t *c)
{
    script_t *s = &c->script;
    c->drain_wait = 0;
    while (s->at < s->n) {
        step_t *st = &s->v[s->at];
        switch (st->kind) {
        case S_WRITE:
            bufferevent_write_buffer(c->bev, st->data);
            s->at++;
            continue;
        case S_PAUSE: {
            struct timeval tv = {st->ms / 1000, (st->ms % 1000) * 1000};
            s->at++;
            evtimer_add(c->timer, &tv);
            return 0;
        }
        case S_CLOSE:
        case S_RST:
            return conn_end(c, st->kind == S_RST);
        default: /* h2 steps are not built for HTTP/1.1 */
            s->at++;
            continue;
        }
    }
    /* the answer is out and the connection stays: the next request */
    script_clear(s);
    c->playing = 0;
    http_parser_pause(&c->parser, 0);
    h1_parse(c);
    return 0;
}

static void h1_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    h1_play(arg);
}

static void h1_header_done(conn_t *c)
{
    /* our names are short; a value of ours too long to keep is refused, not cut */
    if (c->hname_len > 0 && !c->hname_long && !c->hval_long)
        ask_header(&c->ask, c->hname, c->hname_len, c->hval, c->hval_len);
    else if (!c->hname_long && c->hname_len >= 9 && strncasecmp(c->hname, "x-hostile", 9) == 0)
        c->ask.bad = 1;
    c->hname_len = c->hval_len = 0;
    c->hname_long = c->hval_long = c->in_value = 0;
}

static int on_message_begin(http_parser *p)
{
    conn_t *c = p->data;
    ask_init(&c->ask);
    c->hname_len = c->hval_len = 0;
    c->hname_long = c->hval_long = c->in_value = 0;
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    conn_t *c = p->data;
    ask_path(&c->ask, at, n); /* a URL in pieces: the last piece decides, and ours come whole */
    return 0;
}

static void acc(char *buf, size_t cap, size_t *len, int *too_long, const char *at, size_t n)
{
    if (*len + n >= cap) {
        *too_long = 1;
        return;
    }
    memcpy(buf + *len, at, n);
    *len += n;
    buf[*len] = '\0';
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    conn_t *c = p->data;
    if (c->in_value)
        h1_header_done(c);
    acc(c->hname, sizeof(c->hname), &c->hname_len, &c->hname_long, at, n);
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    conn_t *c = p->data;
    c->in_value = 1;
    acc(c->hval, sizeof(c->hval), &c->hval_len, &c->hval_long, at, n);
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    conn_t *c = p->data;
    h1_header_done(c);
    c->ask.head = p->method == HTTP_HEAD;
    return 0;
}

static int on_message_complete(http_parser *p)
{
    conn_t *c = p->data;
    if (verbose)
        fprintf(stderr, "hostile: HTTP/1.1 %s%s\n", c->ask.mode, c->ask.head ? " (HEAD)" : "");
    build(&c->script, &c->ask, 0);
    c->playing = 1;
    http_parser_pause(p, 1); /* one answer at a time; the next request waits in the input */
    return 0;
}

static const http_parser_settings h1_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_message_complete = on_message_complete,
};

/* Reads requests from c's input while no answer is playing. */
static void h1_parse(conn_t *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    while (!c->playing && evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            return;
        size_t n = http_parser_execute(&c->parser, &h1_settings, v.iov_base, v.iov_len);
        evbuffer_drain(in, n);
        enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
        if (c->playing) {
            h1_play(c); /* may free c: nothing after */
            return;
        }
        if (e != HPE_OK) {
            fprintf(stderr, "hostile: a request that does not parse: %s\n", http_errno_description(e));
            conn_free(c);
            return;
        }
    }
}

/* ---- h2c ---- */

static ssize_t data_read(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                         nghttp2_data_source *src, void *user)
{
    (void)ng;
    (void)id;
    (void)user;
    stream_t *st = src->ptr;
    size_t n = evbuffer_get_length(st->out);
    if (n == 0 && !st->eof) {
        st->deferred = 1;
        return NGHTTP2_ERR_DEFERRED;
    }
    if (n > len)
        n = len;
    evbuffer_remove(st->out, buf, n);
    if (st->eof && evbuffer_get_length(st->out) == 0)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static void resume(stream_t *st)
{
    if (st->deferred) {
        st->deferred = 0;
        nghttp2_session_resume_data(st->c->ng, st->id);
    }
}

#define NV(n, v, vl) {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, (vl), NGHTTP2_NV_FLAG_NONE}

static void h2_head(stream_t *st, const step_t *sp)
{
    char status[8], clen[24];
    snprintf(status, sizeof(status), "%d", sp->status);
    snprintf(clen, sizeof(clen), "%lld", sp->arg);
    size_t extra = sp->extra == X_MANY ? MANY_HEADERS : sp->extra == X_BIG ? 1 : 0;
    nghttp2_nv *nv = xcalloc(3 + extra, sizeof(*nv));
    char *big = NULL, *names = NULL;
    size_t n = 0;
    nv[n++] = (nghttp2_nv)NV(":status", status, strlen(status));
    nv[n++] = (nghttp2_nv)NV("content-type", sp->ctype, strlen(sp->ctype));
    if (sp->arg >= 0)
        nv[n++] = (nghttp2_nv)NV("content-length", clen, strlen(clen));
    if (sp->extra == X_BIG) {
        big = malloc(BIG_HEADER_BYTES);
        if (big == NULL)
            die_oom();
        memset(big, 'a', BIG_HEADER_BYTES);
        nv[n++] = (nghttp2_nv){(uint8_t *)"x-hostile-big", (uint8_t *)big, 13, BIG_HEADER_BYTES,
                               NGHTTP2_NV_FLAG_NO_INDEX};
    } else if (sp->extra == X_MANY) {
        names = xcalloc(MANY_HEADERS, 16);
        for (size_t i = 0; i < MANY_HEADERS; i++) {
            char *p = names + i * 16;
            int k = snprintf(p, 16, "x-h%zu", i);
            nv[n++] = (nghttp2_nv){(uint8_t *)p, (uint8_t *)p + 3, (size_t)k, (size_t)k - 3, NGHTTP2_NV_FLAG_NONE};
        }
    }
    nghttp2_data_provider prd = {.source.ptr = st, .read_callback = data_read};
    int rv = nghttp2_submit_response(st->c->ng, st->id, nv, n, &prd); /* nghttp2 copies the headers */
    if (rv != 0)
        fprintf(stderr, "hostile: stream %d: cannot answer: %s\n", st->id, nghttp2_strerror(rv));
    free(nv);
    free(big);
    free(names);
}

/* Plays a stream's script from where it stopped. Returns 1 when the
 * connection (and with it the stream) is gone, or the stream is. */
static int h2_play(stream_t *st)
{
    conn_t *c = st->c;
    script_t *s = &st->script;
    st->in_play = 1;
    while (s->at < s->n) {
        step_t *sp = &s->v[s->at++];
        int h2 = !c->broken && !st->closed; /* may it still send HTTP/2 on this stream */
        switch (sp->kind) {
        case S_H2_HEAD:
            if (h2)
                h2_head(st, sp);
            break;
        case S_WRITE:
            evbuffer_add_buffer(st->out, sp->data);
            if (h2)
                resume(st);
            break;
        case S_H2_END:
            st->eof = 1;
            if (h2)
                resume(st);
            break;
        case S_H2_RST:
            if (h2)
                nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
            break;
        case S_H2_GOAWAY:
            if (!c->broken)
                nghttp2_submit_goaway(c->ng, NGHTTP2_FLAG_NONE, sp->arg < 0 ? st->id : (int32_t)sp->arg,
                                      sp->arg == 0 ? NGHTTP2_NO_ERROR : NGHTTP2_INTERNAL_ERROR, NULL, 0);
            break;
        case S_H2_GARBAGE:
            h2_send(c); /* what nghttp2 holds goes first */
            bufferevent_write_buffer(c->bev, sp->data);
            c->broken = 1;
            break;
        case S_PAUSE: {
            struct timeval tv = {sp->ms / 1000, (sp->ms % 1000) * 1000};
            evtimer_add(st->timer, &tv);
            h2_send(c);
            st->in_play = 0;
            return 0;
        }
        case S_CLOSE:
        case S_RST:
            if (st->closed && !c->broken)
                break; /* the peer is done with the stream: other streams keep the connection */
            h2_send(c);
            s->at--; /* played again once the output has left */
            st->in_play = 0;
            return conn_end(c, sp->kind == S_RST);
        }
    }
    h2_send(c); /* may close the stream: on_stream_close only marks it while it plays */
    st->in_play = 0;
    if (st->closed) {
        stream_free(st);
        return 1;
    }
    return 0;
}

static void h2_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    h2_play(arg);
}

static void h2_send(conn_t *c)
{
    if (c->broken)
        return;
    for (;;) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(c->ng, &data);
        if (n < 0) {
            fprintf(stderr, "hostile: h2 send: %s\n", nghttp2_strerror((int)n));
            c->broken = 1;
            return;
        }
        if (n == 0)
            return;
        bufferevent_write(c->bev, data, (size_t)n);
    }
}

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *f, void *user)
{
    conn_t *c = user;
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    stream_t *st = xcalloc(1, sizeof(*st));
    st->c = c;
    st->id = f->hd.stream_id;
    st->out = xevbuffer();
    st->timer = evtimer_new(c->base, h2_timer_cb, st);
    ask_init(&st->ask);
    st->next = c->streams;
    c->streams = st;
    nghttp2_session_set_stream_user_data(ng, st->id, st);
    return 0;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
                     const uint8_t *value, size_t vlen, uint8_t flags, void *user)
{
    (void)flags;
    (void)user;
    stream_t *st = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    if (st == NULL)
        return 0;
    if (nlen == 5 && memcmp(name, ":path", 5) == 0)
        ask_path(&st->ask, (const char *)value, vlen);
    else if (nlen == 7 && memcmp(name, ":method", 7) == 0)
        st->ask.head = vlen == 4 && memcmp(value, "HEAD", 4) == 0;
    else
        ask_header(&st->ask, (const char *)name, nlen, (const char *)value, vlen);
    return 0;
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *user)
{
    (void)user;
    if ((f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA) || !(f->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    stream_t *st = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    if (st == NULL || st->started)
        return 0;
    st->started = 1;
    if (verbose)
        fprintf(stderr, "hostile: h2 stream %d %s%s\n", st->id, st->ask.mode, st->ask.head ? " (HEAD)" : "");
    build(&st->script, &st->ask, 1);
    /* played from the loop: a close must not free the session under nghttp2 */
    struct timeval now = {0, 0};
    evtimer_add(st->timer, &now);
    return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t code, void *user)
{
    (void)code;
    (void)user;
    stream_t *st = nghttp2_session_get_stream_user_data(ng, id);
    if (st == NULL)
        return 0;
    st->closed = 1;
    if (!st->in_play && (!st->started || st->script.at >= st->script.n))
        stream_free(st); /* else its script frees it when it ends */
    return 0;
}

static void h2_start(conn_t *c)
{
    nghttp2_session_callbacks *cb;
    if (nghttp2_session_callbacks_new(&cb) != 0)
        die_oom();
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_option *opt;
    if (nghttp2_option_new(&opt) != 0)
        die_oom();
    nghttp2_option_set_max_send_header_block_length(opt, 2 * BIG_HEADER_BYTES); /* 64 KiB by default */
    if (nghttp2_session_server_new2(&c->ng, cb, c, opt) != 0)
        die_oom();
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cb);
    nghttp2_settings_entry set[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100}};
    nghttp2_submit_settings(c->ng, NGHTTP2_FLAG_NONE, set, 1);
    c->h2 = 1;
}

static void h2_input(conn_t *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    if (c->broken) { /* past the garbage nothing is read: the peer's bytes go nowhere */
        evbuffer_drain(in, evbuffer_get_length(in));
        return;
    }
    while (evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            break;
        ssize_t n = nghttp2_session_mem_recv(c->ng, v.iov_base, v.iov_len);
        if (n < 0) {
            if (verbose)
                fprintf(stderr, "hostile: h2 input: %s\n", nghttp2_strerror((int)n));
            conn_free(c);
            return;
        }
        evbuffer_drain(in, (size_t)n);
    }
    h2_send(c);
}

/* ---- sockets ---- */

static void read_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    conn_t *c = arg;
    if (!c->sniffed) {
        struct evbuffer *in = bufferevent_get_input(c->bev);
        size_t n = evbuffer_get_length(in);
        size_t k = n < H2_PREFACE_LEN ? n : H2_PREFACE_LEN;
        unsigned char head[H2_PREFACE_LEN];
        evbuffer_copyout(in, head, k);
        int h2 = memcmp(head, H2_PREFACE, k) == 0;
        if (h2 && k < H2_PREFACE_LEN)
            return; /* the rest of the preface decides */
        c->sniffed = 1;
        if (h2) {
            h2_start(c);
        } else {
            http_parser_init(&c->parser, HTTP_REQUEST);
            c->parser.data = c;
        }
    }
    if (c->h2)
        h2_input(c);
    else
        h1_parse(c);
}

static void write_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    conn_t *c = arg;
    if (!c->drain_wait)
        return;
    c->drain_wait = 0;
    if (!c->h2) {
        h1_play(c);
        return;
    }
    for (stream_t *st = c->streams; st != NULL; st = st->next) /* the one that waits to close */
        if (st->script.at < st->script.n &&
            (st->script.v[st->script.at].kind == S_CLOSE || st->script.v[st->script.at].kind == S_RST)) {
            h2_play(st);
            return;
        }
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
        conn_free(arg);
}

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
    (void)l;
    (void)sa;
    (void)salen;
    struct event_base *base = arg;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)); /* a pause between sends shows on the wire */
    conn_t *c = xcalloc(1, sizeof(*c));
    c->base = base;
    c->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
    c->timer = evtimer_new(base, h1_timer_cb, c);
    if (c->bev == NULL || c->timer == NULL)
        die_oom();
    bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    event_base_loopbreak(arg);
}

/* "127.0.0.1:0" or "[::1]:8080"; libevent's parser refuses port 0 */
static int parse_addr(const char *s, struct sockaddr_storage *ss, int *len)
{
    const char *colon = strrchr(s, ':');
    if (colon == NULL || colon[1] == '\0' || strspn(colon + 1, "0123456789") != strlen(colon + 1) ||
        strlen(colon + 1) > 5)
        return -1;
    long port = strtol(colon + 1, NULL, 10);
    char host[64];
    size_t hlen = (size_t)(colon - s);
    if (hlen >= 2 && s[0] == '[' && s[hlen - 1] == ']') {
        s++;
        hlen -= 2;
    }
    if (port > 65535 || hlen == 0 || hlen >= sizeof(host))
        return -1;
    memcpy(host, s, hlen);
    host[hlen] = '\0';
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        *len = sizeof(*v4);
        return 0;
    }
    if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        *len = sizeof(*v6);
        return 0;
    }
    return -1;
}

static int usage(FILE *f, int rc)
{
    fprintf(f, "usage: hostile [-l HOST:PORT] [--port-file FILE] [-v]\n"
               "       hostile --list\n"
               "A backend that misbehaves as each request's x-hostile header says; HTTP/1.1 and\n"
               "h2c (prior knowledge) on one port. Knobs: x-hostile-tokens (usage counts, verbatim),\n"
               "x-hostile-ms (how long a stall lasts). A path ending in /messages gets Anthropic's\n"
               "shape, any other OpenAI's chat shape.\n");
    return rc;
}

int main(int argc, char **argv)
{
    const char *listen = "127.0.0.1:0", *port_file = NULL;
    static const struct option opts[] = {
        {"listen", required_argument, NULL, 'l'}, {"port-file", required_argument, NULL, 'p'},
        {"verbose", no_argument, NULL, 'v'},      {"list", no_argument, NULL, 'L'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    int o;
    while ((o = getopt_long(argc, argv, "l:v", opts, NULL)) != -1) {
        switch (o) {
        case 'l': listen = optarg; break;
        case 'p': port_file = optarg; break;
        case 'v': verbose = 1; break;
        case 'L':
            for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++)
                printf("%-18s %-9s %s\n", modes[i].name,
                       modes[i].protos == (P_H1 | P_H2) ? "h1,h2c" : modes[i].protos == P_H1 ? "h1" : "h2c",
                       modes[i].what);
            return 0;
        case 'h': return usage(stdout, 0);
        default: return usage(stderr, 2);
        }
    }
    if (optind != argc)
        return usage(stderr, 2);
    struct sockaddr_storage ss;
    int sslen;
    if (parse_addr(listen, &ss, &sslen) != 0) {
        fprintf(stderr, "hostile: cannot parse listen address %s (HOST:PORT, IPv4 or [IPv6])\n", listen);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct event_base *base = event_base_new();
    if (base == NULL)
        die_oom();
    struct evconnlistener *l = evconnlistener_new_bind(base, accept_cb, base, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE,
                                                       128, (struct sockaddr *)&ss, sslen);
    if (l == NULL) {
        fprintf(stderr, "hostile: cannot listen on %s: %s\n", listen, strerror(errno));
        return 1;
    }
    struct sockaddr_storage bound;
    socklen_t blen = sizeof(bound);
    getsockname(evconnlistener_get_fd(l), (struct sockaddr *)&bound, &blen);
    int port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                 : ((struct sockaddr_in *)&bound)->sin_port);
    if (port_file != NULL) { /* written whole, then renamed: a reader never sees half a port */
        char tmp[4096];
        snprintf(tmp, sizeof(tmp), "%s.tmp", port_file);
        FILE *f = fopen(tmp, "w");
        if (f == NULL || fprintf(f, "%d\n", port) < 0 || fclose(f) != 0 || rename(tmp, port_file) != 0) {
            fprintf(stderr, "hostile: cannot write %s: %s\n", port_file, strerror(errno));
            return 1;
        }
    }
    fprintf(stderr, "hostile: listening on port %d (HTTP/1.1 and h2c)\n", port);
    struct event *sigterm = evsignal_new(base, SIGTERM, signal_cb, base);
    struct event *sigint = evsignal_new(base, SIGINT, signal_cb, base);
    event_add(sigterm, NULL);
    event_add(sigint, NULL);
    event_base_dispatch(base);
    event_free(sigterm);
    event_free(sigint);
    evconnlistener_free(l);
    event_base_free(base);
    return 0;
}
