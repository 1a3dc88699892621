/* jscan.c: a single pass over a JSON object's top level, or over its keys
 * at every depth (the walk). Strings are skipped sixteen bytes at a time
 * where SSE2 is (eight elsewhere) to their first quote, backslash or control
 * byte; nested containers are matched with a bit stack. */
#include "jscan.h"

#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#define MAX_DEPTH 512

typedef struct {
    const char *s;
    size_t len, i;
} scan_t;

static inline void skip_ws(scan_t *c)
{
    if (c->i < c->len && (unsigned char)c->s[c->i] > ' ')
        return; /* compact JSON: no whitespace at all, the common case */
    while (c->i < c->len) {
        char ch = c->s[c->i];
        if (ch != ' ' && ch != '\n' && ch != '\r' && ch != '\t')
            return;
        c->i++;
    }
}

#ifndef __SSE2__
/* Eight bytes at a time: nonzero when any is '"', '\\' or below 0x20. */
static inline uint64_t special8(uint64_t v)
{
    const uint64_t ones = 0x0101010101010101ull, high = 0x8080808080808080ull;
    uint64_t q = v ^ (ones * '"'), b = v ^ (ones * '\\');
    uint64_t has_q = (q - ones) & ~q & high, has_b = (b - ones) & ~b & high;
    uint64_t has_ctl = (v - ones * 0x20) & ~v & high; /* a byte below 0x20 */
    return has_q | has_b | has_ctl;
}
#endif

/* Bytes that end a run of plain string bytes: the quote, a backslash, and
 * the control bytes JSON does not allow raw. */
static const unsigned char string_stop[256] = {[0 ... 0x1f] = 1, ['"'] = 1, ['\\'] = 1};

/* From just past an opening quote at i: the offset past the closing quote,
 * or 0 on a bad or unterminated string. Sixteen bytes at a time with SSE2
 * (eight without) while that many are left, then byte by byte; locals
 * only, and inlined, so the index stays in a register. */
static inline __attribute__((always_inline)) size_t string_end_from(const char *s, size_t n, size_t i,
                                                                   char *escaped)
{
    for (;;) {
#ifdef __SSE2__
        /* sixteen bytes at a time while sixteen are left: one mask of the quotes, backslashes and control bytes */
        const __m128i quote = _mm_set1_epi8('"'), bslash = _mm_set1_epi8('\\'), ctl = _mm_set1_epi8(0x1f);
        while (i + 16 <= n) {
            __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(s + i));
            __m128i hit = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, bslash)),
                                       _mm_cmpeq_epi8(_mm_max_epu8(v, ctl), ctl)); /* v <= 0x1f */
            unsigned m = (unsigned)_mm_movemask_epi8(hit);
            if (m != 0) {
                i += (size_t)__builtin_ctz(m);
                goto special;
            }
            i += 16;
        }
#else
        while (i + 8 <= n) {
            uint64_t v;
            memcpy(&v, s + i, 8);
            uint64_t m = special8(v);
            if (m != 0) {
                i += (size_t)__builtin_ctzll(m) >> 3; /* the lowest flag is the first such byte */
                goto special;
            }
            i += 8;
        }
#endif
        while (i < n && !string_stop[(unsigned char)s[i]])
            i++;
        if (i >= n)
            return 0;
    special:
        if (s[i] == '"')
            return i + 1;
        if ((unsigned char)s[i] < 0x20)
            return 0;
        *escaped = 1; /* a backslash: one of JSON's escapes must follow */
        if (++i >= n || s[i] == '\0' || strchr("\"\\/bfnrtu", s[i]) == NULL)
            return 0;
        if (s[i] == 'u') {
            for (int k = 1; k <= 4; k++)
                if (i + (size_t)k >= n || !isxdigit((unsigned char)s[i + (size_t)k]))
                    return 0;
            i += 4;
        }
        i++;
    }
}

/* At an opening quote: moves past the closing one. Sets *escaped when a
 * backslash was seen. Raw control bytes are not allowed in JSON strings. */
static int skip_string(scan_t *c, char *escaped)
{
    char esc = 0;
    size_t end = string_end_from(c->s, c->len, c->i + 1, &esc);
    if (end == 0)
        return -1;
    c->i = end;
    if (escaped != NULL && esc)
        *escaped = 1;
    return 0;
}

static int is_token_byte(char ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           ch == '.' || ch == '+' || ch == '-';
}

/* A number or true/false/null. */
static int skip_scalar(scan_t *c)
{
    size_t start = c->i;
    while (c->i < c->len && is_token_byte(c->s[c->i]))
        c->i++;
    size_t n = c->i - start;
    const char *t = c->s + start;
    if (n == 0)
        return -1;
    if (t[0] == '-' || (t[0] >= '0' && t[0] <= '9')) {
        /* -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
        size_t k = t[0] == '-';
        size_t d = k;
        while (k < n && t[k] >= '0' && t[k] <= '9')
            k++;
        int ok = k > d && !(t[d] == '0' && k - d > 1);
        if (ok && k < n && t[k] == '.') {
            d = ++k;
            while (k < n && t[k] >= '0' && t[k] <= '9')
                k++;
            ok = k > d;
        }
        if (ok && k < n && (t[k] == 'e' || t[k] == 'E')) {
            k++;
            if (k < n && (t[k] == '+' || t[k] == '-'))
                k++;
            d = k;
            while (k < n && t[k] >= '0' && t[k] <= '9')
                k++;
            ok = k > d;
        }
        if (ok && k == n)
            return 0;
        c->i = start;
        return -1;
    }
    if ((n == 4 && memcmp(t, "true", 4) == 0) || (n == 5 && memcmp(t, "false", 5) == 0) ||
        (n == 4 && memcmp(t, "null", 4) == 0))
        return 0;
    c->i = start;
    return -1;
}

/* Any value at c->i; containers are walked with an explicit stack of
 * bracket kinds (1 bit per level: set for an object). */
static int skip_value(scan_t *c)
{
    uint64_t stack[MAX_DEPTH / 64];
    int depth = 0;
    for (;;) {
        skip_ws(c);
        if (c->i >= c->len)
            return -1;
        char ch = c->s[c->i];
        if (ch == '{' || ch == '[') {
            if (depth == MAX_DEPTH - 1) /* the top-level object is one level */
                return -1;
            if (ch == '{')
                stack[depth / 64] |= (uint64_t)1 << (depth % 64);
            else
                stack[depth / 64] &= ~((uint64_t)1 << (depth % 64));
            depth++;
            c->i++;
            skip_ws(c);
            if (c->i < c->len && c->s[c->i] == (ch == '{' ? '}' : ']')) {
                c->i++;
                depth--;
                goto after_value;
            }
            if (ch == '{')
                goto member_key;
            continue; /* first array element */
        }
        if (ch == '"') {
            if (skip_string(c, NULL) != 0)
                return -1;
        } else if (skip_scalar(c) != 0) {
            return -1;
        }
    after_value:
        for (;;) {
            if (depth == 0)
                return 0;
            int in_object = (int)((stack[(depth - 1) / 64] >> ((depth - 1) % 64)) & 1);
            skip_ws(c);
            if (c->i >= c->len)
                return -1;
            ch = c->s[c->i];
            if (ch == ',') {
                c->i++;
                if (in_object)
                    goto member_key;
                break; /* next array element */
            }
            if (ch != (in_object ? '}' : ']'))
                return -1;
            c->i++;
            depth--;
        }
        continue;
    member_key:
        skip_ws(c);
        if (c->i >= c->len || c->s[c->i] != '"' || skip_string(c, NULL) != 0)
            return -1;
        skip_ws(c);
        if (c->i >= c->len || c->s[c->i] != ':')
            return -1;
        c->i++;
    }
}

/* One object at c->i ('{'), calling fn per member; leaves c->i after its '}'. */
static int scan_object(scan_t *c, av_jscan_fn fn, void *arg)
{
    const char *text = c->s;
    size_t len = c->len;
    int stopped = 0;
    if (c->i >= len || text[c->i] != '{')
        return -1;
    c->i++;
    skip_ws(c);
    if (c->i < len && text[c->i] == '}') {
        c->i++;
        return 0;
    }
    for (;;) {
        av_jmember_t m = {0};
        skip_ws(c);
        if (c->i >= len || text[c->i] != '"')
            return -1;
        size_t kstart = c->i + 1;
        if (skip_string(c, &m.key_escaped) != 0)
            return -1;
        m.key = text + kstart;
        m.key_len = c->i - 1 - kstart;
        skip_ws(c);
        if (c->i >= len || text[c->i] != ':')
            return -1;
        c->i++;
        skip_ws(c);
        if (c->i >= len)
            return -1;
        size_t vstart = c->i;
        char first = text[c->i];
        if (skip_value(c) != 0)
            return -1;
        m.val = text + vstart;
        m.val_len = c->i - vstart;
        m.type = (first == '-' || (first >= '0' && first <= '9')) ? '0' : first;
        if (!stopped && fn != NULL && fn(arg, &m) != 0)
            stopped = 1; /* keep going: the whole text must still be one object */
        skip_ws(c);
        if (c->i >= len)
            return -1;
        if (text[c->i] == ',') {
            c->i++;
            continue;
        }
        if (text[c->i] != '}')
            return -1;
        c->i++;
        return 0;
    }
}

int av_jscan_object(const char *text, size_t len, av_jscan_fn fn, void *arg, size_t *err_off)
{
    scan_t c = {text, len, 0};
    skip_ws(&c);
    if (scan_object(&c, fn, arg) == 0) {
        skip_ws(&c);
        if (c.i == len)
            return 0;
    }
    if (err_off != NULL)
        *err_off = c.i;
    return -1;
}

int av_jscan_keys(const char *text, size_t len, av_jscan_key_fn fn, void *arg)
{
    scan_t c = {text, len, 0};
    for (;;) {
        const char *q = c.i < len ? memchr(text + c.i, '"', len - c.i) : NULL;
        if (q == NULL)
            return 0;
        c.i = (size_t)(q - text);
        size_t k = c.i + 1;
        if (skip_string(&c, NULL) != 0)
            return -1;
        size_t klen = c.i - 1 - k;
        skip_ws(&c);
        if (c.i < len && text[c.i] == ':') {
            c.i++;
            skip_ws(&c);
            if (fn(arg, text + k, klen, c.i))
                return 1;
        }
    }
}

/* The walk's byte classes between strings: all it stops at. */
enum { W_SKIP = 0, W_QUOTE, W_OPEN, W_CLOSE };
static const unsigned char walk_class[256] = {
    ['"'] = W_QUOTE, ['{'] = W_OPEN, ['['] = W_OPEN, ['}'] = W_CLOSE, [']'] = W_CLOSE,
};

size_t av_jscan_string_len(const char *text, size_t len)
{
    char escaped = 0;
    if (len == 0 || text[0] != '"')
        return 0;
    return string_end_from(text, len, 1, &escaped);
}

/* The walk from offset i, at a point between a value's pieces (not inside
 * a string), with the containers p and objects say are open. */
static int walk_run(const char *text, size_t len, size_t i, av_jpath_t *p, av_jwalk_fn fn, void *arg)
{
    uint32_t objects = p->objects; /* bit d - 1: the container at depth d is an object */
    unsigned depth = p->depth;
    for (;;) {
        /* to the next string, minding the brackets on the way */
        unsigned cl = W_SKIP;
        while (i < len && (cl = walk_class[(unsigned char)text[i]]) == W_SKIP)
            i++;
        if (i >= len)
            return -1;
        char ch = text[i++];
        if (cl == W_OPEN) {
            if (depth == AV_JWALK_MAX_DEPTH)
                return -1;
            depth++;
            if (ch == '{')
                objects |= 1u << (depth - 1);
            else
                objects &= ~(1u << (depth - 1));
            p->key[depth] = NULL;
            p->key_len[depth] = 0;
            continue;
        }
        if (cl == W_CLOSE) {
            if (depth == 0 || (ch == '}') != (int)((objects >> (depth - 1)) & 1))
                return -1;
            if (--depth > 0)
                continue;
            while (i < len && (text[i] == ' ' || text[i] == '\n' || text[i] == '\r' || text[i] == '\t'))
                i++;
            return i == len ? 0 : -1;
        }
        size_t k = i; /* a string's first byte */
        p->escaped = 0;
        if ((i = string_end_from(text, len, i, &p->escaped)) == 0)
            return -1;
        size_t klen = i - 1 - k;
        while (i < len && (text[i] == ' ' || text[i] == '\n' || text[i] == '\r' || text[i] == '\t'))
            i++;
        if (i < len && text[i] == ':') {
            if (!((objects >> (depth - 1)) & 1))
                return -1; /* a key in an array */
            i++;
            while (i < len && (text[i] == ' ' || text[i] == '\n' || text[i] == '\r' || text[i] == '\t'))
                i++;
            p->key[depth] = text + k;
            p->key_len[depth] = (unsigned)klen;
            p->depth = depth;
            p->objects = objects;
            p->val = i;
            if (fn(arg, p))
                return 1;
        }
    }
}

int av_jscan_walk(const char *text, size_t len, av_jwalk_fn fn, void *arg)
{
    av_jpath_t p;
    size_t i = 0;
    while (i < len && (text[i] == ' ' || text[i] == '\n' || text[i] == '\r' || text[i] == '\t'))
        i++;
    if (i >= len || text[i] != '{')
        return -1;
    p.depth = 0;
    p.objects = 0;
    return walk_run(text, len, i, &p, fn, arg);
}

int av_jscan_mark(const char *text, const av_jpath_t *p, int inside, av_jwalk_mark_t *m)
{
    unsigned depth = p->depth;
    m->objects = p->objects;
    if (inside) {
        char ch = text[p->val];
        if ((ch != '{' && ch != '[') || depth == AV_JWALK_MAX_DEPTH)
            return -1;
        m->at = p->val + 1;
        depth++;
        if (ch == '{')
            m->objects |= 1u << (depth - 1);
        else
            m->objects &= ~(1u << (depth - 1));
    } else {
        m->at = (size_t)(p->key[depth] - text) - 1; /* the key's opening quote */
    }
    m->depth = depth;
    for (unsigned d = 1; d < depth; d++) {
        m->key_off[d] = p->key[d] != NULL ? (unsigned)(p->key[d] - text) : 0;
        m->key_len[d] = p->key[d] != NULL ? p->key_len[d] : (unsigned)-1;
    }
    return 0;
}

int av_jscan_walk_from(const char *text, size_t len, const av_jwalk_mark_t *m, av_jwalk_fn fn, void *arg)
{
    av_jpath_t p;
    if (m->at > len || m->depth == 0 || m->depth > AV_JWALK_MAX_DEPTH)
        return -1;
    for (unsigned d = 1; d < m->depth; d++) {
        p.key[d] = m->key_len[d] == (unsigned)-1 ? NULL : text + m->key_off[d];
        p.key_len[d] = m->key_len[d] == (unsigned)-1 ? 0 : m->key_len[d];
    }
    p.key[m->depth] = NULL;
    p.key_len[m->depth] = 0;
    p.depth = m->depth;
    p.objects = m->objects;
    return walk_run(text, len, m->at, &p, fn, arg);
}

size_t av_jscan_same_prefix(const char *a, const char *b, size_t n)
{
    size_t i = 0;
#ifdef __SSE2__
    for (; i + 16 <= n; i += 16) {
        __m128i x = _mm_loadu_si128((const __m128i *)(const void *)(a + i));
        __m128i y = _mm_loadu_si128((const __m128i *)(const void *)(b + i));
        unsigned diff = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(x, y)) ^ 0xffffu;
        if (diff != 0)
            return i + (size_t)__builtin_ctz(diff);
    }
#endif
    while (i < n && a[i] == b[i])
        i++;
    return i;
}

int av_jscan_object_at(const char *text, size_t len, av_jscan_fn fn, void *arg, size_t *end)
{
    scan_t c = {text, len, 0};
    skip_ws(&c);
    int rc = scan_object(&c, fn, arg);
    if (end != NULL)
        *end = c.i;
    return rc;
}

int av_jscan_array(const char *text, size_t len, av_jscan_fn fn, void *arg, size_t *err_off)
{
    scan_t c = {text, len, 0};
    int stopped = 0;
    skip_ws(&c);
    if (c.i >= len || text[c.i] != '[')
        goto bad;
    c.i++;
    skip_ws(&c);
    if (c.i < len && text[c.i] == ']') {
        c.i++;
        goto end;
    }
    for (;;) {
        av_jmember_t m = {0};
        skip_ws(&c);
        if (c.i >= len)
            goto bad;
        size_t vstart = c.i;
        char first = text[c.i];
        if (skip_value(&c) != 0)
            goto bad;
        m.val = text + vstart;
        m.val_len = c.i - vstart;
        m.type = (first == '-' || (first >= '0' && first <= '9')) ? '0' : first;
        if (!stopped && fn != NULL && fn(arg, &m) != 0)
            stopped = 1;
        skip_ws(&c);
        if (c.i >= len)
            goto bad;
        if (text[c.i] == ',') {
            c.i++;
            continue;
        }
        if (text[c.i] != ']')
            goto bad;
        c.i++;
        break;
    }
end:
    skip_ws(&c);
    if (c.i == len)
        return 0;
bad:
    if (err_off != NULL)
        *err_off = c.i;
    return -1;
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

static long hex4(const char *s, size_t len, size_t i)
{
    if (i + 4 > len)
        return -1;
    long v = 0;
    for (size_t k = 0; k < 4; k++) {
        int h = hexval(s[i + k]);
        if (h < 0)
            return -1;
        v = v * 16 + h;
    }
    return v;
}

long av_jscan_unescape(const char *s, size_t len, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] != '\\') {
            out[o++] = s[i];
            continue;
        }
        if (++i >= len)
            return -1;
        switch (s[i]) {
        case '"': case '\\': case '/': out[o++] = s[i]; break;
        case 'b': out[o++] = '\b'; break;
        case 'f': out[o++] = '\f'; break;
        case 'n': out[o++] = '\n'; break;
        case 'r': out[o++] = '\r'; break;
        case 't': out[o++] = '\t'; break;
        case 'u': {
            long cp = hex4(s, len, i + 1);
            if (cp <= 0) /* bad, or an escaped NUL that would cut a C string */
                return -1;
            i += 4;
            if (cp >= 0xd800 && cp <= 0xdbff) {
                long lo = (i + 2 < len && s[i + 1] == '\\' && s[i + 2] == 'u') ? hex4(s, len, i + 3) : -1;
                if (lo < 0xdc00 || lo > 0xdfff)
                    return -1;
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                i += 6;
            } else if (cp >= 0xdc00 && cp <= 0xdfff) {
                return -1;
            }
            /* UTF-8 is at most as long as the escape it came from */
            if (cp < 0x80) {
                out[o++] = (char)cp;
            } else if (cp < 0x800) {
                out[o++] = (char)(0xc0 | (cp >> 6));
                out[o++] = (char)(0x80 | (cp & 0x3f));
            } else if (cp < 0x10000) {
                out[o++] = (char)(0xe0 | (cp >> 12));
                out[o++] = (char)(0x80 | ((cp >> 6) & 0x3f));
                out[o++] = (char)(0x80 | (cp & 0x3f));
            } else {
                out[o++] = (char)(0xf0 | (cp >> 18));
                out[o++] = (char)(0x80 | ((cp >> 12) & 0x3f));
                out[o++] = (char)(0x80 | ((cp >> 6) & 0x3f));
                out[o++] = (char)(0x80 | (cp & 0x3f));
            }
            break;
        }
        default:
            return -1;
        }
    }
    out[o] = '\0';
    return (long)o;
}

int av_jscan_key_is(const av_jmember_t *m, const char *name)
{
    size_t n = strlen(name);
    if (!m->key_escaped)
        return m->key_len == n && memcmp(m->key, name, n) == 0;
    char buf[256];
    /* an escape is at most six bytes per decoded byte: longer keys cannot match */
    if (m->key_len > 6 * n || m->key_len >= sizeof(buf))
        return 0;
    long k = av_jscan_unescape(m->key, m->key_len, buf);
    return k == (long)n && memcmp(buf, name, n) == 0;
}
