/* loop.c: what a worker gives the layers below the top: the end of a
 * drain when the last connection closes, random numbers, policy counters. */
#include "loop.h"

#include <event2/event.h>
#include <stdio.h>
#include <string.h>

void av_worker_conn_closed(av_worker_t *w)
{
    w->stats.client_conns--;
    if (w->draining && w->stats.client_conns == 0)
        event_base_loopexit(w->base, NULL);
}

uint64_t av_worker_policy_count(av_worker_t *w, const char *policy, const char *name, int64_t by)
{
    size_t i = 0;
    while (i < w->npcounts && (strcmp(w->pcounts[i].name, name) != 0 || strcmp(w->pcounts[i].policy, policy) != 0))
        i++;
    if (i == AV_PCOUNT_MAX) {
        i = AV_PCOUNT_MAX - 1;
    } else if (i == w->npcounts) {
        if (i == AV_PCOUNT_MAX - 1) { /* the last slot takes the overflow */
            snprintf(w->pcounts[i].policy, sizeof(w->pcounts[i].policy), "*");
            snprintf(w->pcounts[i].name, sizeof(w->pcounts[i].name), "overflow");
        } else {
            snprintf(w->pcounts[i].policy, sizeof(w->pcounts[i].policy), "%s", policy);
            snprintf(w->pcounts[i].name, sizeof(w->pcounts[i].name), "%s", name);
        }
        __atomic_store_n(&w->npcounts, i + 1 < AV_PCOUNT_MAX ? i + 1 : AV_PCOUNT_MAX, __ATOMIC_RELEASE);
    }
    uint64_t v = __atomic_load_n(&w->pcounts[i].v, __ATOMIC_RELAXED) + (uint64_t)by;
    __atomic_store_n(&w->pcounts[i].v, v, __ATOMIC_RELAXED);
    return v;
}

uint64_t av_worker_random(av_worker_t *w)
{
    /* xorshift128+: request ids need to be unique, not secret */
    uint64_t s1 = w->rng[0];
    const uint64_t s0 = w->rng[1];
    w->rng[0] = s0;
    s1 ^= s1 << 23;
    w->rng[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
    return w->rng[1] + s0;
}
