/* split.h: which variant of a route serves a request: the override header,
 * then a geo rule, then the sticky key, then the weights. Weights live in a split state per
 * route name that outlives config generations, so an admin call changes
 * them for every worker at once, and a reload keeps them unless the config's
 * own weights changed. */
#ifndef AV_SPLIT_H
#define AV_SPLIT_H

#include <stddef.h>
#include <stdint.h>

#include "config.h" /* AV_SPLIT_MAX_VARIANTS */
#include "req_t.h"

struct av_route_s;
typedef struct av_config_s av_config_t;
typedef struct av_split_reg_s av_split_reg_t;
typedef struct av_split_state_s av_split_state_t;


/* How the variant was chosen, in the KPI log. */
extern const char AV_ASSIGN_OVERRIDE[]; /* "override": x-aviary-variant */
extern const char AV_ASSIGN_POLICY[];   /* "policy": a policy's r:set_variant() */
extern const char AV_ASSIGN_GEO[];      /* "geo": a geo rule of the route */
extern const char AV_ASSIGN_STICKY[];   /* "sticky": the sticky key's bucket */
extern const char AV_ASSIGN_SHADOW[];   /* "shadow": a copy for the route's shadow variant */
extern const char AV_ASSIGN_WEIGHT[];   /* "weight": no sticky key; a random bucket, by weight */

/* The bucket of a sticky key: a 64-bit hash of salt and key, its top 32 bits. */
uint32_t av_split_bucket(const char *salt, const char *key, size_t len);

/* Lays weights (n of them, summing above 0) over [0, 2^32): variant 0, the
 * baseline, takes the top; the others are packed from 0 in order, so raising
 * a candidate's weight only widens its own range, and setting it to 0 gives
 * its units to its neighbours and the baseline. lo[i]..hi[i] (hi exclusive,
 * as 64-bit) is variant i's range. */
void av_split_ranges(const int64_t *weights, size_t n, uint64_t *lo, uint64_t *hi);

/* Process-wide registry of split states, by route name; nworkers sizes
 * each route's metrics. */
av_split_reg_t *av_split_reg_new(int nworkers);
/* The route's metrics (metrics.h): per variant, written by each worker. */
struct av_metrics_s *av_split_metrics(av_split_state_t *s);
void av_split_reg_free(av_split_reg_t *r);
/* Points each route of cfg at its state (made on first sight, kept while the
 * route has the same variants in the same order). The state takes the
 * config's weights when it is new or when the config's weights changed since
 * the last load. Call from the thread that loads configs. */
void av_split_attach(av_split_reg_t *r, av_config_t *cfg);

/* Sets a route's weights at once for every worker. Returns 0, or AV_EINVAL
 * (a weight below 0, or all 0). */
int av_split_set_weights(av_split_state_t *s, const int64_t *weights, size_t n);
/* The route's name and a variant's name, as the state knows them. */
const char *av_split_route_name(const av_split_state_t *s);
const char *av_split_variant_name(const av_split_state_t *s, size_t i);
/* The current weights (n of them). */
void av_split_weights(av_split_state_t *s, int64_t *weights, size_t n);

/* Per variant counters, summed over workers. */
typedef struct {
    uint64_t requests, unkeyed, overridden;
} av_split_counts_t;
void av_split_counts(av_split_state_t *s, size_t i, av_split_counts_t *out);

/* Shadow copies of a route: takes one of max in-flight places (0: none
 * free, counted as dropped), gives it back, and the counters. */
int av_split_shadow_acquire(av_split_state_t *s, int64_t max);
void av_split_shadow_release(av_split_state_t *s);
void av_split_shadow_counts(av_split_state_t *s, uint64_t *sent, uint64_t *dropped, int64_t *in_flight,
                            uint64_t *over_budget, int64_t *minute_tokens, int64_t *minute_nano);
/* The shadow budget of the current minute (wall clock): whether copies may
 * still start (0: spent, counted as over_budget; limits of 0 mean none), and
 * a finished copy's spending. */
int av_split_shadow_budget_ok(av_split_state_t *s, int64_t max_tokens, int64_t max_nano);
void av_split_shadow_spent(av_split_state_t *s, int64_t tokens, int64_t nano);

/* Chooses req->variant for req->route, from what the client sent (headers
 * and, for a body sticky key, the JSON fields in keys: key[i] is the value
 * of the route's i-th body source, or NULL). Sets req->assign. Returns 0, or
 * an HTTP status (400 for an unknown variant in the override header, 403 for
 * a missing or wrong override token) with the reason in why. */
int av_split_choose(av_req_t *req, const char *const *body_keys, const size_t *body_key_lens, char *why,
                    size_t whylen);

#endif
