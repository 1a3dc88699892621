/* reqbody.c: the request body's JSON as the variant wants it. The scan
 * notes where things are; the rewrite is a list of edits (replace a value,
 * add members after the opening brace) applied in one pass, so a body the
 * variant does not change is not copied at all. */
#include "reqbody.h"

#include <event2/buffer.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "arena.h"
#include "av.h"
#include "jsonw.h"
#include "errclass.h"

#define ADD_LIT(buf, lit) evbuffer_add((buf), (lit), sizeof(lit) - 1)

static int on_member(void *arg, const av_jmember_t *m)
{
    av_body_t *b = arg;
    b->n_members++;
    const av_route_t *rt = b->route;
    for (size_t i = 0, k = 0; i < rt->nsticky; i++) {
        if (rt->sticky[i].kind != AV_STICKY_BODY)
            continue;
        if (av_jscan_key_is(m, rt->sticky[i].path[0])) {
            b->sticky_top[k] = *m; /* the last one wins, as with most parsers */
            b->sticky_found[k] = 1;
        }
        k++;
    }
    if (av_jscan_key_is(m, "messages")) {
        b->messages = *m;
        b->has_messages = 1;
    } else if (av_jscan_key_is(m, "instructions")) {
        b->instructions = *m;
        b->has_instructions = 1;
    } else if (av_jscan_key_is(m, "system")) {
        b->system = *m;
        b->has_system = 1;
    } else if (av_jscan_key_is(m, "stream")) {
        b->stream = m->type == 't';
    } else if (av_jscan_key_is(m, "stream_options")) {
        b->stream_options = *m;
        b->has_stream_options = 1;
    }
    if (!av_jscan_key_is(m, "model"))
        return 0;
    if (b->n_model == sizeof(b->model) / sizeof(b->model[0])) {
        b->too_many = 1;
        return 1;
    }
    b->model[b->n_model++] = *m;
    return 0;
}

/* Keyed on the body, not its label: clients often send JSON as form data (curl -d). */
int av_body_scan(av_req_t *req, av_body_t *b)
{
    size_t len = evbuffer_get_length(req->body);
    b->route = req->route;
    if (len == 0)
        return 0;
    const char *text = (const char *)evbuffer_pullup(req->body, -1);
    size_t first = 0;
    while (first < len && (text[first] == ' ' || text[first] == '\t' || text[first] == '\r' || text[first] == '\n'))
        first++;
    if (first == len || text[first] != '{')
        return 0;
    size_t err_off = 0;
    if (av_jscan_object(text, len, on_member, b, &err_off) != 0) {
        req->error = AV_ERR_INVALID_JSON;
        snprintf(b->error, sizeof(b->error), "request body is not valid JSON (error at byte %zu)", err_off);
        return -1;
    }
    if (b->too_many) {
        req->error = AV_ERR_INVALID_JSON;
        snprintf(b->error, sizeof(b->error), "request body repeats \"model\" too often");
        return -1;
    }
    b->text = text;
    b->len = len;
    b->first = first;
    if (b->n_model > 0) {
        const av_jmember_t *m = &b->model[b->n_model - 1]; /* the one most parsers keep */
        if (m->type == '"') {
            char *s = av_arena_alloc(req->arena, m->val_len);
            if (av_jscan_unescape(m->val + 1, m->val_len - 2, s) >= 0)
                req->client_model = s;
        }
    }
    req->model = req->client_model;
    return 0;
}

typedef struct {
    const char *name;
    av_jmember_t found;
    int hit;
} find_t;

static int on_find(void *arg, const av_jmember_t *m)
{
    find_t *f = arg;
    if (av_jscan_key_is(m, f->name)) {
        f->found = *m;
        f->hit = 1;
    }
    return 0;
}

/* A member of an object value, by name. */
static int find_member(const av_jmember_t *obj, const char *name, av_jmember_t *out)
{
    if (obj->type != '{')
        return 0;
    find_t f = {.name = name};
    size_t err_off;
    if (av_jscan_object(obj->val, obj->val_len, on_find, &f, &err_off) != 0 || !f.hit)
        return 0;
    *out = f.found;
    return 1;
}

/* A string member's value, decoded into the arena. */
static const char *decode(av_req_t *req, const av_jmember_t *m, size_t *len)
{
    if (m->type != '"')
        return NULL;
    char *s = av_arena_alloc(req->arena, m->val_len);
    long n = av_jscan_unescape(m->val + 1, m->val_len - 2, s);
    if (n < 0)
        return NULL;
    *len = (size_t)n;
    return s;
}

const char *av_body_sticky_key(av_req_t *req, const av_body_t *b, size_t k, size_t *len)
{
    if (b->text == NULL || !b->sticky_found[k])
        return NULL;
    const av_sticky_src_t *src = NULL;
    for (size_t i = 0, j = 0; i < req->route->nsticky; i++)
        if (req->route->sticky[i].kind == AV_STICKY_BODY && j++ == k)
            src = &req->route->sticky[i];
    av_jmember_t m = b->sticky_top[k];
    for (size_t d = 1; d < src->npath; d++)
        if (!find_member(&m, src->path[d], &m))
            return NULL;
    if (m.type == '0') {
        *len = m.val_len;
        return m.val;
    }
    const char *s = decode(req, &m, len);
    return s != NULL && *len > 0 ? s : NULL;
}

static int ends_with(const char *s, size_t n, const char *suffix)
{
    size_t k = strlen(suffix);
    return n >= k && memcmp(s + n - k, suffix, k) == 0;
}

/* The path's length: the query and trailing slashes left out. */
static size_t path_len(const av_req_t *req)
{
    size_t n = strcspn(req->target, "?");
    if (n > req->target_len)
        n = req->target_len;
    while (n > 1 && req->target[n - 1] == '/')
        n--;
    return n;
}

int av_body_dialect(const av_req_t *req)
{
    if (req->route != NULL && req->route->dialect != AV_DIALECT_AUTO)
        return req->route->dialect;
    if (req->target == NULL)
        return AV_DIALECT_AUTO;
    size_t n = path_len(req);
    if (ends_with(req->target, n, "/chat/completions"))
        return AV_DIALECT_CHAT;
    if (ends_with(req->target, n, "/completions"))
        return AV_DIALECT_COMPLETIONS;
    if (ends_with(req->target, n, "/embeddings"))
        return AV_DIALECT_EMBEDDINGS;
    if (ends_with(req->target, n, "/responses"))
        return AV_DIALECT_RESPONSES;
    if (ends_with(req->target, n, "/messages") || ends_with(req->target, n, "/messages/count_tokens"))
        return AV_DIALECT_ANTHROPIC;
    return AV_DIALECT_AUTO;
}

int av_body_counts_only(const av_req_t *req)
{
    size_t n = path_len(req);
    return ends_with(req->target, n, "/count_tokens") || ends_with(req->target, n, "/responses/input_tokens");
}

/* ---- edits ---- */

typedef struct {
    size_t at, del;         /* replace del bytes at offset at ... */
    const char *bytes;      /* ... with len bytes that outlive the edit ... */
    size_t len;
    struct evbuffer *ins;   /* ... or, when built piece by piece, with these */
} edit_t;

typedef struct {
    av_arena_t *arena;
    edit_t e[AV_BODY_MAX_PARAMS + 8];
    size_t n;
    struct {
        const char *name;
        const char *p; /* "name":value, in the arena */
        size_t len;
    } add[AV_BODY_MAX_PARAMS + 8]; /* members added after the opening brace */
    size_t nadd;
    int full; /* an edit did not fit */
} edits_t;

static edit_t *new_edit(edits_t *ed, const av_jmember_t *m, const char *text)
{
    if (ed->n == AV_NELEMS(ed->e)) {
        ed->full = 1; /* the body is refused: an edit left out would let the client's value stand */
        return NULL;
    }
    edit_t *e = &ed->e[ed->n++];
    *e = (edit_t){.at = (size_t)(m->val - text), .del = m->val_len};
    return e;
}

/* Member m's value is to be replaced by what goes into the buffer returned. */
static struct evbuffer *replace(edits_t *ed, const av_jmember_t *m, const char *text)
{
    edit_t *e = new_edit(ed, m, text);
    if (e == NULL)
        return NULL;
    e->ins = evbuffer_new();
    return e->ins;
}

/* Member m's value is to be replaced by len bytes that live as long as the request. */
static void replace_with(edits_t *ed, const av_jmember_t *m, const char *text, const char *bytes, size_t len)
{
    edit_t *e = new_edit(ed, m, text);
    if (e != NULL) {
        e->bytes = bytes;
        e->len = len;
    }
}

static void add_member(edits_t *ed, const char *name, const char *json, size_t json_len)
{
    if (ed->nadd == AV_NELEMS(ed->add)) {
        ed->full = 1;
        return;
    }
    for (size_t i = 0; i < ed->nadd; i++)
        if (strcmp(ed->add[i].name, name) == 0)
            return; /* the first edit of a member wins */
    size_t nl = strlen(name);
    char *p = av_arena_alloc(ed->arena, AV_JW_STR_MAX(nl) + 1 + json_len), *q = av_jw_str(p, name, nl);
    *q++ = ':';
    memcpy(q, json, json_len);
    ed->add[ed->nadd].name = name;
    ed->add[ed->nadd].p = p;
    ed->add[ed->nadd++].len = (size_t)(q - p) + json_len;
}

/* A JSON string in the arena. */
static const char *arena_json_str(av_arena_t *a, const char *s, size_t *len)
{
    size_t n = strlen(s);
    char *p = av_arena_alloc(a, AV_JW_STR_MAX(n));
    *len = (size_t)(av_jw_str(p, s, n) - p);
    return p;
}

typedef struct {
    const av_variant_t *v;
    av_jmember_t hits[AV_BODY_MAX_PARAMS];
    size_t nhits;
    int present[AV_BODY_MAX_PARAMS];
    size_t which[AV_BODY_MAX_PARAMS];
    int overflow;
} params_scan_t;

static int on_param(void *arg, const av_jmember_t *m)
{
    params_scan_t *p = arg;
    for (size_t i = 0; i < p->v->nparams && i < AV_BODY_MAX_PARAMS; i++)
        if (av_jscan_key_is(m, p->v->params[i].name)) {
            if (p->nhits == AV_BODY_MAX_PARAMS) {
                p->overflow = 1; /* a copy left unedited would keep the client's value: refused */
                return 1;
            }
            p->which[p->nhits] = i;
            p->hits[p->nhits++] = *m;
            p->present[i] = 1;
        }
    return 0;
}

/* The variant's params: every member of that name gets the value; absent ones are added. */
static void edit_params(const av_body_t *b, const av_variant_t *v, edits_t *ed)
{
    params_scan_t p = {.v = v};
    size_t err_off;
    av_jscan_object(b->text, b->len, on_param, &p, &err_off); /* scanned whole before: stops only on overflow */
    if (p.overflow) {
        ed->full = 1;
        return;
    }
    for (size_t h = 0; h < p.nhits; h++) {
        const av_param_t *pa = &v->params[p.which[h]];
        replace_with(ed, &p.hits[h], b->text, pa->json, pa->json_len);
    }
    for (size_t i = 0; i < v->nparams && i < AV_BODY_MAX_PARAMS; i++)
        if (!p.present[i])
            add_member(ed, v->params[i].name, v->params[i].json, v->params[i].json_len);
}

typedef struct {
    struct evbuffer *out;
    int replace;
} msgs_t;

static int is_system_message(const av_jmember_t *e)
{
    av_jmember_t role;
    if (!find_member(e, "role", &role) || role.type != '"' || role.val_len > 64)
        return 0;
    char buf[64]; /* "\u0073ystem" is "system" too */
    long n = av_jscan_unescape(role.val + 1, role.val_len - 2, buf);
    return (n == 6 && memcmp(buf, "system", 6) == 0) || (n == 9 && memcmp(buf, "developer", 9) == 0);
}

static int on_message(void *arg, const av_jmember_t *e)
{
    msgs_t *m = arg;
    if (m->replace && is_system_message(e))
        return 0;
    evbuffer_add(m->out, ",", 1);
    evbuffer_add(m->out, e->val, e->val_len);
    return 0;
}

/* "prompt\n\n" + the client's own string, as a JSON string. */
static void prepend_text(av_req_t *req, struct evbuffer *out, const av_prompt_t *p, const av_jmember_t *m)
{
    size_t len = 0;
    const char *theirs = decode(req, m, &len);
    if (theirs == NULL || len == 0) {
        evbuffer_add(out, p->json, p->json_len);
        return;
    }
    char *both = av_arena_alloc(req->arena, p->len + 2 + len);
    memcpy(both, p->text, p->len);
    memcpy(both + p->len, "\n\n", 2);
    memcpy(both + p->len + 2, theirs, len);
    av_json_str(out, both, p->len + 2 + len);
}

static void edit_prompt(av_req_t *req, const av_body_t *b, const av_variant_t *v, int dialect, edits_t *ed)
{
    const av_prompt_t *p = &v->prompt;
    if (dialect == AV_DIALECT_AUTO && b->has_messages)
        dialect = AV_DIALECT_CHAT;
    if (dialect == AV_DIALECT_CHAT) {
        struct evbuffer *out = b->has_messages && b->messages.type == '[' ? replace(ed, &b->messages, b->text)
                                                                           : NULL;
        struct evbuffer *elem = evbuffer_new();
        ADD_LIT(elem, "[{\"role\":\"system\",\"content\":");
        evbuffer_add(elem, p->json, p->json_len);
        evbuffer_add(elem, "}", 1);
        if (out != NULL) {
            evbuffer_add_buffer(out, elem);
            msgs_t m = {.out = out, .replace = v->prompt_replace};
            size_t err_off;
            av_jscan_array(b->messages.val, b->messages.val_len, on_message, &m, &err_off);
            evbuffer_add(out, "]", 1);
        } else if (!b->has_messages) {
            evbuffer_add(elem, "]", 1);
            size_t n = evbuffer_get_length(elem);
            add_member(ed, "messages", (const char *)evbuffer_pullup(elem, -1), n);
        }
        evbuffer_free(elem);
        return;
    }
    const char *field = dialect == AV_DIALECT_RESPONSES ? "instructions" : dialect == AV_DIALECT_ANTHROPIC ? "system"
                                                                                                         : NULL;
    if (field == NULL)
        return; /* completions and embeddings have no system message */
    int has = dialect == AV_DIALECT_RESPONSES ? b->has_instructions : b->has_system;
    const av_jmember_t *m = dialect == AV_DIALECT_RESPONSES ? &b->instructions : &b->system;
    if (!has) {
        add_member(ed, field, p->json, p->json_len);
        return;
    }
    struct evbuffer *out = replace(ed, m, b->text);
    if (out == NULL)
        return;
    if (v->prompt_replace || m->type == 'n') {
        evbuffer_add(out, p->json, p->json_len);
    } else if (m->type == '[') { /* Anthropic's list of content blocks: ours first */
        ADD_LIT(out, "[{\"type\":\"text\",\"text\":");
        evbuffer_add(out, p->json, p->json_len);
        evbuffer_add(out, "}", 1);
        const char *inner = m->val + 1;
        size_t inner_len = m->val_len - 2;
        size_t k = 0;
        while (k < inner_len && (inner[k] == ' ' || inner[k] == '\n' || inner[k] == '\r' || inner[k] == '\t'))
            k++;
        if (k < inner_len)
            evbuffer_add(out, ",", 1);
        evbuffer_add(out, inner, inner_len);
        evbuffer_add(out, "]", 1);
    } else {
        prepend_text(req, out, p, m);
    }
}

typedef struct {
    struct evbuffer *out;
    int asked;
} stream_opts_t;

static int on_stream_opt(void *arg, const av_jmember_t *m)
{
    stream_opts_t *o = arg;
    if (av_jscan_key_is(m, "include_usage")) {
        o->asked = m->type == 't';
        return 0; /* ours replaces it */
    }
    if (o->out == NULL)
        return 0; /* only looking for include_usage */
    evbuffer_add(o->out, ",\"", 2);
    evbuffer_add(o->out, m->key, m->key_len);
    evbuffer_add(o->out, "\":", 2);
    evbuffer_add(o->out, m->val, m->val_len);
    return 0;
}

/* Whether this request should ask for the usage chunk on the client's behalf. */
static int wants_stream_usage(const av_req_t *req, const av_body_t *b)
{
    if (!b->stream || !req->variant->backend->stream_usage)
        return 0;
    int d = av_body_dialect(req);
    if (d == AV_DIALECT_AUTO && b->has_messages)
        d = AV_DIALECT_CHAT;
    if (d != AV_DIALECT_CHAT && d != AV_DIALECT_COMPLETIONS)
        return 0;
    if (b->has_stream_options && b->stream_options.type == '{') {
        stream_opts_t o = {0};
        size_t off;
        av_jscan_object(b->stream_options.val, b->stream_options.val_len, on_stream_opt, &o, &off);
        return !o.asked; /* the client asked: its stream has the chunk, as it wants */
    }
    return !b->has_stream_options || b->stream_options.type == 'n';
}

/* stream_options with include_usage true, the client's other options kept. */
static void edit_stream_usage(const av_body_t *b, edits_t *ed)
{
    if (!b->has_stream_options) {
        static const char opt[] = "{\"include_usage\":true}";
        add_member(ed, "stream_options", opt, sizeof(opt) - 1);
        return;
    }
    struct evbuffer *out = replace(ed, &b->stream_options, b->text);
    if (out == NULL)
        return;
    ADD_LIT(out, "{\"include_usage\":true");
    if (b->stream_options.type == '{') {
        stream_opts_t o = {.out = out};
        size_t off;
        av_jscan_object(b->stream_options.val, b->stream_options.val_len, on_stream_opt, &o, &off);
    }
    ADD_LIT(out, "}");
}

static void free_body(const void *data, size_t len, void *arg)
{
    (void)len;
    (void)arg;
    free((void *)data);
}

/* Whether the variant's params set a member: then its value is the one sent. */
static int sets_param(const av_variant_t *v, const char *name)
{
    for (size_t i = 0; i < v->nparams; i++)
        if (strcmp(v->params[i].name, name) == 0)
            return 1;
    return 0;
}

/* Edits in body order. Two edits of one member cannot both apply (the
 * config keeps a variant's params off the members the gateway edits);
 * should they meet, the first made wins and the later is dropped, so the
 * body written is never torn. */
static void order_edits(edits_t *ed)
{
    for (size_t i = 1; i < ed->n; i++) /* insertion sort: stable, and a body has few edits */
        for (size_t j = i; j > 0 && ed->e[j].at < ed->e[j - 1].at; j--) {
            edit_t t = ed->e[j];
            ed->e[j] = ed->e[j - 1];
            ed->e[j - 1] = t;
        }
    size_t kept = 0, end = 0;
    for (size_t i = 0; i < ed->n; i++) {
        edit_t *e = &ed->e[i];
        if (kept > 0 && e->at < end) {
            if (e->ins != NULL)
                evbuffer_free(e->ins);
            continue;
        }
        end = e->at + e->del;
        ed->e[kept++] = *e;
    }
    ed->n = kept;
}

int av_body_rewrite(av_req_t *req, const av_body_t *b)
{
    const av_variant_t *v = req->variant;
    const char *want = v->model;
    int model_same = want == NULL || (req->client_model != NULL && strcmp(want, req->client_model) == 0 &&
                                      b->n_model == 1);
    int stream_usage = b->text != NULL && wants_stream_usage(req, b) && !sets_param(v, "stream_options");
    if (b->text == NULL || (model_same && v->nparams == 0 && v->prompt.text == NULL && !stream_usage))
        return 0;
    edits_t ed;
    ed.arena = req->arena;
    ed.n = ed.nadd = 0;
    ed.full = 0;
    if (!model_same) {
        size_t wl;
        const char *wj = arena_json_str(req->arena, want, &wl);
        for (size_t i = 0; i < b->n_model; i++)
            replace_with(&ed, &b->model[i], b->text, wj, wl);
        if (b->n_model == 0)
            add_member(&ed, "model", wj, wl);
        req->model = want;
    }
    if (v->nparams > 0)
        edit_params(b, v, &ed);
    if (v->prompt.text != NULL)
        edit_prompt(req, b, v, av_body_dialect(req), &ed);
    if (stream_usage) {
        edit_stream_usage(b, &ed);
        req->strip_usage = 1;
    }
    if (ed.full) {
        for (size_t i = 0; i < ed.n; i++)
            if (ed.e[i].ins != NULL)
                evbuffer_free(ed.e[i].ins);
        return AV_ELIMIT;
    }
    order_edits(&ed);
    /* the new body in one piece: at most the old one, the added members with their
     * commas and the edits' bytes */
    size_t cap = b->len + 1;
    for (size_t i = 0; i < ed.nadd; i++)
        cap += ed.add[i].len + 1;
    for (size_t i = 0; i < ed.n; i++)
        cap += ed.e[i].ins != NULL ? evbuffer_get_length(ed.e[i].ins) : ed.e[i].len;
    char *nb = av_malloc(cap), *p = nb;
    size_t at = b->first + 1;
    p = av_put(p, b->text, at);
    for (size_t i = 0; i < ed.nadd; i++) {
        if (i > 0)
            *p++ = ',';
        p = av_put(p, ed.add[i].p, ed.add[i].len);
    }
    if (ed.nadd > 0 && b->n_members > 0)
        *p++ = ',';
    for (size_t i = 0; i < ed.n; i++) {
        edit_t *e = &ed.e[i];
        p = av_put(p, b->text + at, e->at - at);
        if (e->ins != NULL) {
            size_t n = evbuffer_get_length(e->ins);
            evbuffer_copyout(e->ins, p, n);
            p += n;
            evbuffer_free(e->ins);
        } else {
            p = av_put(p, e->bytes, e->len);
        }
        at = e->at + e->del;
    }
    p = av_put(p, b->text + at, b->len - at);
    evbuffer_drain(req->body, b->len);
    evbuffer_add_reference(req->body, nb, (size_t)(p - nb), free_body, NULL);
    if (v->prompt.text != NULL)
        req->prompt_hash = v->prompt.hash;
    return 0;
}
