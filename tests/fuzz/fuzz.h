/* fuzz.h: what the libFuzzer targets in tests/fuzz share: taking the
 * input apart, and a check that stops the run with the broken invariant. */
#ifndef AV_FUZZ_H
#define AV_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A failed invariant is a finding: say which, then abort so libFuzzer
 * keeps the input as a crash-* reproducer. */
#define FUZZ_CHECK(cond, ...)                                                           \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            fprintf(stderr, "\n%s:%d: invariant broken: %s\n  ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                               \
            fprintf(stderr, "\n");                                                      \
            abort();                                                                    \
        }                                                                               \
    } while (0)

/* Known findings in src/ (tests/fuzz/findings/, described in the README)
 * that are not fixed yet: the targets steer around them so that they go on
 * finding new ones. Build with FUZZ_ALL=1 (tests/fuzz/build.sh) to drop the
 * detours; once a finding is fixed, delete its detour and add its
 * reproducer to the target's corpus. */
#ifdef FUZZ_ALL
#define FUZZ_KNOWN(cond) (0 && (cond))
#else
#define FUZZ_KNOWN(cond) (cond)
#endif

/* The input, taken from the front. */
typedef struct {
    const uint8_t *p;
    size_t n;
} fuzz_in_t;

static inline unsigned fuzz_byte(fuzz_in_t *in)
{
    if (in->n == 0)
        return 0;
    in->n--;
    return *in->p++;
}

/* Up to n bytes (fewer at the end); returns how many. */
static inline size_t fuzz_bytes(fuzz_in_t *in, size_t n, const uint8_t **out)
{
    if (n > in->n)
        n = in->n;
    *out = in->p;
    in->p += n;
    in->n -= n;
    return n;
}

/* A copy with a NUL after it, so that C string functions stop there. */
static inline char *fuzz_strndup(const void *p, size_t n)
{
    char *s = malloc(n + 1);
    if (s == NULL)
        abort();
    if (n > 0)
        memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

/* The longest run of decimal digits in p. */
static inline size_t fuzz_digit_run(const void *p, size_t n)
{
    const unsigned char *s = p;
    size_t best = 0, run = 0;
    for (size_t i = 0; i < n; i++) {
        run = s[i] >= '0' && s[i] <= '9' ? run + 1 : 0;
        if (run > best)
            best = run;
    }
    return best;
}

/* Well-formed UTF-8 (RFC 3629: no overlong forms, no surrogates, at most U+10FFFF). */
static inline int fuzz_utf8_valid(const void *p, size_t n)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        size_t k = c < 0x80 ? 0 : (c & 0xe0) == 0xc0 ? 1 : (c & 0xf0) == 0xe0 ? 2 : (c & 0xf8) == 0xf0 ? 3 : 9;
        if (k == 9 || i + k >= n)
            return 0;
        unsigned cp = k == 0 ? c : c & (0x3f >> k);
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + j] & 0x3f);
        }
        static const unsigned min[] = {0, 0x80, 0x800, 0x10000};
        if (cp < min[k] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += k + 1;
    }
    return 1;
}

#ifdef cJSON__h
/* Two cJSON trees alike in order and content: cJSON_Compare looks members
 * up by name, so duplicate names with different values compare unequal. */
static inline int fuzz_json_same(const cJSON *a, const cJSON *b)
{
    if (a == NULL || b == NULL || (a->type & 0xff) != (b->type & 0xff))
        return 0;
    if (cJSON_IsNumber(a))
        return a->valuedouble == b->valuedouble;
    if (cJSON_IsString(a))
        return strcmp(a->valuestring, b->valuestring) == 0;
    if (!cJSON_IsObject(a) && !cJSON_IsArray(a))
        return 1;
    for (a = a->child, b = b->child; a != NULL && b != NULL; a = a->next, b = b->next)
        if ((a->string != NULL) != (b->string != NULL) ||
            (a->string != NULL && strcmp(a->string, b->string) != 0) || !fuzz_json_same(a, b))
            return 0;
    return a == NULL && b == NULL;
}
#endif

#endif
