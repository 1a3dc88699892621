/* policy_test.c: `aviary policy-test`: runs policies against canned
 * requests and streams, without a network, and prints what they did; with
 * "expect" in a case, checks it (TAP lines, then "N passed, N failed"). With
 * --time, says how long each case's calls took; with --bench N, times each
 * case's phases over N more runs. */
#include "policy_test.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <event2/buffer.h>
#include <getopt.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "arena.h"
#include "av.h"
#include "config.h"
#include "headers.h"
#include "policy.h"
#include "loop.h"

static void usage_text(FILE *f)
{
    fprintf(f, "usage: aviary policy-test [--bench N] [--time] [--max-ms N] [--max-instructions N] [--quiet]\n"
               "                          POLICY.lua... CASES.json\n"
               "\n"
               "Runs the policies, in the order given, against each case of CASES.json and prints\n"
               "what they did: denies, rewritten bodies and events, stops, verdicts, errors.\n"
               "CASES.json: {\"dialect\": \"openai_chat\", \"variants\": [\"stable\", \"next\"],\n"
               "             \"params\": {\"POLICY\": {...what r:params() gives it...}},\n"
               "             \"cases\": [{\"name\": \"...\",\n"
               "                        \"request\": {\"path\": \"/v1/chat/completions\", \"headers\": {...},\n"
               "                                    \"body\": {...}},\n"
               "                        \"response\": {\"status\": 200, \"headers\": {...}},\n"
               "                        \"stream\": [\"{...event data...}\", {\"event\": \"NAME\", \"data\": {...}}],\n"
               "                        \"expect\": {\"deny\": 403 or false, \"rule\": \"...\", \"variant\": \"next\",\n"
               "                                   \"body_contains\": [...], \"body_excludes\": [...],\n"
               "                                   \"stream_contains\": [...], \"stream_excludes\": [...],\n"
               "                                   \"stopped\": true, \"verdicts\": [\"policy:action:rule\"],\n"
               "                                   \"errors\": 0}}]}\n"
               "A case without \"expect\" is only shown. The policies must be in one directory.\n"
               "  --bench N   run each case N times more and print the time per phase\n"
               "  --time      print how long each case's calls took (a TAP comment)\n"
               "  --max-ms N, --max-instructions N\n"
               "              the budget of each call (policy.max_ms, policy.max_instructions;\n"
               "              the defaults are the config's)\n"
               "  --quiet     print only the TAP lines and the summary\n"
               "Exit status: 0 when every expectation held, 1 when one did not, 2 on bad input.\n");
}

typedef struct {
    av_config_t *cfg;
    av_worker_t *worker;
    int quiet;
} pt_t;

/* What a case's run produced. */
typedef struct {
    int denied, status, stopped;
    const char *rule, *message;
    char *body;           /* the body after on_request (malloc) */
    struct evbuffer *out; /* what the client's stream got */
    size_t events, rewritten, dropped;
    uint64_t us_request, us_response, ns_chunks, us_complete;
    const char *variant;  /* the variant the request would go to: a policy's choice, else the first */
    av_verdict_t verdicts[AV_VERDICTS_MAX];
    size_t nverdicts;
    int errors;
} run_t;

static char *json_text(const cJSON *v)
{
    if (v == NULL)
        return av_strdup("");
    if (cJSON_IsString(v))
        return av_strdup(v->valuestring);
    char *s = cJSON_PrintUnformatted(v);
    if (s == NULL)
        av_oom();
    char *out = av_strdup(s);
    cJSON_free(s);
    return out;
}

static void add_headers(av_arena_t *a, av_headers_t *h, const cJSON *obj)
{
    for (const cJSON *e = obj ? obj->child : NULL; e != NULL; e = e->next)
        if (cJSON_IsString(e))
            av_headers_add(a, h, av_arena_strndup(a, e->string, strlen(e->string)), strlen(e->string),
                           av_arena_strndup(a, e->valuestring, strlen(e->valuestring)),
                           strlen(e->valuestring));
}

static void run_case(pt_t *t, const cJSON *c, run_t *res)
{
    memset(res, 0, sizeof(*res));
    const cJSON *rq = cJSON_GetObjectItemCaseSensitive(c, "request");
    av_arena_t *a = av_arena_new(4096);
    av_req_t *req = av_arena_calloc(a, sizeof(*req));
    req->arena = a;
    req->worker = t->worker;
    req->cfg = av_config_ref(t->cfg);
    req->route = &t->cfg->routes[0];
    snprintf(req->id, sizeof(req->id), "policy-test");
    const cJSON *path = cJSON_GetObjectItemCaseSensitive(rq, "path");
    const char *tp = cJSON_IsString(path) ? path->valuestring : "/v1/chat/completions";
    req->target = av_arena_strndup(a, tp, strlen(tp));
    req->target_len = strlen(req->target);
    req->method_str = "POST";
    snprintf(req->client_ip, sizeof(req->client_ip), "127.0.0.1");
    add_headers(a, &req->headers, cJSON_GetObjectItemCaseSensitive(rq, "headers"));
    req->body = evbuffer_new();
    char *body = json_text(cJSON_GetObjectItemCaseSensitive(rq, "body"));
    evbuffer_add(req->body, body, strlen(body));
    free(body);
    req->t_start_us = av_now_us();
    req->ran = 1;

    uint64_t t0 = av_now_us();
    res->denied = av_policy_request(req);
    res->us_request = av_now_us() - t0;
    size_t blen = evbuffer_get_length(req->body);
    res->body = blen > 0 ? av_strndup((const char *)evbuffer_pullup(req->body, -1), blen) : av_strdup("");
    const cJSON *resp = cJSON_GetObjectItemCaseSensitive(c, "response");
    const cJSON *stream = cJSON_GetObjectItemCaseSensitive(c, "stream");
    if (!res->denied) {
        const av_route_t *rt = req->route;
        if (req->policy_variant > 0)
            req->variant = &rt->variants[req->policy_variant - 1];
        else
            req->variant = &rt->variants[0];
        res->variant = req->variant->name;
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(resp, "status");
        req->status = cJSON_IsNumber(st) ? st->valueint : 200;
        req->stream = stream != NULL;
        av_headers_t h = {0};
        add_headers(a, &h, cJSON_GetObjectItemCaseSensitive(resp, "headers"));
        t0 = av_now_us();
        res->denied = av_policy_response(req, &h);
        res->us_response = av_now_us() - t0;
    }
    res->out = evbuffer_new();
    if (!res->denied && cJSON_IsArray(stream)) {
        for (const cJSON *e = stream->child; e != NULL && !res->stopped; e = e->next) {
            struct evbuffer *raw = evbuffer_new();
            /* {"event": NAME, "data": ...}, or the data itself (a string or JSON) */
            const cJSON *dv = cJSON_IsObject(e) ? cJSON_GetObjectItemCaseSensitive(e, "data") : NULL;
            const cJSON *name = dv != NULL ? cJSON_GetObjectItemCaseSensitive(e, "event") : NULL;
            char *data = json_text(dv != NULL ? dv : e);
            if (cJSON_IsString(name))
                evbuffer_add_printf(raw, "event: %s\n", name->valuestring);
            evbuffer_add_printf(raw, "data: %s\n\n", data);
            free(data);
            size_t before = evbuffer_get_length(res->out), n = evbuffer_get_length(raw);
            const char *p = (const char *)evbuffer_pullup(raw, -1);
            struct timespec s0, s1;
            clock_gettime(CLOCK_MONOTONIC, &s0);
            res->stopped = av_policy_chunk(req, p, n, res->out);
            clock_gettime(CLOCK_MONOTONIC, &s1);
            res->ns_chunks += (uint64_t)((s1.tv_sec - s0.tv_sec) * 1000000000L + (s1.tv_nsec - s0.tv_nsec));
            size_t got = evbuffer_get_length(res->out) - before;
            res->events++;
            if (got == 0)
                res->dropped++;
            else if (!res->stopped && (got != n || memcmp(evbuffer_pullup(res->out, -1) + before, p, n) != 0))
                res->rewritten++;
            evbuffer_free(raw);
        }
    }
    req->finished = 1;
    req->t_end_us = av_now_us();
    t0 = av_now_us();
    av_policy_complete(req);
    res->us_complete = av_now_us() - t0;
    if (res->denied) {
        const char *code, *message;
        av_policy_denial(req, &res->status, &code, &message);
        res->rule = av_strdup(code);
        res->message = av_strdup(message);
    }
    const av_verdict_t *v;
    res->nverdicts = av_policy_verdicts(req, &v);
    memcpy(res->verdicts, v, res->nverdicts * sizeof(*v));
    res->errors = av_policy_errors(req);
    av_policy_done(req);
    evbuffer_free(req->body);
    av_config_unref(req->cfg);
    av_arena_free(a);
}

static void run_free(run_t *r)
{
    free(r->body);
    free((char *)r->rule);
    free((char *)r->message);
    if (r->out != NULL)
        evbuffer_free(r->out);
}

static int contains(const char *hay, size_t n, const char *needle)
{
    return memmem(hay, n, needle, strlen(needle)) != NULL;
}

/* Checks one case's expect; prints "# ..." for each miss. Returns misses. */
static int check(const cJSON *expect, const run_t *r)
{
    int miss = 0;
    const char *out = (const char *)evbuffer_pullup(r->out, -1);
    size_t outn = evbuffer_get_length(r->out);
    const av_verdict_t *v = r->verdicts;
    size_t nv = r->nverdicts;
    int errors = r->errors;
    for (const cJSON *e = expect ? expect->child : NULL; e != NULL; e = e->next) {
        const char *k = e->string;
        if (strcmp(k, "deny") == 0) {
            int want = cJSON_IsNumber(e) ? e->valueint : 0;
            int got = r->denied ? r->status : 0;
            if (got != want) {
                printf("#   deny: got %d, want %d\n", got, want);
                miss++;
            }
        } else if (strcmp(k, "rule") == 0 && cJSON_IsString(e)) {
            if (r->rule == NULL || strcmp(r->rule, e->valuestring) != 0) {
                printf("#   rule: got %s, want %s\n", r->rule ? r->rule : "(none)", e->valuestring);
                miss++;
            }
        } else if (strcmp(k, "stopped") == 0) {
            if (r->stopped != cJSON_IsTrue(e)) {
                printf("#   stopped: got %s\n", r->stopped ? "true" : "false");
                miss++;
            }
        } else if (strcmp(k, "errors") == 0 && cJSON_IsNumber(e)) {
            if (errors != e->valueint) {
                printf("#   errors: got %d, want %d\n", errors, e->valueint);
                miss++;
            }
        } else if (strcmp(k, "variant") == 0 || strcmp(k, "body_contains") == 0 || strcmp(k, "body_excludes") == 0 ||
                   strcmp(k, "stream_contains") == 0 || strcmp(k, "stream_excludes") == 0 ||
                   strcmp(k, "verdicts") == 0) {
            const cJSON *list = e;
            int single = cJSON_IsString(e);
            for (const cJSON *x = single ? e : list->child; x != NULL; x = single ? NULL : x->next) {
                if (!cJSON_IsString(x))
                    continue;
                const char *w = x->valuestring;
                int ok;
                if (strcmp(k, "variant") == 0) {
                    ok = r->variant != NULL && strcmp(r->variant, w) == 0;
                } else if (strcmp(k, "body_contains") == 0) {
                    ok = contains(r->body, strlen(r->body), w);
                } else if (strcmp(k, "body_excludes") == 0) {
                    ok = !contains(r->body, strlen(r->body), w);
                } else if (strcmp(k, "stream_contains") == 0) {
                    ok = contains(out, outn, w);
                } else if (strcmp(k, "stream_excludes") == 0) {
                    ok = !contains(out, outn, w);
                } else {
                    ok = 0;
                    for (size_t i = 0; i < nv; i++) {
                        char s[200];
                        snprintf(s, sizeof(s), "%s:%s:%s", v[i].policy, v[i].action, v[i].rule);
                        ok |= strcmp(s, w) == 0;
                    }
                }
                if (!ok) {
                    printf("#   %s: \"%s\" does not hold\n", k, w);
                    miss++;
                }
            }
        } else {
            printf("#   unknown expectation \"%s\"\n", k);
            miss++;
        }
    }
    return miss;
}

/* What a run did, for people. */
static void show(const run_t *r)
{
    if (r->denied)
        printf("    denied %d (%s): %s\n", r->status, r->rule, r->message);
    else
        printf("    passed to variant %s\n", r->variant ? r->variant : "?");
    printf("    body sent on: %s\n", r->body);
    if (r->events > 0) {
        printf("    stream: %zu events, %zu rewritten, %zu dropped%s\n", r->events, r->rewritten, r->dropped,
               r->stopped ? ", then stopped" : "");
        size_t n = evbuffer_get_length(r->out);
        const char *p = (const char *)evbuffer_pullup(r->out, -1);
        printf("    the client got:\n");
        for (size_t i = 0; i < n;) {
            const char *nl = memchr(p + i, '\n', n - i);
            size_t k = nl ? (size_t)(nl - (p + i)) : n - i;
            if (k > 0)
                printf("      %.*s\n", (int)k, p + i);
            i += k + 1;
        }
    }
    for (size_t i = 0; i < r->nverdicts; i++)
        printf("    verdict: %s %s %s\n", r->verdicts[i].policy, r->verdicts[i].action, r->verdicts[i].rule);
    if (r->errors > 0)
        printf("    policy errors: %d (the error log above says which)\n", r->errors);
}

static char *read_all(const char *path, size_t *len)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (f == NULL)
        return NULL;
    struct evbuffer *b = evbuffer_new();
    char buf[8192];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
        evbuffer_add(b, buf, n);
    if (f != stdin)
        fclose(f);
    *len = evbuffer_get_length(b);
    char *s = *len > 0 ? av_strndup((const char *)evbuffer_pullup(b, -1), *len) : av_strdup("");
    evbuffer_free(b);
    return s;
}

int av_policy_test_main(int argc, char **argv)
{
    int bench = 0, quiet = 0, timed = 0, o;
    long max_ms = 0, max_instructions = 0; /* 0: the config's default */
    static const struct option opts[] = {
        {"bench", required_argument, NULL, 'b'}, {"quiet", no_argument, NULL, 'q'},
        {"time", no_argument, NULL, 't'},        {"max-ms", required_argument, NULL, 'm'},
        {"max-instructions", required_argument, NULL, 'i'},
        {"help", no_argument, NULL, 'h'},        {NULL, 0, NULL, 0},
    };
    optind = 1;
    while ((o = getopt_long(argc, argv, "hq", opts, NULL)) != -1) {
        char *end;
        switch (o) {
        case 'b': bench = atoi(optarg); break;
        case 'q': quiet = 1; break;
        case 't': timed = 1; break;
        case 'm':
        case 'i': {
            errno = 0;
            long v = strtol(optarg, &end, 10);
            if (errno != 0 || end == optarg || *end != '\0' || v < 1) { /* the config checks the bounds */
                fprintf(stderr, "aviary policy-test: --%s wants a positive number, not \"%s\"\n",
                        o == 'm' ? "max-ms" : "max-instructions", optarg);
                return 2;
            }
            *(o == 'm' ? &max_ms : &max_instructions) = v;
            break;
        }
        case 'h': usage_text(stdout); return 0;
        default: usage_text(stderr); return 2;
        }
    }
    if (argc - optind < 2) {
        usage_text(stderr);
        return 2;
    }
    const char *cases_path = argv[argc - 1];
    /* the policies: one directory, names without .lua */
    char dir[1024] = "";
    struct evbuffer *names = evbuffer_new();
    for (int i = optind; i < argc - 1; i++) {
        size_t n = strlen(argv[i]);
        if (n < 5 || strcmp(argv[i] + n - 4, ".lua") != 0) {
            fprintf(stderr, "aviary policy-test: %s: a policy file ends in .lua\n", argv[i]);
            evbuffer_free(names);
            return 2;
        }
        char *copy1 = av_strdup(argv[i]), *copy2 = av_strdup(argv[i]);
        const char *d = dirname(copy1), *base = basename(copy2);
        if (dir[0] == '\0')
            snprintf(dir, sizeof(dir), "%s", d);
        else if (strcmp(dir, d) != 0) {
            fprintf(stderr, "aviary policy-test: %s: the policies must be in one directory (%s)\n", argv[i], dir);
            free(copy1);
            free(copy2);
            evbuffer_free(names);
            return 2;
        }
        evbuffer_add_printf(names, "%s\"%.*s\"", i > optind ? "," : "", (int)(strlen(base) - 4), base);
        free(copy1);
        free(copy2);
    }
    size_t clen;
    char *ctext = read_all(cases_path, &clen);
    if (ctext == NULL) {
        fprintf(stderr, "aviary policy-test: %s: cannot read it\n", cases_path);
        evbuffer_free(names);
        return 2;
    }
    cJSON *root = cJSON_ParseWithLength(ctext, clen);
    free(ctext);
    const cJSON *cases = cJSON_IsArray(root) ? root : cJSON_GetObjectItemCaseSensitive(root, "cases");
    if (!cJSON_IsArray(cases)) {
        fprintf(stderr, "aviary policy-test: %s: not JSON with a \"cases\" array (see aviary policy-test --help)\n",
                cases_path);
        cJSON_Delete(root);
        evbuffer_free(names);
        return 2;
    }
    const cJSON *dialect = cJSON_GetObjectItemCaseSensitive(root, "dialect");
    const cJSON *variants = cJSON_GetObjectItemCaseSensitive(root, "variants");
    /* params for the policies given (a cases file may carry others') */
    cJSON *params = cJSON_GetObjectItemCaseSensitive(root, "params");
    for (cJSON *e = cJSON_IsObject(params) ? params->child : NULL, *next; e != NULL; e = next) {
        next = e->next;
        char quoted[300];
        snprintf(quoted, sizeof(quoted), "\"%s\"", e->string);
        if (memmem(evbuffer_pullup(names, -1), evbuffer_get_length(names), quoted, strlen(quoted)) == NULL)
            cJSON_DeleteItemFromObjectCaseSensitive(params, e->string);
    }
    char *params_text = cJSON_IsObject(params) ? cJSON_PrintUnformatted(params) : NULL;
    struct evbuffer *vs = evbuffer_new();
    int nvar = 0;
    for (const cJSON *v = cJSON_IsArray(variants) ? variants->child : NULL; v != NULL; v = v->next)
        if (cJSON_IsString(v))
            evbuffer_add_printf(vs, "%s{\"name\":\"%s\",\"backend\":\"t\",\"weight\":%d}", nvar ? "," : "",
                                v->valuestring, nvar == 0), nvar++;
    if (nvar == 0)
        evbuffer_add_printf(vs, "{\"name\":\"stable\",\"backend\":\"t\"},{\"name\":\"next\",\"backend\":\"t\","
                                "\"weight\":0}");
    char limits[96] = "";
    if (max_ms > 0)
        snprintf(limits, sizeof(limits), ",\"max_ms\":%ld", max_ms);
    if (max_instructions > 0)
        snprintf(limits + strlen(limits), sizeof(limits) - strlen(limits), ",\"max_instructions\":%ld",
                 max_instructions);
    struct evbuffer *conf = evbuffer_new();
    evbuffer_add_printf(conf,
                        "{\"listen\":[{\"address\":\"127.0.0.1:0\"}],\"workers\":1,"
                        "\"policy\":{\"dir\":\"%s\"%s},\"backends\":{\"t\":{\"url\":\"http://127.0.0.1:9\"}},"
                        "\"routes\":[{\"name\":\"policy-test\",\"match\":{\"path_prefix\":\"/\"},\"dialect\":\"%s\","
                        "\"policies\":[%.*s],\"policy_params\":%s,\"variants\":[%.*s]}]}",
                        dir, limits, cJSON_IsString(dialect) ? dialect->valuestring : "auto", (int)evbuffer_get_length(names),
                        (const char *)evbuffer_pullup(names, -1), params_text ? params_text : "{}",
                        (int)evbuffer_get_length(vs), (const char *)evbuffer_pullup(vs, -1));
    cJSON_free(params_text);
    evbuffer_free(names);
    evbuffer_free(vs);
    char err[1024];
    pt_t t = {.quiet = quiet};
    t.cfg = av_config_parse("policy-test", (const char *)evbuffer_pullup(conf, -1), evbuffer_get_length(conf), 1, err,
                            sizeof(err));
    evbuffer_free(conf);
    if (t.cfg == NULL) {
        fprintf(stderr, "aviary policy-test: %s\n", err);
        cJSON_Delete(root);
        return 2;
    }
    t.worker = av_calloc(1, sizeof(*t.worker));
    t.worker->pcounts = av_calloc(AV_PCOUNT_MAX, sizeof(*t.worker->pcounts));
    if (timed || bench > 0) { /* the worker's VM is made on its first request: here, not in the first case's time */
        cJSON *warm = cJSON_CreateObject();
        run_t w;
        run_case(&t, warm, &w);
        run_free(&w);
        cJSON_Delete(warm);
    }
    int n = 0, failed = 0;
    for (const cJSON *c = cases->child; c != NULL; c = c->next) {
        n++;
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(c, "name");
        const char *nm = cJSON_IsString(name) ? name->valuestring : "(unnamed)";
        run_t r;
        run_case(&t, c, &r);
        const cJSON *expect = cJSON_GetObjectItemCaseSensitive(c, "expect");
        if (!quiet || expect == NULL) {
            printf("case %d: %s\n", n, nm);
            show(&r);
        }
        if (expect != NULL) {
            int miss = check(expect, &r);
            printf("%sok %d - %s\n", miss ? "not " : "", n, nm);
            failed += miss > 0;
        }
        if (timed)
            printf("# time %s: %.3f ms (on_request %.3f, on_response %.3f, on_chunk %.3f over %zu events, "
                   "on_complete %.3f)\n",
                   nm, (double)(r.us_request + r.us_response + r.us_complete) / 1e3 + (double)r.ns_chunks / 1e6,
                   (double)r.us_request / 1e3, (double)r.us_response / 1e3, (double)r.ns_chunks / 1e6, r.events,
                   (double)r.us_complete / 1e3);
        if (bench > 0) {
            uint64_t req_us = 0, chunk_ns = 0, events = 0;
            for (int i = 0; i < bench; i++) {
                run_t b;
                run_case(&t, c, &b);
                req_us += b.us_request + b.us_response + b.us_complete;
                chunk_ns += b.ns_chunks;
                events += b.events;
                run_free(&b);
            }
            printf("# bench %s: request phases %.2f us per request", nm, (double)req_us / bench);
            if (events > 0)
                printf(", on_chunk %.0f ns per event", (double)chunk_ns / (double)events);
            printf(" (%d runs)\n", bench);
        }
        run_free(&r);
    }
    printf("%d passed, %d failed\n", n - failed, failed);
    free(t.worker->pcounts);
    free(t.worker);
    av_config_unref(t.cfg);
    cJSON_Delete(root);
    return failed ? 1 : 0;
}
