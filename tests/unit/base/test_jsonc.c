/* test_jsonc.c: comment blanking keeps offsets; key paths locate keys and elements. */
#include "av.h"
#include "jsonc.h"
#include "../test.h"

static void test_strip(void)
{
    char t[] = "{\"a\": \"//not\", // yes\n \"b\": /* x\n y */ 1}";
    size_t off = 0;
    CHECK_INT(av_jsonc_strip(t, strlen(t), &off), 0);
    CHECK_STR(t, "{\"a\": \"//not\",       \n \"b\":     \n      1}");
    char u[] = "{\"a\": 1 /* open";
    CHECK_INT(av_jsonc_strip(u, strlen(u), &off), AV_EINVAL);
    CHECK_INT(off, 8);
    char v[] = "{\"a\\\"/*\": 2}";
    CHECK_INT(av_jsonc_strip(v, strlen(v), &off), 0);
    CHECK_STR(v, "{\"a\\\"/*\": 2}");
}

static void test_locate(void)
{
    const char *t = "{\"x\": [1, {\"y\": 2}], \"z\": {\"w\": [true, \"s,]\"]}}";
    av_jpath_seg_t p1[] = {{"x", 0}, {NULL, 1}, {"y", 0}};
    CHECK_INT(av_jsonc_locate(t, strlen(t), p1, 3), 11);
    av_jpath_seg_t p2[] = {{"z", 0}, {"w", 0}, {NULL, 1}};
    CHECK_INT(av_jsonc_locate(t, strlen(t), p2, 3), 39);
    av_jpath_seg_t p3[] = {{"z", 0}, {"missing", 0}};
    CHECK_INT(av_jsonc_locate(t, strlen(t), p3, 2), 26);
    const char *d = "{\"k\": 1, \"k\": 2}";
    av_jpath_seg_t p4[] = {{"k", 1}};
    CHECK_INT(av_jsonc_locate(d, strlen(d), p4, 1), 9);
    CHECK_INT(av_jsonc_locate(t, strlen(t), p1, 0), 0);
}

static void test_linecol(void)
{
    const char *t = "a\nbc\n\nd";
    unsigned l, c;
    av_jsonc_linecol(t, 3, &l, &c);
    CHECK_INT(l, 2);
    CHECK_INT(c, 2);
    av_jsonc_linecol(t, 6, &l, &c);
    CHECK_INT(l, 4);
    CHECK_INT(c, 1);
}

int main(void)
{
    RUN(test_strip);
    RUN(test_locate);
    RUN(test_linecol);
    TEST_DONE();
}
