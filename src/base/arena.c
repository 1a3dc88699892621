/* arena.c: bump allocator in chained chunks; large allocations get a chunk
 * of their own so a big body never wastes a small chunk's tail. */
#include "arena.h"

#include <string.h>

#include "av.h"
#include "mcache.h"

typedef struct av_chunk_s {
    struct av_chunk_s *next;
    size_t size, used;
    max_align_t data[];
} av_chunk_t;

typedef struct av_cleanup_s {
    struct av_cleanup_s *next;
    av_arena_cleanup_cb cb;
    void *arg;
} av_cleanup_t;

struct av_arena_s {
    av_chunk_t *chunks;
    av_cleanup_t *cleanups;
    size_t chunk_size, total;
};

static av_chunk_t *chunk_new(size_t size)
{
    av_chunk_t *c = av_mc_alloc(sizeof(*c) + size);
    c->next = NULL;
    c->size = size;
    c->used = 0;
    return c;
}

av_arena_t *av_arena_new(size_t first_chunk)
{
    av_arena_t *a = av_calloc(1, sizeof(*a));
    /* the chunk and its header in first_chunk bytes: a power of two stays one */
    a->chunk_size = (first_chunk > 2 * sizeof(av_chunk_t) ? first_chunk : 4096) - sizeof(av_chunk_t);
    a->chunks = chunk_new(a->chunk_size);
    return a;
}

void av_arena_free(av_arena_t *a)
{
    if (a == NULL)
        return;
    for (av_cleanup_t *c = a->cleanups; c != NULL; c = c->next)
        c->cb(c->arg);
    av_chunk_t *c = a->chunks;
    while (c != NULL) {
        av_chunk_t *next = c->next;
        av_mc_free(c);
        c = next;
    }
    free(a);
}

void *av_arena_alloc(av_arena_t *a, size_t n)
{
    const size_t align = _Alignof(max_align_t);
    n = (n + align - 1) & ~(align - 1);
    av_chunk_t *c = a->chunks;
    if (c->size - c->used < n) {
        if (n > a->chunk_size / 4) {
            /* big: own chunk, linked behind the current one */
            av_chunk_t *big = chunk_new(n);
            big->used = n;
            big->next = c->next;
            c->next = big;
            a->total += n;
            return big->data;
        }
        c = chunk_new(a->chunk_size);
        c->next = a->chunks;
        a->chunks = c;
    }
    void *p = (char *)c->data + c->used;
    c->used += n;
    a->total += n;
    return p;
}

void *av_arena_calloc(av_arena_t *a, size_t n)
{
    void *p = av_arena_alloc(a, n);
    memset(p, 0, n);
    return p;
}

char *av_arena_strndup(av_arena_t *a, const char *s, size_t n)
{
    char *p = av_arena_alloc(a, n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

void av_arena_on_free(av_arena_t *a, av_arena_cleanup_cb cb, void *arg)
{
    av_cleanup_t *c = av_arena_alloc(a, sizeof(*c));
    c->cb = cb;
    c->arg = arg;
    c->next = a->cleanups;
    a->cleanups = c;
}

size_t av_arena_used(const av_arena_t *a)
{
    return a->total;
}
