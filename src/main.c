/* main.c: aviary's entry: arguments, config check, listeners, workers, the KPI
 * log writer, signals (TERM/INT drain and exit, HUP reload) and the admin port. */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "admin.h"
#include "av.h"
#include "config.h"
#include "fleet.h"
#include "geo.h"
#include "kpilog.h"
#include "listener.h"
#include "log.h"
#include "mcache.h"
#include "policy.h"
#include "policy_test.h"
#include "report.h"
#include "rollout.h"
#include "split.h"
#include "worker.h"

typedef struct {
    const char *config_path, *ready_file;
    struct event_base *base;
    av_config_t *cfg;
    av_worker_t **workers;
    int nworkers;
    av_kpilog_t *kpilog;
    av_kpilog_t *audit;      /* log.audit: reloads and policy verdicts; NULL: none */
    av_admin_t *admin;
    av_admin_state_t admin_state;
    av_split_reg_t *splits;  /* route weights and counters, across generations */
    av_rollouts_t *rollouts; /* the rollout controller */
    av_fleet_t *fleet;       /* fleet mode (fleet.h); NULL: on its own */
    int **fds;               /* [worker][listener] */
    char (*listen_addrs)[80];
    /* policy files: a change reloads, 200 ms after the last one */
    int ino_fd, ino_wd;
    char ino_dir[1024];
    struct event *ino_ev, *ino_timer;
} av_main_t;

static void watch_policies(av_main_t *m);

static void usage(FILE *f)
{
    fprintf(f,
            "usage: aviary [-c FILE] [-t] [--ready-file FILE]\n"
            "       aviary report [--since TIME] [--until TIME] [--route NAME] [--json] KPI_LOG...\n"
            "       aviary policy-test [--bench N] [--quiet] POLICY.lua... CASES.json\n"
            "Aviary: a progressive-delivery gateway for AI model APIs.\n\n"
            "  -c, --config FILE     routing config (default conf/aviary.json)\n"
            "  -t, --test            check the config and exit: 0 if valid, 1 with file:line:column: key: reason\n"
            "      --ready-file FILE once serving, write the bound addresses there (\"listen ADDR\",\n"
            "                        \"admin ADDR\"), for supervisors and tests that ask for port 0\n"
            "  -h, --help            this help\n"
            "  -v, --version         print the version\n\n"
            "Signals: SIGHUP reloads the config (kept if invalid), SIGTERM/SIGINT drain and exit.\n");
}

static void warn_restart(const char *key, void *arg)
{
    const av_config_t *c = arg;
    AV_WARN("reload: %s: %s changed, which needs a restart; the running value is kept", c->path, key);
}

/* An audit line for a reload: what started it, and how it ended. */
static void audit_reload(av_main_t *m, const char *trigger, uint64_t generation, const char *error)
{
    if (m->audit == NULL)
        return;
    struct evbuffer *b = evbuffer_new();
    av_audit_begin(b, "reload");
    av_audit_str(b, "trigger", trigger);
    av_audit_str(b, "result", error ? "kept" : "loaded");
    evbuffer_add_printf(b, ",\"generation\":%llu", (unsigned long long)generation);
    av_audit_str(b, "error", error);
    av_audit_end(b);
    av_kpilog_append(m->audit, b, 1);
    evbuffer_free(b);
}

static void reload(av_main_t *m, const char *trigger)
{
    char err[1024];
    av_config_t *next = av_config_load(m->config_path, m->cfg->generation + 1, err, sizeof(err));
    if (next == NULL) {
        AV_ERR("reload failed, still serving generation %llu: %s", (unsigned long long)m->cfg->generation, err);
        audit_reload(m, trigger, m->cfg->generation, err);
        return;
    }
    audit_reload(m, trigger, next->generation, NULL);
    av_split_attach(m->splits, next);
    av_rollouts_sync(m->rollouts, next);
    m->admin_state.cfg = next;
    m->admin_state.token = next->admin_token;
    av_config_restart_keys(m->cfg, next, warn_restart, next);
    av_log_set_level(av_log_level_parse(next->log_level));
    for (int i = 0; i < m->nworkers; i++)
        av_worker_set_config(m->workers[i], next);
    av_config_unref(m->cfg);
    m->cfg = next;
    m->admin_state.generation = next->generation;
    av_kpilog_reopen(m->kpilog);
    if (m->audit != NULL)
        av_kpilog_reopen(m->audit);
    watch_policies(m);
    AV_INFO("reloaded %s: generation %llu, %zu routes, %zu backends", m->config_path,
            (unsigned long long)next->generation, next->nroutes, next->nbackends);
}

static void policy_settled_cb(evutil_socket_t fd, short what, void *arg)
{
    av_main_t *m = arg;
    AV_INFO("policy files in %s changed: reloading", m->ino_dir);
    reload(m, "policy files");
}

/* inotify: a .lua file in the policy directory was written, moved or removed. */
static void policy_changed_cb(evutil_socket_t fd, short what, void *arg)
{
    av_main_t *m = arg;
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    int lua = 0;
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0)
        for (char *p = buf; p < buf + n;) {
            const struct inotify_event *e = (const struct inotify_event *)p;
            size_t len = e->len ? strlen(e->name) : 0;
            if (len > 4 && strcmp(e->name + len - 4, ".lua") == 0)
                lua = 1;
            p += sizeof(*e) + e->len;
        }
    if (lua) {
        struct timeval tv = {0, 200000}; /* an editor's save is several events: wait for the last */
        event_add(m->ino_timer, &tv);
    }
}

/* Watches the current generation's policy directory (or none). */
static void watch_policies(av_main_t *m)
{
    const char *dir = m->cfg->policies != NULL ? m->cfg->policy_dir : NULL;
    if (m->ino_fd < 0 || (dir != NULL && strcmp(dir, m->ino_dir) == 0 && m->ino_wd >= 0))
        return;
    if (m->ino_wd >= 0)
        inotify_rm_watch(m->ino_fd, m->ino_wd);
    m->ino_wd = -1;
    m->ino_dir[0] = '\0';
    if (dir == NULL)
        return;
    m->ino_wd = inotify_add_watch(m->ino_fd, dir, IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE);
    if (m->ino_wd < 0) {
        AV_WARN("cannot watch %s for policy changes (%s): reload with SIGHUP", dir, strerror(errno));
        return;
    }
    snprintf(m->ino_dir, sizeof(m->ino_dir), "%s", dir);
}

static void noop_cb(evutil_socket_t fd, short what, void *arg)
{
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
    av_main_t *m = arg;
    if (sig == SIGHUP) {
        reload(m, "SIGHUP");
        return;
    }
    if (m->admin_state.draining) { /* a second signal: stop waiting for requests in flight */
        AV_WARN("second stop signal: not waiting for requests in flight");
        for (int i = 0; i < m->nworkers; i++)
            av_worker_abort(m->workers[i]);
        return;
    }
    AV_INFO("%s: draining (up to %lld ms), then exiting", sig == SIGTERM ? "SIGTERM" : "SIGINT",
            (long long)m->cfg->drain_timeout_ms);
    m->admin_state.draining = 1;
    for (int i = 0; i < m->nworkers; i++)
        av_worker_stop(m->workers[i]);
    event_base_loopexit(m->base, NULL);
}

/* Binds every listener once per worker; a port of 0 is resolved by the first bind. */
static int bind_all(av_main_t *m, char *err, size_t errlen)
{
    av_config_t *c = m->cfg;
    m->fds = av_calloc((size_t)m->nworkers, sizeof(int *));
    m->listen_addrs = av_calloc(c->nlisten, sizeof(*m->listen_addrs));
    for (int w = 0; w < m->nworkers; w++)
        m->fds[w] = av_calloc(c->nlisten, sizeof(int));
    for (size_t i = 0; i < c->nlisten; i++) {
        struct sockaddr_storage ss = c->listen[i].addr;
        for (int w = 0; w < m->nworkers; w++) {
            char why[256];
            int fd = av_listen_fd((struct sockaddr *)&ss, c->listen[i].addrlen, why, sizeof(why));
            if (fd < 0) {
                snprintf(err, errlen, "%s: listen %s: %s", c->path, c->listen[i].address, why);
                return AV_EIO;
            }
            if (w == 0) {
                av_sockaddr_set_port(&ss, av_fd_port(fd));
                av_fd_addr_str(fd, m->listen_addrs[i], sizeof(m->listen_addrs[i]));
            }
            m->fds[w][i] = fd;
        }
    }
    return 0;
}

static int write_ready_file(av_main_t *m)
{
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", m->ready_file);
    FILE *f = fopen(tmp, "w");
    if (f == NULL)
        return AV_EIO;
    for (size_t i = 0; i < m->cfg->nlisten; i++)
        fprintf(f, "listen %s\n", m->listen_addrs[i]);
    fprintf(f, "admin %s\n", av_admin_address(m->admin));
    if (fclose(f) != 0 || rename(tmp, m->ready_file) != 0)
        return AV_EIO;
    return 0;
}

/* What the config loader calls above itself (config.h). */
static const av_config_loaders_t loaders = {
    .policies_load = av_policies_load, .policies_free = av_policies_free, .policies_find = av_policies_find,
    .geo_open = av_geo_open, .geo_close = av_geo_close, .geo_cidr_valid = av_geo_cidr_valid,
};

int main(int argc, char **argv)
{
    /* before libevent allocates anything: its buffer chains come and go with each request */
    event_set_mem_functions(av_mc_alloc, av_mc_realloc, av_mc_free);
    av_config_set_loaders(&loaders);
    if (argc > 1 && strcmp(argv[1], "report") == 0)
        return av_report_main(argc - 1, argv + 1);
    if (argc > 1 && strcmp(argv[1], "policy-test") == 0)
        return av_policy_test_main(argc - 1, argv + 1);
    av_main_t m = {.config_path = "conf/aviary.json"};
    int test_only = 0;
    enum { O_READY = 256 };
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"test", no_argument, NULL, 't'},
        {"ready-file", required_argument, NULL, O_READY}, {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'v'}, {NULL, 0, NULL, 0},
    };
    int o;
    while ((o = getopt_long(argc, argv, "c:thv", opts, NULL)) != -1) {
        switch (o) {
        case 'c': m.config_path = optarg; break;
        case 't': test_only = 1; break;
        case O_READY: m.ready_file = optarg; break;
        case 'h': usage(stdout); return 0;
        case 'v': printf("aviary %s\n", AV_VERSION); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "aviary: unexpected argument \"%s\" (see aviary --help)\n", argv[optind]);
        return 2;
    }
    char err[1024];
    m.cfg = av_config_load(m.config_path, 1, err, sizeof(err));
    if (m.cfg == NULL) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    if (test_only) {
        printf("%s: ok (%zu listeners, %zu backends, %zu routes)\n", m.config_path, m.cfg->nlisten,
               m.cfg->nbackends, m.cfg->nroutes);
        av_config_unref(m.cfg);
        return 0;
    }
    av_log_set_level(av_log_level_parse(m.cfg->log_level));
    signal(SIGPIPE, SIG_IGN);
    evthread_use_pthreads();
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    m.nworkers = m.cfg->workers > 0 ? (int)m.cfg->workers : (ncpu > 0 ? (int)ncpu : 1);
    if (bind_all(&m, err, sizeof(err)) != 0) {
        AV_ERR("%s", err);
        return 1;
    }
    m.kpilog = av_kpilog_open(m.cfg->kpi_log, err, sizeof(err));
    if (m.kpilog == NULL) {
        AV_ERR("%s", err);
        return 1;
    }
    if (m.cfg->audit_log != NULL && (m.audit = av_kpilog_open(m.cfg->audit_log, err, sizeof(err))) == NULL) {
        AV_ERR("%s", err);
        return 1;
    }
    m.base = event_base_new();
    m.splits = av_split_reg_new(m.nworkers);
    av_split_attach(m.splits, m.cfg);
    m.rollouts = av_rollouts_new(m.base, m.audit);
    av_rollouts_sync(m.rollouts, m.cfg);
    m.admin_state.rollouts = m.rollouts;
    m.fleet = av_fleet_new(m.base, m.cfg); /* never waits: it connects in the background */
    m.admin_state.fleet = m.fleet;
    m.admin_state.cfg = m.cfg;
    m.admin_state.token = m.cfg->admin_token;
    if (m.cfg->admin_token == NULL)
        AV_WARN("admin.token_env is not set: anyone who can reach %s can change route weights",
                m.cfg->admin_address);
    m.admin_state.generation = m.cfg->generation;
    m.admin_state.workers = m.nworkers;
    m.admin = av_admin_start(m.base, m.cfg->admin_address, &m.admin_state, err, sizeof(err));
    if (m.admin == NULL) {
        AV_ERR("%s", err);
        return 1;
    }
    m.workers = av_calloc((size_t)m.nworkers, sizeof(*m.workers));
    for (int i = 0; i < m.nworkers; i++) {
        m.workers[i] = av_worker_new(i, m.nworkers, m.cfg, m.kpilog, m.fds[i], m.cfg->nlisten);
        m.workers[i]->audit = m.audit;
        if (av_worker_start(m.workers[i]) != 0) {
            AV_ERR("cannot start worker %d", i);
            return 1;
        }
    }
    m.admin_state.worker_list = m.workers;
    struct event *sigs[3];
    int signums[3] = {SIGTERM, SIGINT, SIGHUP};
    for (int i = 0; i < 3; i++) {
        sigs[i] = evsignal_new(m.base, signums[i], signal_cb, &m);
        evsignal_add(sigs[i], NULL);
    }
    m.ino_wd = -1;
    m.ino_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (m.ino_fd >= 0) {
        m.ino_ev = event_new(m.base, m.ino_fd, EV_READ | EV_PERSIST, policy_changed_cb, &m);
        m.ino_timer = evtimer_new(m.base, policy_settled_cb, &m);
        event_add(m.ino_ev, NULL);
        watch_policies(&m);
    } else {
        AV_WARN("inotify: %s: policy files are reloaded only on SIGHUP", strerror(errno));
    }
    m.admin_state.ready = 1;
    for (size_t i = 0; i < m.cfg->nlisten; i++)
        AV_INFO("listening on %s (%d workers)", m.listen_addrs[i], m.nworkers);
    AV_INFO("admin on %s; config %s generation 1", av_admin_address(m.admin), m.config_path);
    if (m.ready_file != NULL && write_ready_file(&m) != 0)
        AV_WARN("cannot write ready file %s: %s", m.ready_file, strerror(errno));

    event_base_dispatch(m.base);

    /* the main loop has ended; a stop signal from here on ends the drain, and once
     * the signal events are freed, nothing may kill the process before the log is flushed */
    /* keep signals and the admin port (readyz says "draining") served while workers drain */
    if (m.ino_ev != NULL) {
        event_free(m.ino_ev);
        event_free(m.ino_timer);
        m.ino_ev = m.ino_timer = NULL;
    }
    if (m.ino_fd >= 0)
        close(m.ino_fd);
    m.ino_fd = -1;
    struct event *tick = event_new(m.base, -1, EV_PERSIST, noop_cb, NULL);
    struct timeval tick_tv = {0, 20000};
    event_add(tick, &tick_tv);
    m.admin_state.worker_list = NULL; /* workers are freed as they finish */
    for (int i = 0; i < m.nworkers; i++) {
        while (!av_worker_done(m.workers[i]))
            event_base_loop(m.base, EVLOOP_ONCE);
        av_worker_join_free(m.workers[i]);
    }
    event_free(tick);
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    uint64_t lines = av_kpilog_lines(m.kpilog);
    av_kpilog_close(m.kpilog);
    if (m.audit != NULL)
        av_kpilog_close(m.audit);
    AV_INFO("stopped; %llu KPI lines written", (unsigned long long)lines);
    for (int i = 0; i < 3; i++)
        event_free(sigs[i]);
    av_admin_free(m.admin);
    av_fleet_free(m.fleet);
    av_rollouts_free(m.rollouts);
    event_base_free(m.base);
    for (int i = 0; i < m.nworkers; i++)
        free(m.fds[i]);
    free(m.fds);
    free(m.listen_addrs);
    free(m.workers);
    av_config_unref(m.cfg);
    av_split_reg_free(m.splits);
    libevent_global_shutdown();
    av_mc_thread_release();
    return 0;
}
