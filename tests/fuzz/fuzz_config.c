/* fuzz_config.c: the config loader (config.c, config_route.c) on any text.
 * A refusal names "file:line:column:" inside the text and never a secret;
 * a config it accepts is one the rest of the gateway can use without
 * checking again (indexes in range, weights that add up, one JSON value).
 * It runs from the repository's root (run.sh does) as conf/fuzz.json, so
 * policy files resolve as they do for conf/aviary.json.
 * fuzz-ldflags: -Wl,--wrap=getaddrinfo
 * fuzz-options: -max_len=16384 */
#include <cjson/cJSON.h>
#include <netdb.h>

#include "av.h"
#include "config.h"
#include "fuzz.h"
#include "geo.h"
#include "jsonc.h"
#include "log.h"
#include "policy.h"
#include "split.h"

#define NAME "conf/fuzz.json"
#define SECRET "sk-fuzz-SECRET-7f3a"

static int show;

/* Backend URLs name hosts: numeric ones only, so that no input waits on DNS. */
int __real_getaddrinfo(const char *node, const char *service, const struct addrinfo *hints, struct addrinfo **res);
int __wrap_getaddrinfo(const char *node, const char *service, const struct addrinfo *hints, struct addrinfo **res);
int __wrap_getaddrinfo(const char *node, const char *service, const struct addrinfo *hints, struct addrinfo **res)
{
    struct addrinfo h = {0};
    if (hints != NULL)
        h = *hints;
    h.ai_flags |= AI_NUMERICHOST;
    if (node != NULL && strcmp(node, "localhost") == 0)
        node = "127.0.0.1";
    return __real_getaddrinfo(node, service, &h, res);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    /* the variables the seeds name (tests/unit/config/test_config.c, tests/integration) */
    static const char *const names[] = {"AV_TEST_KEY", "AV_FUZZ_KEY", "OVERRIDE_TOKEN", "AVIARY_TEST_BACKEND_KEY",
                                        "AVIARY_T_TOKEN", "AV_TEST_ADMIN_TOKEN", "AV_TEST_OVERRIDE_TOKEN"};
    for (size_t i = 0; i < AV_NELEMS(names); i++)
        setenv(names[i], SECRET, 1);
    av_log_set_level(AV_LOG_ERROR);
    static const av_config_loaders_t loaders = {
        .policies_load = av_policies_load, .policies_free = av_policies_free, .policies_find = av_policies_find,
        .geo_open = av_geo_open, .geo_close = av_geo_close, .geo_cidr_valid = av_geo_cidr_valid,
    };
    av_config_set_loaders(&loaders); /* as aviary's main sets them */
    show = getenv("FUZZ_SHOW") != NULL; /* say what each input gives: for checking seeds */
    return 0;
}

static void no_warning(const char *key, void *arg)
{
    FUZZ_CHECK(0, "a config compared with itself differs in %s", key);
}

/* "NAME:LINE:COL: ..." with LINE and COL a place in text (or just past its end),
 * counted as the loader counts: in the text with comments blanked (a NUL in
 * a comment is a space then), up to a NUL. */
static void check_error(const char *orig, size_t len, const char *err)
{
    char *text = fuzz_strndup(orig, len);
    size_t off;
    av_jsonc_strip(text, len, &off);
    size_t nl = strlen(NAME);
    FUZZ_CHECK(strncmp(err, NAME ":", nl + 1) == 0, "error without the file's name: %s", err);
    unsigned line = 0, col = 0;
    int used = 0;
    FUZZ_CHECK(sscanf(err + nl + 1, "%u:%u: %n", &line, &col, &used) == 2 && used > 0,
               "error without line and column: %s", err);
    unsigned l = 1;
    size_t start = 0, i = 0;
    for (; i < len && text[i] != '\0' && l < line; i++)
        if (text[i] == '\n') {
            l++;
            start = i + 1;
        }
    FUZZ_CHECK(line >= 1 && l == line, "line %u is not in the text: %s", line, err);
    size_t end = start;
    while (end < len && text[end] != '\0' && text[end] != '\n')
        end++;
    FUZZ_CHECK(col >= 1 && col <= end - start + 1, "column %u is not on line %u (%zu bytes): %s", col, line,
               end - start, err);
    /* an environment variable's value, that the text does not hold itself */
    FUZZ_CHECK(strstr(err, SECRET) == NULL || memmem(orig, len, SECRET, strlen(SECRET)) != NULL,
               "a secret in an error: %s", err);
    free(text);
}

static void check_config(const av_config_t *c, const char *text, size_t len)
{
    FUZZ_CHECK(c->nlisten >= 1 && c->nbackends >= 1 && c->nroutes >= 1, "listen %zu, backends %zu, routes %zu",
               c->nlisten, c->nbackends, c->nroutes);
    for (size_t i = 0; i < c->nroutes; i++) {
        const av_route_t *r = &c->routes[i];
        FUZZ_CHECK(r->nvariants >= 1 && r->nvariants <= AV_SPLIT_MAX_VARIANTS, "route %zu: %zu variants", i,
                   r->nvariants);
        int64_t total = 0;
        for (size_t k = 0; k < r->nvariants; k++) {
            const av_backend_t *b = r->variants[k].backend;
            FUZZ_CHECK(b != NULL && b >= c->backends && b < c->backends + c->nbackends,
                       "route %zu variant %zu: no backend of this config", i, k);
            FUZZ_CHECK(r->variants[k].weight >= 0, "a negative weight");
            total += r->variants[k].weight;
        }
        FUZZ_CHECK(total > 0, "route %zu: weights add up to %lld", i, (long long)total);
        FUZZ_CHECK(r->dialect >= AV_DIALECT_AUTO && r->dialect <= AV_DIALECT_ANTHROPIC, "dialect %d", r->dialect);
        if (r->shadow_variant_name != NULL)
            FUZZ_CHECK(r->shadow_variant < r->nvariants, "shadow variant %zu of %zu", r->shadow_variant, r->nvariants);
        for (size_t k = 0; k < r->ngeo; k++)
            FUZZ_CHECK(r->geo[k].variant < r->nvariants, "geo rule %zu: variant %zu", k, r->geo[k].variant);
        FUZZ_CHECK(r->nsticky <= AV_STICKY_MAX, "%zu sticky sources", r->nsticky);
        size_t body = 0;
        for (size_t k = 0; k < r->nsticky; k++)
            if (r->sticky[k].kind == AV_STICKY_BODY) {
                body++;
                FUZZ_CHECK(r->sticky[k].npath >= 1 && r->sticky[k].npath <= AV_STICKY_MAX_DEPTH, "body path of %zu",
                           r->sticky[k].npath);
            }
        FUZZ_CHECK(body == r->nsticky_body, "%zu body sources, counted %zu", body, r->nsticky_body);
        if (r->rollout.enabled) {
            const av_rollout_cfg_t *ro = &r->rollout;
            FUZZ_CHECK(ro->baseline < r->nvariants && ro->candidate < r->nvariants && ro->baseline != ro->candidate,
                       "rollout baseline %zu candidate %zu of %zu", ro->baseline, ro->candidate, r->nvariants);
            FUZZ_CHECK(ro->nsteps >= 2 && ro->nsteps <= AV_ROLLOUT_MAX_STEPS && ro->steps[ro->nsteps - 1] == 100,
                       "rollout steps");
            FUZZ_CHECK(ro->nkpis >= 1 && ro->nkpis <= AV_ROLLOUT_MAX_KPIS, "%zu rollout KPIs", ro->nkpis);
        }
    }
    av_config_restart_keys(c, c, no_warning, NULL);
    /* a config is one JSON value: text after it is a mistake to report, not to ignore */
    char *t = fuzz_strndup(text, len);
    size_t off;
    FUZZ_CHECK(av_jsonc_strip(t, len, &off) == 0, "accepted with an unterminated comment");
    cJSON *one = cJSON_ParseWithLengthOpts(t, len + 1, NULL, 1);
    FUZZ_CHECK(one != NULL, "accepted with text after the config's object");
    cJSON_Delete(one);
    free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[1024], err2[1024];
    const char *text = (const char *)data;
    err[0] = err2[0] = '\0';
    av_config_t *c = av_config_parse(NAME, text, size, 1, err, sizeof(err));
    if (show)
        fprintf(stderr, "%s\n", c != NULL ? "loaded" : err);
    if (c == NULL)
        check_error(text, size, err);
    else
        check_config(c, text, size);
    /* the same text, the same verdict */
    av_config_t *c2 = av_config_parse(NAME, text, size, 2, err2, sizeof(err2));
    FUZZ_CHECK((c == NULL) == (c2 == NULL) && strcmp(err, err2) == 0, "parsed twice: \"%s\", then \"%s\"", err, err2);
    av_config_unref(c);
    av_config_unref(c2);
    return 0;
}
