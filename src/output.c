/* output.c: pulling the answer's text out of a response. SSE events are
 * reassembled across reads; each data line's JSON is parsed (cJSON) for the
 * dialects' text fields. Only used when something compares answers. */
#include "output.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "av.h"

void av_output_init(av_output_t *o, int stream)
{
    memset(o, 0, sizeof(*o));
    o->stream = stream;
    o->hash = 0xcbf29ce484222325ull;
}

static void add_text(av_output_t *o, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        o->hash = (o->hash ^ *p) * 0x100000001b3ull;
        o->chars++;
    }
}

static const cJSON *path(const cJSON *j, const char *a, int idx, const char *b)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(j, a);
    if (idx >= 0)
        x = cJSON_GetArrayItem(x, idx);
    return b ? cJSON_GetObjectItemCaseSensitive(x, b) : x;
}

static void add_if_string(av_output_t *o, const cJSON *x)
{
    if (cJSON_IsString(x))
        add_text(o, x->valuestring);
}

/* One JSON object: a stream event or a whole response. */
static void from_json(av_output_t *o, const char *text, size_t len)
{
    cJSON *j = cJSON_ParseWithLength(text, len);
    if (j == NULL)
        return;
    const cJSON *choice = path(j, "choices", 0, NULL);
    if (choice != NULL) { /* OpenAI chat or completions, whole or a chunk */
        add_if_string(o, path(choice, "message", -1, "content"));
        add_if_string(o, path(choice, "delta", -1, "content"));
        add_if_string(o, cJSON_GetObjectItemCaseSensitive(choice, "text"));
    }
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(j, "type");
    if (cJSON_IsString(type)) {
        if (strcmp(type->valuestring, "content_block_delta") == 0) /* Anthropic stream */
            add_if_string(o, path(j, "delta", -1, "text"));
        else if (strcmp(type->valuestring, "response.output_text.delta") == 0) /* Responses stream */
            add_if_string(o, cJSON_GetObjectItemCaseSensitive(j, "delta"));
        else if (strcmp(type->valuestring, "message") == 0) { /* Anthropic, whole */
            const cJSON *c;
            cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(j, "content"))
                add_if_string(o, cJSON_GetObjectItemCaseSensitive(c, "text"));
        }
    }
    const cJSON *out, *c; /* Responses, whole: output[].content[].text */
    cJSON_ArrayForEach(out, cJSON_GetObjectItemCaseSensitive(j, "output"))
        cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(out, "content"))
            if (cJSON_IsString(cJSON_GetObjectItemCaseSensitive(c, "type")) &&
                strcmp(cJSON_GetObjectItemCaseSensitive(c, "type")->valuestring, "output_text") == 0)
                add_if_string(o, cJSON_GetObjectItemCaseSensitive(c, "text"));
    cJSON_Delete(j);
}

static void line(av_output_t *o, const char *s, size_t n)
{
    if (n > 0 && s[n - 1] == '\r')
        n--;
    if (n < 5 || memcmp(s, "data:", 5) != 0)
        return;
    s += 5;
    n -= 5;
    if (n > 0 && *s == ' ')
        s++, n--;
    if (n == 6 && memcmp(s, "[DONE]", 6) == 0)
        return;
    from_json(o, s, n);
}

static void keep(av_output_t *o, const char *data, size_t len)
{
    if (o->overflow)
        return;
    if (o->len + len > AV_OUTPUT_MAX_LINE) {
        o->overflow = 1;
        o->incomplete = 1;
        return;
    }
    if (o->len + len > o->cap) {
        o->cap = o->cap ? o->cap : 1024;
        while (o->cap < o->len + len)
            o->cap *= 2;
        o->buf = av_realloc(o->buf, o->cap);
    }
    memcpy(o->buf + o->len, data, len);
    o->len += len;
}

void av_output_feed(av_output_t *o, const char *data, size_t len)
{
    if (!o->stream) {
        keep(o, data, len);
        return;
    }
    while (len > 0) {
        const char *nl = memchr(data, '\n', len);
        if (nl == NULL) {
            keep(o, data, len);
            return;
        }
        size_t n = (size_t)(nl - data);
        if (o->len > 0) { /* the rest of a line begun in an earlier read */
            keep(o, data, n);
            if (!o->overflow)
                line(o, o->buf, o->len);
            o->len = 0;
            o->overflow = 0; /* the next line starts clean; an over-long one was skipped */
        } else {
            line(o, data, n);
        }
        data = nl + 1;
        len -= n + 1;
    }
}

void av_output_end(av_output_t *o)
{
    if (o->overflow)
        return;
    if (o->stream)
        line(o, o->buf, o->len);
    else if (o->len > 0)
        from_json(o, o->buf, o->len);
    o->len = 0;
}

void av_output_free(av_output_t *o)
{
    free(o->buf);
    o->buf = NULL;
}
