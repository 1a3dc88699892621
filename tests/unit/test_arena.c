/* test_arena.c: allocations are aligned and distinct, big ones fit, cleanups run once in reverse. */
#include <stdint.h>

#include "arena.h"
#include "test.h"

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

int main(void)
{
    RUN(test_alloc);
    RUN(test_cleanups);
    TEST_DONE();
}
