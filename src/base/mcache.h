/* mcache.h: a per-thread cache of freed 256 B to 64 KiB blocks, for what a
 * request allocates and frees again in that size (its arena, libevent's
 * buffers and their chains). glibc's own per-thread cache keeps seven
 * blocks of a size up to 1 KiB; with dozens of requests in flight the rest
 * walk its bins and touch the neighbours' headers: about a tenth of a
 * request's instructions before this cache. Built out under
 * AddressSanitizer, so that every block goes back to it and a use after
 * free is still caught. */
#ifndef AV_MCACHE_H
#define AV_MCACHE_H

#include <stddef.h>

/* malloc / realloc / free with the cache in front; out of memory aborts. A
 * block from av_mc_alloc may be freed with free() and one from malloc() with
 * av_mc_free (the cache takes a block by its usable size). */
void *av_mc_alloc(size_t n);
void *av_mc_realloc(void *p, size_t n);
void av_mc_free(void *p);
/* Frees the calling thread's cached blocks (at the end of each thread). */
void av_mc_thread_release(void);
/* The bytes the calling thread's cache holds (tests); 0 when built out. */
size_t av_mc_cached_bytes(void);
/* Whether the cache is built in. */
int av_mc_enabled(void);

#endif
