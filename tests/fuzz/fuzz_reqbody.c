/* fuzz_reqbody.c: the request body rewrite (reqbody.c) for every mix of a
 * variant's edits: model, system prompt (prepend or replace, in each
 * dialect), params (several, repeated, stream_options among them), the
 * stream usage edit, and the route's body sticky keys. A JSON object in
 * gives a JSON object out (cJSON and the scanner both read it) in which:
 * every "model" is the variant's; each param has its value; the system
 * prompt is where the dialect wants it and the client's messages follow
 * it; stream_options asks for usage exactly when the gateway strips the
 * usage chunk; and every other member is the client's, byte for byte in
 * meaning, in order. Sticky keys read what cJSON reads there.
 * Input: two flags bytes, a params byte (count, 0-4), a byte per param
 * (name and value from the tables below), then the body.
 * fuzz-options: -max_len=4096 */
#include <cjson/cJSON.h>
#include <event2/buffer.h>
#include <stdarg.h>

#include "arena.h"
#include "av.h"
#include "config.h"
#include "fuzz.h"
#include "jscan.h"
#include "jsonw.h"
#include "reqbody.h"
#include "req.h"
#include "req_t.h"


static const char *const paths[] = {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses",
                                    "/v1/messages", "/v1/other", "/v1/chat/completions/?x=/v1/messages",
                                    "/v1/messages/count_tokens?beta=1"};
static const char *const models[] = {NULL, "m2", "gpt \"q\" \xc3\xa9\\", "gpt-4o"};
static const char *const prompts[] = {"Be brief.", "P \"q\"\n\\ \xe2\x80\xa8", "x", "{{not a var}}"};
/* names a config can give params (not "model"; the prompt's members only without a prompt) */
static const char *const param_names[] = {"temperature", "max_tokens", "stream_options", "top_p", "user", "n",
                                          "tools", "a\"b", "messages", "system", "instructions", "stream",
                                          "metadata", "temperature", "stop", "seed"};
static const char *const param_values[] = {"0.2", "64", "null", "true", "[]", "{\"include_usage\":false}", "\"s\"",
                                           "{\"a\":[1,2],\"include_usage\":true}"};
static const char *const sticky_paths[][3] = {{"user", NULL, NULL}, {"metadata", "user_id", NULL},
                                               {"a", "b", "c"}, {"model", NULL, NULL}};

typedef struct {
    av_arena_t *arena;
    av_route_t route;
    av_variant_t v;
    av_backend_t b;
    av_param_t params[4];
    av_sticky_src_t sticky[4];
    av_req_t req;
    int nul_escape; /* the body has a \u0000, where cJSON cuts a key or string short */
} setup_t;

static void setup(setup_t *x, fuzz_in_t *in)
{
    unsigned f0 = fuzz_byte(in), f1 = fuzz_byte(in), np = fuzz_byte(in) % 5;
    memset(x, 0, sizeof(*x));
    x->arena = av_arena_new(0);
    av_route_t *r = &x->route;
    av_variant_t *v = &x->v;
    r->name = r->salt = "r";
    r->variants = v;
    r->nvariants = 1;
    r->dialect = (int)((f0 >> 3) & 7) % 6;
    x->b.stream_usage = (f1 >> 2) & 1;
    v->name = "v";
    v->backend = &x->b;
    v->model = models[f1 & 3];
    if (f0 & 0x40) {
        const char *t = prompts[(f1 >> 5) & 3];
        size_t n = strlen(t);
        char *json = av_arena_alloc(x->arena, AV_JW_STR_MAX(n));
        v->prompt = (av_prompt_t){.text = t, .len = n, .json = json, .json_len = (size_t)(av_jw_str(json, t, n) - json),
                                  .hash = "0123456789abcdef"};
        v->prompt_replace = (f0 >> 7) & 1;
    }
    for (unsigned i = 0; i < np; i++) {
        unsigned p = fuzz_byte(in);
        const char *name = param_names[p & 15];
        /* the config refuses these beside a system prompt */
        if (v->prompt.text != NULL &&
            (strcmp(name, "messages") == 0 || strcmp(name, "system") == 0 || strcmp(name, "instructions") == 0))
            continue;
        x->params[v->nparams++] = (av_param_t){name, param_values[p >> 5], strlen(param_values[p >> 5])};
    }
    v->params = x->params;
    if (f1 & 8) {
        for (size_t i = 0; i < AV_NELEMS(sticky_paths); i++) {
            av_sticky_src_t *s = &x->sticky[i];
            s->kind = AV_STICKY_BODY;
            for (size_t d = 0; d < 3 && sticky_paths[i][d] != NULL; d++)
                s->path[s->npath++] = sticky_paths[i][d];
        }
        r->sticky = x->sticky;
        r->nsticky = r->nsticky_body = AV_NELEMS(sticky_paths);
    }
    av_req_t *q = &x->req;
    q->arena = x->arena;
    q->route = r;
    q->variant = v;
    q->target = paths[f0 & 7];
    q->target_len = strlen(q->target);
    q->body = evbuffer_new();
    /* the body in two pieces, as it may arrive, unless the flag says one */
    size_t cut = (f1 & 16) && in->n > 1 ? in->n / 2 : in->n;
    evbuffer_add(q->body, in->p, cut);
    evbuffer_add(q->body, in->p + cut, in->n - cut);
}

/* ---- cJSON helpers ---- */

static const cJSON *last_named(const cJSON *o, const char *name)
{
    const cJSON *hit = NULL;
    for (const cJSON *c = o->child; c != NULL; c = c->next)
        if (strcmp(c->string, name) == 0)
            hit = c;
    return hit;
}

static int is_param(const av_variant_t *v, const char *name)
{
    for (size_t i = 0; i < v->nparams; i++)
        if (strcmp(v->params[i].name, name) == 0)
            return 1;
    return 0;
}

/* The first param of that name: the one the rewrite keeps. */
static const av_param_t *param(const av_variant_t *v, const char *name)
{
    for (size_t i = 0; i < v->nparams; i++)
        if (strcmp(v->params[i].name, name) == 0)
            return &v->params[i];
    return NULL;
}

static cJSON *parse(const char *s, size_t n)
{
    return cJSON_ParseWithLengthOpts(s, n, NULL, 0);
}

/* Strictly one JSON object, by both readers. */
static cJSON *strict_object(const char *s, size_t n)
{
    size_t off;
    if (av_jscan_object(s, n, NULL, NULL, &off) != 0)
        return NULL;
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(s, n, &end, 0);
    if (j == NULL || !cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return NULL;
    }
    return j;
}

static int dialect_of(const setup_t *x, const cJSON *in)
{
    int d = av_body_dialect(&x->req);
    if (d == AV_DIALECT_AUTO && last_named(in, "messages") != NULL)
        d = AV_DIALECT_CHAT;
    return d;
}

/* The member the system prompt goes into, or NULL. */
static const char *prompt_member(int d)
{
    return d == AV_DIALECT_CHAT ? "messages" : d == AV_DIALECT_RESPONSES ? "instructions"
                                          : d == AV_DIALECT_ANTHROPIC ? "system" : NULL;
}

static int is_system_role(const cJSON *e)
{
    const cJSON *role = cJSON_IsObject(e) ? last_named(e, "role") : NULL;
    return cJSON_IsString(role) && (strcmp(role->valuestring, "system") == 0 || strcmp(role->valuestring, "developer") == 0);
}

/* ---- what the edited body must say ---- */

static void check_prompt(const setup_t *x, const cJSON *in, const cJSON *out, int d)
{
    const av_variant_t *v = &x->v;
    const char *field = prompt_member(d);
    if (field == NULL)
        return;
    const cJSON *theirs = last_named(in, field), *ours = last_named(out, field);
    FUZZ_CHECK(ours != NULL, "no \"%s\" for the system prompt", field);
    if (d == AV_DIALECT_CHAT) {
        if (theirs != NULL && !cJSON_IsArray(theirs)) {
            FUZZ_CHECK(fuzz_json_same(ours, theirs), "a \"messages\" that is no array was changed");
            return;
        }
        FUZZ_CHECK(cJSON_IsArray(ours), "\"messages\" is no array");
        const cJSON *first = ours->child;
        FUZZ_CHECK(first != NULL && cJSON_GetArraySize(first) == 2 &&
                       cJSON_IsString(last_named(first, "role")) &&
                       strcmp(last_named(first, "role")->valuestring, "system") == 0 &&
                       cJSON_IsString(last_named(first, "content")) &&
                       strcmp(last_named(first, "content")->valuestring, v->prompt.text) == 0,
                   "the first message is not the variant's system prompt");
        /* then the client's, in order; with replace, without their system messages */
        const cJSON *o = first->next;
        for (const cJSON *e = theirs ? theirs->child : NULL; e != NULL; e = e->next) {
            if (v->prompt_replace && is_system_role(e))
                continue;
            FUZZ_CHECK(o != NULL && fuzz_json_same(o, e), "the client's messages are not kept after the prompt");
            o = o->next;
        }
        FUZZ_CHECK(o == NULL, "messages the client did not send");
        return;
    }
    /* instructions (Responses) and system (Anthropic): a string, or content blocks */
    if (theirs == NULL || v->prompt_replace || cJSON_IsNull(theirs) ||
        (!cJSON_IsString(theirs) && !cJSON_IsArray(theirs))) {
        FUZZ_CHECK(cJSON_IsString(ours) && strcmp(ours->valuestring, v->prompt.text) == 0,
                   "\"%s\" is not the variant's prompt", field);
    } else if (cJSON_IsString(theirs)) {
        size_t pl = strlen(v->prompt.text), tl = strlen(theirs->valuestring);
        int alone = tl == 0;
        /* the rewrite writes the client's text again, bytes that are not UTF-8 as U+FFFD */
        if (!fuzz_utf8_valid(theirs->valuestring, tl)) {
            FUZZ_CHECK(cJSON_IsString(ours) && strncmp(ours->valuestring, v->prompt.text, pl) == 0 &&
                           strncmp(ours->valuestring + pl, "\n\n", 2) == 0,
                       "\"%s\" does not begin with the prompt and a blank line", field);
            return;
        }
        FUZZ_CHECK(cJSON_IsString(ours) &&
                       (alone ? strcmp(ours->valuestring, v->prompt.text) == 0
                              : strlen(ours->valuestring) == pl + 2 + tl &&
                                    memcmp(ours->valuestring, v->prompt.text, pl) == 0 &&
                                    memcmp(ours->valuestring + pl, "\n\n", 2) == 0 &&
                                    strcmp(ours->valuestring + pl + 2, theirs->valuestring) == 0),
                   "\"%s\" is not the prompt, a blank line, then the client's", field);
    } else if (cJSON_IsArray(theirs)) {
        FUZZ_CHECK(cJSON_IsArray(ours) && ours->child != NULL, "\"%s\": no blocks", field);
        const cJSON *first = ours->child;
        FUZZ_CHECK(cJSON_IsString(last_named(first, "type")) && strcmp(last_named(first, "type")->valuestring, "text") == 0 &&
                       cJSON_IsString(last_named(first, "text")) &&
                       strcmp(last_named(first, "text")->valuestring, v->prompt.text) == 0,
                   "\"%s\": the first block is not the prompt", field);
        const cJSON *o = first->next;
        for (const cJSON *e = theirs->child; e != NULL; e = e->next, o = o ? o->next : NULL)
            FUZZ_CHECK(o != NULL && fuzz_json_same(o, e), "\"%s\": the client's blocks are not kept", field);
        FUZZ_CHECK(o == NULL, "\"%s\": blocks the client did not send", field);
    }
}

static void check_rewrite(const setup_t *x, const cJSON *in, const cJSON *out)
{
    const av_variant_t *v = &x->v;
    const av_req_t *q = &x->req;
    int d = dialect_of(x, in);
    /* the model */
    if (v->model != NULL) {
        size_t n = 0;
        for (const cJSON *c = out->child; c != NULL; c = c->next)
            if (strcmp(c->string, "model") == 0) {
                n++;
                FUZZ_CHECK(cJSON_IsString(c) && strcmp(c->valuestring, v->model) == 0, "a \"model\" not the variant's");
            }
        FUZZ_CHECK(n >= 1, "no \"model\"");
        FUZZ_CHECK(q->model != NULL && strcmp(q->model, v->model) == 0, "req->model is not the variant's");
    }
    /* the params */
    for (size_t i = 0; i < v->nparams; i++) {
        const av_param_t *p = param(v, v->params[i].name);
        cJSON *want = parse(p->json, p->json_len);
        size_t n = 0;
        for (const cJSON *c = out->child; c != NULL; c = c->next)
            if (strcmp(c->string, p->name) == 0) {
                n++;
                FUZZ_CHECK(fuzz_json_same(c, want), "param \"%s\" is not %s", p->name, p->json);
            }
        FUZZ_CHECK(n >= 1, "param \"%s\" missing", p->name);
        cJSON_Delete(want);
    }
    /* the prompt */
    const char *field = v->prompt.text != NULL ? prompt_member(d) : NULL;
    if (v->prompt.text != NULL) {
        check_prompt(x, in, out, d);
        FUZZ_CHECK(q->prompt_hash != NULL && strcmp(q->prompt_hash, v->prompt.hash) == 0, "prompt hash");
    }
    /* usage asked for exactly when the gateway strips it */
    const cJSON *so_in = last_named(in, "stream_options"), *so_out = last_named(out, "stream_options");
    const cJSON *stream = last_named(in, "stream");
    int asked = cJSON_IsObject(so_in) && cJSON_IsTrue(last_named(so_in, "include_usage"));
    int want_strip = cJSON_IsTrue(stream) && x->b.stream_usage &&
                     (d == AV_DIALECT_CHAT || d == AV_DIALECT_COMPLETIONS) && !is_param(v, "stream_options") &&
                     (so_in == NULL || cJSON_IsNull(so_in) || (cJSON_IsObject(so_in) && !asked));
    FUZZ_CHECK(q->strip_usage == want_strip, "strip_usage %d, want %d", q->strip_usage, want_strip);
    if (want_strip) {
        FUZZ_CHECK(cJSON_IsObject(so_out) && cJSON_IsTrue(last_named(so_out, "include_usage")),
                   "stream_options does not ask for usage");
        for (const cJSON *c = so_in && cJSON_IsObject(so_in) ? so_in->child : NULL; c != NULL; c = c->next)
            if (strcmp(c->string, "include_usage") != 0) {
                const cJSON *o = last_named(so_out, c->string);
                FUZZ_CHECK(o != NULL, "stream_options lost \"%s\"", c->string);
            }
    }
    /* every other member the client's, in order */
    const cJSON *o = out->child;
    for (const cJSON *c = in->child; c != NULL; c = c->next) {
        if ((v->model && strcmp(c->string, "model") == 0) || is_param(v, c->string) ||
            (field && strcmp(c->string, field) == 0) || (want_strip && strcmp(c->string, "stream_options") == 0))
            continue;
        while (o != NULL && ((v->model && strcmp(o->string, "model") == 0) || is_param(v, o->string) ||
                             (field && strcmp(o->string, field) == 0) ||
                             (want_strip && strcmp(o->string, "stream_options") == 0)))
            o = o->next;
        FUZZ_CHECK(o != NULL && strcmp(o->string, c->string) == 0 && fuzz_json_same(o, c),
                   "the client's \"%s\" is not kept as it was, in its place", c->string);
        o = o->next;
    }
}

/* Each body sticky source reads what cJSON finds at its path (the last of a repeated name). */
static void check_sticky(setup_t *x, const av_body_t *b, const cJSON *in)
{
    for (size_t k = 0; k < x->route.nsticky_body; k++) {
        size_t len = 0;
        const char *got = av_body_sticky_key(&x->req, b, k, &len);
        const cJSON *at = in;
        for (size_t d = 0; d < x->sticky[k].npath && at != NULL; d++)
            at = cJSON_IsObject(at) ? last_named(at, x->sticky[k].path[d]) : NULL;
        if (cJSON_IsString(at) && at->valuestring[0] != '\0') {
            /* cJSON cuts a string at \u0000, which the scan refuses to decode */
            if (got != NULL)
                FUZZ_CHECK(len == strlen(at->valuestring) && memcmp(got, at->valuestring, len) == 0,
                           "sticky key %zu: \"%.*s\", cJSON \"%s\"", k, (int)len, got, at->valuestring);
        } else if (cJSON_IsNumber(at)) {
            char *num = got != NULL ? fuzz_strndup(got, len) : NULL;
            FUZZ_CHECK(num != NULL && strtod(num, NULL) == at->valuedouble, "sticky key %zu: the number", k);
            free(num);
        } else {
            FUZZ_CHECK(got == NULL, "sticky key %zu: \"%.*s\" where cJSON has no string or number", k, (int)len, got);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_in_t in = {data, size};
    setup_t x;
    setup(&x, &in);
    const char *body = (const char *)in.p;
    size_t n = in.n;
    for (size_t i = 0; i + 6 <= n && !x.nul_escape; i++)
        x.nul_escape = body[i] == '\\' && body[i + 1] == 'u' && memcmp(body + i + 2, "0000", 4) == 0;
    av_body_t b = {0};
    x.req.error = NULL;
    int rc = av_body_scan(&x.req, &b);
    FUZZ_CHECK(rc == 0 || rc == -1, "scan returned %d", rc);
    FUZZ_CHECK((rc == -1) == (x.req.error == AV_ERR_INVALID_JSON && b.error[0] != '\0'),
               "scan %d, error class %s, reason \"%s\"", rc, x.req.error ? x.req.error : "none", b.error);
    cJSON *jin = strict_object(body, n);
    if (jin != NULL) {
        size_t models = 0; /* more than four is refused on purpose */
        for (const cJSON *c = jin->child; c != NULL; c = c->next)
            models += strcmp(c->string, "model") == 0;
        if (x.nul_escape) { /* cJSON's keys may be cut short: no count to judge by */
            if (rc != 0) {
                cJSON_Delete(jin);
                jin = NULL;
            }
        } else if (models > AV_NELEMS(b.model)) {
            FUZZ_CHECK(rc == -1, "%zu \"model\" members taken", models);
            cJSON_Delete(jin);
            jin = NULL;
        } else {
            FUZZ_CHECK(rc == 0 && b.text != NULL, "a JSON object the scan refuses");
        }
    }
    if (rc == 0) {
        if (x.route.nsticky_body > 0 && jin != NULL && !x.nul_escape)
            check_sticky(&x, &b, jin);
        int wrc = av_body_rewrite(&x.req, &b);
        FUZZ_CHECK(wrc == 0 || wrc == AV_ELIMIT, "rewrite returned %d", wrc);
        size_t on = evbuffer_get_length(x.req.body);
        char *out = fuzz_strndup(evbuffer_pullup(x.req.body, -1), on);
        /* more edits than it keeps (a member the variant sets, repeated): refused, the body untouched */
        if (wrc != 0)
            FUZZ_CHECK(on == n && memcmp(out, body, n) == 0, "a refused rewrite changed the body");
        if (jin != NULL && wrc == 0) {
            cJSON *jout = strict_object(out, on);
            FUZZ_CHECK(jout != NULL, "valid JSON in, not JSON out: %.*s", (int)(on < 3000 ? on : 3000), out);
            if (!x.nul_escape) /* cJSON cuts keys and strings at \u0000: it cannot be the judge there */
                check_rewrite(&x, jin, jout);
            cJSON_Delete(jout);
        }
        free(out);
    }
    cJSON_Delete(jin);
    evbuffer_free(x.req.body);
    av_arena_free(x.arena);
    return 0;
}
