/* hist.h: quarter-octave histogram buckets for microsecond durations: 0-3
 * exact, then four buckets per power of two (about 19 % wide), up to the
 * last one (about 33 s and above). Mergeable by adding counts. */
#ifndef AV_HIST_H
#define AV_HIST_H

#include <stdint.h>

#define AV_HIST_BUCKETS 96

static inline unsigned av_hist_bucket(uint64_t us)
{
    if (us < 4)
        return (unsigned)us;
    unsigned b = 63 - (unsigned)__builtin_clzll(us); /* 2^b <= us < 2^(b+1), b >= 2 */
    unsigned i = 4 * (b - 1) + (unsigned)((us >> (b - 2)) & 3);
    return i < AV_HIST_BUCKETS ? i : AV_HIST_BUCKETS - 1;
}

/* The lower bound of bucket i, in microseconds: bucket i spans
 * [av_hist_lo(i), av_hist_lo(i + 1)); the last one has no upper bound. */
static inline uint64_t av_hist_lo(unsigned i)
{
    if (i < 4)
        return i;
    unsigned b = i / 4 + 1, q = i % 4;
    return (uint64_t)(4 + q) << (b - 2);
}

/* The middle of bucket i, in microseconds. */
static inline uint64_t av_hist_mid(unsigned i)
{
    if (i < 4)
        return i;
    unsigned b = i / 4 + 1, q = i % 4;
    uint64_t lo = (uint64_t)(4 + q) << (b - 2), width = 1ull << (b - 2);
    return lo + width / 2;
}

#endif
