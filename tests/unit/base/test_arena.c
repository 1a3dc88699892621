/* test_arena.c: allocations are aligned and distinct, big ones fit, cleanups run once in
 * reverse; the block cache (mcache) gives back what was freed, keeps no more than its
 * bounds, leaves small and huge blocks to glibc and keeps a block's bytes on realloc. */
#include <stdint.h>

#include <pthread.h>
#include <stdlib.h>

#include "arena.h"
#include "mcache.h"
#include "../test.h"

static char order[8];
static size_t norder;

static void note(void *arg)
{
    order[norder++] = *(char *)arg;
}

static void test_alloc(void)
{
    av_arena_t *a = av_arena_new(256);
    char *p = av_arena_alloc(a, 3), *q = av_arena_alloc(a, 3);
    CHECK(p != q);
    CHECK(((uintptr_t)q % _Alignof(max_align_t)) == 0);
    char *big = av_arena_alloc(a, 100000);
    memset(big, 1, 100000);
    char *s = av_arena_strndup(a, "hello world", 5);
    CHECK_STR(s, "hello");
    for (int i = 0; i < 1000; i++)
        CHECK(av_arena_alloc(a, 40) != NULL);
    CHECK(av_arena_used(a) >= 100000 + 40000);
    av_arena_free(a);
}

static void test_cleanups(void)
{
    static char x = 'x', y = 'y';
    av_arena_t *a = av_arena_new(0);
    av_arena_on_free(a, note, &x);
    av_arena_on_free(a, note, &y);
    av_arena_free(a);
    CHECK_INT(norder, 2);
    CHECK(order[0] == 'y' && order[1] == 'x');
}

static void test_mcache_reuse(void)
{
    av_mc_thread_release();
    char *p = av_mc_alloc(3000);
    memset(p, 'a', 3000);
    av_mc_free(p);
    if (!av_mc_enabled()) { /* AddressSanitizer build: every block goes back to glibc */
        CHECK_INT(av_mc_cached_bytes(), 0);
        return;
    }
    CHECK(av_mc_cached_bytes() >= 4096);
    CHECK(av_mc_alloc(2500) == p);       /* same power of two: the cached block */
    CHECK_INT(av_mc_cached_bytes(), 0);
    char *q = av_mc_alloc(5000);          /* the next one up: a new block */
    CHECK(q != p);
    av_mc_free(q);
    av_mc_free(p);
    av_mc_thread_release();
    CHECK_INT(av_mc_cached_bytes(), 0);
    /* a block from plain malloc is taken by its usable size */
    char *m = malloc(3000);
    av_mc_free(m);
    CHECK(av_mc_cached_bytes() >= 2048);
    CHECK(av_mc_alloc(2048) == m);
    av_mc_free(m);
    av_mc_thread_release();
}

static void test_mcache_bounds(void)
{
    av_mc_thread_release();
    void *b[100];
    for (int i = 0; i < 100; i++)
        b[i] = av_mc_alloc(4096);
    for (int i = 0; i < 100; i++)
        av_mc_free(b[i]);
    size_t kept = av_mc_cached_bytes();
    CHECK(kept <= 32 * 4200);             /* at most 64 blocks and 128 KiB of a size */
    CHECK(!av_mc_enabled() || kept >= 31 * 4096);
    av_mc_thread_release();
    /* blocks under 256 bytes are glibc's; over 128 KiB not kept */
    av_mc_free(av_mc_alloc(100));
    av_mc_free(malloc(200));
    av_mc_free(av_mc_alloc(300000));
    CHECK_INT(av_mc_cached_bytes(), 0);
    av_mc_free(NULL);
}

static void test_mcache_realloc(void)
{
    char *p = av_mc_realloc(NULL, 100);
    memcpy(p, "0123456789", 10);
    p = av_mc_realloc(p, 5000);
    CHECK(memcmp(p, "0123456789", 10) == 0);
    memset(p + 10, 'x', 4990);
    char *same = av_mc_realloc(p, 4000);  /* smaller: kept in place (glibc's realloc may move it) */
    CHECK(!av_mc_enabled() || same == p);
    p = same;
    p = av_mc_realloc(p, 40000);
    CHECK(memcmp(p, "0123456789", 10) == 0 && p[3999] == 'x');
    av_mc_free(p);
    av_mc_thread_release();
}

static void *alloc_there(void *arg)
{
    (void)arg;
    return av_mc_alloc(8000);
}

static void test_mcache_threads(void)
{
    /* allocated in one thread, freed in another: it joins the freeing thread's cache */
    pthread_t t;
    void *p = NULL;
    CHECK(pthread_create(&t, NULL, alloc_there, NULL) == 0);
    pthread_join(t, &p);
    av_mc_free(p);
    CHECK(!av_mc_enabled() || av_mc_cached_bytes() >= 8192);
    av_mc_thread_release();
    CHECK_INT(av_mc_cached_bytes(), 0);
}

int main(void)
{
    RUN(test_alloc);
    RUN(test_cleanups);
    RUN(test_mcache_reuse);
    RUN(test_mcache_bounds);
    RUN(test_mcache_realloc);
    RUN(test_mcache_threads);
    TEST_DONE();
}
