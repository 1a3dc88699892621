/* test_router.c: routes match in order on path prefix, exact path, host and headers. */
#include "arena.h"
#include "av.h"
#include "config.h"
#include "headers.h"
#include "router.h"
#include "../test.h"

static const char *cfg_text =
    "{\"listen\": [{\"address\": \"127.0.0.1:0\"}],"
    " \"backends\": {\"b\": {\"url\": \"http://127.0.0.1:9\"}},"
    " \"routes\": ["
    "  {\"name\": \"exact\", \"match\": {\"path\": \"/v1/models\"}, \"variants\": [{\"name\": \"v\", \"backend\": \"b\"}]},"
    "  {\"name\": \"tenant\", \"match\": {\"path_prefix\": \"/v1/\", \"headers\": {\"x-tenant\": \"a\"}}, \"variants\": [{\"name\": \"v\", \"backend\": \"b\"}]},"
    "  {\"name\": \"host\", \"match\": {\"path_prefix\": \"/v1/\", \"host\": \"api.example\"}, \"variants\": [{\"name\": \"v\", \"backend\": \"b\"}]},"
    "  {\"name\": \"v1\", \"match\": {\"path_prefix\": \"/v1/\"}, \"variants\": [{\"name\": \"v\", \"backend\": \"b\"}]}"
    " ]}";

static const char *route_for(av_config_t *c, const char *target, const char *host, const char *tenant)
{
    av_arena_t *a = av_arena_new(0);
    av_req_t r = {0};
    r.arena = a;
    r.target = target;
    r.target_len = strlen(target);
    r.host = host;
    if (tenant != NULL)
        av_headers_add(a, &r.headers, "X-Tenant", 8, tenant, strlen(tenant));
    const av_route_t *route = av_route_match(c, &r);
    av_arena_free(a);
    return route ? route->name : NULL;
}

static void test_order_and_conditions(void)
{
    char err[256];
    av_config_t *c = av_config_parse("t.json", cfg_text, strlen(cfg_text), 1, err, sizeof(err));
    CHECK(c != NULL);
    if (c == NULL)
        return;
    CHECK_STR(route_for(c, "/v1/models", NULL, "a"), "exact");
    CHECK_STR(route_for(c, "/v1/models?limit=1", NULL, NULL), "exact");
    CHECK_STR(route_for(c, "/v1/models/x", NULL, NULL), "v1");
    CHECK_STR(route_for(c, "/v1/chat/completions", NULL, "a"), "tenant");
    CHECK_STR(route_for(c, "/v1/chat/completions", NULL, "b"), "v1");
    CHECK_STR(route_for(c, "/v1/chat/completions", "API.example:8080", NULL), "host");
    CHECK_STR(route_for(c, "/v1/chat/completions", "other", NULL), "v1");
    CHECK_STR(route_for(c, "/v2/chat", NULL, NULL), NULL);
    CHECK_STR(route_for(c, "/v1", NULL, NULL), NULL);
    av_config_unref(c);
}

/* Dot segments go (RFC 3986 5.2.4, %2e a dot); above the root is refused. */
static void test_normalize(void)
{
    static const struct {
        const char *in, *out; /* out NULL: refused */
    } cases[] = {
        {"/v1/chat", "/v1/chat"}, {"/v1/../x", "/x"}, {"/v1/./x", "/v1/x"}, {"/v1/x/..", "/v1/"},
        {"/v1/x/.", "/v1/x/"}, {"/..", NULL}, {"/../x", NULL}, {"/a/../../x", NULL}, {"/.", "/"},
        {"/a/%2e%2E/b?x=/../y", "/b?x=/../y"}, {"/a/.%2e", "/"}, {"/a/...", "/a/..."}, {"/a/.b/..c", "/a/.b/..c"},
        {"/a//../b", "/a/b"}, {"/%2", "/%2"}, {"/a/%2e%2e%2e/b", "/a/%2e%2e%2e/b"}, {"x", NULL}, {"?a", NULL},
        {"/?/../", "/?/../"}, {"/a/b/c/../../d", "/a/d"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char buf[64];
        size_t n = strlen(cases[i].in);
        memcpy(buf, cases[i].in, n + 1);
        int rc = av_target_normalize(buf, &n);
        if (cases[i].out == NULL) {
            CHECK_INT(rc, AV_EINVAL);
            continue;
        }
        CHECK_INT(rc, 0);
        CHECK_STR(buf, cases[i].out);
        CHECK_INT(n, strlen(cases[i].out));
    }
}

int main(void)
{
    RUN(test_order_and_conditions);
    RUN(test_normalize);
    TEST_DONE();
}
