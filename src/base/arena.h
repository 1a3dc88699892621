/* arena.h: per-request memory: allocate freely, free once, with cleanup
 * callbacks for what the arena does not own (h2o's pool, nginx's pools). */
#ifndef AV_ARENA_H
#define AV_ARENA_H

#include <stddef.h>

typedef struct av_arena_s av_arena_t;
typedef void (*av_arena_cleanup_cb)(void *arg);

/* first_chunk: the bytes of each chunk, its header included (0: 4096). */
av_arena_t *av_arena_new(size_t first_chunk);
/* Runs the cleanups (last registered first), then frees every chunk. */
void av_arena_free(av_arena_t *a);
void *av_arena_alloc(av_arena_t *a, size_t n);
void *av_arena_calloc(av_arena_t *a, size_t n);
char *av_arena_strndup(av_arena_t *a, const char *s, size_t n);
void av_arena_on_free(av_arena_t *a, av_arena_cleanup_cb cb, void *arg);
size_t av_arena_used(const av_arena_t *a);

#endif
