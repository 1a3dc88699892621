/* fuzz_usage.c: the usage and SSE readers (usage.c). The same answer fed
 * whole, split at points the input chooses and a byte at a time must give
 * the same counts, finish reason, tool calls, text and timing, and with
 * strip the same bytes to the client: the stream without its usage-only
 * events, each event passed or held back whole. Where an event's data is
 * a JSON object, the shortcuts for OpenAI objects (the walk, the template of
 * the last chunk and its marks) must read what the full reading reads: for
 * the event alone, and for the whole stream when all its events are.
 * Input: a flags byte (bits 0-2: dialect, 3: stream, 4: strip, 5: decode
 * the text), a count byte (0-7 splits), that many step bytes (each split
 * 1-256 bytes after the one before), then the response body.
 * fuzz-options: -max_len=8192 */
#include <cjson/cJSON.h>

#include "config.h"
#include "fuzz.h"
#include "jscan.h"
#include "usage.h"

#define NOW 1000

typedef struct {
    char *p;
    size_t n, cap;
} out_t;

static void to_out(void *arg, const char *data, size_t len)
{
    out_t *o = arg;
    FUZZ_CHECK(len > 0, "emit called with nothing");
    if (o->n + len > o->cap) {
        o->cap = (o->n + len) * 2;
        o->p = realloc(o->p, o->cap);
        if (o->p == NULL)
            abort();
    }
    memcpy(o->p + o->n, data, len);
    o->n += len;
}

typedef struct {
    int dialect, stream, strip, want_text, full;
} opts_t;

typedef struct {
    av_usage_t u;
    out_t out;
    av_tokens_t tok;
    int64_t cost, p50;
} run_t;

/* Feeds body in pieces ending at cuts[0..ncuts) (rising, inside the body), then the end. */
static void run(run_t *r, const opts_t *m, const char *body, size_t n, const size_t *cuts, size_t ncuts)
{
    static const av_price_t price = {"m", 2000000, 8000000, 1000000, 2500000, 8000000};
    memset(r, 0, sizeof(*r));
    av_usage_init(&r->u, m->dialect, m->stream, m->strip);
    r->u.want_text = m->want_text;
    r->u.full_reading = m->full;
    size_t at = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t to = i < ncuts ? cuts[i] : n;
        /* each piece in a buffer of its own size: a read past it is an ASan report */
        char *piece = fuzz_strndup(body + at, to - at);
        av_usage_feed(&r->u, piece, to - at, NOW, to_out, &r->out);
        free(piece);
        at = to;
    }
    av_usage_end(&r->u, NOW, to_out, &r->out);
    av_usage_tokens(&r->u, n, &r->tok);
    r->cost = av_usage_cost_pico(&r->tok, &price);
    r->p50 = av_usage_gap_p50_us(&r->u);
    FUZZ_CHECK(r->tok.input >= 0 && r->tok.output >= 0 && r->tok.cached >= 0 && r->tok.cache_write >= 0 &&
                   r->tok.reasoning >= 0 && r->cost >= 0,
               "negative tokens or cost: in %lld out %lld cost %lld", (long long)r->tok.input,
               (long long)r->tok.output, (long long)r->cost);
    FUZZ_CHECK(memchr(r->u.finish, '\0', sizeof(r->u.finish)) != NULL, "finish reason not terminated");
    if (!m->strip || !m->stream)
        FUZZ_CHECK(r->out.n == 0, "%zu bytes emitted without strip", r->out.n);
    av_usage_free(&r->u);
}

static void show(const char *name, const run_t *r)
{
    const av_usage_t *u = &r->u;
    fprintf(stderr,
            "%s: in %lld out %lld cached %lld write %lld reasoning %lld reported %d untrusted %d (%s) finish \"%s\" "
            "tools %d chars %zu hash %llx events %llu gaps %llu first %llu last %llu incomplete %d emitted %zu\n",
            name, (long long)u->input, (long long)u->output, (long long)u->cached, (long long)u->cache_write,
            (long long)u->reasoning, u->reported, u->untrusted, u->untrusted_key, u->finish, u->tool_calls, u->chars,
            (unsigned long long)u->hash, (unsigned long long)u->token_events, (unsigned long long)u->ngaps,
            (unsigned long long)u->first_token_us, (unsigned long long)u->last_token_us, u->incomplete, r->out.n);
}

static void same(const char *what, const run_t *a, const run_t *b, int want_text, int strip)
{
    const av_usage_t *x = &a->u, *y = &b->u;
    int ok = x->input == y->input && x->output == y->output && x->cached == y->cached &&
             x->cache_write == y->cache_write && x->reasoning == y->reasoning && x->reported == y->reported &&
             x->untrusted == y->untrusted && strcmp(x->untrusted_key, y->untrusted_key) == 0 &&
             strcmp(x->finish, y->finish) == 0 && x->tool_calls == y->tool_calls && x->chars == y->chars &&
             (!want_text || x->hash == y->hash) && x->token_events == y->token_events && x->ngaps == y->ngaps &&
             x->first_token_us == y->first_token_us && x->last_token_us == y->last_token_us &&
             x->incomplete == y->incomplete && memcmp(x->gaps, y->gaps, sizeof(x->gaps)) == 0 &&
             a->tok.input == b->tok.input && a->tok.output == b->tok.output && a->tok.estimated == b->tok.estimated &&
             a->cost == b->cost && a->p50 == b->p50;
    if (strip)
        ok = ok && a->out.n == b->out.n && (a->out.n == 0 || memcmp(a->out.p, b->out.p, a->out.n) == 0);
    if (!ok) {
        show("first ", a);
        show("second", b);
    }
    FUZZ_CHECK(ok, "%s", what);
}

/* The SSE events of body, as usage.c frames them: lines end at \n (a \r
 * before it is dropped), an empty line ends an event. Calls fn for each
 * whole event's bytes; returns where the unfinished rest begins. */
static size_t events(const char *s, size_t n, void (*fn)(void *, const char *, size_t), void *arg)
{
    size_t pos = 0, start = 0;
    for (;;) {
        const char *nl = memchr(s + pos, '\n', n - pos);
        if (nl == NULL)
            return start;
        size_t end = (size_t)(nl - s), len = end - pos;
        if (len > 0 && s[end - 1] == '\r')
            len--;
        pos = end + 1;
        if (len == 0) {
            fn(arg, s + start, pos - start);
            start = pos;
        }
    }
}

/* Strictly one JSON object: the scanner's verdict and cJSON's agree on it. */
static int json_object(const char *s, size_t n)
{
    size_t off;
    if (av_jscan_object(s, n, NULL, NULL, &off) != 0)
        return 0;
    cJSON *j = cJSON_ParseWithLengthOpts(s, n, NULL, 0);
    int ok = j != NULL;
    cJSON_Delete(j);
    return ok;
}

/* One event that is a JSON object, read alone by the shortcuts and by the full reading. */
static void each_alone(const opts_t *m, const char *ev, size_t n)
{
    opts_t fast = *m, full = *m;
    fast.full = 0;
    full.full = 1;
    run_t a, b;
    run(&a, &fast, ev, n, NULL, 0);
    run(&b, &full, ev, n, NULL, 0);
    same("one event: shortcuts against the full reading", &a, &b, m->want_text, m->strip);
    free(a.out.p);
    free(b.out.p);
}

/* Whether an event's data (its data: lines joined) is clean: empty, [DONE]
 * or a JSON object (then *object is set). */
static int event_clean(const char *ev, size_t n, int *object)
{
    char *data = malloc(n + 1);
    size_t dn = 0, pos = 0;
    while (pos < n) {
        const char *nl = memchr(ev + pos, '\n', n - pos);
        size_t end = nl ? (size_t)(nl - ev) : n, len = end - pos;
        const char *line = ev + pos;
        if (len > 0 && line[len - 1] == '\r')
            len--;
        if (len >= 5 && memcmp(line, "data:", 5) == 0) {
            line += 5;
            len -= 5;
            if (len > 0 && line[0] == ' ')
                line++, len--;
            if (dn > 0)
                data[dn++] = '\n';
            memcpy(data + dn, line, len);
            dn += len;
        }
        pos = end + 1;
    }
    *object = dn > 0 && !(dn == 6 && memcmp(data, "[DONE]", 6) == 0) && json_object(data, dn);
    int clean = dn == 0 || (dn == 6 && memcmp(data, "[DONE]", 6) == 0) || *object;
    free(data);
    return clean;
}

typedef struct {
    const opts_t *m;
    int all_json;
} json_check_t;

static void check_event_json(void *arg, const char *ev, size_t n)
{
    json_check_t *c = arg;
    int object;
    if (!event_clean(ev, n, &object))
        c->all_json = 0;
    else if (object)
        each_alone(c->m, ev, n);
}

/* strip: each event goes to the client whole or not at all, in order; a
 * clean one exactly when the full reading of it alone passes it on. */
typedef struct {
    const opts_t *m;
    const out_t *got; /* what the client got */
    size_t k;         /* how much of it the events so far make */
} strip_ref_t;

static void strip_event(void *arg, const char *ev, size_t n)
{
    strip_ref_t *r = arg;
    av_usage_t u;
    out_t o = {0};
    av_usage_init(&u, r->m->dialect, 1, 1);
    u.full_reading = 1;
    char *copy = fuzz_strndup(ev, n);
    av_usage_feed(&u, copy, n, NOW, to_out, &o);
    av_usage_end(&u, NOW, to_out, &o);
    av_usage_free(&u);
    FUZZ_CHECK(o.n == 0 || (o.n == n && memcmp(o.p, ev, n) == 0), "an event alone comes out changed (%zu of %zu bytes)",
               o.n, n);
    int object, clean = event_clean(ev, n, &object);
    int passed = r->k + n <= r->got->n && memcmp(r->got->p + r->k, ev, n) == 0;
    if (clean)
        FUZZ_CHECK(passed == (o.n > 0), "the event at byte %zu of the client's bytes is %s; the full reading %s",
                   r->k, passed ? "passed" : "held back", o.n > 0 ? "passes it" : "holds it back");
    if (passed)
        r->k += n;
    free(o.p);
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_in_t in = {data, size};
    unsigned flags = fuzz_byte(&in), nsteps = fuzz_byte(&in) % 8;
    opts_t m = {.dialect = (int)(flags & 7) % 6, .stream = (flags >> 3) & 1, .strip = (flags >> 4) & 1,
                 .want_text = (flags >> 5) & 1};
    size_t cuts[8], ncuts = 0, at = 0;
    const uint8_t *steps;
    size_t got = fuzz_bytes(&in, nsteps, &steps);
    const char *body = (const char *)in.p;
    size_t n = in.n;
    for (size_t i = 0; i < got; i++) {
        at += (size_t)steps[i] + 1;
        if (at >= n)
            break;
        cuts[ncuts++] = at;
    }
    run_t whole, split, bytes, full, full_split;
    run(&whole, &m, body, n, NULL, 0);
    run(&split, &m, body, n, cuts, ncuts);
    same("whole against split", &whole, &split, m.want_text, m.strip && m.stream);
    if (n <= 4096) {
        size_t *each = malloc((n ? n : 1) * sizeof(size_t));
        for (size_t i = 0; i + 1 < n; i++)
            each[i] = i + 1;
        run(&bytes, &m, body, n, each, n ? n - 1 : 0);
        free(each);
        same("whole against a byte at a time", &whole, &bytes, m.want_text, m.strip && m.stream);
        free(bytes.out.p);
    }
    opts_t mf = m;
    mf.full = 1;
    run(&full, &mf, body, n, NULL, 0);
    run(&full_split, &mf, body, n, cuts, ncuts);
    same("full reading: whole against split", &full, &full_split, m.want_text, m.strip && m.stream);
    /* the shortcuts against the full reading, where the answer is JSON throughout */
    json_check_t jc = {&m, 1};
    if (m.stream) {
        size_t rest = events(body, n, check_event_json, &jc);
        /* the unfinished last event counts too (av_usage_end reads it) */
        if (rest < n) {
            char *tail = malloc(n - rest + 2);
            memcpy(tail, body + rest, n - rest);
            memcpy(tail + n - rest, "\n\n", 2);
            check_event_json(&jc, tail, n - rest + 2);
            free(tail);
        }
    } else {
        size_t i = 0;
        while (i < n && (body[i] == ' ' || body[i] == '\n' || body[i] == '\r' || body[i] == '\t'))
            i++;
        jc.all_json = i == n || body[i] != '{' || json_object(body, n);
    }
    if (jc.all_json)
        same("shortcuts against the full reading", &whole, &full, m.want_text, m.strip && m.stream);
    /* strip passes every event but the usage-only ones, whole, and the unfinished rest */
    if (m.stream && m.strip) {
        strip_ref_t sr = {.m = &m, .got = &whole.out};
        size_t rest = events(body, n, strip_event, &sr);
        FUZZ_CHECK(whole.out.n - sr.k == n - rest && (n == rest || memcmp(whole.out.p + sr.k, body + rest, n - rest) == 0),
                   "the client gets %zu bytes, the events passed and the unfinished rest make %zu", whole.out.n,
                   sr.k + n - rest);
    }
    free(whole.out.p);
    free(split.out.p);
    free(full.out.p);
    free(full_split.out.p);
    return 0;
}
