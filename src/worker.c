/* worker.c: a worker thread's loop: accept, serve, take new config
 * generations between requests, and drain on stop. */
#include "worker.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "av.h"
#include "front.h"
#include "h1_server.h"
#include "h2_server.h"
#include "kpilog.h"
#include "shadow.h"
#include "log.h"
#include "mcache.h"
#include "upstream.h"

struct av_worker_listener_s {
    av_worker_t *w;
    size_t index;
};

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
    struct av_worker_listener_s *la = arg;
    av_front_accept(la->w, fd, sa, la->index);
}

static void accept_error_cb(struct evconnlistener *l, void *arg)
{
    int err = EVUTIL_SOCKET_ERROR();
    AV_WARN("worker %d: accept failed: %s", ((struct av_worker_listener_s *)arg)->w->id,
            evutil_socket_error_to_string(err));
}

static void drain_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    av_worker_t *w = arg;
    AV_WARN("worker %d: drain timeout: closing %llu connections with requests in flight", w->id,
            (unsigned long long)w->stats.client_conns);
    event_base_loopbreak(w->base);
}

static void begin_drain(av_worker_t *w)
{
    if (w->draining)
        return;
    w->draining = 1;
    for (size_t i = 0; i < w->nlisteners; i++) {
        evconnlistener_free(w->listeners[i]);
        w->listeners[i] = NULL;
    }
    av_front_close_all(w); /* no request yet: nothing to finish */
    av_h1_drain(w);
    av_h2_drain(w);
    if (w->stats.client_conns == 0) {
        event_base_loopexit(w->base, NULL);
        return;
    }
    struct timeval tv = {w->cfg->drain_timeout_ms / 1000, (w->cfg->drain_timeout_ms % 1000) * 1000};
    evtimer_add(w->drain_timer, &tv);
}

/* Messages from the main thread: a new generation, or stop. */
static void wake_cb(evutil_socket_t fd, short what, void *arg)
{
    av_worker_t *w = arg;
    pthread_mutex_lock(&w->lock);
    av_config_t *next = w->next_cfg;
    w->next_cfg = NULL;
    int stop = w->stop_requested;
    pthread_mutex_unlock(&w->lock);
    if (next != NULL) {
        av_config_t *old = w->cfg;
        w->cfg = next; /* requests in flight keep the generation they hold */
        av_config_unref(old);
    }
    if (stop)
        begin_drain(w);
}

static void kpi_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    av_kpi_flush_batch(arg);
}

av_worker_t *av_worker_new(int id, int nworkers, av_config_t *cfg, av_kpilog_t *kpilog, const int *fds,
                           size_t nfds)
{
    av_worker_t *w = av_calloc(1, sizeof(*w));
    w->id = id;
    w->nworkers = nworkers;
    w->cfg = av_config_ref(cfg);
    w->kpilog = kpilog;
    w->nlisteners = nfds;
    w->pcounts = av_calloc(AV_PCOUNT_MAX, sizeof(*w->pcounts));
    w->listen_fds = av_calloc(nfds, sizeof(int));
    memcpy(w->listen_fds, fds, nfds * sizeof(int));
    w->listeners = av_calloc(nfds, sizeof(*w->listeners));
    w->listener_args = av_calloc(nfds, sizeof(*w->listener_args));
    TAILQ_INIT(&w->fronts);
    TAILQ_INIT(&w->h1conns);
    TAILQ_INIT(&w->h2conns);
    TAILQ_INIT(&w->shadows);
    pthread_mutex_init(&w->lock, NULL);
    if (getrandom(w->rng, sizeof(w->rng), 0) != (ssize_t)sizeof(w->rng)) {
        w->rng[0] = av_wall_us() ^ (uint64_t)id;
        w->rng[1] = (uint64_t)getpid() * 0x9e3779b97f4a7c15ull;
    }
    w->rng[1] |= 1;
    w->base = event_base_new();
    if (w->base == NULL)
        av_oom();
    w->kpi_batch = evbuffer_new();
    w->kpi_timer = event_new(w->base, -1, EV_PERSIST, kpi_timer_cb, w);
    struct timeval tv = {0, AV_KPI_BATCH_MS * 1000};
    event_add(w->kpi_timer, &tv);
    w->wake = event_new(w->base, -1, 0, wake_cb, w);
    w->drain_timer = evtimer_new(w->base, drain_timeout_cb, w);
    return w;
}

static void *worker_main(void *arg)
{
    av_worker_t *w = arg;
    event_base_loop(w->base, EVLOOP_NO_EXIT_ON_EMPTY);
    av_mc_thread_release(); /* the teardown runs on the main thread */
    __atomic_store_n(&w->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

int av_worker_start(av_worker_t *w)
{
    for (size_t i = 0; i < w->nlisteners; i++) {
        w->listener_args[i] = (struct av_worker_listener_s){w, i};
        w->listeners[i] = evconnlistener_new(w->base, accept_cb, &w->listener_args[i], LEV_OPT_CLOSE_ON_FREE, -1,
                                             w->listen_fds[i]);
        if (w->listeners[i] == NULL)
            return AV_EIO;
        evconnlistener_set_error_cb(w->listeners[i], accept_error_cb);
    }
    if (pthread_create(&w->thread, NULL, worker_main, w) != 0)
        return AV_EIO;
    return 0;
}

void av_worker_set_config(av_worker_t *w, av_config_t *cfg)
{
    pthread_mutex_lock(&w->lock);
    if (w->next_cfg != NULL)
        av_config_unref(w->next_cfg);
    w->next_cfg = av_config_ref(cfg);
    pthread_mutex_unlock(&w->lock);
    event_active(w->wake, 0, 0);
}

void av_worker_stop(av_worker_t *w)
{
    pthread_mutex_lock(&w->lock);
    w->stop_requested = 1;
    pthread_mutex_unlock(&w->lock);
    event_active(w->wake, 0, 0);
}

void av_worker_abort(av_worker_t *w)
{
    event_base_loopbreak(w->base);
}

int av_worker_done(av_worker_t *w)
{
    return __atomic_load_n(&w->done, __ATOMIC_ACQUIRE);
}

void av_worker_join_free(av_worker_t *w)
{
    pthread_join(w->thread, NULL);
    w->closing = 1;
    av_front_close_all(w);
    av_h1_close_all(w);
    av_h2_close_all(w);
    av_shadow_close_all(w);
    av_upstream_free_all(w);
    for (size_t i = 0; i < w->nlisteners; i++)
        if (w->listeners[i] != NULL)
            evconnlistener_free(w->listeners[i]);
    free(w->listeners);
    free(w->listener_args);
    free(w->listen_fds);
    event_free(w->wake);
    event_free(w->drain_timer);
    av_kpi_flush_batch(w); /* the lines of requests ended during teardown included */
    event_free(w->kpi_timer);
    evbuffer_free(w->kpi_batch);
    event_base_free(w->base);
    av_config_unref(w->next_cfg);
    av_config_unref(w->cfg);
    pthread_mutex_destroy(&w->lock);
    free(w->pcounts);
    free(w);
}
