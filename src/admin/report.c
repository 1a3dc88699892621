/* report.c: `aviary report FILE...`: reads KPI logs (plain, gzip, or - for
 * standard input) and prints, per route and variant, requests, error rate,
 * latency and TTFT percentiles, tokens and cost: what a person reads to
 * compare two variants. */
#include "report.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "av.h"

typedef struct {
    double *v;
    size_t n, cap;
} series_t;

typedef struct {
    char *route, *variant;
    int shadow;
    uint64_t requests, errors, estimated;
    uint64_t in_tokens, out_tokens;
    double cost;
    uint64_t priced;
    series_t latency, ttft;
} group_t;

typedef struct {
    group_t *g;
    size_t n, cap;
    const char *route; /* --route */
    char since[32], until[32];
    uint64_t lines, skipped, bad;
} report_t;

static void push(series_t *s, double v)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 64;
        s->v = av_realloc(s->v, s->cap * sizeof(*s->v));
    }
    s->v[s->n++] = v;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of a sorted series, or NAN. */
static double pct(const series_t *s, double p)
{
    if (s->n == 0)
        return NAN;
    size_t rank = (size_t)ceil(p * (double)s->n);
    if (rank < 1)
        rank = 1;
    return s->v[rank - 1];
}

static group_t *group(report_t *r, const char *route, const char *variant, int shadow)
{
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->g[i].route, route) == 0 && strcmp(r->g[i].variant, variant) == 0 && r->g[i].shadow == shadow)
            return &r->g[i];
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 8;
        r->g = av_realloc(r->g, r->cap * sizeof(*r->g));
    }
    group_t *g = &r->g[r->n++];
    memset(g, 0, sizeof(*g));
    g->route = av_strdup(route);
    g->variant = av_strdup(variant);
    g->shadow = shadow;
    return g;
}

static const char *str(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int num(const cJSON *o, const char *k, double *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsNumber(v))
        return 0;
    *out = v->valuedouble;
    return 1;
}

static void line(report_t *r, const char *text)
{
    r->lines++;
    cJSON *j = cJSON_Parse(text);
    if (j == NULL || !cJSON_IsObject(j)) {
        r->bad++;
        cJSON_Delete(j);
        return;
    }
    const char *time = str(j, "time"), *route = str(j, "route"), *variant = str(j, "variant");
    if (cJSON_GetObjectItemCaseSensitive(j, "type") != NULL || time == NULL || route == NULL || variant == NULL ||
        (r->route != NULL && strcmp(route, r->route) != 0) ||
        (r->since[0] && strncmp(time, r->since, strlen(r->since)) < 0) ||
        (r->until[0] && strncmp(time, r->until, strlen(r->until)) >= 0)) {
        r->skipped++; /* comparison lines, requests no route took, outside the filters */
        cJSON_Delete(j);
        return;
    }
    group_t *g = group(r, route, variant, cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "shadow")));
    double v, status = 0;
    g->requests++;
    num(j, "status", &status);
    const char *err = str(j, "error");
    if (status >= 500 || (err != NULL && strcmp(err, "client_abort") != 0 && strcmp(err, "invalid_json") != 0))
        g->errors++;
    if (num(j, "latency_ms", &v))
        push(&g->latency, v);
    if (num(j, "ttft_ms", &v))
        push(&g->ttft, v);
    int64_t t;
    if (num(j, "input_tokens", &v) && av_whole(v, 0, 9007199254740992.0, &t)) /* a log edited by hand: not believed */
        g->in_tokens += (uint64_t)t;
    if (num(j, "output_tokens", &v) && av_whole(v, 0, 9007199254740992.0, &t))
        g->out_tokens += (uint64_t)t;
    if (num(j, "cost_usd", &v)) {
        g->cost += v;
        g->priced++;
    }
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "usage_estimated")))
        g->estimated++;
    cJSON_Delete(j);
}

/* Reads a file line by line; gzip files through `gzip -dc` (no shell). */
static int read_file(report_t *r, const char *path)
{
    FILE *f;
    pid_t pid = -1;
    size_t n = strlen(path);
    if (strcmp(path, "-") == 0) {
        f = stdin;
    } else if (n > 3 && strcmp(path + n - 3, ".gz") == 0) {
        int fds[2];
        if (pipe(fds) != 0)
            return -1;
        pid = fork();
        if (pid == 0) {
            dup2(fds[1], 1);
            close(fds[0]);
            close(fds[1]);
            execlp("gzip", "gzip", "-dc", "--", path, (char *)NULL);
            _exit(127);
        }
        close(fds[1]);
        f = fdopen(fds[0], "r");
    } else {
        f = fopen(path, "r");
    }
    if (f == NULL) {
        fprintf(stderr, "aviary report: %s: %s\n", path, strerror(errno));
        return -1;
    }
    char *buf = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&buf, &cap, f)) > 0) {
        if (buf[len - 1] == '\n')
            buf[len - 1] = '\0';
        if (buf[0] != '\0')
            line(r, buf);
    }
    free(buf);
    if (f != stdin)
        fclose(f);
    if (pid > 0) {
        int st;
        waitpid(pid, &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "aviary report: %s: gzip -dc failed\n", path);
            return -1;
        }
    }
    return 0;
}

static int by_name(const void *a, const void *b)
{
    const group_t *x = a, *y = b;
    int c = strcmp(x->route, y->route);
    if (c == 0)
        c = x->shadow - y->shadow;
    return c ? c : strcmp(x->variant, y->variant);
}

static void ms_cell(double v)
{
    if (isnan(v))
        printf(" %8s", "-");
    else
        printf(v < 10 ? " %8.2f" : " %8.1f", v);
}

static void print_table(const report_t *r)
{
    printf("%-16s %-16s %8s %7s %8s %8s %8s %8s %8s %10s %10s %11s %11s\n", "route", "variant", "requests", "errors",
           "p50 ms", "p95 ms", "p99 ms", "ttft p50", "ttft p95", "tokens in", "tokens out", "cost $", "$ / 1k req");
    const char *last = NULL;
    for (size_t i = 0; i < r->n; i++) {
        const group_t *g = &r->g[i];
        char variant[40];
        snprintf(variant, sizeof(variant), "%s%s", g->variant, g->shadow ? " (shadow)" : "");
        printf("%-16.16s %-16.16s %8llu %6.2f%%", last && strcmp(last, g->route) == 0 ? "" : g->route, variant,
               (unsigned long long)g->requests, g->requests ? 100.0 * (double)g->errors / (double)g->requests : 0.0);
        ms_cell(pct(&g->latency, 0.50));
        ms_cell(pct(&g->latency, 0.95));
        ms_cell(pct(&g->latency, 0.99));
        ms_cell(pct(&g->ttft, 0.50));
        ms_cell(pct(&g->ttft, 0.95));
        printf(" %10llu %10llu", (unsigned long long)g->in_tokens, (unsigned long long)g->out_tokens);
        if (g->priced > 0)
            printf(" %11.6f %11.6f\n", g->cost, 1000.0 * g->cost / (double)g->requests);
        else
            printf(" %11s %11s\n", "-", "-");
        last = g->route;
    }
    uint64_t est = 0;
    for (size_t i = 0; i < r->n; i++)
        est += r->g[i].estimated;
    printf("\n%llu lines read, %llu skipped (comparison lines, unrouted, filtered)%s", (unsigned long long)r->lines,
           (unsigned long long)r->skipped, r->bad ? "" : "\n");
    if (r->bad)
        printf(", %llu not JSON\n", (unsigned long long)r->bad);
    if (est)
        printf("%llu request%s with estimated usage (the backend reported none)\n", (unsigned long long)est,
               est == 1 ? "" : "s");
}

static void json_num(cJSON *o, const char *k, double v)
{
    if (isnan(v))
        cJSON_AddNullToObject(o, k);
    else
        cJSON_AddNumberToObject(o, k, v);
}

static void print_json(const report_t *r)
{
    cJSON *root = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(root, "groups");
    for (size_t i = 0; i < r->n; i++) {
        const group_t *g = &r->g[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "route", g->route);
        cJSON_AddStringToObject(o, "variant", g->variant);
        cJSON_AddBoolToObject(o, "shadow", g->shadow);
        cJSON_AddNumberToObject(o, "requests", (double)g->requests);
        cJSON_AddNumberToObject(o, "errors", (double)g->errors);
        cJSON_AddNumberToObject(o, "error_rate", g->requests ? (double)g->errors / (double)g->requests : 0.0);
        json_num(o, "latency_p50_ms", pct(&g->latency, 0.50));
        json_num(o, "latency_p95_ms", pct(&g->latency, 0.95));
        json_num(o, "latency_p99_ms", pct(&g->latency, 0.99));
        json_num(o, "ttft_p50_ms", pct(&g->ttft, 0.50));
        json_num(o, "ttft_p95_ms", pct(&g->ttft, 0.95));
        json_num(o, "ttft_p99_ms", pct(&g->ttft, 0.99));
        cJSON_AddNumberToObject(o, "input_tokens", (double)g->in_tokens);
        cJSON_AddNumberToObject(o, "output_tokens", (double)g->out_tokens);
        json_num(o, "cost_usd", g->priced ? g->cost : NAN);
        json_num(o, "cost_per_1k_requests_usd", g->priced ? 1000.0 * g->cost / (double)g->requests : NAN);
        cJSON_AddNumberToObject(o, "usage_estimated", (double)g->estimated);
        cJSON_AddItemToArray(arr, o);
    }
    cJSON_AddNumberToObject(root, "lines", (double)r->lines);
    cJSON_AddNumberToObject(root, "skipped", (double)r->skipped);
    char *s = cJSON_PrintUnformatted(root);
    printf("%s\n", s);
    free(s);
    cJSON_Delete(root);
}

static void usage_text(FILE *f)
{
    fprintf(f, "usage: aviary report [--since TIME] [--until TIME] [--route NAME] [--json] FILE...\n"
               "Reads KPI logs (plain, .gz, or - for standard input) and prints, per route and variant:\n"
               "requests, error rate (5xx and backend errors), latency and TTFT p50/p95/p99, tokens in and\n"
               "out, cost and cost per 1,000 requests. TIME is a UTC prefix as the log writes it, e.g.\n"
               "2026-11-25 or 2026-11-25T14:30: --since keeps lines at or after it, --until before it.\n");
}

int av_report_main(int argc, char **argv)
{
    report_t r = {0};
    int as_json = 0, o;
    static const struct option opts[] = {
        {"since", required_argument, NULL, 's'}, {"until", required_argument, NULL, 'u'},
        {"route", required_argument, NULL, 'r'}, {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    optind = 1;
    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (o) {
        case 's': snprintf(r.since, sizeof(r.since), "%s", optarg); break;
        case 'u': snprintf(r.until, sizeof(r.until), "%s", optarg); break;
        case 'r': r.route = optarg; break;
        case 'j': as_json = 1; break;
        case 'h': usage_text(stdout); return 0;
        default: usage_text(stderr); return 2;
        }
    }
    if (optind >= argc) {
        usage_text(stderr);
        return 2;
    }
    int rc = 0;
    for (int i = optind; i < argc; i++)
        if (read_file(&r, argv[i]) != 0)
            rc = 1;
    if (r.n > 1)
        qsort(r.g, r.n, sizeof(*r.g), by_name);
    for (size_t i = 0; i < r.n; i++) {
        if (r.g[i].latency.n > 1)
            qsort(r.g[i].latency.v, r.g[i].latency.n, sizeof(double), cmp_double);
        if (r.g[i].ttft.n > 1)
            qsort(r.g[i].ttft.v, r.g[i].ttft.n, sizeof(double), cmp_double);
    }
    if (as_json)
        print_json(&r);
    else
        print_table(&r);
    for (size_t i = 0; i < r.n; i++) {
        free(r.g[i].route);
        free(r.g[i].variant);
        free(r.g[i].latency.v);
        free(r.g[i].ttft.v);
    }
    free(r.g);
    return rc;
}
