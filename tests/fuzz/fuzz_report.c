/* fuzz_report.c: the KPI log reader of `aviary report` (report.c), run as
 * the command runs (av_report_main on a file) over any log text. It exits
 * 0; with --json its output is JSON whose groups are sorted, distinct, and
 * count what the log says: per route, variant and shadow flag the lines
 * that are objects with a time, route and variant (and no "type"), inside
 * --since/--until/--route; errors at most the requests, percentiles in
 * order; lines read and skipped as the log has them.
 * Input: a flags byte (1: --json, 2: --since, 4: --until, 8: --route), then the log.
 * fuzz-options: -max_len=8192 */
#include <cjson/cJSON.h>
#include <fcntl.h>
#include <math.h>
#include <unistd.h>

#include "av.h"
#include "fuzz.h"
#include "report.h"

#define SINCE "2026-11-25"
#define UNTIL "2026-11-26T12"
#define ROUTE "chat"

static char dir[256], log_path[300], out_path[300];

static void remove_files(void)
{
    unlink(log_path);
    unlink(out_path);
    rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof(dir), "%s/fuzz_report.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (mkdtemp(dir) == NULL) {
        perror("fuzz_report: mkdtemp");
        exit(1);
    }
    snprintf(log_path, sizeof(log_path), "%s/kpi.log", dir);
    snprintf(out_path, sizeof(out_path), "%s/out", dir);
    atexit(remove_files);
    return 0;
}

static void write_file(const char *path, const void *p, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || (n > 0 && write(fd, p, n) != (ssize_t)n)) {
        perror(path);
        abort();
    }
    close(fd);
}

/* av_report_main with its standard output in out_path; returns the output. */
static char *run(int argc, char **argv, int *rc)
{
    fflush(stdout);
    int saved = dup(1), fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (saved < 0 || fd < 0 || dup2(fd, 1) < 0)
        abort();
    close(fd);
    *rc = av_report_main(argc, argv);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    FILE *f = fopen(out_path, "r");
    char *out = NULL;
    size_t cap = 0, n = 0;
    if (f != NULL) {
        out = malloc(cap = 4096);
        size_t k;
        while ((k = fread(out + n, 1, cap - n - 1, f)) > 0) {
            n += k;
            if (n + 1 == cap)
                out = realloc(out, cap *= 2);
        }
        out[n] = '\0';
        fclose(f);
    }
    return out;
}

/* ---- what the log says, line by line ---- */

typedef struct {
    char route[64], variant[64];
    int shadow;
    double requests, errors;
} want_group_t;

typedef struct {
    double lines, skipped;
    want_group_t g[64];
    size_t n;
    int overflow; /* more groups, or names longer, than this reference keeps */
    int nonfinite; /* a latency past what a double holds (1e999): written as null, like no data */
} want_t;

static const char *str(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static void want_line(want_t *w, const char *text, unsigned flags)
{
    w->lines++;
    cJSON *j = cJSON_Parse(text);
    const char *time = j ? str(j, "time") : NULL, *route = j ? str(j, "route") : NULL;
    const char *variant = j ? str(j, "variant") : NULL;
    if (j == NULL || !cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return; /* not JSON: read, not skipped */
    }
    if (cJSON_GetObjectItemCaseSensitive(j, "type") != NULL || time == NULL || route == NULL || variant == NULL ||
        ((flags & 8) && strcmp(route, ROUTE) != 0) || ((flags & 2) && strncmp(time, SINCE, strlen(SINCE)) < 0) ||
        ((flags & 4) && strncmp(time, UNTIL, strlen(UNTIL)) >= 0)) {
        w->skipped++;
        cJSON_Delete(j);
        return;
    }
    static const char *const times[] = {"latency_ms", "ttft_ms", "cost_usd"};
    for (size_t i = 0; i < 3; i++) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, times[i]);
        if (cJSON_IsNumber(t) && !isfinite(t->valuedouble))
            w->nonfinite = 1;
    }
    int shadow = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "shadow"));
    if (strlen(route) >= 64 || strlen(variant) >= 64) {
        w->overflow = 1;
        cJSON_Delete(j);
        return;
    }
    size_t i = 0;
    while (i < w->n && !(strcmp(w->g[i].route, route) == 0 && strcmp(w->g[i].variant, variant) == 0 &&
                         w->g[i].shadow == shadow))
        i++;
    if (i == w->n) {
        if (w->n == AV_NELEMS(w->g)) {
            w->overflow = 1;
            cJSON_Delete(j);
            return;
        }
        memset(&w->g[i], 0, sizeof(w->g[i]));
        strcpy(w->g[i].route, route);
        strcpy(w->g[i].variant, variant);
        w->g[i].shadow = shadow;
        w->n++;
    }
    w->g[i].requests++;
    const cJSON *status = cJSON_GetObjectItemCaseSensitive(j, "status");
    const char *err = str(j, "error");
    if ((cJSON_IsNumber(status) && status->valuedouble >= 500) ||
        (err != NULL && strcmp(err, "client_abort") != 0 && strcmp(err, "invalid_json") != 0))
        w->g[i].errors++;
    cJSON_Delete(j);
}

/* The log as getline hands it over: lines without their newline, a line whose
 * first byte is NUL (or that is empty) not read, each one a C string. */
static void want_log(want_t *w, const char *s, size_t n, unsigned flags)
{
    size_t pos = 0;
    while (pos < n) {
        const char *nl = memchr(s + pos, '\n', n - pos);
        size_t end = nl ? (size_t)(nl - s) : n;
        if (end > pos && s[pos] != '\0') {
            char *line = fuzz_strndup(s + pos, end - pos);
            want_line(w, line, flags);
            free(line);
        }
        pos = end + 1;
    }
}

static double num(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    FUZZ_CHECK(cJSON_IsNumber(v) || cJSON_IsNull(v), "\"%s\" is not a number or null", k);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static void check_json(const char *out, const want_t *w)
{
    cJSON *j = cJSON_Parse(out);
    FUZZ_CHECK(j != NULL && cJSON_IsObject(j), "--json output is not a JSON object: %.300s", out);
    const cJSON *groups = cJSON_GetObjectItemCaseSensitive(j, "groups");
    FUZZ_CHECK(cJSON_IsArray(groups), "no groups");
    FUZZ_CHECK(num(j, "lines") == w->lines && num(j, "skipped") == w->skipped, "lines %g skipped %g, want %g and %g",
               num(j, "lines"), num(j, "skipped"), w->lines, w->skipped);
    const cJSON *prev = NULL;
    size_t n = 0;
    for (const cJSON *g = groups->child; g != NULL; g = g->next, n++) {
        const char *route = str(g, "route"), *variant = str(g, "variant");
        const cJSON *shadow = cJSON_GetObjectItemCaseSensitive(g, "shadow");
        FUZZ_CHECK(route != NULL && variant != NULL && cJSON_IsBool(shadow), "a group without its names");
        double req = num(g, "requests"), errors = num(g, "errors"), rate = num(g, "error_rate");
        FUZZ_CHECK(req >= 1 && errors >= 0 && errors <= req && rate >= 0 && rate <= 1, "requests %g errors %g rate %g",
                   req, errors, rate);
        double p50 = num(g, "latency_p50_ms"), p95 = num(g, "latency_p95_ms"), p99 = num(g, "latency_p99_ms");
        FUZZ_CHECK(w->nonfinite || isnan(p50) || (p50 <= p95 && p95 <= p99), "latency percentiles %g %g %g", p50, p95,
                   p99);
        p50 = num(g, "ttft_p50_ms"), p95 = num(g, "ttft_p95_ms"), p99 = num(g, "ttft_p99_ms");
        FUZZ_CHECK(w->nonfinite || isnan(p50) || (p50 <= p95 && p95 <= p99), "ttft percentiles %g %g %g", p50, p95,
                   p99);
        if (prev != NULL) {
            int c = strcmp(str(prev, "route"), route);
            if (c == 0)
                c = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(prev, "shadow")) - cJSON_IsTrue(shadow);
            if (c == 0)
                c = strcmp(str(prev, "variant"), variant);
            FUZZ_CHECK(c < 0, "groups out of order or twice: %s/%s", route, variant);
        }
        prev = g;
        if (!w->overflow) {
            size_t i = 0;
            while (i < w->n && !(strcmp(w->g[i].route, route) == 0 && strcmp(w->g[i].variant, variant) == 0 &&
                                 w->g[i].shadow == cJSON_IsTrue(shadow)))
                i++;
            FUZZ_CHECK(i < w->n, "a group no line makes: %s/%s", route, variant);
            FUZZ_CHECK(w->g[i].requests == req && w->g[i].errors == errors, "%s/%s: %g requests %g errors, want %g %g",
                       route, variant, req, errors, w->g[i].requests, w->g[i].errors);
        }
    }
    if (!w->overflow)
        FUZZ_CHECK(n == w->n, "%zu groups, want %zu", n, w->n);
    cJSON_Delete(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_in_t in = {data, size};
    unsigned flags = fuzz_byte(&in);
    want_t *w = calloc(1, sizeof(*w));
    want_log(w, (const char *)in.p, in.n, flags);
    write_file(log_path, in.p, in.n);
    char *argv[8];
    int argc = 0;
    argv[argc++] = "report";
    if (flags & 1)
        argv[argc++] = "--json";
    if (flags & 2)
        argv[argc++] = "--since=" SINCE;
    if (flags & 4)
        argv[argc++] = "--until=" UNTIL;
    if (flags & 8)
        argv[argc++] = "--route=" ROUTE;
    argv[argc++] = log_path;
    argv[argc] = NULL;
    int rc;
    char *out = run(argc, argv, &rc);
    FUZZ_CHECK(rc == 0, "report exits %d", rc);
    FUZZ_CHECK(out != NULL && out[0] != '\0', "no output");
    if (flags & 1)
        check_json(out, w);
    else
        FUZZ_CHECK(strstr(out, " lines read, ") != NULL, "the table has no summary: %.300s", out);
    free(out);
    free(w);
    return 0;
}
