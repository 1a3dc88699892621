/* usage.c: reading usage, timing and text out of responses. Event data is
 * JSON read with the top-level scanner (no tree), looking only at the few
 * members each dialect puts its numbers in; an event costs one pass over its
 * bytes plus a short pass over the members that matter. */
#include "usage.h"

#include <stdlib.h>
#include <string.h>

#include "av.h"
#include "config.h"
#include "hist.h"
#include "jscan.h"

#define FNV_OFFSET 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull

void av_usage_init(av_usage_t *u, int dialect, int stream, int strip)
{
    memset(u, 0, sizeof(*u));
    u->dialect = dialect;
    u->stream = stream;
    u->strip = strip && stream;
    u->input = u->output = u->cached = u->cache_write = u->reasoning = -1;
    u->hash = FNV_OFFSET;
}

void av_usage_free(av_usage_t *u)
{
    free(u->buf);
    free(u->data);
    free(u->held);
    u->buf = u->data = u->held = NULL;
}

/* ---- members ---- */

typedef struct {
    const char *name;
    av_jmember_t m;
    int hit;
} find_t;

static int on_find(void *arg, const av_jmember_t *m)
{
    find_t *f = arg;
    if (av_jscan_key_is(m, f->name)) {
        f->m = *m;
        f->hit = 1;
        return 1;
    }
    return 0;
}

/* A member of an object value, by name. */
static int get(const av_jmember_t *obj, const char *name, av_jmember_t *out)
{
    if (obj == NULL || obj->type != '{')
        return 0;
    find_t f = {.name = name};
    size_t off;
    av_jscan_object(obj->val, obj->val_len, on_find, &f, &off);
    if (!f.hit)
        return 0;
    *out = f.m;
    return 1;
}

#define COUNT_NONE (-1) /* not a number (null, a string): as if absent */
#define COUNT_BAD (-2)  /* a number no backend could mean */

/* A token count where JSON wrote a number: the number, COUNT_NONE, or
 * COUNT_BAD when it is negative, fractional, in exponent form or past
 * AV_TOKENS_MAX (a backend's 99999999999999999999 once overflowed into
 * 7.7e18 tokens). "12.0" is 12. */
static int64_t count_at(const char *s, size_t n)
{
    if (n > 0 && s[0] == '-')
        return COUNT_BAD;
    if (n == 0 || s[0] < '0' || s[0] > '9')
        return COUNT_NONE;
    int64_t v = 0;
    size_t i = 0;
    for (; i < n && s[i] >= '0' && s[i] <= '9'; i++) {
        if (v > AV_TOKENS_MAX / 10)
            return COUNT_BAD;
        v = v * 10 + (s[i] - '0');
    }
    if (v > AV_TOKENS_MAX)
        return COUNT_BAD;
    if (i < n && s[i] == '.')
        for (i++; i < n && s[i] >= '0' && s[i] <= '9'; i++)
            if (s[i] != '0')
                return COUNT_BAD;
    if (i < n && (s[i] == 'e' || s[i] == 'E'))
        return COUNT_BAD;
    return v;
}

static int64_t num(const av_jmember_t *m)
{
    return m->type == '0' ? count_at(m->val, m->val_len) : COUNT_NONE;
}

static int is_str(const av_jmember_t *m, const char *s)
{
    size_t n = strlen(s);
    return m->type == '"' && m->val_len == n + 2 && memcmp(m->val + 1, s, n) == 0;
}

/* ---- what the answer says ---- */

typedef struct {
    av_usage_t *u;
} usage_scan_t;

#define KEY_IS(k, n, lit) ((n) == sizeof(lit) - 1 && memcmp((k), (lit), sizeof(lit) - 1) == 0)

/* Every dialect's names for the counts, assigned (never added): a later
 * report replaces an earlier one, which is what Anthropic's cumulative
 * message_delta needs. detail: the name is inside a *_tokens_details object. */
static void usage_count(av_usage_t *u, const char *k, size_t n, int detail, int64_t v)
{
    int64_t *slot = NULL;
    if (detail) {
        if (KEY_IS(k, n, "cached_tokens"))
            slot = &u->cached;
        else if (KEY_IS(k, n, "reasoning_tokens"))
            slot = &u->reasoning;
    } else if (KEY_IS(k, n, "prompt_tokens") || KEY_IS(k, n, "input_tokens")) {
        slot = &u->input;
    } else if (KEY_IS(k, n, "completion_tokens") || KEY_IS(k, n, "output_tokens")) {
        slot = &u->output;
    } else if (KEY_IS(k, n, "cache_read_input_tokens")) {
        slot = &u->cached;
    } else if (KEY_IS(k, n, "cache_creation_input_tokens")) {
        slot = &u->cache_write;
    }
    if (slot == NULL || v == COUNT_NONE)
        return;
    if (v == COUNT_BAD) {
        if (!u->untrusted) {
            size_t m = n < sizeof(u->untrusted_key) - 1 ? n : sizeof(u->untrusted_key) - 1;
            memcpy(u->untrusted_key, k, m);
            u->untrusted_key[m] = '\0';
        }
        u->untrusted = 1;
        return;
    }
    *slot = v;
    if (!detail)
        u->reported = 1;
}

static int is_details(const char *k, size_t n)
{
    return KEY_IS(k, n, "prompt_tokens_details") || KEY_IS(k, n, "input_tokens_details") ||
           KEY_IS(k, n, "completion_tokens_details") || KEY_IS(k, n, "output_tokens_details");
}

/* A member's key as plain bytes: decoded into buf when it has escapes
 * (NULL when it cannot be or is too long to be a name we know). */
static const char *plain_key(const av_jmember_t *m, char *buf, size_t cap, size_t *n)
{
    *n = m->key_len;
    if (!m->key_escaped)
        return m->key;
    if (m->key_len >= cap)
        return NULL;
    long k = av_jscan_unescape(m->key, m->key_len, buf);
    if (k < 0)
        return NULL;
    *n = (size_t)k;
    return buf;
}

static int on_usage_detail(void *arg, const av_jmember_t *m)
{
    char buf[64];
    size_t n;
    const char *k = plain_key(m, buf, sizeof(buf), &n);
    if (k != NULL)
        usage_count(arg, k, n, 1, num(m));
    return 0;
}

static int on_usage(void *arg, const av_jmember_t *m)
{
    char buf[64];
    size_t n, off;
    const char *k = plain_key(m, buf, sizeof(buf), &n);
    if (k == NULL)
        return 0;
    if (m->type == '{') {
        if (is_details(k, n))
            av_jscan_object(m->val, m->val_len, on_usage_detail, arg, &off);
        return 0;
    }
    usage_count(arg, k, n, 0, num(m));
    return 0;
}

static void read_usage(av_usage_t *u, const av_jmember_t *m)
{
    size_t off;
    if (m->type == '{')
        av_jscan_object(m->val, m->val_len, on_usage, u, &off);
}

static void set_finish(av_usage_t *u, const av_jmember_t *m)
{
    if (m->type != '"' || m->val_len < 3)
        return;
    size_t n = m->val_len - 2 < sizeof(u->finish) - 1 ? m->val_len - 2 : sizeof(u->finish) - 1;
    memcpy(u->finish, m->val + 1, n);
    u->finish[n] = '\0';
}

/* A piece of the answer's text arrived at now_us. */
static void text(av_usage_t *u, const av_jmember_t *m, uint64_t now_us)
{
    if (m->type != '"' || m->val_len <= 2)
        return;
    long n = (long)m->val_len - 2;
    if (u->want_text) {
        char small[1024];
        char *buf = m->val_len <= sizeof(small) ? small : av_malloc(m->val_len);
        n = av_jscan_unescape(m->val + 1, m->val_len - 2, buf);
        for (long i = 0; i < n; i++)
            u->hash = (u->hash ^ (unsigned char)buf[i]) * FNV_PRIME;
        if (buf != small)
            free(buf);
        if (n <= 0)
            return;
    }
    u->chars += (size_t)n;
    if (u->first_token_us == 0) {
        u->first_token_us = now_us;
    } else {
        uint64_t gap = now_us - u->last_token_us;
        u->gaps[av_hist_bucket(gap)]++;
        u->ngaps++;
    }
    u->last_token_us = now_us;
    u->token_events++;
}

/* A tool call began at now_us: an answer of tool calls alone has its first
 * token there (its time to first token is the call's). */
static void tool_calls_seen(av_usage_t *u, int before, uint64_t now_us)
{
    if (u->tool_calls > before && u->first_token_us == 0)
        u->first_token_us = u->last_token_us = now_us;
}

static int on_tool_call_id(void *arg, const av_jmember_t *m)
{
    if (m->type == '"' && av_jscan_key_is(m, "id"))
        ((av_usage_t *)arg)->tool_calls++;
    return 0;
}

/* A new call carries its id; its argument pieces do not. An element that
 * names "id" twice counts each, as the walk does. */
static int count_tool_call(void *arg, const av_jmember_t *e)
{
    size_t off;
    if (e->type == '{')
        av_jscan_object(e->val, e->val_len, on_tool_call_id, arg, &off);
    return 0;
}

typedef struct {
    av_jmember_t msg, text, finish, content, tools;
    unsigned has;
} choice_t;

enum { C_MSG = 1, C_TEXT = 2, C_FINISH = 4, C_CONTENT = 8, C_TOOLS = 16 };

static int on_choice(void *arg, const av_jmember_t *m)
{
    choice_t *c = arg;
    if (m->key_len == 5 && av_jscan_key_is(m, "delta")) {
        c->msg = *m;
        c->has |= C_MSG;
    } else if (m->key_len == 7 && av_jscan_key_is(m, "message")) {
        c->msg = *m;
        c->has |= C_MSG;
    } else if (m->key_len == 4 && av_jscan_key_is(m, "text")) {
        c->text = *m;
        c->has |= C_TEXT;
    } else if (m->key_len == 13 && av_jscan_key_is(m, "finish_reason")) {
        c->finish = *m;
        c->has |= C_FINISH;
    }
    return 0;
}

static int on_msg(void *arg, const av_jmember_t *m)
{
    choice_t *c = arg;
    if (m->key_len == 7 && av_jscan_key_is(m, "content")) {
        c->content = *m;
        c->has |= C_CONTENT;
    } else if (m->key_len == 10 && av_jscan_key_is(m, "tool_calls")) {
        c->tools = *m;
        c->has |= C_TOOLS;
    }
    return 0;
}

typedef struct {
    av_usage_t *u;
    uint64_t now;
    int finished; /* a choice before this one gave the finish reason */
} choices_t;

/* One OpenAI choice (chat delta or message, or completions text): one pass
 * over the choice, one over its delta or message. Every choice counts: an
 * answer with n of them is billed for all their tokens, and its tool calls
 * are all calls. The finish reason is the first choice's that has one. */
static int openai_choice(void *arg, const av_jmember_t *e)
{
    choices_t *cs = arg;
    av_usage_t *u = cs->u;
    uint64_t now_us = cs->now;
    choice_t c = {0};
    size_t off;
    if (e->type != '{' || av_jscan_object(e->val, e->val_len, on_choice, &c, &off) != 0)
        return 0;
    if ((c.has & C_MSG) && c.msg.type == '{') {
        av_jscan_object(c.msg.val, c.msg.val_len, on_msg, &c, &off);
        if (c.has & C_CONTENT)
            text(u, &c.content, now_us);
        if ((c.has & C_TOOLS) && c.tools.type == '[') {
            int before = u->tool_calls;
            av_jscan_array(c.tools.val, c.tools.val_len, count_tool_call, u, &off);
            tool_calls_seen(u, before, now_us);
        }
    } else if (c.has & C_TEXT) {
        text(u, &c.text, now_us);
    }
    if ((c.has & C_FINISH) && c.finish.type == '"' && c.finish.val_len > 2 && !cs->finished) {
        set_finish(u, &c.finish);
        cs->finished = 1;
    }
    return 0;
}

typedef struct {
    av_jmember_t usage, choices, type, message, delta, response, content_block, item, content, output, status,
        stop_reason;
    unsigned has;
} top_t;

enum {
    H_USAGE = 1, H_CHOICES = 2, H_TYPE = 4, H_MESSAGE = 8, H_DELTA = 16, H_RESPONSE = 32, H_BLOCK = 64,
    H_ITEM = 128, H_CONTENT = 256, H_OUTPUT = 512, H_STATUS = 1024, H_STOP = 2048
};

static int on_top(void *arg, const av_jmember_t *m)
{
    top_t *t = arg;
#define K(n) n, sizeof(n) - 1
    static const struct {
        const char *name;
        size_t len, off;
        unsigned bit;
    } keys[] = {
        {K("usage"), offsetof(top_t, usage), H_USAGE},
        {K("choices"), offsetof(top_t, choices), H_CHOICES},
        {K("type"), offsetof(top_t, type), H_TYPE},
        {K("message"), offsetof(top_t, message), H_MESSAGE},
        {K("delta"), offsetof(top_t, delta), H_DELTA},
        {K("response"), offsetof(top_t, response), H_RESPONSE},
        {K("content_block"), offsetof(top_t, content_block), H_BLOCK},
        {K("item"), offsetof(top_t, item), H_ITEM},
        {K("content"), offsetof(top_t, content), H_CONTENT},
        {K("output"), offsetof(top_t, output), H_OUTPUT},
        {K("status"), offsetof(top_t, status), H_STATUS},
        {K("stop_reason"), offsetof(top_t, stop_reason), H_STOP},
    };
#undef K
    for (size_t i = 0; i < AV_NELEMS(keys); i++)
        if ((m->key_escaped || (m->key_len == keys[i].len && m->key[0] == keys[i].name[0])) &&
            av_jscan_key_is(m, keys[i].name)) {
            *(av_jmember_t *)(void *)((char *)t + keys[i].off) = *m;
            t->has |= keys[i].bit;
            return 0;
        }
    return 0;
}

static int anthropic_block(void *arg, const av_jmember_t *b)
{
    av_usage_t *u = arg;
    av_jmember_t x;
    if (get(b, "type", &x) && is_str(&x, "tool_use"))
        u->tool_calls++;
    else if (get(b, "text", &x))
        text(u, &x, u->body_us);
    return 0;
}

typedef struct {
    av_usage_t *u;
    uint64_t now;
} resp_out_t;

/* Responses API output items: messages' output_text parts, function calls. */
static int response_part(void *arg, const av_jmember_t *p)
{
    resp_out_t *r = arg;
    av_jmember_t x;
    if (get(p, "type", &x) && is_str(&x, "output_text") && get(p, "text", &x))
        text(r->u, &x, r->now);
    return 0;
}

static int response_item(void *arg, const av_jmember_t *it)
{
    resp_out_t *r = arg;
    av_jmember_t x, c;
    if (get(it, "type", &x) && is_str(&x, "function_call")) {
        r->u->tool_calls++;
        tool_calls_seen(r->u, r->u->tool_calls - 1, r->now);
    }
    else if (get(it, "content", &c) && c.type == '[') {
        size_t off;
        av_jscan_array(c.val, c.val_len, response_part, r, &off);
    }
    return 0;
}

/* ---- OpenAI objects in one walk ----
 * OpenAI's chunks and answers (chat, completions, embeddings) carry little
 * we need, at known places: usage counts, the first choice's text (in its
 * delta or message, or completions' text), finish reason and tool call ids.
 * One walk over the keys at every depth (av_jscan_walk) finds them; anything
 * it does not expect (escaped keys, two texts or finish reasons: several
 * choices, no choices and a type) goes to the full reading below, which
 * gives the same answer for what the walk reads. */
#define OA_NUMS 12

enum { MARK_CHOICES, MARK_MSG }; /* before the top-level choices; inside the first choice's delta */

typedef struct {
    const char *s;
    size_t n;
    av_usage_seen_t v;
    int nnums;
    int marking;              /* a stream: take marks for the next chunks */
    av_usage_mark_t took[2];  /* marks taken in this walk */
    struct {
        const char *key;
        unsigned len, detail;
        size_t val;
    } nums[OA_NUMS];
} oa_t;

enum {
    OA_CHOICES = 1, OA_NO_CHOICE = 2, OA_USAGE = 4, OA_TYPE = 8, OA_MSG = 16, OA_TOOLS = 32,
    /* the key seen, whatever its value: a second one sends the object to the full reading */
    OA_USAGE_KEY = 64, OA_MSG_KEY = 128, OA_FINISH_KEY = 256
};

#define PATH_IS(p, d, lit) ((p)->key[d] != NULL && KEY_IS((p)->key[d], (p)->key_len[d], lit))

static size_t skip_ws_at(const char *s, size_t n, size_t i)
{
    while (i < n && (s[i] == ' ' || s[i] == '\n' || s[i] == '\r' || s[i] == '\t'))
        i++;
    return i;
}

/* A mark for the next chunks' walks, with what this walk has seen so far
 * (no usage numbers: those point into this chunk). */
static void take_mark(oa_t *o, const av_jpath_t *p, int inside, int which)
{
    av_usage_mark_t *m = &o->took[which];
    if (av_jscan_mark(o->s, p, inside, &m->at) == 0) {
        m->seen = o->v;
        m->valid = 1;
    }
}

static int on_oa_key(void *arg, const av_jpath_t *p)
{
    oa_t *o = arg;
    if (p->escaped)
        return 1;
    unsigned d = p->depth;
    const char *k = p->key[d];
    size_t n = p->key_len[d];
    char first = p->val < o->n ? o->s[p->val] : 0;
    if (d == 1) {
        if (KEY_IS(k, n, "choices")) {
            if (o->v.has & OA_CHOICES)
                return 1; /* named twice: JSON readers keep the last, the walk has read the first */
            if (o->marking && o->nnums == 0 && !o->took[MARK_CHOICES].valid)
                take_mark(o, p, 0, MARK_CHOICES);
            if (first != '[')
                return 1;
            o->v.has |= OA_CHOICES;
            size_t i = skip_ws_at(o->s, o->n, p->val + 1);
            if (i < o->n && o->s[i] == ']')
                o->v.has |= OA_NO_CHOICE;
        } else if (KEY_IS(k, n, "usage")) {
            if (o->v.has & OA_USAGE_KEY)
                return 1;
            o->v.has |= OA_USAGE_KEY;
            if (first == '{')
                o->v.has |= OA_USAGE;
        } else if (KEY_IS(k, n, "type")) {
            o->v.has |= OA_TYPE;
        }
        return 0;
    }
    if (PATH_IS(p, 1, "usage")) {
        if ((first >= '0' && first <= '9') || first == '-') {
            int detail = d == 3 && p->key[2] != NULL && is_details(p->key[2], p->key_len[2]);
            if (d == 2 || detail) {
                if (o->nnums == OA_NUMS)
                    return 1;
                o->nums[o->nnums].key = k;
                o->nums[o->nnums].len = (unsigned)n;
                o->nums[o->nnums].detail = (unsigned)detail;
                o->nums[o->nnums++].val = p->val;
            }
        }
        return 0;
    }
    if (!PATH_IS(p, 1, "choices"))
        return 0;
    if (d == 3) {
        /* one choice's worth of each: several choices (or a member named
         * twice) are read by the full reading, which reads them all */
        if (KEY_IS(k, n, "finish_reason")) {
            if (o->v.has & OA_FINISH_KEY)
                return 1;
            o->v.has |= OA_FINISH_KEY;
            if (first == '"') { /* null until the last chunk */
                o->v.finishes++;
                o->v.finish = p->val;
            }
        } else if (KEY_IS(k, n, "text")) {
            if (o->v.texts++ || (o->v.has & OA_MSG_KEY))
                return 1;
            o->v.text = p->val;
        } else if (KEY_IS(k, n, "delta") || KEY_IS(k, n, "message")) {
            if ((o->v.has & OA_MSG_KEY) || o->v.texts)
                return 1;
            o->v.has |= OA_MSG_KEY;
            if (first != '{')
                return 0;
            o->v.has |= OA_MSG;
            o->v.msg_open = p->val;
            if (o->marking && o->nnums == 0 && !o->took[MARK_MSG].valid)
                take_mark(o, p, 1, MARK_MSG);
        }
    } else if (d == 4 && (PATH_IS(p, 3, "delta") || PATH_IS(p, 3, "message"))) {
        if (KEY_IS(k, n, "content")) {
            if (o->v.contents++)
                return 1;
            o->v.content = p->val;
            o->v.content_key = (size_t)(k - o->s) - 1;
        } else if (KEY_IS(k, n, "tool_calls")) {
            if (o->v.has & OA_TOOLS)
                return 1;
            o->v.has |= OA_TOOLS;
        }
    } else if (d == 6 && !((p->objects >> 4) & 1) && PATH_IS(p, 4, "tool_calls") &&
               (PATH_IS(p, 3, "delta") || PATH_IS(p, 3, "message")) && KEY_IS(k, n, "id") && first == '"') {
        /* an id in an element of the tool_calls array (not in an object there) */
        o->v.tool_ids++;
    }
    return 0;
}

static int64_t num_at(const char *s, size_t n, size_t i)
{
    return i < n ? count_at(s + i, n - i) : COUNT_NONE;
}

/* A string value at offset off as a member, for text() and set_finish(); 0 when it is not one. */
static int string_at(const char *s, size_t n, size_t off, av_jmember_t *m)
{
    size_t len = off < n ? av_jscan_string_len(s + off, n - off) : 0;
    if (len == 0)
        return 0;
    *m = (av_jmember_t){.val = s + off, .val_len = len, .type = '"'};
    return 1;
}

#define EV_PRE 6 /* "data: " before the template's chunk bytes */

/* The template's mark this chunk's walk can begin at: the furthest one
 * before the first byte where the chunk and the template differ. */
static const av_usage_mark_t *mark_for(const av_usage_t *u, const char *s, size_t n)
{
    if (u->tmpl_pre == 0 || !(u->marks[0].valid || u->marks[1].valid))
        return NULL;
    size_t same = av_jscan_same_prefix(s, u->tmpl + EV_PRE, n < u->tmpl_pre ? n : u->tmpl_pre);
    const av_usage_mark_t *best = NULL;
    for (int k = 0; k < 2; k++)
        if (u->marks[k].valid && u->marks[k].at.at < same && (best == NULL || u->marks[k].at.at > best->at.at))
            best = &u->marks[k];
    return best;
}

/* Keeps the bytes of token chunk s around its text (the string at offset
 * at, len bytes long) as the template for the next ones, with the marks
 * its walk took (o) or, for a walk that began at a mark (from), those
 * before it. The first chunk's members before the content (the role,
 * said once) are left out: the next chunks carry the content alone.
 * Should they carry more, the next miss makes a template of the chunk as
 * it is. */
static void keep_template(av_usage_t *u, const oa_t *o, const av_usage_mark_t *from, const char *s, size_t n,
                          size_t at, size_t len)
{
    size_t cut = 0, cut_len = 0; /* [cut, cut + cut_len): the members before the content */
    if (u->tmpl_pre == 0 && at == o->v.content && (o->v.has & OA_MSG) && o->v.msg_open + 1 < o->v.content_key) {
        cut = o->v.msg_open + 1;
        cut_len = o->v.content_key - cut;
    }
    size_t pre = at + 1 - cut_len, close = at + len - 1, suf = n - close;
    if (EV_PRE + pre + suf + 2 > sizeof(u->tmpl))
        return; /* the template there was stays: it is still exact */
    char *t = u->tmpl + EV_PRE;
    memcpy(u->tmpl, "data: ", EV_PRE);
    if (cut_len > 0) {
        memcpy(t, s, cut);
        memcpy(t + cut, s + o->v.content_key, at + 1 - o->v.content_key);
    } else {
        memcpy(t, s, pre);
    }
    memcpy(t + pre, s + close, suf);
    memcpy(t + pre + suf, "\n\n", 2);
    u->tmpl_pre = (uint16_t)pre;
    u->tmpl_suf = (uint16_t)suf;
    for (int k = 0; k < 2; k++) {
        if (o->took[k].valid)
            u->marks[k] = o->took[k];
        else if (from == NULL || !u->marks[k].valid || u->marks[k].at.at > from->at.at)
            u->marks[k].valid = 0; /* a mark the walk did not pass stays only when its bytes did not change */
        if (cut_len > 0 && u->marks[k].at.at > cut)
            u->marks[k].valid = 0; /* past the cut its offsets moved */
    }
}

/* Returns -1 when the full reading must look, else what read_json returns. */
static int openai_read(av_usage_t *u, const char *s, size_t n, uint64_t now_us)
{
    oa_t o; /* not zeroed whole: the marks and numbers are written before they are read */
    o.s = s;
    o.n = n;
    o.nnums = 0;
    o.marking = u->stream;
    o.took[MARK_CHOICES].valid = o.took[MARK_MSG].valid = 0;
    const av_usage_mark_t *from = u->stream ? mark_for(u, s, n) : NULL;
    int rc;
    if (from != NULL) {
        o.v = from->seen;
        rc = av_jscan_walk_from(s, n, &from->at, on_oa_key, &o);
    } else {
        o.v = (av_usage_seen_t){0};
        rc = av_jscan_walk(s, n, on_oa_key, &o);
    }
    if (rc != 0)
        return -1;
    if (!(o.v.has & OA_CHOICES) && (!(o.v.has & OA_USAGE) || (o.v.has & OA_TYPE)))
        return -1;
    for (int i = 0; i < o.nnums; i++)
        usage_count(u, o.nums[i].key, o.nums[i].len, (int)o.nums[i].detail, num_at(s, n, o.nums[i].val));
    if (!(o.v.has & OA_CHOICES))
        return 0;
    if (o.v.has & OA_NO_CHOICE) /* the usage chunk, when it has a usage */
        return (o.v.has & OA_USAGE) != 0;
    av_jmember_t m = {0};
    size_t at = 0;
    if ((o.v.has & OA_MSG) ? o.v.contents : o.v.texts) {
        at = (o.v.has & OA_MSG) ? o.v.content : o.v.text;
        if (string_at(s, n, at, &m))
            text(u, &m, now_us);
        else
            at = 0; /* not a string: no text */
    }
    if (o.v.finishes && string_at(s, n, o.v.finish, &m))
        set_finish(u, &m);
    u->tool_calls += o.v.tool_ids;
    tool_calls_seen(u, u->tool_calls - o.v.tool_ids, now_us);
    if (u->stream && at > 0 && !o.v.finishes && !(o.v.has & (OA_USAGE | OA_TOOLS)))
        keep_template(u, &o, from, s, n, at, m.val_len);
    return 0;
}

/* A chunk with the same bytes around its text as the last token chunk
 * (in a stream they differ only in the text): read without a walk.
 * Returns 1 when it was one. */
static int openai_same_chunk(av_usage_t *u, const char *s, size_t n, uint64_t now_us)
{
    size_t pre = u->tmpl_pre, suf = u->tmpl_suf;
    const char *t = u->tmpl + EV_PRE;
    if (pre == 0 || n < pre + suf || memcmp(s, t, pre) != 0 || memcmp(s + n - suf, t + pre, suf) != 0 ||
        av_jscan_string_len(s + pre - 1, n - (pre - 1)) != n - suf + 1 - (pre - 1))
        return 0;
    av_jmember_t m = {.val = s + pre - 1, .val_len = n - suf + 1 - (pre - 1), .type = '"'};
    text(u, &m, now_us);
    return 1;
}

/* One JSON object: a stream event's data, or a whole response. Returns 1
 * when it is OpenAI's usage-only chunk (no choices, a usage). */
static int read_json(av_usage_t *u, const char *s, size_t n, uint64_t now_us)
{
    if (u->dialect != AV_DIALECT_ANTHROPIC && u->dialect != AV_DIALECT_RESPONSES && !u->full_reading) {
        if (u->stream && openai_same_chunk(u, s, n, now_us))
            return 0;
        int rc = openai_read(u, s, n, now_us);
        if (rc >= 0)
            return rc;
    }
    top_t t = {0};
    size_t off;
    if (av_jscan_object(s, n, on_top, &t, &off) != 0)
        return 0;
    av_jmember_t x, y;
    if (t.has & H_USAGE)
        read_usage(u, &t.usage);
    if (t.has & H_CHOICES) {
        if (t.choices.type != '[')
            return 0;
        size_t i = 1;
        while (i < t.choices.val_len && (t.choices.val[i] == ' ' || t.choices.val[i] == '\n' ||
                                         t.choices.val[i] == '\r' || t.choices.val[i] == '\t'))
            i++;
        if (i < t.choices.val_len && t.choices.val[i] == ']') /* no choices: the usage chunk, when it has a usage */
            return (t.has & H_USAGE) && t.usage.type == '{';
        choices_t cs = {u, now_us, 0};
        av_jscan_array(t.choices.val, t.choices.val_len, openai_choice, &cs, &off);
        return 0;
    }
    if (!(t.has & H_TYPE))
        return 0;
    if (is_str(&t.type, "message_start")) { /* Anthropic: input and cache counts */
        if (get(&t.message, "usage", &x))
            read_usage(u, &x);
    } else if (is_str(&t.type, "content_block_start")) {
        if (get(&t.content_block, "type", &x) && is_str(&x, "tool_use")) {
            u->tool_calls++;
            tool_calls_seen(u, u->tool_calls - 1, now_us);
        }
    } else if (is_str(&t.type, "content_block_delta")) {
        if (get(&t.delta, "text", &x))
            text(u, &x, now_us);
    } else if (is_str(&t.type, "message_delta")) { /* usage (cumulative) read above */
        if (get(&t.delta, "stop_reason", &x))
            set_finish(u, &x);
        if ((t.has & H_USAGE) && get(&t.usage, "output_tokens", &x))
            u->output_final = 1;
    } else if (is_str(&t.type, "message")) { /* Anthropic, whole */
        int before = u->tool_calls;
        if (t.has & H_CONTENT)
            av_jscan_array(t.content.val, t.content.val_len, anthropic_block, u, &off);
        tool_calls_seen(u, before, now_us);
        if (t.has & H_STOP)
            set_finish(u, &t.stop_reason);
    } else if (is_str(&t.type, "response.output_text.delta")) {
        text(u, &t.delta, now_us);
    } else if (is_str(&t.type, "response.output_item.added")) {
        if (get(&t.item, "type", &x) && is_str(&x, "function_call")) {
            u->tool_calls++;
            tool_calls_seen(u, u->tool_calls - 1, now_us);
        }
    } else if (is_str(&t.type, "response.completed") || is_str(&t.type, "response.incomplete") ||
               is_str(&t.type, "response.failed")) {
        if (get(&t.response, "usage", &x))
            read_usage(u, &x);
        if (get(&t.response, "status", &y))
            set_finish(u, &y);
    }
    return 0;
}

/* A whole Responses API object ("object": "response"). */
static void read_response_object(av_usage_t *u, const char *s, size_t n, uint64_t now_us)
{
    top_t t = {0};
    size_t off;
    if (av_jscan_object(s, n, on_top, &t, &off) != 0 || !(t.has & H_OUTPUT))
        return;
    resp_out_t r = {u, now_us};
    av_jscan_array(t.output.val, t.output.val_len, response_item, &r, &off);
    if (t.has & H_STATUS)
        set_finish(u, &t.status);
}

/* ---- streams ---- */

static void grow(char **p, size_t *cap, size_t need)
{
    av_grow(p, cap, need, 256);
}

/* Moves the event's data line from the caller's buffer into our own. */
static void keep_pending(av_usage_t *u)
{
    if (u->pend == NULL)
        return;
    if (u->pend_len > 0) { /* "data:" with nothing after it leaves no bytes (and maybe no buffer) */
        grow(&u->data, &u->data_cap, u->pend_len);
        memcpy(u->data, u->pend, u->pend_len);
    }
    u->data_len = u->pend_len;
    u->pend = NULL;
}

/* The end of an event (its blank line): returns 1 to drop it (strip). */
static int dispatch(av_usage_t *u, uint64_t now_us)
{
    const char *d = u->pend ? u->pend : u->data;
    size_t n = u->pend ? u->pend_len : u->data_len;
    u->pend = NULL;
    u->data_len = 0;
    if (n == 0 || (n == 6 && memcmp(d, "[DONE]", 6) == 0))
        return 0;
    return read_json(u, d, n, now_us) && u->strip;
}

/* One line, without its newline; stable: the line stays valid until the
 * read is over (it is in the caller's buffer, not ours). Returns 1 at an
 * event's end that must be dropped; *ended says whether an event ended. */
static int line(av_usage_t *u, const char *s, size_t n, int stable, uint64_t now_us, int *ended)
{
    if (n > 0 && s[n - 1] == '\r')
        n--;
    *ended = n == 0;
    if (n == 0)
        return dispatch(u, now_us);
    if (n < 5 || memcmp(s, "data:", 5) != 0)
        return 0; /* event:, id:, retry: and comments say nothing we count */
    s += 5;
    n -= 5;
    if (n > 0 && *s == ' ')
        s++, n--;
    if (stable && u->pend == NULL && u->data_len == 0) { /* the usual event: one data line, read in place */
        u->pend = s;
        u->pend_len = n;
        return 0;
    }
    keep_pending(u);
    if (u->data_len + n + 1 > AV_USAGE_MAX_EVENT) {
        u->incomplete = 1;
        return 0;
    }
    grow(&u->data, &u->data_cap, u->data_len + n + 1);
    if (u->data_len > 0)
        u->data[u->data_len++] = '\n'; /* data lines of one event are joined */
    memcpy(u->data + u->data_len, s, n);
    u->data_len += n;
    return 0;
}

static void emit_held(av_usage_t *u, av_usage_emit_cb emit, void *arg)
{
    if (u->held_len > 0) {
        emit(arg, u->held, u->held_len);
        u->held_len = 0;
    }
}

/* A whole event at s that is a token chunk like the last one: the
 * template's bytes ("data: " and the chunk's) around one string, then the
 * rest of it and the blank line, read without splitting it into lines.
 * Returns its length, or 0 when it is not one. */
static size_t same_event(av_usage_t *u, const char *s, size_t n, uint64_t now_us)
{
    size_t pre = EV_PRE + u->tmpl_pre, suf = u->tmpl_suf + 2;
    if (u->tmpl_pre == 0 || n < pre + suf || memcmp(s, u->tmpl, pre) != 0)
        return 0;
    size_t open = pre - 1, q = av_jscan_string_len(s + open, n - open);
    if (q == 0 || open + q - 1 + suf > n)
        return 0;
    size_t close = open + q - 1;
    if (memcmp(s + close, u->tmpl + pre, suf) != 0)
        return 0;
    av_jmember_t m = {.val = s + open, .val_len = q, .type = '"'};
    text(u, &m, now_us);
    return close + suf;
}

void av_usage_feed(av_usage_t *u, const char *data, size_t len, uint64_t now_us, av_usage_emit_cb emit, void *arg)
{
    if (len == 0)
        return;
    if (u->body_us == 0)
        u->body_us = now_us;
    if (!u->stream) {
        if (u->len + len > AV_USAGE_MAX_EVENT) {
            u->incomplete = 1;
            return;
        }
        grow(&u->buf, &u->cap, u->len + len);
        memcpy(u->buf + u->len, data, len);
        u->len += len;
        return;
    }
    /* strip: bytes [fwd, ev) go to the client as one piece; [ev, ...) is the event being read */
    size_t pos = 0, fwd = 0, ev = 0;
    while (pos < len) {
        size_t same;
        if (u->len == 0 && !u->skip_line && u->pend == NULL && u->data_len == 0 &&
            (same = same_event(u, data + pos, len - pos, now_us)) > 0) {
            pos += same; /* an event's end, not the usage chunk's */
            if (u->strip) {
                emit_held(u, emit, arg);
                ev = pos;
            }
            continue;
        }
        const char *nl = memchr(data + pos, '\n', len - pos);
        if (nl == NULL) { /* a line continued in the next read */
            size_t n = len - pos;
            if (!u->skip_line && u->len + n <= AV_USAGE_MAX_EVENT) {
                grow(&u->buf, &u->cap, u->len + n);
                memcpy(u->buf + u->len, data + pos, n);
                u->len += n;
            } else {
                u->skip_line = 1;
                u->incomplete = 1;
            }
            break;
        }
        size_t n = (size_t)(nl - (data + pos));
        int ended = 0, drop = 0;
        if (u->len > 0 || u->skip_line) { /* the rest of a line begun earlier */
            if (!u->skip_line && u->len + n <= AV_USAGE_MAX_EVENT) {
                grow(&u->buf, &u->cap, u->len + n);
                memcpy(u->buf + u->len, data + pos, n);
                drop = line(u, u->buf, u->len + n, 0, now_us, &ended);
            } else {
                u->incomplete = 1;
            }
            u->len = 0;
            u->skip_line = 0;
        } else {
            drop = line(u, data + pos, n, 1, now_us, &ended);
        }
        pos += n + 1;
        if (u->strip && ended) {
            if (drop) { /* the usage chunk: what came before it goes, it does not */
                if (ev > fwd)
                    emit(arg, data + fwd, ev - fwd);
                u->held_len = 0;
                fwd = pos;
            } else {
                emit_held(u, emit, arg); /* an event begun in an earlier read, now whole */
            }
            ev = pos;
        }
    }
    keep_pending(u); /* the caller's buffer goes away when this returns */
    if (u->strip) {
        if (ev > fwd)
            emit(arg, data + fwd, ev - fwd);
        if (len > ev) {
            grow(&u->held, &u->held_cap, u->held_len + (len - ev));
            memcpy(u->held + u->held_len, data + ev, len - ev);
            u->held_len += len - ev;
        }
    }
}

void av_usage_end(av_usage_t *u, uint64_t now_us, av_usage_emit_cb emit, void *arg)
{
    if (u->stream) {
        int ended;
        if (u->len > 0 && !u->skip_line)
            line(u, u->buf, u->len, 0, now_us, &ended);
        u->len = 0;
        dispatch(u, now_us); /* a last event without its blank line still counts */
        if (u->strip && emit != NULL)
            emit_held(u, emit, arg);
        return;
    }
    if (u->len == 0 || u->incomplete)
        return;
    size_t i = 0;
    while (i < u->len && (u->buf[i] == ' ' || u->buf[i] == '\n' || u->buf[i] == '\r' || u->buf[i] == '\t'))
        i++;
    if (i < u->len && u->buf[i] == '{') { /* a whole answer: its text came with the body's first byte */
        read_json(u, u->buf, u->len, u->body_us ? u->body_us : now_us);
        if (u->dialect == AV_DIALECT_RESPONSES)
            read_response_object(u, u->buf, u->len, u->body_us ? u->body_us : now_us);
    }
    u->len = 0;
}

int64_t av_usage_gap_p50_us(const av_usage_t *u)
{
    uint64_t total = u->ngaps, seen = 0;
    if (total == 0)
        return -1;
    for (int b = 0; b < AV_USAGE_GAP_BUCKETS; b++) {
        seen += u->gaps[b];
        if (seen * 2 >= total)
            return (int64_t)av_hist_mid((unsigned)b);
    }
    return -1;
}

void av_usage_tokens(const av_usage_t *u, size_t request_bytes, av_tokens_t *t)
{
    int64_t cached = u->cached > 0 ? u->cached : 0, write = u->cache_write > 0 ? u->cache_write : 0;
    t->cached = cached;
    t->cache_write = write;
    t->reasoning = u->reasoning > 0 ? u->reasoning : 0;
    t->estimated = !u->reported || u->untrusted;
    int64_t text_est = u->chars > 0 ? (int64_t)((u->chars + 3) / 4) : (int64_t)u->token_events;
    if (!t->estimated) {
        int64_t in = u->input > 0 ? u->input : 0;
        /* Anthropic's input_tokens leaves out cache reads and writes; OpenAI's prompt_tokens has them */
        t->input = u->dialect == AV_DIALECT_ANTHROPIC ? in + cached + write : in;
        t->output = u->output > 0 ? u->output : 0;
        if (u->stream && u->dialect == AV_DIALECT_ANTHROPIC && !u->output_final) {
            /* cut before the message_delta: message_start's output count is
             * its first token only; what was relayed says more */
            t->estimated = 1;
            if (text_est > t->output)
                t->output = text_est;
        }
        return;
    }
    t->input = (int64_t)((request_bytes + 3) / 4);
    t->output = text_est;
}

int64_t av_usage_cost_pico(const av_tokens_t *t, const av_price_t *p)
{
    int64_t uncached = t->input - t->cached - t->cache_write;
    if (uncached < 0)
        uncached = 0;
    int64_t reasoning = t->reasoning < t->output ? t->reasoning : t->output;
    const int64_t n[5] = {uncached, t->cached, t->cache_write, t->output - reasoning, reasoning};
    const int64_t price[5] = {p->input, p->cached_input, p->cache_write, p->output, p->reasoning};
    int64_t sum = 0;
    for (int i = 0; i < 5; i++) {
        int64_t part;
        if (__builtin_mul_overflow(n[i], price[i], &part) || __builtin_add_overflow(sum, part, &sum))
            return INT64_MAX;
    }
    return sum;
}
