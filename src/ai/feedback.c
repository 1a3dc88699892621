/* feedback.c: the recent-requests table: 64 stripes of 1024 places. */
#include "feedback.h"

#include <pthread.h>
#include <stdint.h>

#define STRIPES 64
#define PLACES 1024

typedef struct {
    uint64_t hash;           /* 0: empty */
    struct av_split_state_s *split;
    uint32_t variant;
} place_t;

static struct {
    pthread_mutex_t lock;
    place_t places[PLACES];
} stripes[STRIPES] = {[0 ... STRIPES - 1] = {.lock = PTHREAD_MUTEX_INITIALIZER}};

static uint64_t hash_id(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a, then a final mix */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h ? h : 1;
}

void av_feedback_remember(const char *id, size_t len, struct av_split_state_s *split, size_t variant)
{
    uint64_t h = hash_id(id, len);
    size_t s = h % STRIPES, p = (h / STRIPES) % PLACES;
    pthread_mutex_lock(&stripes[s].lock);
    stripes[s].places[p] = (place_t){h, split, (uint32_t)variant};
    pthread_mutex_unlock(&stripes[s].lock);
}

int av_feedback_lookup(const char *id, size_t len, struct av_split_state_s **split, size_t *variant)
{
    uint64_t h = hash_id(id, len);
    size_t s = h % STRIPES, p = (h / STRIPES) % PLACES;
    pthread_mutex_lock(&stripes[s].lock);
    place_t e = stripes[s].places[p];
    pthread_mutex_unlock(&stripes[s].lock);
    if (e.hash != h || e.split == NULL)
        return -1;
    *split = e.split;
    *variant = e.variant;
    return 0;
}
