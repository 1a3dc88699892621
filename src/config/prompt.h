/* prompt.h: a variant's system prompt: a text file whose {{name}}
 * placeholders are filled from the config, and the hash that names the
 * exact text in every KPI line. */
#ifndef AV_PROMPT_H
#define AV_PROMPT_H

#include <stddef.h>

typedef struct av_arena_s av_arena_t;

#define AV_PROMPT_MAX_BYTES (256u * 1024u)
#define AV_PROMPT_HASH_LEN 16 /* hex digits of SHA-256 */

typedef struct {
    const char *text;     /* placeholders filled */
    size_t len;
    const char *json;     /* text as a JSON string, quotes included */
    size_t json_len;
    char hash[AV_PROMPT_HASH_LEN + 1];
} av_prompt_t;

/* Reads path (UTF-8, at most AV_PROMPT_MAX_BYTES), fills each {{name}}
 * (spaces inside the braces allowed) with vars' value for name (names[i] ->
 * values[i]) and hashes the result. Everything lives in arena. Returns 0,
 * or -1 with "path:line: reason" in err. */
int av_prompt_load(av_arena_t *arena, const char *path, const char *const *names, const char *const *values,
                   size_t nvars, av_prompt_t *out, char *err, size_t errlen);

#endif
