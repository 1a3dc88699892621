/* test_json.c: the number writers, the JSON writer's escapes, and the top-level
 * scanner: members and their spans, rejection of what is not one object,
 * string unescaping, and agreement with cJSON on what is valid. */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>

#include "av.h"
#include "jscan.h"
#include "jsonw.h"
#include "../test.h"

static char out[256];

#define W(expr)              \
    do {                     \
        char *p = out;       \
        p = (expr);          \
        *p = '\0';           \
    } while (0)

static void test_writer(void)
{
    W(av_put_u64(p, 0));
    CHECK_STR(out, "0");
    W(av_put_u64(p, UINT64_MAX));
    CHECK_STR(out, "18446744073709551615");
    W(av_put_hex(p, 0));
    CHECK_STR(out, "0");
    W(av_put_hex(p, 0x1a2bu));
    CHECK_STR(out, "1a2b");
    W(av_put_hex(p, UINT64_MAX));
    CHECK_STR(out, "ffffffffffffffff");
    W(av_jw_i64(p, INT64_MIN));
    CHECK_STR(out, "-9223372036854775808");
    W(av_jw_i64(p, -42));
    CHECK_STR(out, "-42");
    W(av_jw_ms(p, 1234567));
    CHECK_STR(out, "1234.567");
    W(av_jw_ms(p, 5));
    CHECK_STR(out, "0.005");
    W(av_jw_ms(p, -1));
    CHECK_STR(out, "null");
    W(av_jw_str(p, "a\"b\\c\n\x01\x7f\xc3\xa9", 10));
    CHECK_STR(out, "\"a\\\"b\\\\c\\n\\u0001\\u007f\xc3\xa9\"");
    W(av_jw_str(p, NULL, 0));
    CHECK_STR(out, "null");
    /* the bound holds for the worst case */
    char worst[16];
    memset(worst, 1, sizeof(worst));
    W(av_jw_str(p, worst, sizeof(worst)));
    CHECK_INT(strlen(out), AV_JW_STR_MAX(sizeof(worst)));
    /* a byte to escape at every place of a longer string (eight bytes are checked at a time) */
    const char special[] = {'"', '\\', '\n', 0x1f, 0x7f};
    for (size_t k = 0; k < 21; k++) {
        for (size_t j = 0; j < sizeof(special); j++) {
            char in[21], want[40];
            memset(in, 'a', sizeof(in));
            in[k] = special[j];
            W(av_jw_str(p, in, sizeof(in)));
            const char *esc = special[j] == '"' ? "\\\"" : special[j] == '\\' ? "\\\\" : special[j] == '\n' ? "\\n"
                            : special[j] == 0x1f ? "\\u001f" : "\\u007f";
            snprintf(want, sizeof(want), "\"%.*s%s%.*s\"", (int)k, in, esc, (int)(20 - k), in + k + 1);
            CHECK_STR(out, want);
        }
    }
}

typedef struct {
    char keys[8][32], vals[8][64], types[8];
    int n;
} seen_t;

static int collect(void *arg, const av_jmember_t *m)
{
    seen_t *s = arg;
    if (s->n < 8) {
        snprintf(s->keys[s->n], 32, "%.*s", (int)m->key_len, m->key);
        snprintf(s->vals[s->n], 64, "%.*s", (int)m->val_len, m->val);
        s->types[s->n] = m->type;
        s->n++;
    }
    return 0;
}

/* Strings that are not UTF-8 come out as valid UTF-8: each stray byte a U+FFFD. */
static void test_writer_utf8(void)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"caf\xc3\xa9", "\"caf\xc3\xa9\""},                        /* two bytes */
        {"\xe2\x82\xac \xf0\x9f\x98\x80", "\"\xe2\x82\xac \xf0\x9f\x98\x80\""}, /* three, four */
        {"m\xff\xfex", "\"m\\ufffd\\ufffdx\""},                       /* never UTF-8 */
        {"\xc0\xaf", "\"\\ufffd\\ufffd\""},                              /* overlong slash */
        {"\xed\xa0\x80", "\"\\ufffd\\ufffd\\ufffd\""},                    /* a surrogate */
        {"\xf4\x90\x80\x80", "\"\\ufffd\\ufffd\\ufffd\\ufffd\""},          /* past U+10FFFF */
        {"ab\xe2\x82", "\"ab\\ufffd\\ufffd\""},                           /* cut short */
        {"abcdefgh\xc3\xa9" "abcdefgh\x80", "\"abcdefgh\xc3\xa9" "abcdefgh\\ufffd\""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char buf[256];
        size_t n = strlen(cases[i].in);
        char *end = av_jw_str(buf, cases[i].in, n);
        CHECK(end - buf <= (ptrdiff_t)AV_JW_STR_MAX(n));
        *end = '\0';
        CHECK_STR(buf, cases[i].out);
    }
}

static void test_scan_members(void)
{
    const char *t = " {\"model\" : \"gpt\\\"x\", \"n\":-1.5e3,\"m\":[1,{\"a\":[]},\"]\"],"
                    "\"o\":{\"k\":{\"z\":null}},\"t\":true,\"e\":{},\"f\":false} \n";
    seen_t s = {0};
    size_t off = 99;
    CHECK_INT(av_jscan_object(t, strlen(t), collect, &s, &off), 0);
    CHECK_INT(s.n, 7);
    CHECK_STR(s.keys[0], "model");
    CHECK_STR(s.vals[0], "\"gpt\\\"x\"");
    CHECK_INT(s.types[0], '"');
    CHECK_STR(s.vals[1], "-1.5e3");
    CHECK_INT(s.types[1], '0');
    CHECK_STR(s.vals[2], "[1,{\"a\":[]},\"]\"]");
    CHECK_INT(s.types[2], '[');
    CHECK_STR(s.vals[3], "{\"k\":{\"z\":null}}");
    CHECK_STR(s.vals[4], "true");
    CHECK_STR(s.vals[5], "{}");
    CHECK_STR(s.vals[6], "false");
    seen_t e = {0};
    CHECK_INT(av_jscan_object("{}", 2, collect, &e, NULL), 0);
    CHECK_INT(e.n, 0);
}

static int scan(const char *t)
{
    size_t off;
    return av_jscan_object(t, strlen(t), NULL, NULL, &off);
}

static void test_scan_rejects(void)
{
    const char *bad[] = {
        "",           "[]",          "{",          "{\"a\"}",        "{\"a\":}",      "{\"a\":1,}",
        "{\"a\":1}x", "{\"a\":[1,]}", "{\"a\":[1}", "{\"a\":{\"b\"}}", "{\"a\":tru}",   "{\"a\":\"x}",
        "{a:1}",      "{\"a\":1 \"b\":2}", "{\"a\":\"\x01\"}", "{\"a\":[}]}", "{\"a\":01x}", "{\"a\":{,}}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (scan(bad[i]) == 0) {
            printf("# accepted: %s\n", bad[i]);
            t_case_failed = 1;
        }
    }
    size_t off = 0;
    CHECK_INT(av_jscan_object("{\"a\":1,}", 8, NULL, NULL, &off), -1);
    CHECK_INT(off, 7);
    /* nesting: 512 levels pass, 513 do not */
    char deep[1200];
    for (int depth = 512; depth <= 513; depth++) {
        size_t n = 0;
        n += (size_t)sprintf(deep, "{\"a\":");
        for (int i = 0; i < depth - 1; i++)
            deep[n++] = '[';
        for (int i = 0; i < depth - 1; i++)
            deep[n++] = ']';
        deep[n++] = '}';
        deep[n] = '\0';
        CHECK_INT(scan(deep), depth == 512 ? 0 : -1);
    }
}

static void test_unescape(void)
{
    char o[64];
    CHECK_INT(av_jscan_unescape("a\\n\\\"\\/\\u00e9\\ud83d\\ude00", 25, o), 10);
    CHECK_STR(o, "a\n\"/\xc3\xa9\xf0\x9f\x98\x80");
    CHECK_INT(av_jscan_unescape("\\u0000", 6, o), -1);
    CHECK_INT(av_jscan_unescape("\\ud83d", 6, o), -1);
    CHECK_INT(av_jscan_unescape("\\x", 2, o), -1);
    CHECK_INT(av_jscan_unescape("abc\\", 4, o), -1);
    av_jmember_t m = {.key = "mo\\u0064el", .key_len = 10, .key_escaped = 1};
    CHECK(av_jscan_key_is(&m, "model"));
    CHECK(!av_jscan_key_is(&m, "mode"));
}

/* The scanner accepts what cJSON accepts and rejects what it rejects, over
 * mutations of a real request body. cJSON is laxer on \u escapes, so the
 * body's strings hold no 'u' for a mutation to turn into one; it takes
 * "2." for a number, so the body has no fraction either. */
typedef struct {
    char seen[256];
    size_t n;
    int stop_at;
} keys_t;

static int on_key(void *arg, const char *k, size_t n, size_t val)
{
    keys_t *t = arg;
    t->n += (size_t)snprintf(t->seen + t->n, sizeof(t->seen) - t->n, "%.*s@%zu ", (int)n, k, val);
    return --t->stop_at == 0;
}

/* Every key at every depth, in order; strings holding quotes and colons
 * are never keys; a bad string is an error; the callback can stop the walk. */
static void test_scan_keys(void)
{
    const char *t = "{\"a\":{\"b\" : [1,{\"c\":\"x\\\":\\\"d\\\":\"}]},\"e\":\"f\"}";
    keys_t k = {.stop_at = -1};
    CHECK_INT(av_jscan_keys(t, strlen(t), on_key, &k), 0);
    CHECK_STR(k.seen, "a@5 b@12 c@20 e@40 ");
    keys_t k2 = {.stop_at = 2};
    CHECK_INT(av_jscan_keys(t, strlen(t), on_key, &k2), 1);
    CHECK_STR(k2.seen, "a@5 b@12 ");
    keys_t k3 = {.stop_at = -1};
    CHECK_INT(av_jscan_keys("{\"a\":\"open", 11, on_key, &k3), -1);
    CHECK_INT(av_jscan_keys("[1,2]", 5, on_key, &k3), 0);
    CHECK_INT((int)k3.n, 4); /* only "a" was seen */
}

typedef struct {
    char seen[512];
    size_t n;
    int stop_at;
} walk_t;

/* Writes each key as its path (an array's level as []) with depth and value offset. */
static int on_walk(void *arg, const av_jpath_t *p)
{
    walk_t *w = arg;
    for (unsigned d = 1; d <= p->depth; d++)
        w->n += (size_t)snprintf(w->seen + w->n, sizeof(w->seen) - w->n, "%s%.*s%s", d > 1 ? "." : "",
                                 p->key[d] ? (int)p->key_len[d] : 2, p->key[d] ? p->key[d] : "[]", p->escaped && d == p->depth ? "\\" : "");
    w->n += (size_t)snprintf(w->seen + w->n, sizeof(w->seen) - w->n, "@%zu ", p->val);
    return --w->stop_at == 0;
}

/* The walk names each key by its path; quotes and colons in strings are
 * never keys; cut texts, mismatched brackets, keys in arrays and text after
 * the object fail; the callback can stop the walk. */
static void test_walk(void)
{
    const char *t = " {\"a\":{\"b\" : [1,{\"c\":\"x\\\":\\\"d\\\":\"}]},\"e\":[[{\"f\":{}}]],\"g\\u0041\":2} ";
    walk_t w = {.stop_at = -1};
    CHECK_INT(av_jscan_walk(t, strlen(t), on_walk, &w), 0);
    CHECK_STR(w.seen, "a@6 a.b@13 a.b.[].c@21 e@41 e.[].[].f@48 g\\u0041\\@64 ");
    walk_t w2 = {.stop_at = 2};
    CHECK_INT(av_jscan_walk(t, strlen(t), on_walk, &w2), 1);
    CHECK_STR(w2.seen, "a@6 a.b@13 ");
    const char *bad[] = {"{\"a\":\"open", "{\"a\":[1}", "{\"a\":{}", "{\"a\":1}}", "[1,2]", "{\"a\":1} x",
                         "{\"a\":[\"k\":1]}", "", "{\"a\":\"\\q\"}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        walk_t w3 = {.stop_at = -1};
        int rc = av_jscan_walk(bad[i], strlen(bad[i]), on_walk, &w3);
        if (rc != -1)
            printf("# accepted: %s\n", bad[i]);
        CHECK_INT(rc, -1);
    }
    /* nesting: as deep as AV_JWALK_MAX_DEPTH, and no deeper */
    char deep[2 * AV_JWALK_MAX_DEPTH + 8];
    for (int extra = 0; extra <= 1; extra++) {
        int levels = AV_JWALK_MAX_DEPTH - 1 + extra, n = 0;
        for (int i = 0; i < levels; i++)
            deep[n++] = i == 0 ? '{' : '[';
        deep[n++] = '{';
        deep[n++] = '}';
        for (int i = levels - 1; i >= 0; i--)
            deep[n++] = i == 0 ? '}' : ']';
        walk_t w4 = {.stop_at = -1};
        /* the innermost {} is one level more: levels + 1 in all */
        CHECK_INT(av_jscan_walk(deep, (size_t)n, on_walk, &w4), levels + 1 <= AV_JWALK_MAX_DEPTH ? 0 : -1);
    }
}

typedef struct {
    const char *t;
    walk_t w;
    int n;
    size_t entry[16];           /* where each key's entry begins in w.seen */
    av_jwalk_mark_t before[16], inside[16];
    int has_inside[16];
} marks_t;

static int on_mark(void *arg, const av_jpath_t *p)
{
    marks_t *k = arg;
    if (k->n == 16)
        return 1;
    k->entry[k->n] = k->w.n;
    CHECK_INT(av_jscan_mark(k->t, p, 0, &k->before[k->n]), 0);
    k->has_inside[k->n] = av_jscan_mark(k->t, p, 1, &k->inside[k->n]) == 0;
    k->n++;
    return on_walk(&k->w, p);
}

/* A walk from a mark shows what the whole walk shows from there on: before
 * each key, and inside each object or array value; in another text with
 * the same bytes before the mark it reads that text's own tail (a cut or
 * broken tail fails as the whole walk would). */
static void test_walk_marks(void)
{
    const char *t = "{\"id\":\"c-1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"
                    "\"finish_reason\":null}],\"e\":[[{\"f\":{}}]],\"g\":{}} ";
    marks_t k = {.t = t, .w = {.stop_at = -1}};
    CHECK_INT(av_jscan_walk(t, strlen(t), on_mark, &k), 0);
    CHECK_INT(k.n, 10);
    int insides = 0;
    for (int i = 0; i < k.n; i++) {
        walk_t w = {.stop_at = -1};
        CHECK_INT(av_jscan_walk_from(t, strlen(t), &k.before[i], on_walk, &w), 0);
        CHECK_STR(w.seen, k.w.seen + k.entry[i]);
        if (!k.has_inside[i])
            continue;
        insides++;
        walk_t w2 = {.stop_at = -1};
        CHECK_INT(av_jscan_walk_from(t, strlen(t), &k.inside[i], on_walk, &w2), 0);
        CHECK_STR(w2.seen, i + 1 < k.n ? k.w.seen + k.entry[i + 1] : "");
    }
    CHECK_INT(insides, 5); /* choices, delta, e, f, g */
    /* another text, alike up to the delta's brace (mark 3 inside: "delta") */
    const char *u = "{\"id\":\"c-1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}";
    walk_t whole = {.stop_at = -1}, from = {.stop_at = -1};
    CHECK_INT(av_jscan_walk(u, strlen(u), on_walk, &whole), 0);
    CHECK_INT((int)av_jscan_same_prefix(t, u, strlen(u)), (int)k.inside[3].at);
    CHECK_INT(av_jscan_walk_from(u, strlen(u), &k.inside[3], on_walk, &from), 0);
    CHECK_STR(from.seen, "choices.[].finish_reason@61 ");
    CHECK(strstr(whole.seen, from.seen) != NULL);
    const char *bad[] = {"{\"id\":\"c-1\",\"choices\":[{\"index\":0,\"delta\":{}]}",
                         "{\"id\":\"c-1\",\"choices\":[{\"index\":0,\"delta\":{\"a\":\"cut",
                         "{\"id\":\"c-1\",\"choices\":[{\"index\":0,\"delta\":{}}]} x"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        walk_t w = {.stop_at = -1};
        CHECK_INT(av_jscan_walk_from(bad[i], strlen(bad[i]), &k.inside[3], on_walk, &w), -1);
        CHECK_INT(av_jscan_walk(bad[i], strlen(bad[i]), on_walk, &w), -1);
    }
    /* the shared prefix: to the first byte that differs, at every place */
    char a[40], b[40];
    memset(a, 'x', sizeof(a));
    for (size_t at = 0; at <= sizeof(a); at++) {
        memcpy(b, a, sizeof(b));
        if (at < sizeof(b))
            b[at] = 'y';
        CHECK_INT((int)av_jscan_same_prefix(a, b, sizeof(a)), (int)at);
    }
}

static void test_agrees_with_cjson(void)
{
    const char *base = "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"h\\n\"}],"
                       "\"stream\":true,\"n\":2,\"x\":null,\"o\":{\"a\":[1,25,-3]}}";
    const char alphabet[] = "{}[]\",:a1 \\-";
    size_t n = strlen(base), disagreements = 0;
    char buf[256];
    srand(7);
    for (int round = 0; round < 20000; round++) {
        memcpy(buf, base, n + 1);
        int edits = 1 + rand() % 2;
        for (int e = 0; e < edits; e++)
            buf[rand() % n] = alphabet[rand() % (sizeof(alphabet) - 1)];
        cJSON *j = cJSON_ParseWithLengthOpts(buf, n + 1, NULL, 1); /* the NUL counts */
        int theirs = j != NULL && cJSON_IsObject(j);
        cJSON_Delete(j);
        size_t off;
        int ours = av_jscan_object(buf, n, NULL, NULL, &off) == 0;
        if (ours != theirs && disagreements++ < 3)
            printf("# scanner %s, cJSON %s: %s\n", ours ? "accepts" : "rejects", theirs ? "accepts" : "rejects", buf);
    }
    CHECK_INT(disagreements, 0);
}

int main(void)
{
    RUN(test_writer);
    RUN(test_writer_utf8);
    RUN(test_scan_members);
    RUN(test_scan_rejects);
    RUN(test_unescape);
    RUN(test_scan_keys);
    RUN(test_walk);
    RUN(test_walk_marks);
    RUN(test_agrees_with_cjson);
    TEST_DONE();
}
