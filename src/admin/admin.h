/* admin.h: the admin HTTP listener (libevent's evhttp), on the main thread,
 * 127.0.0.1 by default: health, readiness, routes and their weights. */
#ifndef AV_ADMIN_H
#define AV_ADMIN_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
typedef struct av_admin_s av_admin_t;

typedef struct av_config_s av_config_t;

/* What the admin port reports; owned and updated by main. */
typedef struct {
    int ready, draining;
    uint64_t generation;
    int workers;
    const av_config_t *cfg; /* the current generation (main's reference) */
    const char *token;      /* control endpoints want "Authorization: Bearer TOKEN"; NULL: open */
    struct av_worker_s *const *worker_list; /* for their policy counters; NULL before they start */
    struct av_rollouts_s *rollouts;         /* the rollout controller */
    struct av_fleet_s *fleet;               /* fleet mode's link to Redis; NULL: one process on its own */
} av_admin_state_t;

/* Binds address ("host:port"); returns NULL with the reason in err. */
av_admin_t *av_admin_start(struct event_base *base, const char *address, const av_admin_state_t *st,
                           char *err, size_t errlen);
/* The bound "host:port" (the port resolved when 0 was asked). */
const char *av_admin_address(const av_admin_t *a);
void av_admin_free(av_admin_t *a);

#endif
