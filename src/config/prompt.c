/* prompt.c: loading a system prompt file: placeholders, size and encoding
 * checks, and its SHA-256 (the first 16 hex digits go in the KPI log). */
#include "prompt.h"

#include <errno.h>
#include <event2/buffer.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>

#include "arena.h"
#include "av.h"
#include "jsonw.h"

static unsigned line_of(const char *text, const char *at)
{
    unsigned line = 1;
    for (const char *p = text; p < at; p++)
        line += *p == '\n';
    return line;
}

int av_prompt_load(av_arena_t *arena, const char *path, const char *const *names, const char *const *values,
                   size_t nvars, av_prompt_t *out, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    char *raw = av_malloc(AV_PROMPT_MAX_BYTES + 1);
    size_t n = fread(raw, 1, AV_PROMPT_MAX_BYTES + 1, f);
    int rerr = ferror(f);
    fclose(f);
    if (rerr || n > AV_PROMPT_MAX_BYTES) {
        snprintf(err, errlen, "%s: %s", path, rerr ? "read error" : "larger than 256 KiB");
        free(raw);
        return -1;
    }
    raw[n] = '\0';
    if (memchr(raw, '\0', n) != NULL) {
        snprintf(err, errlen, "%s:%u: a NUL byte: not a text file", path, line_of(raw, memchr(raw, '\0', n)));
        free(raw);
        return -1;
    }
    struct evbuffer *b = evbuffer_new();
    const char *p = raw, *end = raw + n;
    while (p < end) {
        const char *open = strstr(p, "{{");
        if (open == NULL) {
            evbuffer_add(b, p, (size_t)(end - p));
            break;
        }
        evbuffer_add(b, p, (size_t)(open - p));
        const char *close = strstr(open + 2, "}}");
        if (close == NULL) {
            snprintf(err, errlen, "%s:%u: \"{{\" without \"}}\"", path, line_of(raw, open));
            goto fail;
        }
        const char *k = open + 2, *ke = close;
        while (k < ke && (*k == ' ' || *k == '\t'))
            k++;
        while (ke > k && (ke[-1] == ' ' || ke[-1] == '\t'))
            ke--;
        size_t i = 0;
        while (i < nvars && !(strlen(names[i]) == (size_t)(ke - k) && memcmp(names[i], k, (size_t)(ke - k)) == 0))
            i++;
        if (i == nvars) {
            snprintf(err, errlen, "%s:%u: {{%.*s}} has no value in the variant's \"prompt_vars\"", path,
                     line_of(raw, open), (int)(ke - k > 64 ? 64 : ke - k), k);
            goto fail;
        }
        evbuffer_add(b, values[i], strlen(values[i]));
        p = close + 2;
    }
    out->len = evbuffer_get_length(b);
    char *text = av_arena_alloc(arena, out->len + 1);
    evbuffer_remove(b, text, out->len);
    text[out->len] = '\0';
    out->text = text;
    av_json_str(b, text, out->len);
    out->json_len = evbuffer_get_length(b);
    char *json = av_arena_alloc(arena, out->json_len + 1);
    evbuffer_remove(b, json, out->json_len);
    json[out->json_len] = '\0';
    out->json = json;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    if (EVP_Digest(text, out->len, md, &mdlen, EVP_sha256(), NULL) != 1)
        av_oom();
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < AV_PROMPT_HASH_LEN / 2; i++) {
        out->hash[2 * i] = hex[md[i] >> 4];
        out->hash[2 * i + 1] = hex[md[i] & 15];
    }
    out->hash[AV_PROMPT_HASH_LEN] = '\0';
    evbuffer_free(b);
    free(raw);
    return 0;
fail:
    evbuffer_free(b);
    free(raw);
    return -1;
}
