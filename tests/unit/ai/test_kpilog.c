/* test_kpilog.c: the KPI line is one valid JSON object with every field, escaped;
 * the writer loses no line, across threads and on close. */
#include <cjson/cJSON.h>
#include <event2/buffer.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "kpilog.h"
#include "../test.h"

static char *format(const av_kpi_rec_t *r)
{
    struct evbuffer *b = evbuffer_new();
    av_kpi_format(b, r);
    size_t n = evbuffer_get_length(b);
    char *s = malloc(n + 1);
    evbuffer_remove(b, s, n);
    s[n] = '\0';
    evbuffer_free(b);
    return s;
}

static void test_format_exact(void)
{
    av_kpi_rec_t r = {
        .time_us = 1795569929123456ull, .request_id = "abc", .route = "chat", .variant = "stable",
        .generation = 3, .backend = "prod", .model = "m\"1", .client_model = "gpt", .assign = "sticky",
        .method = "POST",
        .path = "/v1/chat/completions?x=1", .path_len = 20, .status = 200, .stream = 1,
        .latency_us = 12345, .first_byte_us = 999, .ttft_us = 1999, .bytes_in = 10, .bytes_out = 20, .error = NULL,
        .input_tokens = 30, .output_tokens = 7, .cached_tokens = 5, .cache_write_tokens = 0, .reasoning_tokens = -1,
        .usage_estimated = 1, .cost_nano = 1234567, .inter_token_p50_us = 25000, .output_tps_milli = 41500,
        .finish_reason = "stop", .tool_calls = 2,
    };
    char *s = format(&r);
    CHECK_STR(s, "{\"time\":\"2026-11-25T01:25:29.123Z\",\"request_id\":\"abc\",\"route\":\"chat\","
                 "\"variant\":\"stable\",\"assign\":\"sticky\",\"shadow\":false,\"generation\":3,\"backend\":\"prod\","
                 "\"client_model\":\"gpt\",\"model\":\"m\\\"1\",\"prompt_hash\":null,"
                 "\"method\":\"POST\",\"path\":\"/v1/chat/completions\",\"status\":200,\"stream\":true,"
                 "\"latency_ms\":12.345,\"first_byte_ms\":0.999,\"ttft_ms\":1.999,\"inter_token_p50_ms\":25.000,"
                 "\"output_tokens_per_s\":41.500,\"input_tokens\":30,\"output_tokens\":7,\"cached_input_tokens\":5,"
                 "\"cache_write_tokens\":0,\"reasoning_tokens\":null,\"usage_estimated\":true,\"cost_usd\":0.001234567,"
                 "\"finish_reason\":\"stop\",\"tool_calls\":2,\"bytes_in\":10,\"bytes_out\":20,\"policy\":[],\"policy_errors\":0,\"error\":null}\n");
    free(s);
}

static void test_format_nulls_and_control_chars(void)
{
    av_kpi_rec_t r = {.request_id = "x", .method = "GET", .path = "/a\nb\x01", .path_len = 5, .status = 499,
                      .latency_us = 5, .first_byte_us = -1, .ttft_us = -1, .input_tokens = -1, .output_tokens = -1,
                      .cached_tokens = -1, .cache_write_tokens = -1, .reasoning_tokens = -1, .cost_nano = -1,
                      .inter_token_p50_us = -1, .output_tps_milli = -1, .tool_calls = -1, .error = "client_abort"};
    char *s = format(&r);
    cJSON *j = cJSON_Parse(s);
    CHECK(j != NULL);
    CHECK(cJSON_IsNull(cJSON_GetObjectItem(j, "route")));
    CHECK(cJSON_IsNull(cJSON_GetObjectItem(j, "ttft_ms")));
    CHECK_STR(cJSON_GetObjectItem(j, "path")->valuestring, "/a\nb\x01");
    CHECK_STR(cJSON_GetObjectItem(j, "error")->valuestring, "client_abort");
    CHECK(strchr(s, '\n') == s + strlen(s) - 1); /* one line */
    cJSON_Delete(j);
    free(s);
}

static av_kpilog_t *shared;

static void *writer_thread(void *arg)
{
    struct evbuffer *b = evbuffer_new();
    for (int i = 0; i < 5000; i++) {
        evbuffer_add_printf(b, "{\"t\":%d,\"i\":%d}\n", (int)(long)arg, i);
        if (i % 2 == 1) /* batches of two, as workers batch theirs */
            av_kpilog_append(shared, b, 2);
    }
    evbuffer_free(b);
    return NULL;
}

static void test_writer_loses_nothing(void)
{
    char path[] = "/tmp/aviary-kpi-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    char err[256];
    shared = av_kpilog_open(path, err, sizeof(err));
    CHECK(shared != NULL);
    pthread_t t[4];
    for (long i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, writer_thread, (void *)i);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    CHECK_INT(av_kpilog_lines(shared), 20000);
    av_kpilog_close(shared);
    FILE *f = fopen(path, "r");
    char line[128];
    int n = 0, bad = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        n++;
        cJSON *j = cJSON_Parse(line);
        bad += j == NULL;
        cJSON_Delete(j);
    }
    fclose(f);
    unlink(path);
    CHECK_INT(n, 20000);
    CHECK_INT(bad, 0);
}

static void test_open_error(void)
{
    char err[256];
    CHECK(av_kpilog_open("/nonexistent-dir/kpi.log", err, sizeof(err)) == NULL);
    CHECK_STR(err, "kpi log /nonexistent-dir/kpi.log: cannot open: No such file or directory");
}

int main(void)
{
    RUN(test_format_exact);
    RUN(test_format_nulls_and_control_chars);
    RUN(test_writer_loses_nothing);
    RUN(test_open_error);
    TEST_DONE();
}
