/* test_headers.c: what reaches the backend: hop-by-hop gone, X-Forwarded-*
 * and the request id set, the client's Authorization replaced by the backend key. */
#include <event2/buffer.h>
#include <stdlib.h>

#include "arena.h"
#include "av.h"
#include "config.h"
#include "headers.h"
#include "req_t.h"
#include "../test.h"

static char *backend_request(av_req_t *req, const av_backend_t *b)
{
    struct evbuffer *out = evbuffer_new();
    av_headers_backend_request(out, req, b, 2);
    size_t n = evbuffer_get_length(out);
    char *s = malloc(n + 1);
    evbuffer_remove(out, s, n);
    s[n] = '\0';
    evbuffer_free(out);
    return s;
}

static void add(av_req_t *r, const char *n, const char *v)
{
    av_headers_add(r->arena, &r->headers, n, strlen(n), v, strlen(v));
}

static void init_req(av_req_t *r, av_arena_t *a)
{
    memset(r, 0, sizeof(*r));
    r->arena = a;
    r->method_str = "POST";
    r->target = "/v1/chat/completions?x=1";
    r->target_len = strlen(r->target);
    strcpy(r->id, "req-1");
    strcpy(r->client_ip, "10.1.2.3");
}

static void test_rewrite(void)
{
    av_arena_t *a = av_arena_new(0);
    av_req_t r;
    init_req(&r, a);
    add(&r, "Host", "gw.example");
    add(&r, "Connection", "keep-alive, X-Secret-Hop");
    add(&r, "X-Secret-Hop", "1");
    add(&r, "Keep-Alive", "timeout=5");
    add(&r, "Transfer-Encoding", "chunked");
    add(&r, "Authorization", "Bearer client-token");
    add(&r, "X-Forwarded-For", "192.0.2.1");
    add(&r, "x-request-id", "spoofed");
    add(&r, "Content-Length", "999");
    add(&r, "Expect", "100-continue");
    add(&r, "Content-Type", "application/json");
    av_kv_t extra[] = {{"x-team", "ml"}};
    av_backend_t b = {.host_header = "10.0.0.5:8000", .base_path = "/base", .api_key = "sk-backend",
                      .api_key_header = "authorization", .headers = extra, .nheaders = 1};
    char *s = backend_request(&r, &b);
    CHECK_STR(s, "POST /base/v1/chat/completions?x=1 HTTP/1.1\r\n"
                 "Host: 10.0.0.5:8000\r\n"
                 "Content-Type: application/json\r\n"
                 "X-Forwarded-For: 192.0.2.1, 10.1.2.3\r\n"
                 "X-Forwarded-Proto: http\r\n"
                 "X-Request-Id: req-1\r\n"
                 "Authorization: Bearer sk-backend\r\n"
                 "x-team: ml\r\n"
                 "Content-Length: 2\r\n"
                 "Connection: keep-alive\r\n\r\n");
    free(s);
    av_arena_free(a);
}

static void test_authorization_policy(void)
{
    av_arena_t *a = av_arena_new(0);
    av_req_t r;
    init_req(&r, a);
    add(&r, "Authorization", "Bearer client-token");
    av_backend_t b = {.host_header = "h", .base_path = "", .api_key_header = "authorization"};
    char *s = backend_request(&r, &b);
    CHECK(strstr(s, "client-token") == NULL); /* not forwarded by default */
    free(s);
    b.forward_authorization = 1;
    s = backend_request(&r, &b);
    CHECK(strstr(s, "Authorization: Bearer client-token\r\n") != NULL);
    free(s);
    b.api_key = "sk-ant";
    b.api_key_header = "x-api-key";
    s = backend_request(&r, &b);
    CHECK(strstr(s, "x-api-key: sk-ant\r\n") != NULL);
    CHECK(strstr(s, "Authorization: Bearer client-token\r\n") != NULL);
    free(s);
    av_arena_free(a);
}

static void test_hop_and_response_filter(void)
{
    av_arena_t *a = av_arena_new(0);
    av_headers_t h = {0};
    av_headers_add(a, &h, "Connection", 10, "close, x-hop", 12);
    av_headers_add(a, &h, "x-hop", 5, "1", 1);
    av_headers_add(a, &h, "Content-Length", 14, "5", 1);
    av_headers_add(a, &h, "Content-Type", 12, "text/event-stream", 17);
    CHECK(av_header_is_hop(&h, "TE", 2));
    CHECK(av_header_is_hop(&h, "X-Hop", 5));
    CHECK(!av_header_is_hop(&h, "x-hope", 6));
    CHECK(!av_header_forward_response(&h, &h.v[0]));
    CHECK(!av_header_forward_response(&h, &h.v[1]));
    CHECK(!av_header_forward_response(&h, &h.v[2]));
    CHECK(av_header_forward_response(&h, &h.v[3]));
    CHECK(av_headers_get(&h, "content-type") == &h.v[3]);
    CHECK(av_headers_get(&h, "missing") == NULL);
    av_arena_free(a);
}

/* Header names compare without case, letters only; length counts. */
static void test_streq_ci(void)
{
    CHECK_INT(av_streq_ci("Content-Length", 14, "content-length"), 1);
    CHECK_INT(av_streq_ci("CONTENT-LENGTH", 14, "content-length"), 1);
    CHECK_INT(av_streq_ci("content-len", 11, "content-length"), 0);
    CHECK_INT(av_streq_ci("content-length-x", 16, "content-length"), 0);
    CHECK_INT(av_streq_ci("te", 2, "te"), 1);
    CHECK_INT(av_streq_ci("a\0", 2, "a"), 0);
    CHECK_INT(av_streq_ci("@", 1, "`"), 0); /* differ by 0x20 but are no letters */
    CHECK_INT(av_streq_ci("[", 1, "{"), 0);
    CHECK_INT(av_streq_ci("", 0, ""), 1);
    CHECK_INT(av_streq_ci("", 0, "x"), 0);
}

static void test_request_id_validation(void)
{
    CHECK(av_request_id_valid("abc-123_x.y:z", 13));
    CHECK(!av_request_id_valid("", 0));
    CHECK(!av_request_id_valid("a b", 3));
    CHECK(!av_request_id_valid("a\r\nx: y", 7));
    char big[200];
    memset(big, 'a', sizeof(big));
    CHECK(!av_request_id_valid(big, sizeof(big)));
}

/* Field names are tokens, values have no control bytes but tab. */
static void test_validity(void)
{
    CHECK(av_header_name_valid("X-Request-Id", 12));
    CHECK(av_header_name_valid("a!#$%&'*+-.^_`|~9", 17));
    CHECK(!av_header_name_valid("", 0));
    CHECK(!av_header_name_valid("X Bad", 5));
    CHECK(!av_header_name_valid("X:Bad", 5));
    CHECK(!av_header_name_valid("X\tBad", 5));
    CHECK(!av_header_name_valid("X\xc3\xa9", 3));
    CHECK(av_header_value_valid("a b\tc \xc3\xa9", 8));
    CHECK(av_header_value_valid("", 0));
    CHECK(!av_header_value_valid("a\x01", 2));
    CHECK(!av_header_value_valid("a\x7f", 2));
    CHECK(!av_header_value_valid("a\0b", 3));
}

int main(void)
{
    RUN(test_rewrite);
    RUN(test_authorization_policy);
    RUN(test_hop_and_response_filter);
    RUN(test_streq_ci);
    RUN(test_request_id_validation);
    RUN(test_validity);
    TEST_DONE();
}
