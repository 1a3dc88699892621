/* test_config.c: valid configs load with their defaults; every kind of invalid
 * one fails with the exact file:line:column: key: reason. */
#include <stdlib.h>

#include "config.h"
#include "../test.h"

static char err[512];

static av_config_t *parse(const char *text)
{
    err[0] = '\0';
    return av_config_parse("t.json", text, strlen(text), 1, err, sizeof(err));
}

#define MINIMAL_BACKENDS "\"backends\": {\"b\": {\"url\": \"http://127.0.0.1:9\"}}"
#define MINIMAL_ROUTES "\"routes\": [{\"name\": \"r\", \"variants\": [{\"name\": \"v\", \"backend\": \"b\"}]}]"
#define MINIMAL_LISTEN "\"listen\": [{\"address\": \"127.0.0.1:0\"}]"

static void expect_error(const char *text, const char *want)
{
    av_config_t *c = parse(text);
    CHECK(c == NULL);
    CHECK_STR(err, want);
    av_config_unref(c);
}

static void test_minimal_defaults(void)
{
    av_config_t *c = parse("{" MINIMAL_LISTEN "," MINIMAL_BACKENDS "," MINIMAL_ROUTES "}");
    CHECK(c != NULL);
    if (c == NULL) {
        printf("# %s\n", err);
        return;
    }
    CHECK_INT(c->nlisten, 1);
    CHECK_INT(c->workers, 0);
    CHECK_STR(c->admin_address, "127.0.0.1:9901");
    CHECK_STR(c->kpi_log, "-");
    CHECK_INT(c->max_body_bytes, 10 << 20);
    CHECK_INT(c->header_timeout_ms, 10000);
    CHECK_INT(c->nbackends, 1);
    const av_backend_t *b = &c->backends[0];
    CHECK_STR(b->name, "b");
    CHECK_INT(b->max_connections, 64);
    CHECK_INT(b->connect_timeout_ms, 5000);
    CHECK_STR(b->host_header, "127.0.0.1:9");
    CHECK_STR(b->pool_key, "b@127.0.0.1:9/http1");
    CHECK_STR(b->base_path, "");
    CHECK_STR(b->api_key_header, "authorization");
    CHECK_INT(b->forward_authorization, 0);
    CHECK_INT(c->nroutes, 1);
    CHECK(c->routes[0].variants[0].backend == b);
    CHECK(c->routes[0].variants[0].model == NULL);
    CHECK_INT(c->routes[0].variants[0].weight, 1);
    av_config_unref(c);
}

static void test_full_with_comments(void)
{
    setenv("AV_TEST_KEY", "sk-secret", 1);
    const char *text =
        "// the gateway\n"
        "{\n"
        "  /* two listeners */\n"
        "  \"listen\": [{\"address\": \"127.0.0.1:0\"}, {\"address\": \"[::1]:0\"}],\n"
        "  \"workers\": 2, // fixed\n"
        "  \"log\": {\"kpi\": \"kpi.log\", \"level\": \"debug\"},\n"
        "  \"client\": {\"max_body_bytes\": 1024, \"max_headers\": 10},\n"
        "  \"backends\": {\"prod\": {\"url\": \"http://localhost:8000/base/\", \"max_connections\": 8,\n"
        "     \"api_key_env\": \"AV_TEST_KEY\", \"headers\": {\"x-team\": \"ml\"}}},\n"
        "  \"routes\": [{\"name\": \"chat\", \"match\": {\"path_prefix\": \"/v1/\", \"host\": \"api\",\n"
        "     \"headers\": {\"x-tenant\": \"a\"}},\n"
        "     \"variants\": [{\"name\": \"stable\", \"backend\": \"prod\", \"model\": \"m1\", \"weight\": 95},\n"
        "                  {\"name\": \"next\", \"backend\": \"prod\", \"weight\": 5}]}]\n"
        "}\n";
    av_config_t *c = av_config_parse("conf/x.json", text, strlen(text), 7, err, sizeof(err));
    CHECK(c != NULL);
    if (c == NULL) {
        printf("# %s\n", err);
        return;
    }
    CHECK_INT(c->generation, 7);
    CHECK_INT(c->nlisten, 2);
    CHECK_INT(c->workers, 2);
    CHECK_STR(c->kpi_log, "conf/kpi.log");
    CHECK_STR(c->log_level, "debug");
    CHECK_INT(c->max_body_bytes, 1024);
    const av_backend_t *b = av_config_backend(c, "prod");
    CHECK(b != NULL);
    CHECK_STR(b->api_key, "sk-secret");
    CHECK_STR(b->base_path, "/base");
    CHECK_STR(b->host_header, "localhost:8000");
    CHECK_INT(b->nheaders, 1);
    CHECK_STR(b->headers[0].name, "x-team");
    CHECK_STR(c->routes[0].path_prefix, "/v1/");
    CHECK_STR(c->routes[0].match_headers[0].value, "a");
    CHECK_INT(c->routes[0].nvariants, 2);
    CHECK_STR(c->routes[0].variants[0].model, "m1");
    CHECK_INT(c->routes[0].variants[1].weight, 5);
    av_config_unref(c);
}

static void test_syntax_errors(void)
{
    expect_error("{\n  \"listen\": [,]\n}", "t.json:2:14: invalid JSON near here");
    expect_error("{\n /* never closed\n", "t.json:2:2: unterminated /* comment");
    expect_error("[]", "t.json:1:1: the config must be a JSON object");
    expect_error("{" MINIMAL_LISTEN "," MINIMAL_BACKENDS "," MINIMAL_ROUTES "}\n}",
                 "t.json:2:1: text after the config's object (a second object, a stray brace?)");
    expect_error("\xef\xbb\xbf{\n  \"workers\": \"two\"}", "t.json:2:3: workers: expected an integer, got a string");
}

static void test_missing_required(void)
{
    expect_error("{" MINIMAL_BACKENDS "," MINIMAL_ROUTES "}",
                 "t.json:1:1: listen: missing, and it is required");
    expect_error("{" MINIMAL_LISTEN "," MINIMAL_BACKENDS ",\n\"routes\": [{\"name\": \"r\"}]}",
                 "t.json:2:12: routes[0]: variants: missing, and it is required");
}

static void test_type_and_bounds(void)
{
    expect_error("{" MINIMAL_LISTEN ",\n\"workers\": \"two\"," MINIMAL_BACKENDS "," MINIMAL_ROUTES "}",
                 "t.json:2:1: workers: expected an integer, got a string");
    expect_error("{" MINIMAL_LISTEN ",\n\"backends\": {\"b\": {\"url\": \"http://127.0.0.1:9\",\n"
                 "   \"max_connections\": 0}}," MINIMAL_ROUTES "}",
                 "t.json:3:4: backends.b.max_connections: must be an integer from 1 to 100000");
    expect_error("{" MINIMAL_LISTEN ",\"client\": {\"max_headers\": 2.5}," MINIMAL_BACKENDS "," MINIMAL_ROUTES "}",
                 "t.json:1:52: client.max_headers: must be an integer from 1 to 1000");
    expect_error("{" MINIMAL_LISTEN ",\"log\": {\"level\": \"loud\"}," MINIMAL_BACKENDS "," MINIMAL_ROUTES "}",
                 "t.json:1:49: log.level: \"loud\" is not one of error, warn, info, debug");
}

static void test_unknown_and_duplicate_keys(void)
{
    expect_error("{" MINIMAL_LISTEN ",\n  \"lisen\": 1}",
                 "t.json:2:3: lisen: unknown key (known keys: workers, listen, admin, log, client, backends, routes, variant_header, geoip, pricing, policy, rollout_state_file, rollout_webhook, feedback_path, fleet)");
    expect_error("{" MINIMAL_LISTEN ",\n  \"workers\": 1, \"workers\": 2}", "t.json:2:17: workers: duplicate key");
}

static void test_reference_errors(void)
{
    expect_error("{" MINIMAL_LISTEN "," MINIMAL_BACKENDS ",\n\"routes\": [{\"name\": \"r\", \"variants\": [\n"
                 "  {\"name\": \"v\", \"backend\": \"nope\"}]}]}",
                 "t.json:3:17: routes[0].variants[0].backend: no backend named \"nope\" in \"backends\"");
    expect_error("{" MINIMAL_LISTEN "," MINIMAL_BACKENDS ",\n\"routes\": [{\"name\": \"r\", \"variants\": [\n"
                 "  {\"name\": \"v\", \"backend\": \"b\"}, {\"name\": \"v\", \"backend\": \"b\"}]}]}",
                 "t.json:3:35: routes[0].variants[1].name: variant \"v\" is named twice in this route");
    expect_error("{" MINIMAL_LISTEN "," MINIMAL_BACKENDS ",\"routes\": [{\"name\": \"r\", \"match\": {\"path_prefix\": \"v1\"}, "
                 "\"variants\": [{\"name\": \"v\", \"backend\": \"b\"}]}]}",
                 "t.json:1:125: routes[0].match.path_prefix: must start with /");
}

static void test_addresses_and_urls(void)
{
    expect_error("{\"listen\": [{\"address\": \"localhost\"}]," MINIMAL_BACKENDS "," MINIMAL_ROUTES "}",
                 "t.json:1:14: listen[0].address: \"localhost\" is not a numeric host:port (e.g. 127.0.0.1:8080, [::]:8080, *:8080)");
    expect_error("{" MINIMAL_LISTEN ",\"backends\": {\"b\": {\"url\": \"ftp://x\"}}," MINIMAL_ROUTES "}",
                 "t.json:1:60: backends.b.url: \"ftp://x\" must start with http:// or https://");
    expect_error("{" MINIMAL_LISTEN ",\"backends\": {\"b\": {\"url\": \"http://127.0.0.1:1\", \"protocol\": \"spdy\"}}," MINIMAL_ROUTES "}",
                 "t.json:1:89: backends.b.protocol: \"spdy\" is not a protocol (use \"http1\", \"h2\" for HTTP/2 "
                 "over TLS or \"h2c\" for cleartext HTTP/2)");
    expect_error("{" MINIMAL_LISTEN ",\"backends\": {\"b\": {\"url\": \"http://127.0.0.1:1\", \"protocol\": \"h2\"}}," MINIMAL_ROUTES "}",
                 "t.json:1:89: backends.b.protocol: \"h2\" is HTTP/2 over TLS and needs an https:// url; use \"h2c\" "
                 "for cleartext HTTP/2");
    expect_error("{" MINIMAL_LISTEN ",\"backends\": {\"b\": {\"url\": \"https://127.0.0.1:1\", \"protocol\": \"h2c\"}}," MINIMAL_ROUTES "}",
                 "t.json:1:90: backends.b.protocol: \"h2c\" is cleartext HTTP/2 and needs an http:// url; use \"h2\" "
                 "over https://");
    expect_error("{" MINIMAL_LISTEN ",\"backends\": {\"b\": {\"url\": \"http://127.0.0.1:1\", \"tls_verify\": false}}," MINIMAL_ROUTES "}",
                 "t.json:1:89: backends.b.tls_verify: applies to https:// backends only");
    expect_error("{" MINIMAL_LISTEN ",\"backends\": {\"b\": {\"url\": \"https://127.0.0.1:1\", \"tls_ca_file\": \"nope.pem\"}}," MINIMAL_ROUTES "}",
                 "t.json:1:90: backends.b.tls_ca_file: cannot read \"./nope.pem\": No such file or directory");
    /* a url's host and port are checked, never read past their end */
    static const struct {
        const char *url, *why;
    } bad_urls[] = {
        {"http://[", "an IPv6 host goes in brackets, like http://[::1]:8000"},
        {"http://[]:80", "an IPv6 host goes in brackets, like http://[::1]:8000"},
        {"http://[::1]x", "expected :port or / after the ]"},
        {"http://::1:80", "an IPv6 host goes in brackets, like http://[::1]:8000"},
        {"http://:80", "has no host"},
        {"http://h:0", "the port must be a number from 1 to 65535"},
        {"http://h:65536", "the port must be a number from 1 to 65535"},
        {"http://h:", "the port must be a number from 1 to 65535"},
        {"http://h:8x", "the port must be a number from 1 to 65535"},
        {"http://h:-1", "the port must be a number from 1 to 65535"},
        {"http://u:p@h:1", "no credentials in the url (use \"api_key_env\")"},
        {"http://h:1/?q", "a backend url takes no query or fragment"},
        {"http://h:1/v1 x", NULL},
        {"http://h:1/v1\\r\\nX: y", NULL},
    };
    for (size_t i = 0; i < sizeof(bad_urls) / sizeof(bad_urls[0]); i++) {
        char text[512], want[256];
        snprintf(text, sizeof(text), "{" MINIMAL_LISTEN ",\"backends\": {\"b\": {\"url\": \"%s\"}}," MINIMAL_ROUTES "}",
                 bad_urls[i].url);
        if (bad_urls[i].why == NULL) { /* a control byte: the url is not echoed, its place is */
            snprintf(want, sizeof(want), "t.json:1:60: backends.b.url: a url has no spaces or control characters "
                     "(byte 14 is one)");
        } else {
            int sentence = strncmp(bad_urls[i].why, "has no", 6) == 0; /* "URL" has no host; "URL": why */
            snprintf(want, sizeof(want), "t.json:1:60: backends.b.url: \"%s\"%s%s", bad_urls[i].url,
                     sentence ? " " : ": ", bad_urls[i].why);
        }
        expect_error(text, want);
    }
    /* a backend's headers and key header are fields a request can carry, and not the gateway's own */
    static const struct {
        const char *extra, *want;
    } bad_headers[] = {
        {"\"headers\": {\"x(y)\": \"1\"}", "backends.b.headers.x(y): not a header name"},
        {"\"headers\": {\"Host\": \"evil.example\"}", "backends.b.headers.Host: the gateway sets this header itself"},
        {"\"headers\": {\"Content-Length\": \"0\"}", "backends.b.headers.Content-Length: the gateway sets this header itself"},
        {"\"headers\": {\"x-z\": \"a\\u0001b\"}", "backends.b.headers.x-z: header values cannot hold control characters"},
        {"\"headers\": {\"x-team\": \"ml \"}", "backends.b.headers.x-team: a header value cannot begin or end with a space"},
        {"\"api_key_header\": \"x: y\"", "backends.b.api_key_header: not a header name"},
        {"\"api_key_header\": \"Connection\"", "backends.b.api_key_header: the gateway sets this header itself"},
        {"\"headers\": {\"Expect\": \"100-continue\"}", "backends.b.headers.Expect: the gateway sets this header itself"},
        {"\"headers\": {\"Proxy-Authorization\": \"x\"}", "backends.b.headers.Proxy-Authorization: the gateway sets"},
    };
    for (size_t i = 0; i < sizeof(bad_headers) / sizeof(bad_headers[0]); i++) {
        char text[512];
        snprintf(text, sizeof(text), "{" MINIMAL_LISTEN ",\"backends\": {\"b\": {\"url\": \"http://127.0.0.1:1\", %s}},"
                 MINIMAL_ROUTES "}", bad_headers[i].extra);
        av_config_t *c = parse(text);
        CHECK(c == NULL);
        CHECK(strstr(err, bad_headers[i].want) != NULL);
        if (strstr(err, bad_headers[i].want) == NULL)
            printf("#   got %s\n#   want %s\n", err, bad_headers[i].want);
        av_config_unref(c);
    }
    av_config_t *ok6 = parse("{" MINIMAL_LISTEN ",\"backends\": {\"b\": {\"url\": \"http://[::1]:8000/v1/\"}}," MINIMAL_ROUTES "}");
    CHECK(ok6 != NULL);
    if (ok6 != NULL) {
        CHECK_STR(ok6->backends[0].tls_name, "::1");
        CHECK_STR(ok6->backends[0].base_path, "/v1");
    }
    av_config_unref(ok6);
    unsetenv("AV_TEST_UNSET");
    expect_error("{" MINIMAL_LISTEN ",\"backends\": {\"b\": {\"url\": \"http://127.0.0.1:1\", \"api_key_env\": \"AV_TEST_UNSET\"}}," MINIMAL_ROUTES "}",
                 "t.json:1:89: backends.b.api_key_env: environment variable AV_TEST_UNSET is not set");
}

/* a variant's params may not name the members its system prompt is written into */
static void test_params_clash(void)
{
    expect_error("{" MINIMAL_LISTEN "," MINIMAL_BACKENDS ",\n\"routes\": [{\"name\": \"r\", \"variants\": [\n"
                 "  {\"name\": \"v\", \"backend\": \"b\", \"system_prompt\": \"p.txt\", \"params\": {\"messages\": []}}]}]}",
                 "t.json:3:70: routes[0].variants[0].params.messages: the variant's \"system_prompt\" is written into "
                 "\"messages\": set one or the other");
}

#define RO_ROUTE(ro) \
    "{" MINIMAL_LISTEN "," MINIMAL_BACKENDS ",\n\"routes\": [{\"name\": \"r\", \"variants\": [{\"name\": \"a\", " \
    "\"backend\": \"b\"}, {\"name\": \"c\", \"backend\": \"b\", \"weight\": 0}],\n\"rollout\": " ro "}]}"

/* rollout blocks: defaults, and each mistake at its place */
static void test_rollout(void)
{
    av_config_t *c = parse(RO_ROUTE("{\"baseline\": \"a\", \"candidate\": \"c\", \"kpis\": {\"ttft\": {\"max_ratio\": 1.5, "
                                    "\"slo_ms\": 900}}}"));
    CHECK(c != NULL);
    if (c != NULL) {
        const av_rollout_cfg_t *ro = &c->routes[0].rollout;
        CHECK_INT(ro->enabled, 1);
        CHECK_INT(ro->baseline, 0);
        CHECK_INT(ro->candidate, 1);
        CHECK_INT(ro->nsteps, 4);
        CHECK_INT(ro->steps[0], 5);
        CHECK_INT(ro->min_step_s, 60);
        CHECK_INT(ro->min_requests, 200);
        CHECK_INT(ro->nkpis, 1);
        CHECK(ro->kpis[0].margin == 1.5 && ro->kpis[0].slo == 900);
        CHECK(ro->alpha == 0.05);
        CHECK_STR(ro->on_timeout, "hold");
    }
    av_config_unref(c);
    expect_error(RO_ROUTE("{\"baseline\": \"a\", \"candidate\": \"c\", \"kpis\": {\"p99\": {}}}"),
                 "t.json:3:57: routes[0].rollout.kpis.p99: unknown KPI (known: error_rate, rate_429, block_rate, "
                 "latency, ttft, cost, feedback, inter_token, tokens)");
    expect_error(RO_ROUTE("{\"baseline\": \"a\", \"candidate\": \"c\", \"steps\": [10, 5, 100], "
                          "\"kpis\": {\"ttft\": {}}}"),
                 "t.json:3:62: routes[0].rollout.steps[1]: a step is a whole percentage from 1 to 100, above the one before");
    expect_error(RO_ROUTE("{\"baseline\": \"a\", \"candidate\": \"c\", \"kpis\": {}}"),
                 "t.json:3:1: routes[0].rollout: a rollout watches at least one KPI (\"kpis\": {\"error_rate\": "
                 "{\"max_increase\": 0.01}})");
    expect_error(RO_ROUTE("{\"baseline\": \"a\", \"candidate\": \"c\", \"alpha\": 2, \"kpis\": {\"ttft\": {}}}"),
                 "t.json:3:48: routes[0].rollout.alpha: must be from 1e-06 to 0.5");
    expect_error(RO_ROUTE("{\"baseline\": \"a\", \"candidate\": \"a\", \"kpis\": {\"ttft\": {}}}"),
                 "t.json:3:30: routes[0].rollout.candidate: not a variant of this route (or the baseline twice)");
}

static void test_refcount(void)
{
    av_config_t *c = parse("{" MINIMAL_LISTEN "," MINIMAL_BACKENDS "," MINIMAL_ROUTES "}");
    CHECK(c != NULL);
    CHECK(av_config_ref(c) == c);
    av_config_unref(c);
    CHECK_INT(c->_refs, 1);
    av_config_unref(c);
}

static void warn_collect(const char *key, void *arg)
{
    strcat((char *)arg, key);
    strcat((char *)arg, " ");
}

static void test_restart_keys(void)
{
    av_config_t *a = parse("{" MINIMAL_LISTEN "," MINIMAL_BACKENDS "," MINIMAL_ROUTES "}");
    av_config_t *b = parse("{\"listen\": [{\"address\": \"127.0.0.1:1\"}], \"workers\": 3," MINIMAL_BACKENDS "," MINIMAL_ROUTES "}");
    CHECK(a != NULL && b != NULL);
    char got[128] = "";
    av_config_restart_keys(a, b, warn_collect, got);
    CHECK_STR(got, "listen workers ");
    got[0] = '\0';
    av_config_restart_keys(a, a, warn_collect, got);
    CHECK_STR(got, "");
    av_config_unref(a);
    av_config_unref(b);
}

static void test_load_file_errors(void)
{
    av_config_t *c = av_config_load("/nonexistent/aviary.json", 1, err, sizeof(err));
    CHECK(c == NULL);
    CHECK_STR(err, "/nonexistent/aviary.json: cannot open: No such file or directory");
}

/* Splitting: sticky sources, weights, the override token, the response header. */
static void test_split_keys(void)
{
#define ROUTE(extra) "{" MINIMAL_LISTEN "," MINIMAL_BACKENDS ",\"routes\": [{\"name\": \"r\", " extra "}]}"
    expect_error(ROUTE("\"sticky\": {\"keys\": [\"header:x-u\", \"ip\"]}, \"variants\": [{\"name\": \"v\", \"backend\": \"b\"}]"),
                 "t.json:1:149: routes[0].sticky.keys[1]: \"ip\" is not a sticky key source (use \"header:NAME\", "
                 "\"cookie:NAME\", \"body:FIELD[.FIELD]\", \"api_key\" or \"client_ip\")");
    expect_error(ROUTE("\"sticky\": {\"keys\": \"body:a..b\"}, \"variants\": [{\"name\": \"v\", \"backend\": \"b\"}]"),
                 "t.json:1:126: routes[0].sticky.keys: \"body:a..b\": a body field is names joined by dots, at most 4 "
                 "deep (e.g. \"body:metadata.user_id\")");
    expect_error(ROUTE("\"variants\": [{\"name\": \"v\", \"backend\": \"b\", \"weight\": 0}]"),
                 "t.json:1:115: routes[0].variants: the weights add up to 0: give at least one variant a weight above 0");
    unsetenv("AV_TEST_NO_TOKEN");
    expect_error(ROUTE("\"override\": {\"token_env\": \"AV_TEST_NO_TOKEN\"}, \"variants\": [{\"name\": \"v\", \"backend\": \"b\"}]"),
                 "t.json:1:128: routes[0].override.token_env: environment variable AV_TEST_NO_TOKEN is not set");
    expect_error("{" MINIMAL_LISTEN "," MINIMAL_BACKENDS "," MINIMAL_ROUTES ",\"variant_header\": \"x y\"}",
                 "t.json:1:161: variant_header: \"x y\" is not a header name (letters, digits, - and _; \"\" for none)");
    av_config_t *c = parse(ROUTE("\"sticky\": {\"keys\": [\"cookie:uid\", \"body:metadata.user_id\", \"api_key\"]}, "
                                 "\"variants\": [{\"name\": \"v\", \"backend\": \"b\"}]"));
    CHECK(c != NULL);
    if (c != NULL) {
        const av_route_t *r = &c->routes[0];
        CHECK_INT(r->nsticky, 3);
        CHECK_INT(r->nsticky_body, 1);
        CHECK_INT(r->sticky[1].npath, 2);
        CHECK_STR(r->sticky[1].path[1], "user_id");
        CHECK_STR(r->salt, "r");        /* default: the route's name */
        CHECK_INT(r->override_enabled, 1);
        CHECK_STR(c->variant_header, "x-aviary-variant");
    }
    av_config_unref(c);
#undef ROUTE
}

int main(void)
{
    RUN(test_minimal_defaults);
    RUN(test_full_with_comments);
    RUN(test_syntax_errors);
    RUN(test_missing_required);
    RUN(test_type_and_bounds);
    RUN(test_unknown_and_duplicate_keys);
    RUN(test_reference_errors);
    RUN(test_addresses_and_urls);
    RUN(test_params_clash);
    RUN(test_split_keys);
    RUN(test_rollout);
    RUN(test_refcount);
    RUN(test_restart_keys);
    RUN(test_load_file_errors);
    TEST_DONE();
}
