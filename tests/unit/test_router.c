/* test_router.c: routes match in order on path prefix, exact path, host and headers. */
#include "arena.h"
#include "config.h"
#include "headers.h"
#include "router.h"
#include "test.h"

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

int main(void)
{
    RUN(test_order_and_conditions);
    TEST_DONE();
}
