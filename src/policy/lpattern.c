/* lpattern.c: Lua patterns for the policy sandbox: a backtracking matcher that
 * counts its steps for the caller's budget, and searches that skip what cannot match. */
#include "lpattern.h"

#include <lauxlib.h>
#include <stddef.h>
#include <string.h>

#define MAX_CAPTURES 32
#define MAX_DEPTH 200     /* nested tries; past it "pattern too complex", as in LuaJIT */
#define CHARGE_EVERY 4096 /* steps between two calls of the budget's charge */
#define PLAN_SETS_FROM 512 /* subject bytes from which a search builds byte sets to skip by */
#define LONG_RUN 256       /* bytes of a repetition from which it is counted with a byte table */
#define MAX_TABLES 8
#define BUSY 256      /* items a call tries byte by byte before it makes byte tables */
#define MAX_CACHED 128
#define CAP_OPEN (-1)
#define CAP_POSITION (-2)

typedef struct {
    lua_State *L;
    const av_lpat_budget_t *budget;
    const char *s0, *s1; /* the subject */
    const char *p1;      /* the pattern's end */
    int depth, ncap;
    struct {
        const char *at;
        ptrdiff_t len; /* or CAP_OPEN, CAP_POSITION */
    } cap[MAX_CAPTURES];
    uint32_t steps; /* not yet charged */
    uint32_t busy;  /* items tried so far: past BUSY, sets and runs go by byte tables */
    /* what the matcher worked out about the pattern's items, by offset from
     * p0 (for the first MAX_CACHED bytes): it tries them again and again */
    const char *p0;
    size_t ncached;
    uint8_t item_len[MAX_CACHED]; /* the item's length + 1; 0: not known yet */
    int8_t run_only[MAX_CACHED];  /* see run_only(); -1: not known yet */
    int8_t table[MAX_CACHED];     /* the item's byte table in tables, -1: none yet */
    int ntables;
    struct {
        const char *item;
        size_t len;
        unsigned char in[256];
    } tables[MAX_TABLES];
} mstate_t;

/* Where a search may skip to, worked out once per call from the pattern. */
typedef struct {
    const char *lit;     /* every match starts with these bytes... */
    size_t nlit;
    int first;           /* ...or with a byte of first_set: FIRST_ANY, or FIRST_FRONTIER */
    unsigned char first_set[256];
    const char *item, *item_end; /* ...or with a byte of this item (short subjects: no set) */
    char accept[17];     /* first_set's bytes, when few and no frontier: strcspn finds them */
    int run;             /* a failed try inside a run of run_set fails all through the run */
    unsigned char run_set[256];
} plan_t;

enum {
    FIRST_ANY = 1,     /* a match may start at the byte */
    FIRST_FRONTIER = 2 /* in the set of the leading %f[]: a match may start at the byte unless the one before is too */
};

static int uc(char c)
{
    return (unsigned char)c;
}

/* ---- steps ---- */

static void charge_n(mstate_t *m, size_t n)
{
    while (n > 0 && m->budget != NULL && m->budget->charge != NULL) {
        uint32_t k = n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
        n -= k;
        m->budget->charge(m->L, k);
    }
}

/* Pays for the steps not yet charged. */
static void charge(mstate_t *m)
{
    uint32_t n = m->steps;
    m->steps = 0;
    charge_n(m, n);
}

static inline void step(mstate_t *m, size_t n)
{
    if (n < CHARGE_EVERY - m->steps) { /* steps stays below CHARGE_EVERY */
        m->steps += (uint32_t)n;
        return;
    }
    n += m->steps;
    m->steps = 0;
    charge_n(m, n);
}

/* What passing n bytes with memchr or memmem costs. */
static size_t skip_cost(size_t n)
{
    return 1 + n / 16;
}

/* Where the bytes n (nn of them) first are in h (hn), or NULL: memchr to
 * the needle's first byte and a compare, as LuaJIT does (fast where that
 * byte is rare, as in most searches), until the compares have looked at
 * as many bytes as there are in h; then memmem, whose two-way search is
 * linear but slower to start. So a needle that almost matches everywhere
 * costs time linear in h, not h times the needle. */
static const char *find_bytes(const char *h, size_t hn, const char *n, size_t nn)
{
    if (nn == 0)
        return h;
    if (nn > hn)
        return NULL;
    const char *p = h, *last = h + (hn - nn);
    size_t left = hn + 64; /* bytes compares may look at */
    while (p <= last) {
        const char *q = memchr(p, n[0], (size_t)(last - p) + 1);
        if (q == NULL)
            return NULL;
        if (memcmp(q + 1, n + 1, nn - 1) == 0)
            return q;
        if (nn > left)
            return memmem(q + 1, (size_t)(h + hn - (q + 1)), n, nn);
        left -= nn;
        p = q + 1;
    }
    return NULL;
}

static void pat_error(mstate_t *m, const char *what)
{
    luaL_error(m->L, "%s", what);
}

/* ---- single characters: classes, sets ---- */

/* ASCII classes, as LuaJIT's (no locale): each byte's, and each class
 * letter's (a class is the bytes sharing a bit with its mask). */
enum { C_CNTRL = 1, C_SPACE = 2, C_PUNCT = 4, C_DIGIT = 8, C_UPPER = 16, C_LOWER = 32, C_XDIGIT = 64, C_ZERO = 128 };
#define C_ALPHA (C_UPPER | C_LOWER)
#define C_ALNUM (C_ALPHA | C_DIGIT)

static const unsigned char byte_class[256] = {
    [0] = C_CNTRL | C_ZERO,
    [1 ... 8] = C_CNTRL,
    [9 ... 13] = C_CNTRL | C_SPACE,
    [14 ... 31] = C_CNTRL,
    [' '] = C_SPACE,
    ['!' ... '/'] = C_PUNCT,
    ['0' ... '9'] = C_DIGIT | C_XDIGIT,
    [':' ... '@'] = C_PUNCT,
    ['A' ... 'F'] = C_UPPER | C_XDIGIT,
    ['G' ... 'Z'] = C_UPPER,
    ['[' ... '`'] = C_PUNCT,
    ['a' ... 'f'] = C_LOWER | C_XDIGIT,
    ['g' ... 'z'] = C_LOWER,
    ['{' ... '~'] = C_PUNCT,
    [127] = C_CNTRL,
};

static const unsigned char class_mask[32] = { /* by letter & 31 */
    ['a' & 31] = C_ALPHA, ['c' & 31] = C_CNTRL, ['d' & 31] = C_DIGIT, ['g' & 31] = C_PUNCT | C_ALNUM,
    ['l' & 31] = C_LOWER, ['p' & 31] = C_PUNCT, ['s' & 31] = C_SPACE, ['u' & 31] = C_UPPER,
    ['w' & 31] = C_ALNUM, ['x' & 31] = C_XDIGIT, ['z' & 31] = C_ZERO,
};

/* Whether c is in class cl (%a, %d, ...; upper case the complement). Any
 * other cl stands for itself. */
static int in_class(int c, int cl)
{
    int letter = (cl | 0x20) >= 'a' && (cl | 0x20) <= 'z';
    unsigned mask = letter ? class_mask[cl & 31] : 0;
    if (mask == 0)
        return cl == c;
    int yes = (byte_class[c] & mask) != 0;
    return (cl & 0x20) ? yes : !yes; /* lower case: the class itself */
}

/* Whether c is in the set [...] from p (its '[') to close (its ']'). */
static int in_set(int c, const char *p, const char *close)
{
    int yes = 1;
    p++;
    if (*p == '^') {
        yes = 0;
        p++;
    }
    for (; p < close; p++) {
        if (*p == '%') { /* the set's end finder saw to it that a byte follows */
            p++;
            if (in_class(c, uc(*p)))
                return yes;
        } else if (p + 2 < close && p[1] == '-') {
            if (uc(p[0]) <= c && c <= uc(p[2]))
                return yes;
            p += 2;
        } else if (uc(*p) == c) {
            return yes;
        }
    }
    return !yes;
}

/* The end of the single-character item at p (a byte, '.', %x or a set),
 * or NULL when it is malformed. */
static const char *item_end_or_null(const char *p, const char *p1)
{
    if (*p == '%')
        return p + 1 < p1 ? p + 2 : NULL;
    if (*p != '[')
        return p + 1;
    const char *q = p + 1;
    if (q < p1 && *q == '^')
        q++;
    for (;;) { /* the set's first byte is a member even if it is ']' */
        if (q >= p1)
            return NULL;
        if (*q == '%' && q + 1 < p1)
            q++;
        q++;
        if (q < p1 && *q == ']')
            return q + 1;
    }
}

static const char *item_end(mstate_t *m, const char *p)
{
    size_t off = (size_t)(p - m->p0);
    if (off < m->ncached && m->item_len[off] != 0)
        return p + m->item_len[off] - 1;
    const char *ep = item_end_or_null(p, m->p1);
    if (ep == NULL)
        pat_error(m, *p == '%' ? "malformed pattern (ends with '%')" : "malformed pattern (missing ']')");
    if (off < m->ncached && ep - p < 255)
        m->item_len[off] = (uint8_t)(ep - p + 1);
    return ep;
}

static int single(int c, const char *p, const char *ep)
{
    switch (*p) {
    case '.': return 1;
    case '%': return in_class(c, uc(p[1]));
    case '[': return in_set(c, p, ep - 1);
    default: return uc(*p) == c;
    }
}

/* set[c] = 1 for each byte c of class cl (%a, ...), or of cl alone. */
static void class_bytes(int cl, unsigned char *set)
{
    for (int c = 0; c < 256; c++)
        if (in_class(c, cl))
            set[c] = 1;
}

/* set[c]: whether byte c matches the single-character item p..ep; built
 * from the item, not by trying each byte on it (a set's members are walked
 * once, not 256 times). */
static void item_set(const char *p, const char *ep, unsigned char *set)
{
    memset(set, 0, 256);
    if (*p == '.') {
        memset(set, 1, 256);
    } else if (*p == '%') {
        class_bytes(uc(p[1]), set);
    } else if (*p != '[') {
        set[uc(*p)] = 1;
    } else {
        const char *q = p + 1, *close = ep - 1;
        int complement = *q == '^';
        for (q += complement; q < close; q++) {
            if (*q == '%') {
                class_bytes(uc(*++q), set);
            } else if (q + 2 < close && q[1] == '-') {
                for (int c = uc(q[0]); c <= uc(q[2]); c++)
                    set[c] = 1;
                q += 2;
            } else {
                set[uc(*q)] = 1;
            }
        }
        for (int c = 0; complement && c < 256; c++)
            set[c] ^= 1;
    }
}

/* ---- the matcher ---- */

static const char *try_at(mstate_t *m, const char *s, const char *p);
static const char *simple_item(mstate_t *m, const char *p);
static int quantifier(int c);

/* try_at with a bound on how deep the tries nest (the C stack). */
static const char *nested(mstate_t *m, const char *s, const char *p)
{
    if (++m->depth > MAX_DEPTH)
        pat_error(m, "pattern too complex");
    const char *e = try_at(m, s, p);
    m->depth--;
    return e;
}

/* The byte table of the item at p, made once per call and item text (a
 * pattern may repeat one: "[ -]*%d[ -]*%d"); NULL when there are too many. */
static const unsigned char *item_table(mstate_t *m, const char *p, const char *ep)
{
    size_t off = (size_t)(p - m->p0), len = (size_t)(ep - p);
    if (off < m->ncached && m->table[off] >= 0)
        return m->tables[m->table[off]].in;
    int i = 0;
    while (i < m->ntables && (m->tables[i].len != len || memcmp(m->tables[i].item, p, len) != 0))
        i++;
    if (i == m->ntables) {
        if (i == MAX_TABLES)
            return NULL;
        m->ntables++;
        m->tables[i].item = p;
        m->tables[i].len = len;
        item_set(p, ep, m->tables[i].in);
        step(m, 64);
    }
    if (off < m->ncached)
        m->table[off] = (int8_t)i;
    return m->tables[i].in;
}

/* Whether c matches the item at p: by its byte table once the call is busy. */
static int one(mstate_t *m, int c, const char *p, const char *ep)
{
    if (m->busy < BUSY) {
        m->busy++;
    } else if (*p == '[') {
        const unsigned char *in = item_table(m, p, ep);
        if (in != NULL)
            return in[c];
    }
    return single(c, p, ep);
}

/* The byte the pattern from q must begin with, or -1. */
static int literal_next(mstate_t *m, const char *q)
{
    if (q >= m->p1 || strchr("^$*+?.([%-)", *q) != NULL)
        return -1;
    if (q + 1 < m->p1 && (q[1] == '*' || q[1] == '?' || q[1] == '-'))
        return -1;
    return uc(*q);
}

/* How many bytes from s the item at p matches, one after another. */
static size_t run_length(mstate_t *m, const char *s, const char *p, const char *ep)
{
    size_t n = 0, max = (size_t)(m->s1 - s);
    if (*p == '.') { /* .* takes the rest */
        step(m, 1 + max / 16);
        return max;
    }
    const unsigned char *in = NULL;
    if (m->busy < BUSY)
        m->busy++;
    else
        in = item_table(m, p, ep);
    if (in == NULL) {
        while (n < max && n < LONG_RUN && single(uc(s[n]), p, ep))
            n++;
        step(m, n + 1);
        if (n < LONG_RUN || (in = item_table(m, p, ep)) == NULL) {
            while (n < max && single(uc(s[n]), p, ep)) /* a long run, and too many tables */
                n++;
            step(m, n);
            return n;
        }
    }
    size_t from = n; /* with a byte table, a few times faster */
    while (n < max && in[uc(s[n])])
        n++;
    step(m, 1 + (n - from) / 4);
    return n;
}

/* The byte a single-character item stands for, or -1 for a class or set. */
static int byte_item(const char *p)
{
    if (*p == '.' || *p == '[')
        return -1;
    if (*p != '%')
        return uc(*p);
    return strchr("acdglpsuwxzACDGLPSUWXZ", p[1]) != NULL ? -1 : uc(p[1]);
}

/* The bytes of a set that lists them one by one ("[ %-%.]"): how many,
 * or -1 for other items (ranges, classes, complements). */
static int set_bytes(const char *p, const char *ep, unsigned char *out, int max)
{
    if (*p != '[' || p[1] == '^')
        return -1;
    int n = 0;
    for (const char *q = p + 1; q < ep - 1; q++) {
        int b = uc(*q);
        if (*q == '%')
            b = byte_item(q++);
        else if (q + 2 < ep - 1 && q[1] == '-')
            return -1;
        if (b < 0 || n == max)
            return -1;
        out[n++] = (unsigned char)b;
    }
    return n;
}

/* Whether no byte matches both items, when that is quick to tell; 0 when
 * it is not. */
static int disjoint(const char *p, const char *ep, const char *q, const char *eq)
{
    unsigned char bytes[16];
    int b = byte_item(p), n;
    if (b >= 0)
        return !single(b, q, eq);
    if ((b = byte_item(q)) >= 0)
        return !single(b, p, ep);
    if ((n = set_bytes(p, ep, bytes, 16)) < 0) {
        if ((n = set_bytes(q, eq, bytes, 16)) < 0)
            return 0;
        q = p;
        eq = ep;
    }
    for (int i = 0; i < n; i++)
        if (single(bytes[i], q, eq))
            return 0;
    return 1;
}

/* Whether what follows the item at p..ep (from ep + 1 on) cannot begin
 * with a byte the item matches, when that is quick to tell. */
static int rest_excludes(mstate_t *m, const char *p, const char *ep)
{
    for (const char *q = ep + 1; q < m->p1;) {
        if (*q == '(' || *q == ')') {
            q++;
            continue;
        }
        if (q + 2 < m->p1 && q[0] == '%' && q[1] == 'f' && q[2] == '[') { /* the byte at it must be in its set */
            const char *eq = item_end_or_null(q + 2, m->p1);
            return eq != NULL && disjoint(p, ep, q + 2, eq);
        }
        const char *eq = simple_item(m, q);
        if (eq == NULL || !disjoint(p, ep, q, eq))
            return 0;
        if (eq >= m->p1 || !quantifier(uc(*eq)) || *eq == '+')
            return 1; /* a required item: the rest's first byte is in it or in the optional ones before */
        q = eq + 1;
    }
    return 0; /* the rest may match nothing */
}

/* Whether the quantified item at p, where it matches, must take all it
 * can: what follows cannot begin with a byte of it. Then item* takes its
 * whole run and item? its byte, with no tries of fewer. Worked out once
 * per item and call. */
static int run_only(mstate_t *m, const char *p, const char *ep)
{
    size_t off = (size_t)(p - m->p0);
    if (off < m->ncached && m->run_only[off] >= 0)
        return m->run_only[off];
    int yes = rest_excludes(m, p, ep);
    if (off < m->ncached)
        m->run_only[off] = (int8_t)yes;
    return yes;
}

/* item* or item+ (s past the one + took): as many as match, then fewer. */
static const char *greedy(mstate_t *m, const char *s, const char *p, const char *ep)
{
    size_t n = run_length(m, s, p, ep), max = (size_t)(m->s1 - s);
    if (ep + 1 == m->p1)
        return s + n; /* nothing after it: the longest run is the match */
    int next = literal_next(m, ep + 1);
    for (;;) {
        if (next >= 0) { /* the rest can only begin where its first byte is */
            size_t len = n < max ? n + 1 : n;
            const char *q = len > 0 ? memrchr(s, next, len) : NULL;
            step(m, skip_cost(q ? len - (size_t)(q - s) : len));
            if (q == NULL)
                return NULL;
            n = (size_t)(q - s);
        }
        const char *e = nested(m, s + n, ep + 1);
        if (e != NULL)
            return e;
        if (n == 0)
            return NULL;
        n--;
    }
}

/* item-: as few as let the rest match. */
static const char *lazy(mstate_t *m, const char *s, const char *p, const char *ep)
{
    for (;;) {
        const char *e = nested(m, s, ep + 1);
        if (e != NULL)
            return e;
        step(m, 1);
        if (s >= m->s1 || !single(uc(*s), p, ep))
            return NULL;
        s++;
    }
}

/* %bxy at s. */
static const char *balance(mstate_t *m, const char *s, const char *p)
{
    if (p + 1 >= m->p1)
        pat_error(m, "malformed pattern (missing arguments to '%b')");
    if (s >= m->s1 || *s != p[0])
        return NULL;
    int open = p[0], close = p[1];
    size_t depth = 1;
    for (const char *q = s + 1; q < m->s1; q++) {
        if (uc(*q) == close) { /* before open: %b'' closes at the next quote */
            if (--depth == 0) {
                step(m, (size_t)(q - s));
                return q + 1;
            }
        } else if (uc(*q) == open) {
            depth++;
        }
    }
    step(m, (size_t)(m->s1 - s));
    return NULL;
}

/* %1..%9 at s: the same bytes as that capture. */
static const char *backref(mstate_t *m, const char *s, int digit)
{
    int i = digit - '1';
    if (i < 0 || i >= m->ncap || m->cap[i].len == CAP_OPEN)
        pat_error(m, "invalid capture index");
    ptrdiff_t len = m->cap[i].len;
    if (len < 0) /* a position: never matches, as in LuaJIT */
        return NULL;
    step(m, (size_t)len);
    if ((size_t)(m->s1 - s) >= (size_t)len && memcmp(m->cap[i].at, s, (size_t)len) == 0)
        return s + len;
    return NULL;
}

static const char *open_capture(mstate_t *m, const char *s, const char *p, ptrdiff_t what)
{
    if (m->ncap >= MAX_CAPTURES)
        pat_error(m, "too many captures");
    m->cap[m->ncap].at = s;
    m->cap[m->ncap].len = what;
    m->ncap++;
    const char *e = nested(m, s, p);
    if (e == NULL)
        m->ncap--;
    return e;
}

static const char *close_capture(mstate_t *m, const char *s, const char *p)
{
    int i = m->ncap - 1;
    while (i >= 0 && m->cap[i].len != CAP_OPEN)
        i--;
    if (i < 0)
        pat_error(m, "invalid pattern capture");
    m->cap[i].len = s - m->cap[i].at;
    const char *e = nested(m, s, p);
    if (e == NULL)
        m->cap[i].len = CAP_OPEN;
    return e;
}

/* The end of a match of the pattern from p at s, or NULL. Items that
 * cannot backtrack advance in the loop; the others recurse. */
static const char *try_at(mstate_t *m, const char *s, const char *p)
{
    for (;;) {
        step(m, 1);
        if (p == m->p1)
            return s;
        switch (*p) {
        case '(':
            if (p + 1 < m->p1 && p[1] == ')')
                return open_capture(m, s, p + 2, CAP_POSITION);
            return open_capture(m, s, p + 1, CAP_OPEN);
        case ')':
            return close_capture(m, s, p + 1);
        case '$':
            if (p + 1 == m->p1)
                return s == m->s1 ? s : NULL;
            break; /* elsewhere a plain '$' */
        case '%':
            if (p + 1 >= m->p1)
                break; /* item_end says what is wrong */
            if (p[1] == 'b') {
                s = balance(m, s, p + 2);
                if (s == NULL)
                    return NULL;
                p += 4;
                continue;
            }
            if (p[1] == 'f') {
                p += 2;
                if (p >= m->p1 || *p != '[')
                    pat_error(m, "missing '[' after '%f' in pattern");
                const char *ep = item_end(m, p);
                int before = s == m->s0 ? 0 : uc(s[-1]), at = s < m->s1 ? uc(*s) : 0;
                if (in_set(before, p, ep - 1) || !in_set(at, p, ep - 1))
                    return NULL;
                p = ep;
                continue;
            }
            if (p[1] >= '0' && p[1] <= '9') {
                s = backref(m, s, p[1]);
                if (s == NULL)
                    return NULL;
                p += 2;
                continue;
            }
            break;
        }
        const char *ep = item_end(m, p);
        int here = s < m->s1 && one(m, uc(*s), p, ep);
        switch (ep < m->p1 ? *ep : 0) {
        case '?':
            if (here && run_only(m, p, ep)) {
                s++;
            } else if (here) {
                const char *e = nested(m, s + 1, ep + 1);
                if (e != NULL)
                    return e;
            }
            p = ep + 1;
            continue;
        case '+':
        case '*':
        case '-': {
            if (*ep == '+' && !here)
                return NULL;
            if (run_only(m, p, ep)) {
                s += run_length(m, s, p, ep);
                p = ep + 1;
                continue;
            }
            if (*ep == '+')
                return greedy(m, s + 1, p, ep);
            return *ep == '*' ? greedy(m, s, p, ep) : lazy(m, s, p, ep);
        }
        default:
            if (!here)
                return NULL;
            s++;
            p = ep;
        }
    }
}

/* ---- searching ---- */

static int quantifier(int c)
{
    return c == '*' || c == '+' || c == '-' || c == '?';
}

/* The single-character item at p, if it is one (not a capture, %b, %f, a
 * back reference or the final '$') and well formed: its end, else NULL.
 * Planning raises no error: a malformed item the search never reaches is
 * no error in LuaJIT either. */
static const char *simple_item(mstate_t *m, const char *p)
{
    if (p >= m->p1 || *p == '(' || *p == ')' || (*p == '$' && p + 1 == m->p1))
        return NULL;
    if (*p == '%' && p + 1 < m->p1 && (p[1] == 'b' || p[1] == 'f' || (p[1] >= '0' && p[1] <= '9')))
        return NULL;
    return item_end_or_null(p, m->p1);
}

/* The bytes a match can begin with: those of the leading optional items
 * and of the first required one, or of a frontier (%f[set]: the byte at
 * it is in the set). None when an item on the way is another kind (a
 * capture's bounds are passed over) or none is required (a match may be
 * empty). */
static void first_bytes(mstate_t *m, const char *q, plan_t *pl)
{
    memset(pl->first_set, 0, sizeof(pl->first_set));
    for (;;) {
        if (q < m->p1 && (*q == '(' || *q == ')')) {
            q++;
            continue;
        }
        if (q + 2 < m->p1 && q[0] == '%' && q[1] == 'f' && q[2] == '[') {
            const char *ep = item_end_or_null(q + 2, m->p1);
            if (ep == NULL || in_set(0, q + 2, ep - 1))
                return; /* a frontier with 0 in its set matches at the subject's end too */
            unsigned char in[256];
            item_set(q + 2, ep, in);
            for (int c = 0; c < 256; c++)
                pl->first_set[c] |= (unsigned char)(in[c] ? FIRST_FRONTIER : 0);
            pl->first = 1;
            return;
        }
        const char *ep = simple_item(m, q);
        if (ep == NULL || *q == '.')
            return;
        unsigned char in[256];
        item_set(q, ep, in);
        for (int c = 0; c < 256; c++)
            pl->first_set[c] |= (unsigned char)(in[c] ? FIRST_ANY : 0);
        int quant = ep < m->p1 ? *ep : 0;
        if (!quantifier(quant) || quant == '+') {
            pl->first = 1;
            return;
        }
        q = ep + 1;
    }
}

static void plan_none(plan_t *pl)
{
    pl->nlit = 0;
    pl->first = pl->run = 0;
    pl->item = NULL;
    pl->accept[0] = '\0';
}

/* When a match can begin with a few bytes only, and 0 is not one of them:
 * the list of them, for strcspn (a vector search where memchr takes one). */
static void accept_list(plan_t *pl)
{
    char list[sizeof(pl->accept)];
    size_t n = 0;
    if (pl->first_set[0] != 0)
        return;
    for (int c = 1; c < 256; c++) {
        if (pl->first_set[c] & FIRST_FRONTIER)
            return;
        if (pl->first_set[c] & FIRST_ANY) {
            if (n == sizeof(list) - 1)
                return;
            list[n++] = (char)c;
        }
    }
    list[n] = '\0';
    memcpy(pl->accept, list, n + 1);
}

/* What an unanchored search of the pattern from p over n bytes may skip.
 * The byte sets cost a few microseconds to build: not for short subjects,
 * where trying every place costs less (and cannot cost much). */
static void plan(mstate_t *m, const char *p, size_t n, plan_t *pl)
{
    plan_none(pl);
    const char *q = p;
    while (q < m->p1 && *q == '(') /* captures open without consuming */
        q += q + 1 < m->p1 && q[1] == ')' ? 2 : 1;
    const char *ep = simple_item(m, q);
    int quant = ep != NULL && ep < m->p1 ? *ep : 0;
    if (ep != NULL && (!quantifier(quant) || quant == '+')) {
        pl->lit = q;
        while (q + pl->nlit < m->p1 && !strchr("^$*+?.([%-)", q[pl->nlit]) &&
               !(q + pl->nlit + 1 < m->p1 && quantifier(uc(q[pl->nlit + 1]))))
            pl->nlit++;
    }
    if (pl->nlit == 0 && n >= PLAN_SETS_FROM) {
        first_bytes(m, q, pl);
        if (pl->first)
            accept_list(pl);
    }
    else if (pl->nlit == 0 && ep != NULL && *q != '.' && (!quantifier(quant) || quant == '+')) {
        pl->item = q;
        pl->item_end = ep;
    }
    if (ep == NULL)
        return;
    /* C+ D, C* D, C- D with C and D disjoint and D required: D can only
     * match where the run of C from the start ends, so a try that failed
     * fails from every place in that run */
    if (q == p && (quant == '+' || quant == '*' || quant == '-') && n >= PLAN_SETS_FROM) {
        const char *dp = ep + 1, *dep = simple_item(m, dp);
        if (dep == NULL || (dep < m->p1 && quantifier(*dep) && *dep != '+'))
            return;
        unsigned char dset[256];
        item_set(q, ep, pl->run_set);
        item_set(dp, dep, dset);
        for (int c = 0; c < 256; c++)
            if (pl->run_set[c] && dset[c])
                return;
        pl->run = 1;
    }
}

/* Whether the subject from s lacks bytes every match of the pattern from
 * p has: its longest run of plain bytes no quantifier makes optional.
 * Then nothing matches and nothing need be tried ("### ?system" over a
 * text of "### ### ..."). The walk stops at items a try could raise an
 * error on (%b, %f, %1, a bad set, a stray ')'), so that no error LuaJIT
 * would raise is skipped. */
static int lacks_literal(mstate_t *m, const char *p, const char *s)
{
    char best[64], run[64];
    size_t nbest = 0, nrun = 0;
    int open = 0;
    for (const char *q = p; q < m->p1;) {
        if (*q == '(' || *q == ')') { /* captures take no bytes */
            int pos = *q == '(' && q + 1 < m->p1 && q[1] == ')';
            open += pos ? 0 : *q == '(' ? 1 : -1;
            if (open < 0 || open > MAX_CAPTURES)
                break;
            q += pos ? 2 : 1;
            continue;
        }
        const char *eq = simple_item(m, q);
        if (eq == NULL)
            break;
        int b = byte_item(q), quant = eq < m->p1 ? uc(*eq) : 0;
        if (b >= 0 && (!quantifier(quant) || quant == '+') && nrun < sizeof(run))
            run[nrun++] = (char)b;
        else
            nrun = 0;
        if (nrun > nbest) {
            memcpy(best, run, nrun);
            nbest = nrun;
        }
        if (quantifier(quant)) {
            nrun = 0;
            eq++;
        }
        q = eq;
    }
    if (nbest < 2)
        return 0;
    step(m, skip_cost((size_t)(m->s1 - s)));
    return find_bytes(s, (size_t)(m->s1 - s), best, nbest) == NULL;
}

/* The first place at or after s where a match may begin, or NULL. */
static const char *next_start(mstate_t *m, const plan_t *pl, const char *s)
{
    const char *at = s;
    if (pl->nlit > 1) {
        at = find_bytes(s, (size_t)(m->s1 - s), pl->lit, pl->nlit);
    } else if (pl->nlit == 1) {
        at = memchr(s, pl->lit[0], (size_t)(m->s1 - s));
    } else if (pl->accept[0] != '\0') {
        /* a Lua string has a 0 after its end, where strcspn stops at the latest */
        while ((at += strcspn(at, pl->accept)) < m->s1 && *at == '\0')
            at++; /* a 0 inside the subject is not a byte a match begins with */
        if (at >= m->s1)
            at = NULL;
    } else if (pl->first) {
        for (; at < m->s1; at++) {
            int f = pl->first_set[uc(*at)];
            if ((f & FIRST_ANY) || ((f & FIRST_FRONTIER) && !(pl->first_set[at == m->s0 ? 0 : uc(at[-1])] & FIRST_FRONTIER)))
                break;
        }
        if (at == m->s1)
            at = NULL;
    } else if (pl->item != NULL) {
        while (at < m->s1 && !single(uc(*at), pl->item, pl->item_end))
            at++;
        if (at == m->s1)
            at = NULL;
    } else {
        return s;
    }
    step(m, skip_cost((size_t)((at ? at : m->s1) - s)));
    return at;
}

/* Where to try next after a try at s failed. */
static const char *after_failure(mstate_t *m, const plan_t *pl, const char *s)
{
    if (!pl->run || s >= m->s1 || !pl->run_set[uc(*s)])
        return s + 1;
    const char *e = s + 1;
    while (e < m->s1 && pl->run_set[uc(*e)])
        e++;
    step(m, skip_cost((size_t)(e - s)));
    return e;
}

static void mstate_init(mstate_t *m, lua_State *L, const char *s, size_t ls, const char *p)
{
    m->L = L;
    m->budget = lua_touserdata(L, lua_upvalueindex(1));
    m->s0 = s;
    m->s1 = s + ls;
    m->p0 = p;
    m->p1 = p + strlen(p); /* LuaJIT's matcher stops at a NUL too */
    m->depth = m->ncap = 0;
    m->steps = m->busy = 0;
    m->ntables = 0;
    m->ncached = (size_t)(m->p1 - p) < MAX_CACHED ? (size_t)(m->p1 - p) : MAX_CACHED;
    memset(m->item_len, 0, m->ncached);
    memset(m->run_only, -1, m->ncached);
    memset(m->table, -1, m->ncached);
}

/* ---- captures to Lua ---- */

static void push_capture(mstate_t *m, int i, const char *s, const char *e)
{
    if (i >= m->ncap) {
        if (i != 0)
            pat_error(m, "invalid capture index");
        lua_pushlstring(m->L, s, (size_t)(e - s));
        return;
    }
    ptrdiff_t len = m->cap[i].len;
    if (len == CAP_OPEN)
        pat_error(m, "unfinished capture");
    if (len == CAP_POSITION)
        lua_pushinteger(m->L, m->cap[i].at - m->s0 + 1);
    else
        lua_pushlstring(m->L, m->cap[i].at, (size_t)len);
}

/* Pushes the captures (the whole match when there are none and s is not
 * NULL); returns how many. */
static int push_captures(mstate_t *m, const char *s, const char *e)
{
    int n = m->ncap == 0 && s != NULL ? 1 : m->ncap;
    luaL_checkstack(m->L, n, "too many captures");
    for (int i = 0; i < n; i++)
        push_capture(m, i, s, e);
    return n;
}

/* ---- the library functions ---- */

static int has_specials(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strchr("^$*+?.([%-", p[i]) != NULL && p[i] != '\0')
            return 1;
    return 0;
}

static int find_or_match(lua_State *L, int find)
{
    size_t ls, lp;
    const char *s = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    lua_Integer init = luaL_optinteger(L, 3, 1);
    init = init < 0 ? init + (lua_Integer)ls : init - 1;
    if (init < 0)
        init = 0;
    if ((size_t)init > ls)
        init = (lua_Integer)ls;
    if (find && (lua_toboolean(L, 4) || !has_specials(p, lp))) {
        const char *at = find_bytes(s + init, ls - (size_t)init, p, lp);
        const av_lpat_budget_t *budget = lua_touserdata(L, lua_upvalueindex(1));
        if (budget != NULL && budget->charge != NULL)
            budget->charge(L, (uint32_t)skip_cost(ls - (size_t)init + lp));
        if (at == NULL) {
            lua_pushnil(L);
            return 1;
        }
        lua_pushinteger(L, at - s + 1);
        lua_pushinteger(L, at - s + (lua_Integer)lp);
        return 2;
    }
    mstate_t m;
    mstate_init(&m, L, s, ls, p);
    int anchor = *p == '^';
    p += anchor;
    plan_t pl;
    if (anchor)
        plan_none(&pl);
    else
        plan(&m, p, ls - (size_t)init, &pl);
    for (const char *at = lacks_literal(&m, p, s + init) ? NULL : s + init; at != NULL;) {
        if (!anchor && (at = next_start(&m, &pl, at)) == NULL)
            break;
        m.ncap = m.depth = 0;
        const char *e = try_at(&m, at, p);
        if (e != NULL) {
            charge(&m);
            if (!find)
                return push_captures(&m, at, e);
            lua_pushinteger(L, at - s + 1);
            lua_pushinteger(L, e - s);
            return push_captures(&m, NULL, NULL) + 2;
        }
        if (anchor || at >= m.s1)
            break;
        at = after_failure(&m, &pl, at);
    }
    charge(&m);
    lua_pushnil(L);
    return 1;
}

static int lp_find(lua_State *L)
{
    return find_or_match(L, 1);
}

static int lp_match(lua_State *L)
{
    return find_or_match(L, 0);
}

/* The iterator gmatch returns; upvalues: budget, subject, pattern, where
 * the next search starts. */
static int gmatch_next(lua_State *L)
{
    size_t ls;
    const char *s = lua_tolstring(L, lua_upvalueindex(2), &ls);
    const char *p = lua_tostring(L, lua_upvalueindex(3));
    size_t from = (size_t)lua_tointeger(L, lua_upvalueindex(4));
    if (from > ls)
        return 0; /* an empty match at the end was the last */
    mstate_t m;
    mstate_init(&m, L, s, ls, p);
    plan_t pl;
    plan(&m, p, ls - from, &pl); /* no anchor in gmatch: a '^' is a plain byte */
    for (const char *at = s + from;;) {
        if ((at = next_start(&m, &pl, at)) == NULL)
            break;
        m.ncap = m.depth = 0;
        const char *e = try_at(&m, at, p);
        if (e != NULL) {
            charge(&m);
            lua_pushinteger(L, (e - s) + (e == at)); /* an empty match moves on by one */
            lua_replace(L, lua_upvalueindex(4));
            return push_captures(&m, at, e);
        }
        if (at >= m.s1)
            break;
        at = after_failure(&m, &pl, at);
    }
    charge(&m);
    lua_pushinteger(L, (lua_Integer)ls + 1);
    lua_replace(L, lua_upvalueindex(4));
    return 0;
}

static int lp_gmatch(lua_State *L)
{
    luaL_checkstring(L, 1);
    luaL_checkstring(L, 2);
    lua_settop(L, 2);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_pushinteger(L, 0);
    lua_pushcclosure(L, gmatch_next, 4);
    return 1;
}

/* Appends the replacement string (argument 3) for the match s..e: %0 the
 * match, %1..%9 captures, % and another byte that byte. */
static void add_string(mstate_t *m, luaL_Buffer *b, const char *s, const char *e)
{
    size_t n;
    const char *r = lua_tolstring(m->L, 3, &n);
    step(m, n);
    for (size_t i = 0; i < n; i++) {
        if (r[i] != '%') {
            luaL_addchar(b, r[i]);
            continue;
        }
        i++; /* a '%' at the very end takes the string's NUL, as LuaJIT does */
        if (r[i] < '0' || r[i] > '9') {
            luaL_addchar(b, r[i]);
        } else if (r[i] == '0') {
            luaL_addlstring(b, s, (size_t)(e - s));
        } else {
            push_capture(m, r[i] - '1', s, e);
            luaL_addvalue(b);
        }
    }
}

static void add_value(mstate_t *m, luaL_Buffer *b, const char *s, const char *e, int type)
{
    lua_State *L = m->L;
    if (type == LUA_TSTRING || type == LUA_TNUMBER) {
        add_string(m, b, s, e);
        return;
    }
    charge(m); /* what the callback costs is counted by the VM itself */
    if (m->budget != NULL && m->budget->enter != NULL)
        m->budget->enter(L);
    if (type == LUA_TFUNCTION) {
        lua_pushvalue(L, 3);
        int n = push_captures(m, s, e);
        lua_call(L, n, 1);
    } else {
        push_capture(m, 0, s, e);
        lua_gettable(L, 3); /* an __index function may call gsub too */
    }
    if (m->budget != NULL && m->budget->leave != NULL)
        m->budget->leave(L);
    if (!lua_toboolean(L, -1)) { /* nil or false: the match stays */
        lua_pop(L, 1);
        lua_pushlstring(L, s, (size_t)(e - s));
    } else if (!lua_isstring(L, -1)) {
        luaL_error(L, "invalid replacement value (a %s)", luaL_typename(L, -1));
    }
    luaL_addvalue(b);
}

static int lp_gsub(lua_State *L)
{
    size_t ls;
    const char *s = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checkstring(L, 2);
    int type = lua_type(L, 3);
    lua_Integer max = luaL_optinteger(L, 4, (lua_Integer)ls + 1);
    luaL_argcheck(L, type == LUA_TNUMBER || type == LUA_TSTRING || type == LUA_TFUNCTION || type == LUA_TTABLE, 3,
                  "string/function/table expected");
    mstate_t m;
    mstate_init(&m, L, s, ls, p);
    int anchor = *p == '^';
    p += anchor;
    plan_t pl;
    if (anchor)
        plan_none(&pl);
    else
        plan(&m, p, ls, &pl);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    lua_Integer n = 0;
    const char *at = s, *keep = s; /* keep..at goes out as it is, at the next match or the end */
    if (max > 0 && lacks_literal(&m, p, s))
        max = 0;
    while (n < max) {
        if (!anchor && (at = next_start(&m, &pl, at)) == NULL)
            break;
        m.ncap = m.depth = 0;
        const char *e = try_at(&m, at, p);
        if (e != NULL) {
            n++;
            luaL_addlstring(&b, keep, (size_t)(at - keep));
            add_value(&m, &b, at, e, type);
            keep = e;
        }
        if (e != NULL && e > at)
            at = e;
        else if (at < m.s1)
            at = e != NULL ? at + 1 : after_failure(&m, &pl, at); /* after an empty match its byte goes out */
        else
            break;
        if (anchor)
            break;
    }
    charge(&m);
    if (n == 0) { /* nothing replaced: the subject itself, not a copy of it */
        luaL_pushresult(&b);
        lua_pushvalue(L, 1);
        lua_pushinteger(L, 0);
        return 2;
    }
    luaL_addlstring(&b, keep, (size_t)(m.s1 - keep));
    luaL_pushresult(&b);
    lua_pushinteger(L, n);
    return 2;
}

void av_lpat_open(lua_State *L, int t, const av_lpat_budget_t *budget)
{
    static const luaL_Reg fns[] = {
        {"find", lp_find}, {"match", lp_match}, {"gmatch", lp_gmatch}, {"gsub", lp_gsub}, {NULL, NULL},
    };
    t = t < 0 && t > LUA_REGISTRYINDEX ? lua_gettop(L) + t + 1 : t;
    for (const luaL_Reg *f = fns; f->name != NULL; f++) {
        lua_pushlightuserdata(L, (void *)budget);
        lua_pushcclosure(L, f->func, 1);
        lua_setfield(L, t, f->name);
    }
}
