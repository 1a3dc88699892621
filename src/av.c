/* av.c: checked allocation and clocks shared by every module.
 * Allocation failure is fatal by design (see STYLE.md). */
#include "av.h"

#include <stdio.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

void av_oom(void)
{
    static const char msg[] = "aviary: out of memory\n";
    ssize_t r = write(2, msg, sizeof(msg) - 1);
    (void)r;
    abort();
}

void *av_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (AV_UNLIKELY(p == NULL))
        av_oom();
    return p;
}

void *av_calloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (AV_UNLIKELY(p == NULL))
        av_oom();
    return p;
}

void *av_realloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (AV_UNLIKELY(q == NULL))
        av_oom();
    return q;
}

char *av_strndup(const char *s, size_t n)
{
    char *p = av_malloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *av_strdup(const char *s)
{
    return av_strndup(s, strlen(s));
}

uint64_t av_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t av_wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

int av_streq_ci(const char *a, size_t alen, const char *b)
{
    return strlen(b) == alen && strncasecmp(a, b, alen) == 0;
}
