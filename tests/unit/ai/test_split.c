/* test_split.c: the bucket layout keeps ramps monotone and rollbacks whole,
 * sticky buckets are uniform and salted, and the registry keeps or resets
 * weights across reloads as documented. */
#include <math.h>
#include <stdlib.h>

#include "av.h"
#include "config.h"
#include "split.h"
#include "../test.h"

#define SPACE (1ull << 32)

static int in(uint64_t b, const uint64_t *lo, const uint64_t *hi, size_t i)
{
    return b >= lo[i] && b < hi[i];
}

static void test_ranges_cover_the_space(void)
{
    int64_t w[3] = {70, 20, 10};
    uint64_t lo[3], hi[3];
    av_split_ranges(w, 3, lo, hi);
    CHECK_INT(lo[1], 0);                   /* candidates from the bottom, in order */
    CHECK_INT(hi[1], lo[2]);
    CHECK_INT(hi[2], lo[0]);               /* the baseline on top */
    CHECK_INT(hi[0], SPACE);
    CHECK(llabs((long long)(hi[1] - lo[1]) - (long long)(SPACE / 5)) <= 1);
    CHECK(llabs((long long)(hi[2] - lo[2]) - (long long)(SPACE / 10)) <= 1);
    int64_t zero[2] = {1, 0};
    av_split_ranges(zero, 2, lo, hi);
    CHECK_INT(hi[1] - lo[1], 0);           /* weight 0: an empty range */
    CHECK_INT(lo[0], 0);
}

/* Raising a candidate from every weight to every higher one never moves a
 * bucket out of it; setting it to 0 moves all of them to the baseline. */
static void test_monotone_ramp(void)
{
    uint64_t lo_a[2], hi_a[2], lo_b[2], hi_b[2];
    for (int64_t from = 0; from <= 100; from += 5)
        for (int64_t to = from; to <= 100; to += 5) {
            int64_t wa[2] = {100 - from, from}, wb[2] = {100 - to, to};
            if (wa[0] + wa[1] == 0 || wb[0] + wb[1] == 0)
                continue;
            av_split_ranges(wa, 2, lo_a, hi_a);
            av_split_ranges(wb, 2, lo_b, hi_b);
            CHECK(lo_b[1] <= lo_a[1] && hi_b[1] >= hi_a[1]);
        }
    /* with three variants, raising the last candidate keeps the first's units too */
    uint64_t lo3[3], hi3[3], lo4[3], hi4[3];
    int64_t w3[3] = {80, 10, 10}, w4[3] = {60, 10, 30};
    av_split_ranges(w3, 3, lo3, hi3);
    av_split_ranges(w4, 3, lo4, hi4);
    CHECK(lo4[1] == lo3[1] && hi4[1] == hi3[1]);
    CHECK(lo4[2] <= lo3[2] && hi4[2] >= hi3[2]);
    int64_t back[3] = {80, 0, 0};
    av_split_ranges(back, 3, lo4, hi4);
    for (uint64_t b = 0; b < SPACE; b += SPACE / 1024)
        CHECK(in(b, lo4, hi4, 0));
}

/* 200,000 keys: the share under 20 % of the space within 5 standard deviations */
static void test_buckets_uniform_and_salted(void)
{
    char key[32];
    int n = 200000, low = 0, moved = 0;
    for (int i = 0; i < n; i++) {
        int len = snprintf(key, sizeof(key), "user-%d", i);
        uint32_t b = av_split_bucket("route-salt", key, (size_t)len);
        low += b < (uint32_t)(SPACE / 5);
        moved += (b < (uint32_t)(SPACE / 5)) != (av_split_bucket("other-salt", key, (size_t)len) < (uint32_t)(SPACE / 5));
    }
    double sd = sqrt(n * 0.2 * 0.8);
    CHECK(fabs(low - n * 0.2) < 5 * sd);
    /* another salt is another assignment: about 2 * 0.2 * 0.8 of keys change side */
    CHECK(fabs(moved - n * 0.32) < 5 * sqrt(n * 0.32 * 0.68));
    CHECK_INT(av_split_bucket("s", "k", 1), av_split_bucket("s", "k", 1));
}

static av_config_t *cfg(const char *weights_b)
{
    char text[1024], err[512];
    snprintf(text, sizeof(text),
             "{\"listen\": [{\"address\": \"127.0.0.1:0\"}], \"backends\": {\"b\": {\"url\": \"http://127.0.0.1:9\"}},"
             " \"routes\": [{\"name\": \"r\", \"variants\": [{\"name\": \"a\", \"backend\": \"b\", \"weight\": 90},"
             " {\"name\": \"c\", \"backend\": \"b\", \"weight\": %s}]}]}",
             weights_b);
    av_config_t *c = av_config_parse("t.json", text, strlen(text), 1, err, sizeof(err));
    if (c == NULL)
        printf("# %s\n", err);
    return c;
}

static void test_registry_across_reloads(void)
{
    av_split_reg_t *reg = av_split_reg_new(1);
    av_config_t *c1 = cfg("10");
    av_split_attach(reg, c1);
    int64_t w[2];
    av_split_weights(c1->routes[0].split, w, 2);
    CHECK_INT(w[1], 10);
    int64_t set[2] = {50, 50};
    CHECK_INT(av_split_set_weights(c1->routes[0].split, set, 2), 0);
    int64_t bad[2] = {0, 0}, neg[2] = {-1, 2};
    CHECK_INT(av_split_set_weights(c1->routes[0].split, bad, 2), AV_EINVAL);
    CHECK_INT(av_split_set_weights(c1->routes[0].split, neg, 2), AV_EINVAL);
    av_config_t *c2 = cfg("10"); /* same file: the admin's weights stay */
    av_split_attach(reg, c2);
    CHECK(c2->routes[0].split == c1->routes[0].split);
    av_split_weights(c2->routes[0].split, w, 2);
    CHECK_INT(w[1], 50);
    av_config_t *c3 = cfg("30"); /* the file changed: it wins */
    av_split_attach(reg, c3);
    av_split_weights(c3->routes[0].split, w, 2);
    CHECK_INT(w[0], 90);
    CHECK_INT(w[1], 30);
    av_config_unref(c1);
    av_config_unref(c2);
    av_config_unref(c3);
    av_split_reg_free(reg);
}

int main(void)
{
    RUN(test_ranges_cover_the_space);
    RUN(test_monotone_ramp);
    RUN(test_buckets_uniform_and_salted);
    RUN(test_registry_across_reloads);
    TEST_DONE();
}
