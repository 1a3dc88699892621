/* fleet.h: fleet mode, the first part: a replica's link to the fleet's
 * Redis, on the main thread, off the request path. It connects (and
 * reconnects, once a second, saying so once), and once a second registers
 * this replica with one pipelined round trip: the fleet's live replicas are
 * those seen in the last five seconds. What the fleet shares through it
 * (rollout sums and leases, weights, feedback, budgets) comes on top. No
 * request ever waits on it: when Redis is away, the gateway serves on. */
#ifndef AV_FLEET_H
#define AV_FLEET_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct evbuffer;
typedef struct av_config_s av_config_t;
typedef struct av_fleet_s av_fleet_t;

#define AV_FLEET_LIVE_MS 5000 /* a replica not seen for this long has left */

/* Starts the link for cfg's fleet block; NULL when it has none. The link
 * keeps its own copy of what it needs from cfg. */
av_fleet_t *av_fleet_new(struct event_base *base, const av_config_t *cfg);
void av_fleet_free(av_fleet_t *f);
/* One heartbeat now (the timer calls it each second; tests may too). */
void av_fleet_tick(av_fleet_t *f);
/* GET /fleet: the fleet's name, this replica, the link's state and round
 * trip, the live replicas and when each was last seen. */
void av_fleet_json(av_fleet_t *f, struct evbuffer *out);
/* aviary_fleet_connected, aviary_fleet_replicas, aviary_fleet_redis_rtt_seconds */
void av_fleet_prometheus(av_fleet_t *f, struct evbuffer *out);

#endif
