/* test_reqbody.c: the variant's body edits. Over many bodies made of the
 * same members in random orders and spacing, the edited body is valid JSON,
 * carries the variant's model, params and system prompt where the dialect
 * wants them, and keeps every other member as the client sent it. */
#include <cjson/cJSON.h>
#include <event2/buffer.h>
#include <stdlib.h>

#include "arena.h"
#include "av.h"
#include "config.h"
#include "reqbody.h"
#include "../test.h"

static av_route_t route;
static av_variant_t variant;
static av_param_t params[2] = {{"temperature", "0.2", 3}, {"max_tokens", "64", 2}};

static void setup(int replace)
{
    memset(&route, 0, sizeof(route));
    memset(&variant, 0, sizeof(variant));
    route.name = "r";
    route.salt = "r";
    route.variants = &variant;
    route.nvariants = 1;
    variant.name = "v";
    variant.model = "m2";
    variant.params = params;
    variant.nparams = 2;
    variant.prompt_replace = replace;
    variant.prompt = (av_prompt_t){.text = "P \"q\"", .len = 5, .json = "\"P \\\"q\\\"\"", .json_len = 9, .hash = "0123"};
}

/* Runs scan and rewrite on body for target; returns the edited body, parsed. */
static cJSON *run(const char *target, const char *body, const char **prompt_hash)
{
    av_arena_t *a = av_arena_new(0);
    av_req_t req = {0};
    req.arena = a;
    req.route = &route;
    req.variant = &variant;
    req.target = target;
    req.target_len = strlen(target);
    req.body = evbuffer_new();
    evbuffer_add(req.body, body, strlen(body));
    av_body_t b = {0};
    CHECK_INT(av_body_scan(&req, &b), 0);
    av_body_rewrite(&req, &b);
    size_t n = evbuffer_get_length(req.body);
    char *out = malloc(n + 1);
    evbuffer_remove(req.body, out, n);
    out[n] = '\0';
    cJSON *j = cJSON_Parse(out);
    if (j == NULL)
        printf("# not JSON: %s\n", out);
    if (prompt_hash != NULL)
        *prompt_hash = req.prompt_hash;
    free(out);
    evbuffer_free(req.body);
    av_arena_free(a);
    return j;
}

static const char *ws(unsigned r)
{
    static const char *const w[] = {"", " ", "\n  ", "\t", "\r\n"};
    return w[r % 5];
}

/* A chat body with its members shuffled and spaced at random. */
static void random_chat(char *out, size_t n, unsigned seed)
{
    const char *members[] = {
        "\"model\":\"gpt\"",
        "\"temperature\":1.5",
        "\"messages\":[{\"role\":\"system\",\"content\":\"theirs\"},{\"role\":\"user\",\"content\":\"hi\"}]",
        "\"stream\":false",
        "\"user\":\"u\\u0031\"",
        "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{}}}]",
    };
    size_t order[6] = {0, 1, 2, 3, 4, 5};
    for (size_t i = 5; i > 0; i--) {
        size_t j = (size_t)rand_r(&seed) % (i + 1), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    size_t k = (size_t)snprintf(out, n, "%s{", ws((unsigned)rand_r(&seed)));
    for (size_t i = 0; i < 6; i++)
        k += (size_t)snprintf(out + k, n - k, "%s%s%s%s", i ? "," : "", ws((unsigned)rand_r(&seed)), members[order[i]],
                              ws((unsigned)rand_r(&seed)));
    snprintf(out + k, n - k, "}%s", ws((unsigned)rand_r(&seed)));
}

static void test_chat_random_bodies(void)
{
    char body[1024];
    for (unsigned seed = 1; seed <= 500; seed++) {
        setup(seed % 2);
        random_chat(body, sizeof(body), seed);
        const char *hash = NULL;
        cJSON *j = run("/v1/chat/completions", body, &hash);
        CHECK(j != NULL);
        if (j == NULL)
            return;
        CHECK_STR(cJSON_GetObjectItem(j, "model")->valuestring, "m2");
        CHECK(cJSON_GetObjectItem(j, "temperature")->valuedouble == 0.2);
        CHECK_INT(cJSON_GetObjectItem(j, "max_tokens")->valueint, 64);
        CHECK(cJSON_IsFalse(cJSON_GetObjectItem(j, "stream")));
        CHECK_STR(cJSON_GetObjectItem(j, "user")->valuestring, "u1");
        CHECK_STR(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "tools"), 0), "type")->valuestring,
                  "function");
        cJSON *msgs = cJSON_GetObjectItem(j, "messages");
        CHECK_INT(cJSON_GetArraySize(msgs), seed % 2 ? 2 : 3); /* replace drops the client's system message */
        CHECK_STR(cJSON_GetObjectItem(cJSON_GetArrayItem(msgs, 0), "content")->valuestring, "P \"q\"");
        CHECK_STR(cJSON_GetObjectItem(cJSON_GetArrayItem(msgs, cJSON_GetArraySize(msgs) - 1), "content")->valuestring,
                  "hi");
        CHECK_INT(cJSON_GetArraySize(j), 7);
        CHECK_STR(hash, "0123");
        cJSON_Delete(j);
    }
}

static void test_dialects(void)
{
    setup(0);
    cJSON *j = run("/v1/responses", "{\"input\":\"hi\",\"instructions\":\"Bullets.\"}", NULL);
    CHECK_STR(cJSON_GetObjectItem(j, "instructions")->valuestring, "P \"q\"\n\nBullets.");
    cJSON_Delete(j);
    j = run("/v1/messages?beta=1", "{\"system\":[{\"type\":\"text\",\"text\":\"T\"}],\"messages\":[]}", NULL);
    cJSON *sys = cJSON_GetObjectItem(j, "system");
    CHECK_INT(cJSON_GetArraySize(sys), 2);
    CHECK_STR(cJSON_GetObjectItem(cJSON_GetArrayItem(sys, 0), "text")->valuestring, "P \"q\"");
    cJSON_Delete(j);
    j = run("/v1/messages", "{\"system\":[ ],\"messages\":[]}", NULL);
    CHECK_INT(cJSON_GetArraySize(cJSON_GetObjectItem(j, "system")), 1);
    cJSON_Delete(j);
    j = run("/v1/embeddings", "{\"input\":\"x\"}", NULL); /* no system message there: params and model only */
    CHECK(cJSON_GetObjectItem(j, "messages") == NULL && cJSON_GetObjectItem(j, "instructions") == NULL);
    CHECK_STR(cJSON_GetObjectItem(j, "model")->valuestring, "m2");
    cJSON_Delete(j);
    j = run("/v1/chat/completions", "{}", NULL); /* an empty object gets every member */
    CHECK_INT(cJSON_GetArraySize(j), 4);
    CHECK_INT(cJSON_GetArraySize(cJSON_GetObjectItem(j, "messages")), 1);
    cJSON_Delete(j);
    setup(1);
    j = run("/v1/messages", "{\"system\":\"old\",\"messages\":[]}", NULL);
    CHECK_STR(cJSON_GetObjectItem(j, "system")->valuestring, "P \"q\"");
    cJSON_Delete(j);
}

/* Two edits of one member (a variant's params naming a member the gateway
 * edits too) once tore the body: memcpy with a negative size. The config
 * refuses the prompt's members in params; the rewrite itself keeps the
 * first edit of a member and writes valid JSON whatever it is given. */
static void test_overlapping_edits(void)
{
    static av_backend_t be;
    memset(&be, 0, sizeof(be));
    be.stream_usage = 1;
    static av_param_t clash[3] = {{"stream_options", "{\"include_usage\":false}", 0},
                                  {"messages", "[{\"role\":\"user\",\"content\":\"p\"}]", 0},
                                  {"temperature", "0", 0}};
    for (size_t k = 0; k < 3; k++)
        clash[k].json_len = strlen(clash[k].json);
    static const char *const bodies[] = {
        "{\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
        "{\"stream\":true,\"stream_options\":{\"include_usage\":false,\"x\":1},\"messages\":[]}",
        "{\"stream\":true,\"stream_options\":null,\"messages\":[],\"messages\":[1]}",
        "{\"stream\":true,\"stream_options\":{},\"stream_options\":{}}",
        "{}",
    };
    for (size_t mask = 0; mask < 8; mask++) /* every subset of the clashing params */
        for (size_t i = 0; i < AV_NELEMS(bodies); i++) {
            setup(mask & 1);
            variant.backend = &be;
            av_param_t ps[3];
            size_t n = 0;
            for (size_t k = 0; k < 3; k++)
                if (mask & (1u << k))
                    ps[n++] = clash[k];
            variant.params = ps;
            variant.nparams = n;
            cJSON *j = run("/v1/chat/completions", bodies[i], NULL);
            CHECK(j != NULL);
            if (j == NULL) {
                printf("#   mask %zu body %s\n", mask, bodies[i]);
                continue;
            }
            const cJSON *so = cJSON_GetObjectItem(j, "stream_options");
            if (mask & 1) /* the variant's stream_options are the ones sent */
                CHECK(cJSON_IsFalse(cJSON_GetObjectItem(so, "include_usage")));
            cJSON_Delete(j);
        }
}

/* A body that repeats the members a variant sets past what one pass edits
 * is refused whole: a copy left unedited once kept the client's value (65
 * "max_tokens" kept the last, past the variant's cap). */
static void test_repeated_members(void)
{
    static av_param_t caps[2] = {{"max_tokens", "64", 2}, {"temperature", "0", 1}};
    for (int shape = 0; shape < 3; shape++) {
        setup(0);
        variant.prompt.text = NULL;
        variant.params = caps;
        variant.nparams = 2;
        char *body = malloc(64 * 32 + 64), *p = body;
        p += sprintf(p, "{");
        int copies = shape == 0 ? 65 : 64;
        for (int i = 0; i < copies; i++)
            p += sprintf(p, "%s\"%s\":%d", i ? "," : "", shape == 1 ? "temperature" : "max_tokens", 100000 + i);
        if (shape == 1)
            p += sprintf(p, ",\"max_tokens\":100000");
        sprintf(p, "}");
        av_arena_t *a = av_arena_new(0);
        av_req_t req = {0};
        req.arena = a;
        req.route = &route;
        req.variant = &variant;
        req.target = "/v1/chat/completions";
        req.target_len = strlen(req.target);
        req.body = evbuffer_new();
        evbuffer_add(req.body, body, strlen(body));
        av_body_t b = {0};
        CHECK_INT(av_body_scan(&req, &b), 0);
        int rc = av_body_rewrite(&req, &b);
        if (shape < 2) {
            CHECK_INT(rc, AV_ELIMIT); /* 65 copies, or 64 and one more of another */
            CHECK_INT(evbuffer_get_length(req.body), strlen(body)); /* left as it came */
        } else {
            CHECK_INT(rc, 0); /* 64 copies of one: every one edited */
            size_t n = evbuffer_get_length(req.body);
            char *out = malloc(n + 1);
            evbuffer_remove(req.body, out, n);
            out[n] = '\0';
            CHECK(strstr(out, "1000") == NULL);
            free(out);
        }
        evbuffer_free(req.body);
        av_arena_free(a);
        free(body);
    }
}

int main(void)
{
    RUN(test_chat_random_bodies);
    RUN(test_dialects);
    RUN(test_overlapping_edits);
    RUN(test_repeated_members);
    TEST_DONE();
}
