/* fuzz_jscan.c: the JSON scanner and walk (jscan.c) against cJSON and
 * against themselves. The input is a text A, optionally followed by a NUL
 * and a tail B (see below).
 *  - What the scanner accepts, cJSON reads, to the same members and values
 *    (but for cJSON's own limits: lone surrogates, numbers over 63 bytes);
 *    what cJSON prints, the scanner and the walk accept.
 *  - The walk reports exactly the keys the scanner finds, at every depth,
 *    with the keys on their way down; av_jscan_keys the same keys.
 *  - A walk resumed at any mark (av_jscan_mark, av_jscan_walk_from) goes on
 *    exactly as the whole walk does, in A and in A's bytes before the mark
 *    followed by B: what usage.c relies on from one stream chunk to the next.
 *  - The SSE2 string skipping gives what the portable eight-byte one gives:
 *    jscan.c is compiled a second time here without SSE2 (names port_*).
 * fuzz-options: -max_len=4096 */
#include <cjson/cJSON.h>

#include "av.h"
#include "fuzz.h"
#include "jscan.h"

#define av_jscan_object port_object
#define av_jscan_object_at port_object_at
#define av_jscan_array port_array
#define av_jscan_keys port_keys
#define av_jscan_walk port_walk
#define av_jscan_mark port_mark
#define av_jscan_walk_from port_walk_from
#define av_jscan_same_prefix port_same_prefix
#define av_jscan_string_len port_string_len
#define av_jscan_unescape port_unescape
#define av_jscan_key_is port_key_is
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wmissing-prototypes"
#pragma clang diagnostic ignored "-Wbuiltin-macro-redefined"
#undef __SSE2__
#include "jscan.c"
#pragma clang diagnostic pop
#undef av_jscan_object
#undef av_jscan_object_at
#undef av_jscan_array
#undef av_jscan_keys
#undef av_jscan_walk
#undef av_jscan_mark
#undef av_jscan_walk_from
#undef av_jscan_same_prefix
#undef av_jscan_string_len
#undef av_jscan_unescape
#undef av_jscan_key_is

#define MAX_EVENTS 4096
#define MAX_MARKS 24

/* ---- what a walk reports, as offsets into its text ---- */

typedef struct {
    unsigned depth, objects;
    int escaped;
    size_t val;
    long key[AV_JWALK_MAX_DEPTH + 1]; /* -1: no key at that level */
    unsigned key_len[AV_JWALK_MAX_DEPTH + 1];
} ev_t;

typedef struct {
    const char *text;
    ev_t *v;
    size_t n, cap;
    /* marks taken during the walk: before event i's key, and inside its value */
    struct {
        size_t ev;
        int inside;
        av_jwalk_mark_t m;
    } marks[MAX_MARKS];
    size_t nmarks, stride;
} evs_t;

static void evs_init(evs_t *e, const char *text, size_t stride)
{
    memset(e, 0, sizeof(*e));
    e->text = text;
    e->stride = stride;
}

/* Room for one more event, or NULL past MAX_EVENTS. */
static ev_t *evs_add(evs_t *e)
{
    if (e->n == MAX_EVENTS)
        return NULL;
    if (e->n == e->cap) {
        e->cap = e->cap ? 2 * e->cap : 32;
        e->v = realloc(e->v, e->cap * sizeof(ev_t));
        if (e->v == NULL)
            abort();
    }
    ev_t *x = &e->v[e->n++];
    memset(x, 0, sizeof(*x));
    return x;
}

static int same_ev(const ev_t *a, const ev_t *b)
{
    if (a->depth != b->depth || a->val != b->val || a->escaped != b->escaped)
        return 0;
    unsigned mask = a->depth >= 32 ? ~0u : (1u << a->depth) - 1;
    if ((a->objects & mask) != (b->objects & mask))
        return 0;
    for (unsigned d = 1; d <= a->depth; d++)
        if (a->key[d] != b->key[d] || (a->key[d] >= 0 && a->key_len[d] != b->key_len[d]))
            return 0;
    return 1;
}

static void show_ev(const char *what, size_t i, const ev_t *e)
{
    fprintf(stderr, "%s event %zu: depth %u objects %x escaped %d val %zu keys", what, i, e->depth, e->objects,
            e->escaped, e->val);
    for (unsigned d = 1; d <= e->depth && d <= AV_JWALK_MAX_DEPTH; d++)
        fprintf(stderr, " %ld/%u", e->key[d], e->key[d] >= 0 ? e->key_len[d] : 0);
    fprintf(stderr, "\n");
}

/* The walk's events b (from index bi) must be a's (from ai) exactly; prefix: b may stop early. */
static void compare_evs(const char *what, const evs_t *a, size_t ai, const evs_t *b, size_t bi, int prefix)
{
    size_t na = a->n - ai, nb = b->n - bi;
    if (!(prefix ? nb <= na : nb == na)) {
        fprintf(stderr, "%s: %zu events against %zu\n", what, nb, na);
        FUZZ_CHECK(0, "%s: the walks report different numbers of keys", what);
    }
    for (size_t i = 0; i < nb; i++)
        if (!same_ev(&a->v[ai + i], &b->v[bi + i])) {
            show_ev("want", ai + i, &a->v[ai + i]);
            show_ev("got ", bi + i, &b->v[bi + i]);
            FUZZ_CHECK(0, "%s: the walks differ at key %zu", what, i);
        }
}

static void record(evs_t *e, const av_jpath_t *p)
{
    FUZZ_CHECK(p->depth >= 1 && p->depth <= AV_JWALK_MAX_DEPTH, "a key at depth %u", p->depth);
    ev_t *x = evs_add(e);
    if (x == NULL)
        return;
    x->depth = p->depth;
    x->objects = p->objects;
    x->escaped = p->escaped;
    x->val = p->val;
    for (unsigned d = 1; d <= p->depth; d++) {
        x->key[d] = p->key[d] != NULL ? (long)(p->key[d] - e->text) : -1;
        x->key_len[d] = p->key[d] != NULL ? p->key_len[d] : 0;
    }
}

static int on_walk(void *arg, const av_jpath_t *p)
{
    record(arg, p);
    return 0;
}

/* The same, taking marks at every stride-th key. */
static int on_walk_marking(void *arg, const av_jpath_t *p)
{
    evs_t *e = arg;
    size_t i = e->n;
    record(e, p);
    if (e->stride == 0 || i % e->stride != 0)
        return 0;
    for (int inside = 0; inside <= 1 && e->nmarks < MAX_MARKS; inside++) {
        av_jwalk_mark_t m;
        int rc = av_jscan_mark(e->text, p, inside, &m);
        char first = e->text[p->val];
        int container = first == '{' || first == '[';
        if (inside)
            FUZZ_CHECK((rc == 0) == (container && p->depth < AV_JWALK_MAX_DEPTH),
                       "mark inside a value starting 0x%02x at depth %u: %d", (unsigned char)first, p->depth, rc);
        else
            FUZZ_CHECK(rc == 0, "mark before a key: %d", rc);
        if (rc == 0) {
            e->marks[e->nmarks].ev = i;
            e->marks[e->nmarks].inside = inside;
            e->marks[e->nmarks++].m = m;
        }
    }
    return 0;
}

static int on_walk_port(void *arg, const av_jpath_t *p)
{
    record(arg, p);
    return 0;
}

/* ---- the scanner's members, and the walk they imply ---- */

typedef struct {
    const char *text;
    evs_t *ref;
    unsigned level, objects, max_level;
    long key[AV_JWALK_MAX_DEPTH + 2];
    unsigned key_len[AV_JWALK_MAX_DEPTH + 2];
} ref_t;

static void ref_container(ref_t *r, const char *val, size_t len);

static int ref_member(void *arg, const av_jmember_t *m)
{
    ref_t *r = arg;
    unsigned L = r->level;
    if (L <= AV_JWALK_MAX_DEPTH) {
        r->key[L] = m->key != NULL ? (long)(m->key - r->text) : -1;
        r->key_len[L] = m->key != NULL ? (unsigned)m->key_len : 0;
        ev_t *x = m->key != NULL ? evs_add(r->ref) : NULL;
        if (x != NULL) {
            x->depth = L;
            x->objects = r->objects;
            x->escaped = m->key_escaped;
            x->val = (size_t)(m->val - r->text);
            for (unsigned d = 1; d <= L; d++) {
                x->key[d] = r->key[d];
                x->key_len[d] = r->key_len[d];
            }
        }
    }
    if (m->type == '{' || m->type == '[')
        ref_container(r, m->val, m->val_len);
    return 0;
}

/* A container at level r->level + 1. */
static void ref_container(ref_t *r, const char *val, size_t len)
{
    unsigned saved_objects = r->objects;
    r->level++;
    if (r->level > r->max_level)
        r->max_level = r->level;
    if (r->level <= 32) {
        if (val[0] == '{')
            r->objects |= 1u << (r->level - 1);
        else
            r->objects &= ~(1u << (r->level - 1));
    }
    size_t off;
    int rc = val[0] == '{' ? av_jscan_object(val, len, ref_member, r, &off) : av_jscan_array(val, len, ref_member, r, &off);
    FUZZ_CHECK(rc == 0, "a value the scanner passed does not scan alone");
    r->level--;
    r->objects = saved_objects;
}

/* ---- the scanner against cJSON ---- */

typedef struct {
    av_jmember_t m[512];
    size_t n;
} members_t;

static int on_member(void *arg, const av_jmember_t *m)
{
    members_t *x = arg;
    if (x->n < AV_NELEMS(x->m))
        x->m[x->n++] = *m;
    return 0;
}

static int cjson_depth(const cJSON *v)
{
    int d = 0;
    for (const cJSON *c = v->child; c != NULL; c = c->next) {
        int k = cjson_depth(c);
        if (k > d)
            d = k;
    }
    return (cJSON_IsObject(v) || cJSON_IsArray(v)) ? d + 1 : 0;
}

/* What cJSON cannot read that JSON allows: a \u escape of a lone or
 * paired surrogate (cJSON refuses some pairs the scanner passes unchecked),
 * a number token over 63 bytes (cJSON's buffer). */
static int cjson_limits(const char *s, size_t n)
{
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        run = ((c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E') ? run + 1 : 0;
        if (run > 60)
            return 1;
        if (c == '\\' && i + 2 < n && s[i + 1] == 'u' && (s[i + 2] == 'd' || s[i + 2] == 'D'))
            return 1;
    }
    return 0;
}

static char type_of(const cJSON *v)
{
    if (cJSON_IsString(v))
        return '"';
    if (cJSON_IsObject(v))
        return '{';
    if (cJSON_IsArray(v))
        return '[';
    if (cJSON_IsTrue(v))
        return 't';
    if (cJSON_IsFalse(v))
        return 'f';
    if (cJSON_IsNull(v))
        return 'n';
    return '0';
}

static void check_member(const av_jmember_t *m, const cJSON *c, size_t i)
{
    char *buf = malloc(m->key_len + m->val_len + 2);
    long k = m->key_escaped ? av_jscan_unescape(m->key, m->key_len, buf) : (long)m->key_len;
    if (!m->key_escaped)
        memcpy(buf, m->key, m->key_len);
    if (k >= 0) {
        FUZZ_CHECK((size_t)k == strlen(c->string) && memcmp(buf, c->string, (size_t)k) == 0,
                   "member %zu: the scanner's key \"%.*s\", cJSON's \"%s\"", i, (int)m->key_len, m->key, c->string);
        buf[k] = '\0';
        if (m->key_len < 256)
            FUZZ_CHECK(av_jscan_key_is(m, buf), "member %zu: key_is(\"%s\") fails on its own key", i, buf);
    }
    FUZZ_CHECK(m->type == type_of(c), "member %zu: type '%c', cJSON says '%c'", i, m->type, type_of(c));
    const char *end = NULL;
    cJSON *v = cJSON_ParseWithLengthOpts(m->val, m->val_len, &end, 0);
    FUZZ_CHECK(v != NULL && fuzz_json_same(v, c) && end == m->val + m->val_len,
               "member %zu: the value \"%.*s\" is not cJSON's", i, (int)(m->val_len < 60 ? m->val_len : 60), m->val);
    cJSON_Delete(v);
    if (m->type == '"') {
        FUZZ_CHECK(av_jscan_string_len(m->val, m->val_len) == m->val_len, "member %zu: string_len", i);
        long n = av_jscan_unescape(m->val + 1, m->val_len - 2, buf);
        if (n >= 0)
            FUZZ_CHECK((size_t)n == strlen(c->valuestring) && memcmp(buf, c->valuestring, (size_t)n) == 0,
                       "member %zu: the string decodes unlike cJSON's", i);
    }
    free(buf);
}

static void against_cjson(const char *a, size_t n, int rc)
{
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(a, n, &end, 0);
    if (root != NULL) /* one value, then JSON's whitespace only */
        for (const char *p = end; p < a + n; p++)
            if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
                cJSON_Delete(root);
                root = NULL;
                break;
            }
    if (rc == 0 && !cjson_limits(a, n)) {
        FUZZ_CHECK(root != NULL && cJSON_IsObject(root), "the scanner accepts what cJSON refuses");
        members_t ms = {.n = 0};
        size_t off;
        FUZZ_CHECK(av_jscan_object(a, n, on_member, &ms, &off) == 0, "a second scan fails");
        size_t i = 0;
        const cJSON *c = root->child;
        for (; c != NULL && i < ms.n; c = c->next, i++)
            check_member(&ms.m[i], c, i);
        FUZZ_CHECK(c == NULL && i == ms.n, "the scanner sees %zu members, cJSON more or fewer", ms.n);
    }
    if (root != NULL && cJSON_IsObject(root)) {
        int depth = cjson_depth(root);
        char *p = depth < 500 ? cJSON_PrintUnformatted(root) : NULL;
        if (p != NULL) {
            size_t pl = strlen(p), off = 0;
            FUZZ_CHECK(av_jscan_object(p, pl, NULL, NULL, &off) == 0, "cJSON's printing of it is refused at %zu: %s",
                       off, p);
            evs_t e;
            evs_init(&e, p, 0);
            int w = av_jscan_walk(p, pl, on_walk, &e);
            FUZZ_CHECK(w == (depth <= AV_JWALK_MAX_DEPTH ? 0 : -1), "walk of cJSON's printing (depth %d): %d", depth, w);
            free(e.v);
            free(p);
        }
    }
    cJSON_Delete(root);
}

/* ---- the portable copy against the SSE2 one ---- */

static void against_portable(const char *s, size_t n)
{
    members_t a = {.n = 0}, b = {.n = 0};
    size_t oa = 0, ob = 0;
    int ra = av_jscan_object(s, n, on_member, &a, &oa), rb = port_object(s, n, on_member, &b, &ob);
    FUZZ_CHECK(ra == rb && (ra == 0 || oa == ob) && a.n == b.n, "object: SSE2 %d at %zu, portable %d at %zu", ra, oa,
               rb, ob);
    for (size_t i = 0; i < a.n; i++)
        FUZZ_CHECK(a.m[i].key == b.m[i].key && a.m[i].key_len == b.m[i].key_len && a.m[i].val == b.m[i].val &&
                       a.m[i].val_len == b.m[i].val_len && a.m[i].key_escaped == b.m[i].key_escaped,
                   "object: member %zu differs", i);
    ra = av_jscan_array(s, n, NULL, NULL, &oa);
    rb = port_array(s, n, NULL, NULL, &ob);
    FUZZ_CHECK(ra == rb && (ra == 0 || oa == ob), "array: SSE2 %d at %zu, portable %d at %zu", ra, oa, rb, ob);
    evs_t ea, eb;
    evs_init(&ea, s, 0);
    evs_init(&eb, s, 0);
    ra = av_jscan_walk(s, n, on_walk, &ea);
    rb = port_walk(s, n, on_walk_port, &eb);
    FUZZ_CHECK(ra == rb, "walk: SSE2 %d, portable %d", ra, rb);
    compare_evs("walk, portable against SSE2", &ea, 0, &eb, 0, 0);
    free(ea.v);
    free(eb.v);
    /* every string start */
    size_t strings = 0;
    for (size_t i = 0; i < n && strings < 64; i++)
        if (s[i] == '"') {
            strings++;
            size_t la = av_jscan_string_len(s + i, n - i), lb = port_string_len(s + i, n - i);
            FUZZ_CHECK(la == lb, "string at %zu: SSE2 length %zu, portable %zu", i, la, lb);
        }
}

/* ---- the walk against the scanner, and resumed at its marks ---- */

typedef struct {
    const char *text;
    long at;
    evs_t *e;
} keys_t;

static int on_key(void *arg, const char *key, size_t key_len, size_t val_off)
{
    evs_t *e = arg;
    ev_t *x = evs_add(e);
    if (x != NULL) {
        x->depth = 1;
        x->key[1] = (long)(key - e->text);
        x->key_len[1] = (unsigned)key_len;
        x->val = val_off;
    }
    return 0;
}

/* walk_from at each mark taken in a text, run in t (tlen), which has that text's bytes before the mark. */
static void resume_in(const evs_t *marks, const char *t, size_t tlen, const evs_t *whole, int whole_rc, int same_text,
                      int both_json)
{
    for (size_t k = 0; k < marks->nmarks; k++) {
        const av_jwalk_mark_t *m = &marks->marks[k].m;
        if (!same_text && m->at > tlen)
            continue;
        evs_t r;
        evs_init(&r, t, 0);
        int rc = av_jscan_walk_from(t, tlen, m, on_walk, &r);
        /* the whole walk's keys from the mark on: for the same text, those from the
         * mark's event; in another, the ones whose key begins at or past the mark */
        size_t from = 0;
        if (same_text)
            from = marks->marks[k].ev + (size_t)marks->marks[k].inside;
        else
            while (from < whole->n && whole->v[from].key[whole->v[from].depth] < (long)m->at)
                from++;
        char what[96];
        snprintf(what, sizeof(what), "walk from mark %zu (at %zu, inside %d)%s", k, m->at, marks->marks[k].inside,
                 same_text ? "" : " in the other text");
        FUZZ_CHECK(rc == whole_rc, "%s returns %d, the whole walk %d", what, rc, whole_rc);
        /* In another text only where both are objects: the walk is lenient, and
         * where a string was taken for a key (not JSON) or a container has no key,
         * the whole walk shows a stale key where the resumed one has none. */
        if (whole->n < MAX_EVENTS && r.n < MAX_EVENTS && (same_text || both_json))
            compare_evs(what, whole, from, &r, 0, 0);
        free(r.v);
    }
}

static void walks(const char *a, size_t n, int object_rc, const char *b, size_t bn, int have_b)
{
    /* the walk against what the scanner found */
    evs_t w;
    evs_init(&w, a, 1);
    int wrc = av_jscan_walk(a, n, on_walk_marking, &w);
    if (w.n > MAX_MARKS / 2) { /* spread the marks over the whole walk */
        free(w.v);
        evs_init(&w, a, (w.n + MAX_MARKS / 2 - 1) / (MAX_MARKS / 2));
        wrc = av_jscan_walk(a, n, on_walk_marking, &w);
    }
    if (object_rc == 0) {
        evs_t ref;
        evs_init(&ref, a, 0);
        ref_t r = {.text = a, .ref = &ref};
        size_t i = 0;
        while (a[i] != '{')
            i++;
        ref_container(&r, a + i, n - i);
        if (r.max_level <= AV_JWALK_MAX_DEPTH) {
            FUZZ_CHECK(wrc == 0, "the walk refuses an object the scanner passes: %d", wrc);
            compare_evs("walk against the scanner", &ref, 0, &w, 0, 0);
            evs_t k;
            evs_init(&k, a, 0);
            FUZZ_CHECK(av_jscan_keys(a, n, on_key, &k) == 0, "av_jscan_keys refuses an object the scanner passes");
            FUZZ_CHECK(k.n == w.n, "av_jscan_keys finds %zu keys, the walk %zu", k.n, w.n);
            for (size_t j = 0; j < k.n; j++) {
                const ev_t *x = &w.v[j];
                FUZZ_CHECK(k.v[j].key[1] == x->key[x->depth] && k.v[j].key_len[1] == x->key_len[x->depth] &&
                               k.v[j].val == x->val,
                           "av_jscan_keys differs from the walk at key %zu", j);
            }
            free(k.v);
        } else {
            FUZZ_CHECK(wrc == -1, "the walk passes nesting of %u: %d", r.max_level, wrc);
            compare_evs("walk against the scanner, too deep", &ref, 0, &w, 0, 1);
        }
        free(ref.v);
    }
    if (w.n < MAX_EVENTS)
        resume_in(&w, a, n, &w, wrc, 1, 1);
    if (have_b) {
        /* A's bytes before each mark, then B */
        for (size_t k = 0; k < w.nmarks; k++) {
            size_t at = w.marks[k].m.at;
            char *t = malloc(at + bn + 1);
            memcpy(t, a, at);
            memcpy(t + at, b, bn);
            evs_t whole;
            evs_init(&whole, t, 0);
            int rc = av_jscan_walk(t, at + bn, on_walk, &whole);
            evs_t one = w;
            one.marks[0] = w.marks[k];
            one.nmarks = 1;
            if (whole.n < MAX_EVENTS)
                resume_in(&one, t, at + bn, &whole, rc, 0,
                          object_rc == 0 && av_jscan_object(t, at + bn, NULL, NULL, NULL) == 0);
            free(whole.v);
            free(t);
        }
    }
    free(w.v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *nul = memchr(data, '\0', size);
    size_t an = nul ? (size_t)(nul - (const char *)data) : size;
    char *a = fuzz_strndup(data, an);
    const char *b = nul ? nul + 1 : NULL;
    size_t bn = nul ? size - an - 1 : 0;

    against_portable((const char *)data, size);
    size_t off = 0;
    int rc = av_jscan_object(a, an, NULL, NULL, &off);
    FUZZ_CHECK(rc == 0 || off <= an, "error offset %zu past the end", off);
    against_cjson(a, an, rc);
    size_t end = 0;
    int rc_at = av_jscan_object_at(a, an, NULL, NULL, &end);
    if (rc == 0)
        FUZZ_CHECK(rc_at == 0, "object_at refuses what object accepts");
    if (rc_at == 0)
        FUZZ_CHECK(end <= an && av_jscan_object(a, end, NULL, NULL, &off) == 0, "object_at's object does not scan alone");
    walks(a, an, rc, b, bn, nul != NULL);
    if (b != NULL) {
        size_t m = an < bn ? an : bn, same = av_jscan_same_prefix(a, b, m), k = 0;
        while (k < m && a[k] == b[k])
            k++;
        FUZZ_CHECK(same == k, "same_prefix %zu, counted %zu", same, k);
        FUZZ_CHECK(av_jscan_same_prefix(a, b, m) == port_same_prefix(a, b, m), "same_prefix: SSE2 and portable differ");
    }
    /* the whole input as a string's inside */
    char *out = malloc(size + 1), *out2 = malloc(size + 1);
    long u1 = av_jscan_unescape((const char *)data, size, out), u2 = port_unescape((const char *)data, size, out2);
    FUZZ_CHECK(u1 <= (long)size && u1 == u2 && (u1 < 0 || memcmp(out, out2, (size_t)u1) == 0), "unescape");
    free(out);
    free(out2);
    free(a);
    return 0;
}
