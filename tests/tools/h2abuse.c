/* h2abuse.c: a test client that speaks just enough raw HTTP/2 to abuse a
 * server in one named way or to break one rule of RFC 9113, then reports how
 * the server reacted.
 *
 * Usage: h2abuse HOST PORT CASE [COUNT [SECONDS]]; "h2abuse list" names the
 * cases with the reaction RFC 9113 asks for. Floods print "GOAWAY <code>
 * last_stream=N ..." and exit 0 at the first GOAWAY. The other cases print a
 * line for each stream the server ends ("stream 3: 400 bad_request", "stream
 * 5: RST_STREAM PROTOCOL_ERROR", "stream 1: 200 then RST_STREAM CANCEL"), for
 * each SETTINGS or PING acknowledgement, and end at a GOAWAY (then "closed" or
 * "still open" a few seconds on) or when every stream they opened has ended
 * ("all N streams ended: <outcomes>"), exiting 0 either way. Any case exits 1
 * on a close without GOAWAY, 2 when nothing ends within SECONDS (10), 3 on a
 * usage or local error. DATA goes out within the flow-control windows the
 * server gives; the client never opens its own, and asks for an HPACK table
 * of 0 so that a response's :status can be read without one. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum {
    DATA = 0, HEADERS = 1, PRIORITY = 2, RST_STREAM = 3, SETTINGS = 4, PUSH_PROMISE = 5,
    PING = 6, GOAWAY = 7, WINDOW_UPDATE = 8, CONTINUATION = 9
};
enum { F_END_STREAM = 1, F_ACK = 1, F_END_HEADERS = 4, F_PADDED = 8, F_PRIORITY = 0x20 };
enum { EH = F_END_HEADERS, ES = F_END_STREAM };

typedef struct {
    unsigned char *p;
    size_t len, cap;
} buf_t;

/* The script pauses at a stop until its condition holds. */
enum { W_END, W_HEAD, W_MS };
typedef struct {
    size_t at;
    int kind;
    long arg;
} stop_t;

typedef struct {
    int opened, reset, head, ended, status; /* reset: by us */
    int64_t window;  /* what the server's WINDOW_UPDATEs added, less the DATA sent */
    uint32_t rst;    /* error code + 1; 0: none */
    char code[48];
    char body[512];
    size_t body_len;
} stream_t;

enum { K_FLOOD, K_CASE, K_LOAD }; /* LOAD: a case that prints outcomes, not one line a stream */

typedef struct {
    buf_t out;
    stop_t stops[16];
    size_t nstops;
    stream_t *st;
    uint32_t nst;
    /* flow control of what we send: DATA waits for the server's windows */
    size_t fc_at;               /* the next frame not yet let through */
    int64_t conn_window, initial_window;
} script_t;

typedef struct case_s case_t;
struct case_s {
    const char *name;
    void (*build)(script_t *s, const case_t *c, long count);
    int kind;
    const char *a, *b; /* the case's parameters */
    const char *expect;
};

static void put(buf_t *b, const void *d, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2;
        b->p = realloc(b->p, b->cap);
        if (b->p == NULL) {
            perror("realloc");
            exit(3);
        }
    }
    memcpy(b->p + b->len, d, n);
    b->len += n;
}

static stream_t *stream_at(script_t *s, uint32_t sid)
{
    if (sid == 0 || sid > (1u << 20))
        return NULL;
    if (sid >= s->nst) {
        uint32_t n = sid * 2 + 16;
        s->st = realloc(s->st, n * sizeof(*s->st));
        if (s->st == NULL) {
            perror("realloc");
            exit(3);
        }
        memset(s->st + s->nst, 0, (n - s->nst) * sizeof(*s->st));
        s->nst = n;
    }
    return &s->st[sid];
}

static void frame(script_t *s, int type, int flags, uint32_t sid, const void *payload, size_t n)
{
    unsigned char h[9] = {(unsigned char)(n >> 16), (unsigned char)(n >> 8), (unsigned char)n, (unsigned char)type,
                          (unsigned char)flags, (unsigned char)(sid >> 24), (unsigned char)(sid >> 16),
                          (unsigned char)(sid >> 8), (unsigned char)sid};
    put(&s->out, h, 9);
    if (n > 0)
        put(&s->out, payload, n);
    uint32_t id = sid & 0x7fffffffu;
    stream_t *st;
    if (type == HEADERS && (id & 1) && (st = stream_at(s, id)) != NULL)
        st->opened = 1;
    if (type == RST_STREAM && (st = stream_at(s, id)) != NULL)
        st->reset = 1;
}

static void stop(script_t *s, int kind, long arg)
{
    if (s->nstops == sizeof(s->stops) / sizeof(s->stops[0])) {
        fprintf(stderr, "h2abuse: too many stops\n");
        exit(3);
    }
    s->stops[s->nstops++] = (stop_t){s->out.len, kind, arg};
}

static void u32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* ---- HPACK, as little as the cases need ---- */

typedef struct {
    unsigned char p[20000];
    size_t n;
} blk_t;

/* HPACK integer with an N-bit prefix */
static size_t hpack_int(unsigned char *out, unsigned char first, int bits, size_t v)
{
    size_t max = (1u << bits) - 1, n = 0;
    if (v < max) {
        out[n++] = (unsigned char)(first | v);
        return n;
    }
    out[n++] = (unsigned char)(first | max);
    v -= max;
    while (v >= 128) {
        out[n++] = (unsigned char)(0x80 | (v & 0x7f));
        v >>= 7;
    }
    out[n++] = (unsigned char)v;
    return n;
}

static void blk_str(blk_t *k, const char *v, size_t n)
{
    k->n += hpack_int(k->p + k->n, 0, 7, n);
    memcpy(k->p + k->n, v, n);
    k->n += n;
}

/* A field as a literal without indexing, with a literal name: any bytes go. */
static void field(blk_t *k, const char *name, const char *value)
{
    k->p[k->n++] = 0x00;
    blk_str(k, name, strlen(name));
    blk_str(k, value, strlen(value));
}

/* Fields from "name: value" lines; a name may start with ':'. */
static void fields(blk_t *k, const char *lines)
{
    while (*lines != '\0') {
        const char *end = strchr(lines, '\n'), *sep = strstr(lines + 1, ": ");
        if (end == NULL)
            end = lines + strlen(lines);
        if (sep == NULL || sep > end) {
            fprintf(stderr, "h2abuse: bad field line %s\n", lines);
            exit(3);
        }
        k->p[k->n++] = 0x00;
        blk_str(k, lines, (size_t)(sep - lines));
        blk_str(k, sep + 2, (size_t)(end - sep - 2));
        lines = *end ? end + 1 : end;
    }
}

static void req_head(blk_t *k, const char *method, const char *path)
{
    field(k, ":method", method);
    field(k, ":scheme", "http");
    field(k, ":path", path);
    field(k, ":authority", "localhost");
}

/* A request head with extra "name: value" lines (or NULL) as one HEADERS frame. */
static void request(script_t *s, uint32_t sid, int flags, const char *method, const char *path, const char *extra)
{
    blk_t k = {.n = 0};
    req_head(&k, method, path);
    if (extra != NULL)
        fields(&k, extra);
    frame(s, HEADERS, flags, sid, k.p, k.n);
}

/* A GET that must be answered 200: shows the connection still serves. */
static void probe(script_t *s, uint32_t sid)
{
    request(s, sid, EH | ES, "GET", "/v1/models", NULL);
}

static const char CHAT[] = "/v1/chat/completions";
static const char JSON_BODY[] = "{\"messages\":[]}";
/* a completion streamed slowly enough (5 events a second) to stay open for a while */
static const char SLOW[] = "content-type: application/json\nx-sim-tokens: 40\nx-sim-tps: 5";
static const char SLOW_BODY[] = "{\"stream\":true,\"messages\":[]}";

/* Magic, our SETTINGS (an HPACK table of 0, so that a response's :status is
 * never a reference into a dynamic table) and an early ACK of the server's. */
static void preface_no_ack(script_t *s)
{
    static const char magic[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    static const unsigned char table0[6] = {0, 1, 0, 0, 0, 0};
    put(&s->out, magic, sizeof(magic) - 1);
    frame(s, SETTINGS, 0, 0, table0, 6);
}

static void preface(script_t *s)
{
    preface_no_ack(s);
    frame(s, SETTINGS, F_ACK, 0, NULL, 0);
}

/* ---- the floods (the first preface, without ACK) ---- */

static void flood_preface(script_t *s)
{
    static const char magic[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    put(&s->out, magic, sizeof(magic) - 1);
    frame(s, SETTINGS, 0, 0, NULL, 0);
}

/* HPACK: indexed :method (GET 0x82 or POST 0x83), :scheme http, :path /v1/models, :authority literal */
static size_t request_block(unsigned char *out, int post)
{
    size_t n = 0;
    out[n++] = post ? 0x83 : 0x82;
    out[n++] = 0x86;
    out[n++] = 0x04; /* :path, literal without indexing, name index 4 */
    out[n++] = 10;
    memcpy(out + n, "/v1/models", 10);
    n += 10;
    out[n++] = 0x01; /* :authority */
    out[n++] = 9;
    memcpy(out + n, "localhost", 9);
    n += 9;
    return n;
}

static void b_flood(script_t *s, const case_t *c, long count)
{
    unsigned char blk[16384];
    const char *attack = c->name;
    flood_preface(s);
    if (strcmp(attack, "rapid-reset") == 0) {
        /* open a stream and cancel it at once, over and over */
        size_t n = request_block(blk, 0);
        static const unsigned char cancel[4] = {0, 0, 0, 8};
        for (long i = 0; i < count; i++) {
            frame(s, HEADERS, F_END_HEADERS | F_END_STREAM, (uint32_t)(2 * i + 1), blk, n);
            frame(s, RST_STREAM, 0, (uint32_t)(2 * i + 1), cancel, 4);
        }
    } else if (strcmp(attack, "continuation") == 0) {
        /* one header whose value never ends, one byte per CONTINUATION frame */
        size_t n = request_block(blk, 0);
        blk[n++] = 0x00;
        blk[n++] = 5;
        memcpy(blk + n, "x-big", 5);
        n += 5;
        n += hpack_int(blk + n, 0, 7, (size_t)count + 1000);
        frame(s, HEADERS, 0, 1, blk, n);
        for (long i = 0; i < count; i++)
            frame(s, CONTINUATION, 0, 1, "a", 1);
    } else if (strcmp(attack, "hpack-bomb") == 0 || strcmp(attack, "trailer-bomb") == 0) {
        /* a 4000-byte header put in the dynamic table once, then referenced by one byte each */
        int trailers = attack[0] == 't';
        size_t n = 0;
        if (trailers) {
            n = request_block(blk, 1);
            frame(s, HEADERS, F_END_HEADERS, 1, blk, n);
            frame(s, DATA, 0, 1, "{}", 2);
            n = 0;
        } else {
            n = request_block(blk, 0);
        }
        blk[n++] = 0x40;
        blk[n++] = 6;
        memcpy(blk + n, "x-bomb", 6);
        n += 6;
        n += hpack_int(blk + n, 0, 7, 4000);
        memset(blk + n, 'a', 4000);
        n += 4000;
        for (long i = 0; i < count && n < sizeof(blk); i++)
            blk[n++] = 0x80 | 62;
        frame(s, HEADERS, F_END_HEADERS | F_END_STREAM, 1, blk, n);
    } else if (strcmp(attack, "settings") == 0) {
        for (long i = 0; i < count; i++)
            frame(s, SETTINGS, 0, 0, NULL, 0);
    } else if (strcmp(attack, "ping") == 0) {
        for (long i = 0; i < count; i++)
            frame(s, PING, 0, 0, "12345678", 8);
    } else if (strcmp(attack, "priority") == 0) {
        static const unsigned char pri[5] = {0, 0, 0, 0, 15};
        for (long i = 0; i < count; i++)
            frame(s, PRIORITY, 0, (uint32_t)(2 * i + 1), pri, 5);
    } else if (strcmp(attack, "empty-data") == 0) {
        size_t n = request_block(blk, 1);
        frame(s, HEADERS, F_END_HEADERS, 1, blk, n);
        for (long i = 0; i < count; i++)
            frame(s, DATA, 0, 1, NULL, 0);
    } else if (strcmp(attack, "streams") == 0) {
        /* streams that stay open (a POST whose body never comes), far past the limit */
        size_t n = request_block(blk, 1);
        for (long i = 0; i < count; i++)
            frame(s, HEADERS, F_END_HEADERS, (uint32_t)(2 * i + 1), blk, n);
    }
}

/* ---- timeouts and memory (K_LOAD prints outcomes) ---- */

/* COUNT POSTs whose body never comes */
static void b_stuck_streams(script_t *s, const case_t *c, long count)
{
    (void)c;
    preface(s);
    for (long i = 0; i < count; i++)
        request(s, (uint32_t)(2 * i + 1), EH, "POST", CHAT, "content-type: application/json");
}

/* COUNT POSTs each sending 256 KiB of a body that never ends */
static void b_big_bodies(script_t *s, const case_t *c, long count)
{
    (void)c;
    static unsigned char chunk[16384];
    memset(chunk, ' ', sizeof(chunk));
    preface(s);
    for (long i = 0; i < count; i++) {
        uint32_t sid = (uint32_t)(2 * i + 1);
        request(s, sid, EH, "POST", CHAT, "content-type: application/json");
        for (int k = 0; k < 16; k++)
            frame(s, DATA, 0, sid, chunk, sizeof(chunk));
    }
}

/* a header block that never ends: HEADERS without END_HEADERS, no CONTINUATION */
static void b_stuck_headers(script_t *s, const case_t *c, long count)
{
    (void)c;
    (void)count;
    preface(s);
    request(s, 1, 0, "GET", "/v1/models", NULL);
}

/* part of a body, nothing more; then, after the server gave up, the rest */
static void b_stuck_body(script_t *s, const case_t *c, long count)
{
    (void)c;
    (void)count;
    preface(s);
    request(s, 1, EH, "POST", CHAT, "content-type: application/json");
    frame(s, DATA, 0, 1, "{", 1);
    stop(s, W_END, 1);
    frame(s, DATA, ES, 1, "}", 1);
    probe(s, 3);
}

/* nothing after the preface */
static void b_idle(script_t *s, const case_t *c, long count)
{
    (void)c;
    (void)count;
    preface(s);
}

/* a long answer whose flow-control window we never open */
static void b_no_window(script_t *s, const case_t *c, long count)
{
    (void)c;
    (void)count;
    preface(s);
    request(s, 1, EH, "POST", CHAT, "content-type: application/json\nx-sim-tokens: 3000\nx-sim-tps: 0");
    frame(s, DATA, ES, 1, SLOW_BODY, strlen(SLOW_BODY));
}

/* ---- RFC 9113 cases ---- */

/* a request with one more header (a: name, b: value) on stream 1, then a probe */
static void b_header(script_t *s, const case_t *c, long count)
{
    (void)count;
    char extra[256];
    snprintf(extra, sizeof(extra), "%s: %s", c->a, c->b);
    preface(s);
    request(s, 1, EH | ES, "GET", "/v1/models", extra);
    probe(s, 3);
}

/* a request made of exactly the fields in a (lines), then a probe */
static void b_fields(script_t *s, const case_t *c, long count)
{
    (void)count;
    blk_t k = {.n = 0};
    fields(&k, c->a);
    preface(s);
    frame(s, HEADERS, EH | ES, 1, k.p, k.n);
    probe(s, 3);
}

/* a POST of body b with content-length a */
static void b_content_length(script_t *s, const case_t *c, long count)
{
    (void)count;
    char extra[128];
    snprintf(extra, sizeof(extra), "content-type: application/json\ncontent-length: %s", c->a);
    preface(s);
    request(s, 1, EH, "POST", CHAT, extra);
    frame(s, DATA, ES, 1, c->b, strlen(c->b));
    probe(s, 3);
}

/* a POST with a body and trailers (a: their fields), END_STREAM on them unless b says "open" */
static void b_trailers(script_t *s, const case_t *c, long count)
{
    (void)count;
    blk_t k = {.n = 0};
    fields(&k, c->a);
    preface(s);
    request(s, 1, EH, "POST", CHAT, "content-type: application/json");
    frame(s, DATA, 0, 1, JSON_BODY, strlen(JSON_BODY));
    frame(s, HEADERS, EH | (c->b != NULL ? 0 : ES), 1, k.p, k.n);
    probe(s, 3);
}

static void b_preface(script_t *s, const case_t *c, long count)
{
    (void)count;
    static const char magic[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    if (strcmp(c->name, "preface-garbled") == 0) {
        put(&s->out, "PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n", 24);
        frame(s, SETTINGS, 0, 0, NULL, 0);
        return;
    }
    put(&s->out, magic, sizeof(magic) - 1);
    if (strcmp(c->name, "preface-ping") == 0)
        frame(s, PING, 0, 0, "12345678", 8);
    else if (strcmp(c->name, "preface-settings-ack") == 0)
        frame(s, SETTINGS, F_ACK, 0, NULL, 0);
    else /* preface-headers */
        probe(s, 1);
}

/* one frame (type, flags, stream, payload) after the preface, then a probe */
typedef struct {
    const char *name;
    int type, flags;
    uint32_t sid;
    const char *payload;
    size_t len;
    int open; /* open stream 1 first (a POST, body pending) */
} raw_t;

static const raw_t raws[] = {
    {"unknown-frame", 0xfa, 0, 0, "whatever", 8, 0},
    {"unknown-frame-on-stream", 0xfa, 0xff, 1, "whatever", 8, 1},
    {"ping-unknown-flags", PING, 0xfe, 0, "h2abuse!", 8, 0},
    {"ping-echo", PING, 0, 0, "h2abuse!", 8, 0},
    {"ping-ack-unsolicited", PING, F_ACK, 0, "h2abuse!", 8, 0},
    {"ping-bad-length", PING, 0, 0, "1234567", 7, 0},
    {"ping-on-stream", PING, 0, 1, "h2abuse!", 8, 0},
    {"data-on-stream-0", DATA, 0, 0, "x", 1, 0},
    {"data-on-idle-stream", DATA, 0, 1, "x", 1, 0},
    {"data-bad-padding", DATA, F_PADDED, 1, "\x05xx", 3, 1},
    {"headers-on-stream-0", HEADERS, EH | ES, 0, "\x82\x86\x84\x41\x01x", 6, 0},
    {"headers-bad-padding", HEADERS, EH | ES | F_PADDED, 3, "\x09\x82\x86\x84\x41\x01x", 7, 0},
    {"priority-on-stream-0", PRIORITY, 0, 0, "\0\0\0\x01\x0f", 5, 0},
    {"priority-bad-length", PRIORITY, 0, 1, "\0\0\0\x03", 4, 1},
    {"priority-on-itself", PRIORITY, 0, 1, "\0\0\0\x01\x0f", 5, 1},
    {"priority-idle-stream", PRIORITY, 0, 9, "\0\0\0\x00\x0f", 5, 0},
    {"rst-on-stream-0", RST_STREAM, 0, 0, "\0\0\0\x08", 4, 0},
    {"rst-on-idle-stream", RST_STREAM, 0, 1, "\0\0\0\x08", 4, 0},
    {"rst-bad-length", RST_STREAM, 0, 1, "\0\0\x08", 3, 1},
    {"rst-unknown-code", RST_STREAM, 0, 1, "\0\0\0\xff", 4, 1},
    {"settings-ack-with-payload", SETTINGS, F_ACK, 0, "\0\x03\0\0\0\x64", 6, 0},
    {"settings-on-stream", SETTINGS, 0, 1, "\0\x03\0\0\0\x64", 6, 0},
    {"settings-bad-length", SETTINGS, 0, 0, "\0\x03\0\0\0\x64\0", 7, 0},
    {"settings-enable-push-2", SETTINGS, 0, 0, "\0\x02\0\0\0\x02", 6, 0},
    {"settings-window-too-big", SETTINGS, 0, 0, "\0\x04\x80\0\0\0", 6, 0},
    {"settings-frame-size-small", SETTINGS, 0, 0, "\0\x05\0\0\x3f\xff", 6, 0},
    {"settings-frame-size-big", SETTINGS, 0, 0, "\0\x05\x01\0\0\0", 6, 0},
    {"settings-unknown-id", SETTINGS, 0, 0, "\0\xfa\0\0\0\x01", 6, 0},
    {"goaway-on-stream", GOAWAY, 0, 1, "\0\0\0\0\0\0\0\0", 8, 0},
    {"push-promise", PUSH_PROMISE, EH, 1, "\0\0\0\x02\x82\x86\x84\x41\x01x", 10, 1},
    {"window-update-0-on-stream", WINDOW_UPDATE, 0, 1, "\0\0\0\0", 4, 1},
    {"window-update-0-on-connection", WINDOW_UPDATE, 0, 0, "\0\0\0\0", 4, 0},
    {"window-update-bad-length", WINDOW_UPDATE, 0, 0, "\0\0\x01", 3, 0},
    {"window-update-on-idle-stream", WINDOW_UPDATE, 0, 1, "\0\0\0\x01", 4, 0},
    {"window-overflow-on-stream", WINDOW_UPDATE, 0, 1, "\x7f\xff\xff\xff", 4, 1},
    {"window-overflow-on-connection", WINDOW_UPDATE, 0, 0, "\x7f\xff\xff\xff", 4, 0},
    {"continuation-without-headers", CONTINUATION, EH, 1, "\x82\x86\x84\x41\x01x", 6, 0},
    {"hpack-index-0", HEADERS, EH | ES, 1, "\x80", 1, 0},
    {"hpack-index-too-big", HEADERS, EH | ES, 1, "\xff\x20", 2, 0},
};

static void b_raw(script_t *s, const case_t *c, long count)
{
    (void)count;
    const raw_t *r = NULL;
    for (size_t i = 0; i < sizeof(raws) / sizeof(raws[0]); i++)
        if (strcmp(raws[i].name, c->name) == 0)
            r = &raws[i];
    preface(s);
    if (r->open)
        request(s, 1, EH, "POST", CHAT, "content-type: application/json");
    frame(s, r->type, r->flags, r->sid, r->payload, r->len);
    if (r->open && r->type != RST_STREAM)
        frame(s, DATA, ES, 1, JSON_BODY, strlen(JSON_BODY)); /* ends stream 1 if it still may be */
    probe(s, 11);
}

/* cases of more than one frame */
static void b_seq(script_t *s, const case_t *c, long count)
{
    (void)count;
    const char *n = c->name;
    unsigned char p[16400];
    if (strcmp(n, "trailers-on-refused-stream") == 0) {
        /* before our SETTINGS are acknowledged nghttp2 refuses the 129th
         * stream without opening it; its trailers are no new stream */
        preface_no_ack(s);
        for (uint32_t i = 0; i < 129; i++)
            request(s, 2 * i + 1, EH, "POST", CHAT, "content-type: application/json");
        stop(s, W_END, 257);
        frame(s, HEADERS, EH | ES, 257, "\x40\x01x\x01y", 5);
        for (uint32_t i = 0; i < 128; i++)
            frame(s, RST_STREAM, 0, 2 * i + 1, "\0\0\0\x08", 4);
        probe(s, 259);
        return;
    }
    preface(s);
    if (strcmp(n, "lower-stream-id") == 0) {
        probe(s, 5);
        stop(s, W_END, 5);
        probe(s, 3);
    } else if (strcmp(n, "lower-stream-id-open") == 0) {
        request(s, 5, EH, "POST", CHAT, "content-type: application/json");
        probe(s, 3);
    } else if (strcmp(n, "lower-stream-id-after-priority") == 0) {
        frame(s, PRIORITY, 0, 3, "\0\0\0\0\x0f", 5); /* 3 exists, idle, in the priority tree */
        probe(s, 5);
        stop(s, W_END, 5);
        probe(s, 3);
    } else if (strcmp(n, "even-stream-id") == 0) {
        probe(s, 2);
    } else if (strcmp(n, "reserved-bit") == 0) {
        probe(s, 0x80000001u); /* the R bit is ignored: this is stream 1 */
    } else if (strcmp(n, "headers-on-closed-stream") == 0) {
        probe(s, 1);
        stop(s, W_END, 1);
        probe(s, 1);
        probe(s, 3);
    } else if (strcmp(n, "data-on-closed-stream") == 0) {
        probe(s, 1);
        stop(s, W_END, 1);
        frame(s, DATA, 0, 1, "x", 1);
        probe(s, 3);
    } else if (strcmp(n, "data-after-reset") == 0) {
        request(s, 1, EH, "POST", CHAT, "content-type: application/json");
        frame(s, RST_STREAM, 0, 1, "\0\0\0\x08", 4);
        frame(s, DATA, 0, 1, "x", 1);
        probe(s, 3);
    } else if (strcmp(n, "data-on-half-closed-stream") == 0 || strcmp(n, "headers-on-half-closed-stream") == 0) {
        /* stream 1's request is complete and its answer streams slowly */
        request(s, 1, EH, "POST", CHAT, SLOW);
        frame(s, DATA, ES, 1, SLOW_BODY, strlen(SLOW_BODY));
        stop(s, W_HEAD, 1);
        if (n[0] == 'd')
            frame(s, DATA, 0, 1, "x", 1);
        else
            request(s, 1, EH | ES, "GET", "/v1/models", NULL);
        probe(s, 3);
    } else if (strcmp(n, "too-many-streams") == 0) {
        for (uint32_t i = 0; i < 129; i++)
            request(s, 2 * i + 1, EH, "POST", CHAT, "content-type: application/json");
    } else if (strcmp(n, "headers-priority-on-itself") == 0) {
        blk_t k = {.n = 0};
        memcpy(k.p, "\0\0\0\x01\x0f", 5); /* depends on stream 1 (itself), weight 16 */
        k.n = 5;
        req_head(&k, "GET", "/v1/models");
        frame(s, HEADERS, EH | ES | F_PRIORITY, 1, k.p, k.n);
        probe(s, 3);
    } else if (strcmp(n, "data-too-big") == 0) {
        request(s, 1, EH, "POST", CHAT, "content-type: application/json");
        memset(p, ' ', 16385);
        frame(s, DATA, 0, 1, p, 16385); /* over the default SETTINGS_MAX_FRAME_SIZE */
    } else if (strcmp(n, "headers-too-big") == 0) {
        blk_t k = {.n = 0};
        req_head(&k, "GET", "/v1/models");
        memset(p, 'a', 16384);
        p[16384] = '\0';
        field(&k, "x-big", (const char *)p);
        frame(s, HEADERS, EH | ES, 1, k.p, k.n);
    } else if (strcmp(n, "settings-window-overflow") == 0) {
        /* stream 1's send window to 2^31-1; a larger initial window must overflow it */
        request(s, 1, EH, "POST", CHAT, SLOW);
        frame(s, DATA, ES, 1, SLOW_BODY, strlen(SLOW_BODY));
        unsigned char inc[4];
        u32(inc, 0x7fffffffu - 65535u);
        frame(s, WINDOW_UPDATE, 0, 1, inc, 4);
        frame(s, SETTINGS, 0, 0, "\0\x04\0\x01\0\0", 6);
    } else if (strcmp(n, "continuation-after-end-headers") == 0) {
        request(s, 1, EH, "POST", CHAT, "content-type: application/json");
        frame(s, CONTINUATION, EH, 1, "\x40\x01x\x01y", 5);
    } else if (strcmp(n, "continuation-other-stream") == 0) {
        request(s, 1, 0, "GET", "/v1/models", NULL);
        frame(s, CONTINUATION, EH, 3, "\x40\x01x\x01y", 5);
    } else if (strcmp(n, "frame-inside-header-block") == 0) {
        request(s, 1, 0, "GET", "/v1/models", NULL);
        frame(s, PING, 0, 0, "h2abuse!", 8);
        frame(s, CONTINUATION, EH, 1, "\x40\x01x\x01y", 5);
    } else if (strcmp(n, "unknown-frame-inside-header-block") == 0) {
        request(s, 1, 0, "GET", "/v1/models", NULL);
        frame(s, 0xfa, 0, 0, "whatever", 8);
        frame(s, CONTINUATION, EH, 1, "\x40\x01x\x01y", 5);
    } else if (strcmp(n, "header-block-in-continuations") == 0) {
        blk_t k = {.n = 0};
        req_head(&k, "GET", "/v1/models");
        frame(s, HEADERS, ES, 1, k.p, 3);
        frame(s, CONTINUATION, 0, 1, k.p + 3, 4);
        frame(s, CONTINUATION, EH, 1, k.p + 7, k.n - 7);
    } else if (strcmp(n, "post-with-body") == 0) {
        request(s, 1, EH, "POST", CHAT, "content-type: application/json");
        frame(s, DATA, 0, 1, "{\"messages\"", 11);
        frame(s, DATA, F_PADDED | ES, 1, "\x03:[]}\0\0\0", 8);
    }
}

static const case_t cases[] = {
    /* floods: GOAWAY ENHANCE_YOUR_CALM past the limits */
    {"rapid-reset", b_flood, K_FLOOD, NULL, NULL, "GOAWAY ENHANCE_YOUR_CALM"},
    {"continuation", b_flood, K_FLOOD, NULL, NULL, "GOAWAY ENHANCE_YOUR_CALM"},
    {"hpack-bomb", b_flood, K_FLOOD, NULL, NULL, "GOAWAY ENHANCE_YOUR_CALM"},
    {"trailer-bomb", b_flood, K_FLOOD, NULL, NULL, "GOAWAY ENHANCE_YOUR_CALM"},
    {"settings", b_flood, K_FLOOD, NULL, NULL, "GOAWAY ENHANCE_YOUR_CALM"},
    {"ping", b_flood, K_FLOOD, NULL, NULL, "GOAWAY ENHANCE_YOUR_CALM"},
    {"priority", b_flood, K_FLOOD, NULL, NULL, "GOAWAY ENHANCE_YOUR_CALM"},
    {"empty-data", b_flood, K_FLOOD, NULL, NULL, "GOAWAY ENHANCE_YOUR_CALM"},
    {"streams", b_flood, K_FLOOD, NULL, NULL, "GOAWAY ENHANCE_YOUR_CALM"},
    /* requests that do not complete */
    {"stuck-streams", b_stuck_streams, K_LOAD, NULL, NULL, "every stream 408 after client.idle_timeout_ms"},
    {"big-bodies", b_big_bodies, K_LOAD, NULL, NULL, "REFUSED_STREAM past the connection's budget"},
    {"stuck-headers", b_stuck_headers, K_CASE, NULL, NULL, "408 after client.header_timeout_ms, GOAWAY"},
    {"stuck-body", b_stuck_body, K_CASE, NULL, NULL, "408 after client.idle_timeout_ms, late DATA ignored"},
    {"idle", b_idle, K_CASE, NULL, NULL, "GOAWAY NO_ERROR after client.idle_timeout_ms"},
    {"no-window", b_no_window, K_CASE, NULL, NULL, "GOAWAY NO_ERROR: the client takes nothing"},
    /* 3.4 */
    {"preface-ping", b_preface, K_CASE, NULL, NULL, "GOAWAY PROTOCOL_ERROR"},
    {"preface-settings-ack", b_preface, K_CASE, NULL, NULL, "GOAWAY PROTOCOL_ERROR"},
    {"preface-headers", b_preface, K_CASE, NULL, NULL, "GOAWAY PROTOCOL_ERROR"},
    {"preface-garbled", b_preface, K_CASE, NULL, NULL, "not HTTP/2: closed at once"},
    /* 4.1, 4.2, 4.3, 5.5 */
    {"unknown-frame", b_raw, K_CASE, NULL, NULL, "ignored"},
    {"unknown-frame-on-stream", b_raw, K_CASE, NULL, NULL, "ignored"},
    {"unknown-frame-inside-header-block", b_seq, K_CASE, NULL, NULL, "GOAWAY PROTOCOL_ERROR"},
    {"reserved-bit", b_seq, K_CASE, NULL, NULL, "ignored: stream 1 answered"},
    {"data-too-big", b_seq, K_CASE, NULL, NULL, "GOAWAY FRAME_SIZE_ERROR"},
    {"headers-too-big", b_seq, K_CASE, NULL, NULL, "GOAWAY FRAME_SIZE_ERROR"},
    {"hpack-index-0", b_raw, K_CASE, NULL, NULL, "GOAWAY COMPRESSION_ERROR"},
    {"hpack-index-too-big", b_raw, K_CASE, NULL, NULL, "GOAWAY COMPRESSION_ERROR"},
    {"frame-inside-header-block", b_seq, K_CASE, NULL, NULL, "GOAWAY PROTOCOL_ERROR"},
    /* 5.1 */
    {"data-on-idle-stream", b_raw, K_CASE, NULL, NULL, "GOAWAY PROTOCOL_ERROR"},
    {"rst-on-idle-stream", b_raw, K_CASE, NULL, NULL, "GOAWAY PROTOCOL_ERROR"},
    {"window-update-on-idle-stream", b_raw, K_CASE, NULL, NULL, "GOAWAY PROTOCOL_ERROR"},
    {"data-on-half-closed-stream", b_seq, K_CASE, NULL, NULL, "STREAM_CLOSED"},
    {"headers-on-half-closed-stream", b_seq, K_CASE, NULL, NULL, "STREAM_CLOSED"},
    {"data-on-closed-stream", b_seq, K_CASE, NULL, NULL, "GOAWAY STREAM_CLOSED"},
    {"headers-on-closed-stream", b_seq, K_CASE, NULL, NULL, "GOAWAY STREAM_CLOSED"},
    {"data-after-reset", b_seq, K_CASE, NULL, NULL, "STREAM_CLOSED"},
    /* 5.1.1, 5.1.2 */
    {"lower-stream-id", b_seq, K_CASE, NULL, NULL, "GOAWAY PROTOCOL_ERROR"},
    {"lower-stream-id-open", b_seq, K_CASE, NULL, NULL, "GOAWAY PROTOCOL_ERROR"},
    {"lower-stream-id-after-priority", b_seq, K_CASE, NULL, NULL, "GOAWAY PROTOCOL_ERROR"},
    {"even-stream-id", b_seq, K_CASE, NULL, NULL, "GOAWAY PROTOCOL_ERROR"},
    {"trailers-on-refused-stream", b_seq, K_CASE, NULL, NULL, "ignored: the stream was opened, and refused"},
    {"too-many-streams", b_seq, K_CASE, NULL, NULL, "PROTOCOL_ERROR or REFUSED_STREAM"},
    /* 5.3.1, 5.4, 7 */
    {"priority-on-itself", b_raw, K_CASE, NULL, NULL, "PROTOCOL_ERROR"},
    {"headers-priority-on-itself", b_seq, K_CASE, NULL, NULL, "PROTOCOL_ERROR"},
    {"rst-unknown-code", b_raw, K_CASE, NULL, NULL, "accepted"},
    /* 6.1 to 6.10 */
    {"data-on-stream-0", b_raw, K_CASE, NULL, NULL, "GOAWAY PROTOCOL_ERROR"},
    {"data-bad-padding", b_raw, K_CASE, NULL, NULL, "GOAWAY PROTOCOL_ERROR"},
    {"post-with-body", b_seq, K_CASE, NULL, NULL, "200 (padded DATA)"},
    {"headers-on-stream-0", b_raw, K_CASE, NULL, NULL, "GOAWAY PROTOCOL_ERROR"},
    {"headers-bad-padding", b_raw, K_CASE, NULL, NULL, "GOAWAY PROTOCOL_ERROR"},
    {"priority-on-stream-0", b_raw, K_CASE, NULL, NULL, "GOAWAY PROTOCOL_ERROR"},
    {"priority-bad-length", b_raw, K_CASE, NULL, NULL, "FRAME_SIZE_ERROR"},
    {"priority-idle-stream", b_raw, K_CASE, NULL, NULL, "accepted"},
    {"rst-on-stream-0", b_raw, K_CASE, NULL, NULL, "GOAWAY PROTOCOL_ERROR"},
    {"rst-bad-length", b_raw, K_CASE, NULL, NULL, "GOAWAY FRAME_SIZE_ERROR"},
    {"settings-ack-with-payload", b_raw, K_CASE, NULL, NULL, "GOAWAY FRAME_SIZE_ERROR"},
    {"settings-on-stream", b_raw, K_CASE, NULL, NULL, "GOAWAY PROTOCOL_ERROR"},
    {"settings-bad-length", b_raw, K_CASE, NULL, NULL, "GOAWAY FRAME_SIZE_ERROR"},
    {"settings-enable-push-2", b_raw, K_CASE, NULL, NULL, "GOAWAY PROTOCOL_ERROR"},
    {"settings-window-too-big", b_raw, K_CASE, NULL, NULL, "GOAWAY FLOW_CONTROL_ERROR"},
    {"settings-frame-size-small", b_raw, K_CASE, NULL, NULL, "GOAWAY PROTOCOL_ERROR"},
    {"settings-frame-size-big", b_raw, K_CASE, NULL, NULL, "GOAWAY PROTOCOL_ERROR"},
    {"settings-unknown-id", b_raw, K_CASE, NULL, NULL, "ignored"},
    {"settings-window-overflow", b_seq, K_CASE, NULL, NULL, "GOAWAY FLOW_CONTROL_ERROR"},
    {"ping-echo", b_raw, K_CASE, NULL, NULL, "PING ACK with the same data"},
    {"ping-unknown-flags", b_raw, K_CASE, NULL, NULL, "PING ACK"},
    {"ping-ack-unsolicited", b_raw, K_CASE, NULL, NULL, "ignored"},
    {"ping-bad-length", b_raw, K_CASE, NULL, NULL, "GOAWAY FRAME_SIZE_ERROR"},
    {"ping-on-stream", b_raw, K_CASE, NULL, NULL, "GOAWAY PROTOCOL_ERROR"},
    {"goaway-on-stream", b_raw, K_CASE, NULL, NULL, "GOAWAY PROTOCOL_ERROR"},
    {"window-update-0-on-stream", b_raw, K_CASE, NULL, NULL, "RST_STREAM PROTOCOL_ERROR"},
    {"window-update-0-on-connection", b_raw, K_CASE, NULL, NULL, "GOAWAY PROTOCOL_ERROR"},
    {"window-update-bad-length", b_raw, K_CASE, NULL, NULL, "GOAWAY FRAME_SIZE_ERROR"},
    {"window-overflow-on-stream", b_raw, K_CASE, NULL, NULL, "RST_STREAM FLOW_CONTROL_ERROR"},
    {"window-overflow-on-connection", b_raw, K_CASE, NULL, NULL, "GOAWAY FLOW_CONTROL_ERROR"},
    {"continuation-without-headers", b_raw, K_CASE, NULL, NULL, "GOAWAY PROTOCOL_ERROR"},
    {"continuation-after-end-headers", b_seq, K_CASE, NULL, NULL, "GOAWAY PROTOCOL_ERROR"},
    {"continuation-other-stream", b_seq, K_CASE, NULL, NULL, "GOAWAY PROTOCOL_ERROR"},
    {"header-block-in-continuations", b_seq, K_CASE, NULL, NULL, "200"},
    /* 8.1 */
    {"trailers", b_trailers, K_CASE, "x-checksum: 1234", NULL, "200"},
    {"trailers-without-end-stream", b_trailers, K_CASE, "x-checksum: 1234", "open", "RST_STREAM PROTOCOL_ERROR"},
    {"trailers-with-pseudo-header", b_trailers, K_CASE, ":path: /v1/models", NULL, "RST_STREAM PROTOCOL_ERROR"},
    {"content-length-over-data", b_content_length, K_CASE, "100", "{\"messages\":[]}", "RST_STREAM PROTOCOL_ERROR"},
    {"content-length-under-data", b_content_length, K_CASE, "2", "{\"messages\":[]}", "RST_STREAM PROTOCOL_ERROR"},
    {"content-length-not-a-number", b_content_length, K_CASE, "1x", "{\"messages\":[]}", "RST_STREAM PROTOCOL_ERROR"},
    /* 8.2 */
    {"upper-case-name", b_header, K_CASE, "X-Upper", "1", "RST_STREAM PROTOCOL_ERROR"},
    {"name-with-space", b_header, K_CASE, "x bad", "1", "RST_STREAM PROTOCOL_ERROR"},
    {"value-with-newline", b_header, K_CASE, "x-bad", "a\r\nx-injected: 1", "RST_STREAM PROTOCOL_ERROR"},
    {"value-with-nul", b_header, K_CASE, "x-bad", "a\x01" "b", "RST_STREAM PROTOCOL_ERROR"},
    {"value-leading-space", b_header, K_CASE, "x-bad", " a", "RST_STREAM PROTOCOL_ERROR"},
    {"value-trailing-tab", b_header, K_CASE, "x-bad", "a\t", "RST_STREAM PROTOCOL_ERROR"},
    {"connection-header", b_header, K_CASE, "connection", "keep-alive", "RST_STREAM PROTOCOL_ERROR"},
    {"keep-alive-header", b_header, K_CASE, "keep-alive", "timeout=5", "RST_STREAM PROTOCOL_ERROR"},
    {"proxy-connection-header", b_header, K_CASE, "proxy-connection", "keep-alive", "RST_STREAM PROTOCOL_ERROR"},
    {"transfer-encoding-header", b_header, K_CASE, "transfer-encoding", "chunked", "RST_STREAM PROTOCOL_ERROR"},
    {"upgrade-header", b_header, K_CASE, "upgrade", "h2c", "RST_STREAM PROTOCOL_ERROR"},
    {"te-gzip", b_header, K_CASE, "te", "gzip", "RST_STREAM PROTOCOL_ERROR"},
    {"te-trailers", b_header, K_CASE, "te", "trailers", "200"},
    {"host-differs-from-authority", b_header, K_CASE, "host", "elsewhere.example", "400"},
    {"host-same-as-authority", b_header, K_CASE, "host", "localhost", "200"},
    /* 8.3 */
    {"pseudo-unknown", b_fields, K_CASE,
     ":method: GET\n:scheme: http\n:path: /v1/models\n:authority: localhost\n:foo: bar", NULL,
     "RST_STREAM PROTOCOL_ERROR"},
    {"pseudo-status-in-request", b_fields, K_CASE,
     ":method: GET\n:scheme: http\n:path: /v1/models\n:authority: localhost\n:status: 200", NULL,
     "RST_STREAM PROTOCOL_ERROR"},
    {"pseudo-after-regular", b_fields, K_CASE,
     ":method: GET\n:scheme: http\nx-a: 1\n:path: /v1/models\n:authority: localhost", NULL,
     "RST_STREAM PROTOCOL_ERROR"},
    {"pseudo-path-twice", b_fields, K_CASE,
     ":method: GET\n:scheme: http\n:path: /v1/models\n:path: /v1/models\n:authority: localhost", NULL,
     "RST_STREAM PROTOCOL_ERROR"},
    {"pseudo-method-twice", b_fields, K_CASE,
     ":method: GET\n:method: GET\n:scheme: http\n:path: /v1/models\n:authority: localhost", NULL,
     "RST_STREAM PROTOCOL_ERROR"},
    {"no-method", b_fields, K_CASE, ":scheme: http\n:path: /v1/models\n:authority: localhost", NULL,
     "RST_STREAM PROTOCOL_ERROR"},
    {"no-scheme", b_fields, K_CASE, ":method: GET\n:path: /v1/models\n:authority: localhost", NULL,
     "RST_STREAM PROTOCOL_ERROR"},
    {"no-path", b_fields, K_CASE, ":method: GET\n:scheme: http\n:authority: localhost", NULL,
     "RST_STREAM PROTOCOL_ERROR"},
    {"empty-path", b_fields, K_CASE, ":method: GET\n:scheme: http\n:path: \n:authority: localhost", NULL,
     "RST_STREAM PROTOCOL_ERROR"},
    {"relative-path", b_fields, K_CASE, ":method: GET\n:scheme: http\n:path: v1/models\n:authority: localhost", NULL,
     "RST_STREAM PROTOCOL_ERROR"},
    {"options-asterisk", b_fields, K_CASE, ":method: OPTIONS\n:scheme: http\n:path: *\n:authority: localhost", NULL,
     "400"},
    {"unknown-method", b_fields, K_CASE, ":method: BREW\n:scheme: http\n:path: /v1/models\n:authority: localhost",
     NULL, "501"},
    {"protocol-pseudo-header", b_fields, K_CASE,
     ":method: CONNECT\n:protocol: websocket\n:scheme: http\n:path: /v1/models\n:authority: localhost", NULL,
     "RST_STREAM PROTOCOL_ERROR"},
    {"connect-with-path", b_fields, K_CASE, ":method: CONNECT\n:scheme: http\n:path: /\n:authority: localhost:1",
     NULL, "RST_STREAM PROTOCOL_ERROR"},
    {"connect", b_fields, K_CASE, ":method: CONNECT\n:authority: localhost:1", NULL, "400"},
    /* 8.4 */
    {"push-promise", b_raw, K_CASE, NULL, NULL, "GOAWAY PROTOCOL_ERROR"},
};

static const char *code_name(uint32_t c)
{
    static const char *names[] = {"NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR",
                                  "SETTINGS_TIMEOUT", "STREAM_CLOSED", "FRAME_SIZE_ERROR", "REFUSED_STREAM",
                                  "CANCEL", "COMPRESSION_ERROR", "CONNECT_ERROR", "ENHANCE_YOUR_CALM",
                                  "INADEQUATE_SECURITY", "HTTP_1_1_REQUIRED"};
    return c < sizeof(names) / sizeof(names[0]) ? names[c] : "UNKNOWN";
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- reading the server ---- */

/* Huffman-coded decimal digits (RFC 7541 appendix B: '0' to '2' in five
 * bits, '3' to '9' in six); -1 for anything else. */
static int huff_digits(const unsigned char *p, size_t n, char *out, size_t cap)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t i = 0, k = 0;
    for (;;) {
        while (bits < 6 && i < n) {
            acc = acc << 8 | p[i++];
            bits += 8;
        }
        if (bits < 5 || (i == n && bits < 8 && (acc & ((1u << bits) - 1)) == (1u << bits) - 1))
            break; /* padding: the most significant bits of EOS, all ones */
        uint32_t v5 = (acc >> (bits - 5)) & 31;
        if (k + 1 >= cap)
            return -1;
        if (v5 < 3) {
            out[k++] = (char)('0' + v5);
            bits -= 5;
        } else if (bits >= 6 && ((acc >> (bits - 6)) & 63) >= 25 && ((acc >> (bits - 6)) & 63) <= 31) {
            out[k++] = (char)('3' + (((acc >> (bits - 6)) & 63) - 25));
            bits -= 6;
        } else {
            return -1;
        }
        acc &= (bits > 0 ? (1u << bits) - 1 : 0);
    }
    out[k] = '\0';
    return (int)k;
}

/* The :status of a response header block (our HPACK table is 0: no dynamic references), or 0. */
static int status_of(const unsigned char *p, size_t n)
{
    size_t i = 0;
    while (i < n && (p[i] & 0xe0) == 0x20) { /* dynamic table size updates */
        if ((p[i++] & 0x1f) == 0x1f)
            while (i < n && (p[i++] & 0x80))
                ;
    }
    if (i >= n)
        return 0;
    unsigned b = p[i++];
    if (b & 0x80) {
        static const int indexed[] = {200, 204, 206, 304, 400, 404, 500};
        unsigned x = b & 0x7f;
        return x >= 8 && x <= 14 ? indexed[x - 8] : 0;
    }
    unsigned name = (b & 0xc0) == 0x40 ? b & 0x3f : b & 0x0f;
    if (name < 8 || name > 14 || i >= n)
        return 0;
    int huff = p[i] & 0x80;
    size_t len = p[i++] & 0x7f;
    if (len > n - i || len > 8)
        return 0;
    char v[16];
    if (huff) {
        if (huff_digits(p + i, len, v, sizeof(v)) != 3)
            return 0;
    } else {
        memcpy(v, p + i, len);
        v[len] = '\0';
    }
    return atoi(v);
}

static void outcome(const stream_t *st, char *out, size_t cap)
{
    if (!st->head)
        snprintf(out, cap, "RST_STREAM %s", code_name(st->rst - 1));
    else if (st->rst != 0)
        snprintf(out, cap, "%d%s%s then RST_STREAM %s", st->status, st->code[0] ? " " : "", st->code,
                 code_name(st->rst - 1));
    else
        snprintf(out, cap, "%d%s%s", st->status, st->code[0] ? " " : "", st->code);
}

static const char *find(const char *p, size_t n, const char *what)
{
    size_t k = strlen(what);
    for (size_t i = 0; i + k <= n; i++)
        if (memcmp(p + i, what, k) == 0)
            return p + i;
    return NULL;
}

/* a stream's ending, once: its line (cases) */
static void ended(uint32_t sid, stream_t *st, int kind)
{
    if (st->ended)
        return;
    st->ended = 1;
    const char *at = find(st->body, st->body_len, "\"code\":\"");
    if (at != NULL) {
        at += 8;
        const char *end = memchr(at, '"', st->body_len - (size_t)(at - st->body));
        size_t n = end ? (size_t)(end - at) : 0;
        if (n >= sizeof(st->code))
            n = sizeof(st->code) - 1;
        memcpy(st->code, at, n);
        st->code[n] = '\0';
    }
    if (kind == K_CASE) {
        char o[128];
        outcome(st, o, sizeof(o));
        printf("stream %u: %s\n", sid, o);
    }
}

/* "all N streams ended: 408 request_timeout x100, ..." or "N of M streams ended: ..." */
static int summary(script_t *s, int print)
{
    char names[8][128];
    unsigned long counts[8] = {0}, opened = 0, done = 0;
    size_t kinds = 0;
    for (uint32_t i = 1; i < s->nst; i++) {
        stream_t *st = &s->st[i];
        if (!st->opened)
            continue;
        opened++;
        if (!st->ended && !st->reset)
            continue;
        done++;
        char o[128];
        if (st->ended)
            outcome(st, o, sizeof(o));
        else
            snprintf(o, sizeof(o), "reset by us");
        size_t k = 0;
        while (k < kinds && strcmp(names[k], o) != 0)
            k++;
        if (k == kinds && kinds < 8)
            snprintf(names[kinds++], sizeof(names[0]), "%s", o);
        if (k < kinds)
            counts[k]++;
    }
    if (print) {
        if (done == opened)
            printf("all %lu streams ended:", opened);
        else
            printf("%lu of %lu streams ended:", done, opened);
        for (size_t k = 0; k < kinds; k++)
            printf("%s %s x%lu", k ? "," : "", names[k], counts[k]);
        printf("\n");
    }
    return opened > 0 && done == opened;
}

/* How far the script may be sent: up to limit, but no DATA frame beyond the
 * flow-control windows the server gave. */
static size_t let_through(script_t *s, size_t limit)
{
    static const char magic[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    if (s->fc_at == 0 && s->out.len >= 24 && memcmp(s->out.p, magic, 24) == 0)
        s->fc_at = 24;
    while (s->fc_at < limit && s->out.len - s->fc_at >= 9) {
        const unsigned char *h = s->out.p + s->fc_at;
        size_t len = (size_t)h[0] << 16 | (size_t)h[1] << 8 | h[2];
        if (h[3] == DATA && len > 0) {
            uint32_t sid = ((uint32_t)h[5] << 24 | (uint32_t)h[6] << 16 | (uint32_t)h[7] << 8 | h[8]) & 0x7fffffffu;
            stream_t *st = stream_at(s, sid);
            int64_t win = st != NULL ? s->initial_window + st->window : s->conn_window;
            if ((int64_t)len > s->conn_window || (int64_t)len > win)
                break;
            s->conn_window -= (int64_t)len;
            if (st != NULL)
                st->window -= (int64_t)len;
        }
        s->fc_at += 9 + len;
    }
    return s->fc_at < limit ? s->fc_at : limit;
}

static void list(void)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        printf("%-36s %s\n", cases[i].name, cases[i].expect);
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "list") == 0) {
        list();
        return 0;
    }
    if (argc < 4) {
        fprintf(stderr, "usage: h2abuse HOST PORT CASE [COUNT [SECONDS]]; h2abuse list\n");
        return 3;
    }
    const case_t *c = NULL;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        if (strcmp(cases[i].name, argv[3]) == 0)
            c = &cases[i];
    if (c == NULL) {
        fprintf(stderr, "h2abuse: unknown case %s (h2abuse list)\n", argv[3]);
        return 3;
    }
    long count = argc > 4 ? strtol(argv[4], NULL, 10) : 5000;
    long wait_s = argc > 5 ? strtol(argv[5], NULL, 10) : 10;
    static script_t s = {.conn_window = 65535, .initial_window = 65535}; /* reachable until exit */
    c->build(&s, c, count);
    stop(&s, W_MS, 0); /* the end of the script */
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &sa.sin_addr) != 1) {
        fprintf(stderr, "h2abuse: bad address %s\n", argv[1]);
        return 3;
    }
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        perror("h2abuse: connect");
        return 3;
    }
    fcntl(fd, F_SETFL, O_NONBLOCK);
    size_t sent = 0, next = 0; /* next: the stop being worked towards */
    uint64_t stop_at = 0;      /* when the script reached the current stop */
    static unsigned char in[1 << 17];
    size_t have = 0;
    unsigned long rst = 0, frames = 0;
    uint64_t deadline = now_ms() + (uint64_t)wait_s * 1000, goaway_at = 0;
    buf_t *out = &s.out;
    while (now_ms() < deadline) {
        /* the script goes on past a stop once its condition holds */
        while (next < s.nstops && sent == s.stops[next].at) {
            const stop_t *w = &s.stops[next];
            stream_t *st = stream_at(&s, (uint32_t)w->arg);
            if (stop_at == 0)
                stop_at = now_ms();
            int go = w->kind == W_MS ? now_ms() >= stop_at + (uint64_t)w->arg
                     : w->kind == W_END ? st != NULL && st->ended
                                        : st != NULL && (st->head || st->ended);
            if (!go)
                break;
            next++;
            stop_at = 0;
        }
        if (goaway_at == 0 && c->kind != K_FLOOD && next == s.nstops && summary(&s, 0)) {
            summary(&s, 1);
            return 0;
        }
        size_t limit = let_through(&s, next < s.nstops ? s.stops[next].at : out->len);
        struct pollfd p = {fd, POLLIN | (sent < limit ? POLLOUT : 0), 0};
        if (poll(&p, 1, 20) < 0)
            continue;
        if ((p.revents & POLLOUT) && sent < limit) {
            ssize_t n = send(fd, out->p + sent, limit - sent, MSG_NOSIGNAL);
            if (n > 0)
                sent += (size_t)n;
            else if (n < 0 && errno != EAGAIN) {
                sent = out->len; /* the server stopped reading; what it said may still be readable */
                next = s.nstops;
            }
        }
        if (!(p.revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        ssize_t n = recv(fd, in + have, sizeof(in) - have, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            if (goaway_at != 0) {
                printf("closed\n");
                return 0;
            }
            if (c->kind != K_FLOOD && c->kind != K_CASE)
                summary(&s, 1);
            printf("closed without GOAWAY (%s) after %lu frames, %lu RST_STREAM; sent %zu of %zu bytes\n",
                   n == 0 ? "EOF" : strerror(errno), frames, rst, sent, out->len);
            return 1;
        }
        if (n > 0)
            have += (size_t)n;
        size_t off = 0;
        while (have - off >= 9) {
            const unsigned char *h = in + off, *pl = h + 9;
            size_t len = (size_t)h[0] << 16 | (size_t)h[1] << 8 | h[2];
            if (have - off < 9 + len)
                break;
            off += 9 + len;
            frames++;
            uint32_t sid = ((uint32_t)h[5] << 24 | (uint32_t)h[6] << 16 | (uint32_t)h[7] << 8 | h[8]) & 0x7fffffffu;
            stream_t *st = stream_at(&s, sid);
            switch (h[3]) {
            case HEADERS:
                if (st != NULL && !st->head) {
                    st->head = 1;
                    st->status = status_of(pl, len);
                }
                if (st != NULL && (h[4] & F_END_STREAM))
                    ended(sid, st, c->kind);
                break;
            case DATA:
                if (st != NULL && st->body_len < sizeof(st->body)) {
                    size_t k = len < sizeof(st->body) - st->body_len ? len : sizeof(st->body) - st->body_len;
                    memcpy(st->body + st->body_len, pl, k);
                    st->body_len += k;
                }
                if (st != NULL && (h[4] & F_END_STREAM))
                    ended(sid, st, c->kind);
                break;
            case RST_STREAM:
                rst++;
                if (st != NULL && len == 4) {
                    if (st->ended && c->kind == K_CASE)
                        printf("stream %u: then RST_STREAM %s\n", sid,
                               code_name((uint32_t)pl[0] << 24 | (uint32_t)pl[1] << 16 | (uint32_t)pl[2] << 8 | pl[3]));
                    if (!st->ended)
                        st->rst = ((uint32_t)pl[0] << 24 | (uint32_t)pl[1] << 16 | (uint32_t)pl[2] << 8 | pl[3]) + 1;
                    ended(sid, st, c->kind);
                }
                break;
            case SETTINGS:
                if ((h[4] & F_ACK) && c->kind == K_CASE)
                    printf("SETTINGS ACK\n");
                for (size_t k = 0; !(h[4] & F_ACK) && k + 6 <= len; k += 6)
                    if (pl[k] == 0 && pl[k + 1] == 4)
                        s.initial_window = (int64_t)((uint32_t)pl[k + 2] << 24 | (uint32_t)pl[k + 3] << 16 |
                                                     (uint32_t)pl[k + 4] << 8 | pl[k + 5]);
                break;
            case WINDOW_UPDATE:
                if (len == 4) {
                    int64_t inc = (int64_t)(((uint32_t)pl[0] << 24 | (uint32_t)pl[1] << 16 | (uint32_t)pl[2] << 8 | pl[3]) &
                                            0x7fffffffu);
                    if (sid == 0)
                        s.conn_window += inc;
                    else if (st != NULL)
                        st->window += inc;
                }
                break;
            case PING:
                if ((h[4] & F_ACK) && c->kind == K_CASE && len == 8)
                    printf("PING ACK %.8s\n", (const char *)pl);
                break;
            case GOAWAY:
                if (len < 8)
                    break;
                {
                    uint32_t last = ((uint32_t)pl[0] << 24 | (uint32_t)pl[1] << 16 | (uint32_t)pl[2] << 8 | pl[3]) &
                                    0x7fffffffu;
                    uint32_t code = (uint32_t)pl[4] << 24 | (uint32_t)pl[5] << 16 | (uint32_t)pl[6] << 8 | pl[7];
                    if (goaway_at != 0)
                        break;
                    if (c->kind == K_LOAD)
                        summary(&s, 1);
                    printf("GOAWAY %s last_stream=%u after %lu frames, %lu RST_STREAM; sent %zu of %zu bytes",
                           code_name(code), last, frames, rst, sent, out->len);
                    if (len > 8)
                        printf(" (%.*s)", (int)(len - 8), (const char *)pl + 8);
                    printf("\n");
                    if (c->kind == K_FLOOD)
                        return 0;
                    /* what comes next: the close */
                    goaway_at = now_ms();
                    deadline = goaway_at + 3000;
                    sent = out->len;
                    next = s.nstops;
                }
                break;
            default:
                break;
            }
        }
        memmove(in, in + off, have - off);
        have -= off;
        if (have == sizeof(in)) {
            fprintf(stderr, "h2abuse: frame larger than the input buffer\n");
            return 3;
        }
    }
    if (goaway_at != 0) {
        printf("still open %lu ms after GOAWAY\n", (unsigned long)(now_ms() - goaway_at));
        return 0;
    }
    if (c->kind != K_FLOOD)
        summary(&s, 1);
    printf("no GOAWAY within %ld s: %lu frames, %lu RST_STREAM; sent %zu of %zu bytes\n", wait_s, frames, rst, sent,
           out->len);
    return 2;
}
