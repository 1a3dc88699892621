/* mcache.c: a block freed in the 256 B to 64 KiB range goes on its thread's
 * list for its power of two (by the usable size glibc gives it, so a block
 * from anywhere can serve any request not larger); a request in that range
 * rounds up to its power of two and takes from the list first. Each list
 * keeps at most MC_KEEP blocks and MC_KEEP_BYTES, so a thread holds at most
 * about 880 KiB it does not use. */
#include "mcache.h"

#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include "av.h"

#if defined(__SANITIZE_ADDRESS__)
#define MC_ON 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MC_ON 0
#endif
#endif
#ifndef MC_ON
#define MC_ON 1
#endif

#define MC_MIN_SHIFT 8  /* 256 bytes: glibc's tcache keeps only seven of a size */
#define MC_MAX_SHIFT 16 /* 64 KiB */
#define MC_CLASSES (MC_MAX_SHIFT - MC_MIN_SHIFT + 1)
#define MC_KEEP 64
#define MC_KEEP_BYTES (128u * 1024u)

typedef struct mc_block_s {
    struct mc_block_s *next;
} mc_block_t;

typedef struct {
    mc_block_t *head[MC_CLASSES];
    unsigned count[MC_CLASSES];
} mc_t;

static __thread mc_t mc;

int av_mc_enabled(void)
{
    return MC_ON;
}

void *av_mc_alloc(size_t n)
{
    if (MC_ON && n > (1u << (MC_MIN_SHIFT - 1)) && n <= (1u << MC_MAX_SHIFT)) {
        unsigned shift = 64 - (unsigned)__builtin_clzll((unsigned long long)(n - 1));
        unsigned k = shift - MC_MIN_SHIFT;
        mc_block_t *b = mc.head[k];
        if (b != NULL) {
            mc.head[k] = b->next;
            mc.count[k]--;
            return b;
        }
        n = (size_t)1 << shift;
    }
    return av_malloc(n);
}

void av_mc_free(void *p)
{
    if (p == NULL)
        return;
    if (MC_ON) {
        size_t u = malloc_usable_size(p);
        if (u >= (1u << MC_MIN_SHIFT) && u < (2u << MC_MAX_SHIFT)) {
            unsigned shift = 63 - (unsigned)__builtin_clzll((unsigned long long)u);
            if (shift > MC_MAX_SHIFT)
                shift = MC_MAX_SHIFT;
            unsigned k = shift - MC_MIN_SHIFT;
            if (mc.count[k] < MC_KEEP && ((size_t)(mc.count[k] + 1) << shift) <= MC_KEEP_BYTES) {
                mc_block_t *b = p;
                b->next = mc.head[k];
                mc.head[k] = b;
                mc.count[k]++;
                return;
            }
        }
    }
    free(p);
}

void *av_mc_realloc(void *p, size_t n)
{
    if (p == NULL)
        return av_mc_alloc(n);
    if (!MC_ON)
        return av_realloc(p, n);
    size_t u = malloc_usable_size(p);
    if (n <= u)
        return p;
    void *q = av_mc_alloc(n);
    memcpy(q, p, u);
    av_mc_free(p);
    return q;
}

void av_mc_thread_release(void)
{
    for (unsigned k = 0; k < MC_CLASSES; k++) {
        while (mc.head[k] != NULL) {
            mc_block_t *b = mc.head[k];
            mc.head[k] = b->next;
            free(b);
        }
        mc.count[k] = 0;
    }
}

size_t av_mc_cached_bytes(void)
{
    size_t bytes = 0;
    for (unsigned k = 0; k < MC_CLASSES; k++)
        for (mc_block_t *b = mc.head[k]; b != NULL; b = b->next)
            bytes += malloc_usable_size(b);
    return bytes;
}
