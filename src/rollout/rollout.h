/* rollout.h: the rollout controller. On the main thread, once a second, it
 * reads each rolling-out route's baseline and candidate since the step
 * began (metrics.h), judges every KPI (judge.h), and moves the candidate's
 * weight: forward when the step has run its time with every KPI passing,
 * to 0 at once when one regresses or breaks its SLO. States: shadow, step,
 * awaiting_approval, paused, holding, promoted, rolled_back. Transitions are
 * audit events with the numbers behind them and are persisted (write, fsync,
 * rename) so a restart resumes at the same step; rolled_back is sticky for
 * that candidate. */
#ifndef AV_ROLLOUT_H
#define AV_ROLLOUT_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct evbuffer;
typedef struct av_config_s av_config_t;
typedef struct av_kpilog_s av_kpilog_t;
typedef struct av_rollouts_s av_rollouts_t;

av_rollouts_t *av_rollouts_new(struct event_base *base, av_kpilog_t *audit);
void av_rollouts_free(av_rollouts_t *r);
/* After a config (re)load: a route keeps its rollout while its baseline and
 * candidate are the same variants; a candidate whose identity (backend URL
 * and protocol, model, system prompt, params) changed is a new rollout from
 * the start; a changed baseline, a step's share that changed, or counters
 * that started over (the route's variant list changed) restart the step, its
 * clock and data together. Each is an audit line. The first call reads the
 * state file. */
void av_rollouts_sync(av_rollouts_t *r, av_config_t *cfg);
/* Tests: the clocks the controller reads (monotonic and wall, in
 * microseconds; av_now_us and av_wall_us unless set). */
void av_rollouts_set_clock(av_rollouts_t *r, uint64_t (*mono_us)(void), uint64_t (*wall_us)(void));
/* One evaluation of every rollout (the timer calls it; tests may too). */
void av_rollouts_tick(av_rollouts_t *r);
/* GET /rollouts (name NULL) or /rollouts/NAME as JSON. Returns 0, or -1
 * when there is no such rollout. */
int av_rollouts_json(av_rollouts_t *r, const char *name, struct evbuffer *out);
/* POST /rollouts/NAME/ACTION: pause, resume, promote, rollback, approve.
 * Returns 0, or an HTTP status with the reason in why. */
int av_rollouts_action(av_rollouts_t *r, const char *name, const char *action, char *why, size_t whylen);
/* Prometheus families: state, step, candidate weight, KPI verdicts. */
void av_rollouts_prometheus(av_rollouts_t *r, struct evbuffer *out);

#endif
