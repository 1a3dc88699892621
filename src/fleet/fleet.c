/* fleet.c: the link to the fleet's Redis (hiredis, asynchronous, on the
 * main thread's libevent loop) and the replica registry: a sorted set
 * NAME:replicas scored by when each replica was last seen (milliseconds),
 * and NAME:replica:ID with what the replica says of itself, expiring. */
#include "fleet.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "av.h"
#include "config.h"
#include "jsonw.h"
#include "log.h"

#define MAX_REPLICAS 256
#define STALL_MS 3000 /* a heartbeat unanswered this long: the link is taken as lost */

typedef struct {
    char id[72];
    uint64_t seen_ms; /* wall clock, as the replica wrote it */
} replica_t;

struct av_fleet_s {
    struct event_base *base;
    struct event *timer;
    redisAsyncContext *ac;   /* NULL: not connected, nor connecting */
    int connected;           /* the connect callback said yes */
    int closing;
    char where[320];         /* the address as logged: never the password */
    char *host, *unix_path, *password, *name, *id;
    int port, db;
    uint64_t started_ms;
    /* the heartbeat in flight */
    uint64_t sent_us;        /* 0: none */
    uint64_t connect_us;     /* when the connection in progress began */
    uint64_t beat;           /* its number: late replies of an older one are dropped */
    double rtt_ms;           /* the last round trip; < 0: none yet */
    /* what the last heartbeat read */
    replica_t replicas[MAX_REPLICAS];
    size_t nreplicas;
    uint64_t read_ms;        /* when */
    /* saying it once */
    int down_said;           /* the loss was logged; cleared when the link is back */
    uint64_t down_since_us;
    char error[256];         /* why the link is down, or the last error Redis gave; "" when none */
};

static void connect_redis(av_fleet_t *f);

/* ---- the link ---- */

static void link_down(av_fleet_t *f, const char *why)
{
    f->connected = 0;
    f->sent_us = 0;
    if (why != NULL && why[0] != '\0')
        snprintf(f->error, sizeof(f->error), "%s", why);
    if (f->down_since_us == 0)
        f->down_since_us = av_now_us();
    if (!f->down_said && !f->closing) {
        AV_WARN("fleet %s: Redis at %s is unreachable (%s); serving on with the weights applied last, retrying each "
                "second (said once)",
                f->name, f->where, f->error[0] ? f->error : "no answer");
        f->down_said = 1;
    }
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    av_fleet_t *f = ac->data;
    if (f == NULL) /* a context given up on (av_fleet_tick) */
        return;
    if (status != REDIS_OK) { /* hiredis frees the context after this */
        f->ac = NULL;
        link_down(f, ac->errstr);
        return;
    }
    f->connected = 1;
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    av_fleet_t *f = ac->data;
    if (f == NULL)
        return;
    f->ac = NULL; /* hiredis frees it after this */
    if (f->closing)
        return;
    link_down(f, status == REDIS_OK ? "the connection was closed" : ac->errstr);
}

static void connect_redis(av_fleet_t *f)
{
    redisAsyncContext *ac = f->unix_path ? redisAsyncConnectUnix(f->unix_path) : redisAsyncConnect(f->host, f->port);
    if (ac == NULL)
        av_oom();
    if (ac->err) {
        link_down(f, ac->errstr);
        redisAsyncFree(ac);
        return;
    }
    ac->data = f;
    if (redisLibeventAttach(ac, f->base) != REDIS_OK) {
        link_down(f, "cannot attach to the event loop");
        redisAsyncFree(ac);
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    f->ac = ac;
    f->connected = 0;
    f->connect_us = av_now_us();
    /* queued until the connection is up, answered before anything else */
    if (f->password != NULL)
        redisAsyncCommand(ac, NULL, NULL, "AUTH %s", f->password);
    if (f->db != 0)
        redisAsyncCommand(ac, NULL, NULL, "SELECT %d", f->db);
}

/* ---- the heartbeat ---- */

static int cmp_replica(const void *a, const void *b)
{
    return strcmp(((const replica_t *)a)->id, ((const replica_t *)b)->id);
}

/* The reply to ZRANGE NAME:replicas 0 -1 WITHSCORES, the pipeline's last. */
static void on_replicas(redisAsyncContext *ac, void *r, void *priv)
{
    av_fleet_t *f = ac->data;
    redisReply *reply = r;
    if (reply == NULL || f == NULL || (uint64_t)(uintptr_t)priv != f->beat || f->sent_us == 0)
        return; /* the link went, or a late answer to an older beat */
    f->rtt_ms = (double)(av_now_us() - f->sent_us) / 1000.0;
    f->sent_us = 0;
    if (reply->type == REDIS_REPLY_ERROR) {
        snprintf(f->error, sizeof(f->error), "Redis: %.200s", reply->str);
        return;
    }
    if (reply->type != REDIS_REPLY_ARRAY)
        return;
    size_t n = 0;
    for (size_t i = 0; i + 1 < reply->elements && n < MAX_REPLICAS; i += 2) {
        const redisReply *id = reply->element[i], *score = reply->element[i + 1];
        if (id->type != REDIS_REPLY_STRING || score->type != REDIS_REPLY_STRING)
            continue;
        snprintf(f->replicas[n].id, sizeof(f->replicas[n].id), "%.*s", (int)(id->len < 64 ? id->len : 64), id->str);
        f->replicas[n].seen_ms = strtoull(score->str, NULL, 10);
        n++;
    }
    qsort(f->replicas, n, sizeof(f->replicas[0]), cmp_replica);
    f->nreplicas = n;
    f->read_ms = av_wall_us() / 1000;
    if (f->down_said) {
        AV_INFO("fleet %s: Redis at %s answers again (after %.0f s); %zu replicas live", f->name, f->where,
                (double)(av_now_us() - f->down_since_us) / 1e6, n);
        f->down_said = 0;
    }
    f->down_since_us = 0;
    f->error[0] = '\0';
}

/* Replies whose only news is an error (NOAUTH, a wrong password, OOM). */
static void on_step(redisAsyncContext *ac, void *r, void *priv)
{
    av_fleet_t *f = ac->data;
    redisReply *reply = r;
    if (reply != NULL && f != NULL && reply->type == REDIS_REPLY_ERROR) {
        int first = f->error[0] == '\0' || strncmp(f->error, "Redis: ", 7) != 0;
        snprintf(f->error, sizeof(f->error), "Redis: %.200s", reply->str);
        if (first)
            AV_WARN("fleet %s: Redis at %s refused the heartbeat: %s", f->name, f->where, reply->str);
    }
}

void av_fleet_tick(av_fleet_t *f)
{
    if (f->ac == NULL) {
        connect_redis(f);
        return;
    }
    uint64_t waited = av_now_us() - (f->sent_us != 0 ? f->sent_us : f->connect_us);
    if (f->sent_us != 0 || !f->connected) {
        if (waited < STALL_MS * 1000ull)
            return; /* one heartbeat in flight at a time; or still connecting */
        /* no answer: the connection is as good as gone (a stopped Redis, a partition) */
        redisAsyncContext *ac = f->ac;
        link_down(f, f->connected ? "no answer to the heartbeat in 3 s" : "no connection in 3 s");
        f->ac = NULL;
        ac->data = NULL;
        redisAsyncFree(ac);
        return;
    }
    uint64_t now = av_wall_us() / 1000;
    char self[1024]; /* an id is at most 64 bytes (config.c), 384 escaped */
    char *p = self;
    p = AV_PUT_LIT(p, "{\"id\":");
    p = av_jw_str(p, f->id, strlen(f->id));
    p += snprintf(p, 200, ",\"pid\":%ld,\"started_ms\":%llu,\"version\":\"%s\"}", (long)getpid(),
                  (unsigned long long)f->started_ms, AV_VERSION);
    f->beat++;
    f->sent_us = av_now_us();
    /* one pipelined round trip: register, say who we are, forget the gone, read the live */
    redisAsyncCommand(f->ac, on_step, NULL, "ZADD %s:replicas %llu %s", f->name, (unsigned long long)now, f->id);
    redisAsyncCommand(f->ac, on_step, NULL, "SET %s:replica:%s %b PX %d", f->name, f->id, self, (size_t)(p - self),
                      AV_FLEET_LIVE_MS);
    redisAsyncCommand(f->ac, on_step, NULL, "ZREMRANGEBYSCORE %s:replicas -inf (%llu", f->name,
                      (unsigned long long)(now > AV_FLEET_LIVE_MS ? now - AV_FLEET_LIVE_MS : 0));
    redisAsyncCommand(f->ac, on_replicas, (void *)(uintptr_t)f->beat, "ZRANGE %s:replicas 0 -1 WITHSCORES", f->name);
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    av_fleet_tick(arg);
}

av_fleet_t *av_fleet_new(struct event_base *base, const av_config_t *cfg)
{
    const av_fleet_cfg_t *c = &cfg->fleet;
    if (c->redis == NULL)
        return NULL;
    av_fleet_t *f = av_calloc(1, sizeof(*f));
    f->base = base;
    f->host = c->host ? av_strdup(c->host) : NULL;
    f->unix_path = c->unix_path ? av_strdup(c->unix_path) : NULL;
    f->password = c->password ? av_strdup(c->password) : NULL;
    f->name = av_strdup(c->name);
    f->id = av_strdup(c->replica_id);
    f->port = c->port;
    f->db = c->db;
    f->rtt_ms = -1;
    f->started_ms = av_wall_us() / 1000;
    snprintf(f->where, sizeof(f->where), "%s", c->redis); /* the URL carries no password (config.c refuses one) */
    AV_INFO("fleet %s: replica %s, Redis at %s", f->name, f->id, f->where);
    connect_redis(f);
    f->timer = event_new(base, -1, EV_PERSIST, tick_cb, f);
    struct timeval tv = {1, 0};
    event_add(f->timer, &tv);
    return f;
}

void av_fleet_free(av_fleet_t *f)
{
    if (f == NULL)
        return;
    f->closing = 1;
    if (f->timer != NULL)
        event_free(f->timer);
    if (f->ac != NULL) {
        redisAsyncContext *ac = f->ac;
        f->ac = NULL;
        redisAsyncFree(ac); /* its callbacks see closing, or a NULL reply */
    }
    free(f->host);
    free(f->unix_path);
    free(f->password);
    free(f->name);
    free(f->id);
    free(f);
}

/* ---- views ---- */

static size_t live(const av_fleet_t *f, uint64_t now_ms)
{
    size_t n = 0;
    for (size_t i = 0; i < f->nreplicas; i++)
        n += now_ms - f->replicas[i].seen_ms <= AV_FLEET_LIVE_MS || f->replicas[i].seen_ms > now_ms;
    return n;
}

void av_fleet_json(av_fleet_t *f, struct evbuffer *out)
{
    uint64_t now = av_wall_us() / 1000;
    int up = f->connected && f->error[0] == '\0';
    evbuffer_add_printf(out, "{\"fleet\":");
    av_json_str(out, f->name, strlen(f->name));
    evbuffer_add_printf(out, ",\"replica\":");
    av_json_str(out, f->id, strlen(f->id));
    evbuffer_add_printf(out, ",\"redis\":");
    av_json_str(out, f->where, strlen(f->where));
    evbuffer_add_printf(out, ",\"connected\":%s", up ? "true" : "false");
    if (f->rtt_ms >= 0)
        evbuffer_add_printf(out, ",\"rtt_ms\":%.3f", f->rtt_ms);
    else
        evbuffer_add_printf(out, ",\"rtt_ms\":null");
    evbuffer_add_printf(out, ",\"error\":");
    if (f->error[0])
        av_json_str(out, f->error, strlen(f->error));
    else
        evbuffer_add_printf(out, "null");
    /* as the last heartbeat read them: when Redis is away, the last known */
    evbuffer_add_printf(out, ",\"replicas_read_ms_ago\":");
    if (f->read_ms)
        evbuffer_add_printf(out, "%llu", (unsigned long long)(now - f->read_ms));
    else
        evbuffer_add_printf(out, "null");
    evbuffer_add_printf(out, ",\"replicas\":[");
    for (size_t i = 0; i < f->nreplicas; i++) {
        evbuffer_add_printf(out, "%s{\"id\":", i ? "," : "");
        av_json_str(out, f->replicas[i].id, strlen(f->replicas[i].id));
        evbuffer_add_printf(out, ",\"last_seen_ms_ago\":%lld,\"self\":%s}",
                            (long long)(now > f->replicas[i].seen_ms ? now - f->replicas[i].seen_ms : 0),
                            strcmp(f->replicas[i].id, f->id) == 0 ? "true" : "false");
    }
    evbuffer_add_printf(out, "]}\n");
}

void av_fleet_prometheus(av_fleet_t *f, struct evbuffer *out)
{
    if (f == NULL)
        return;
    uint64_t now = av_wall_us() / 1000;
    int up = f->connected && f->error[0] == '\0';
    evbuffer_add_printf(out,
                        "# HELP aviary_fleet_connected Whether this replica's link to the fleet's Redis is up.\n"
                        "# TYPE aviary_fleet_connected gauge\naviary_fleet_connected %d\n"
                        "# HELP aviary_fleet_replicas Replicas seen in the last %d s, as last read from Redis.\n"
                        "# TYPE aviary_fleet_replicas gauge\naviary_fleet_replicas %zu\n",
                        up, AV_FLEET_LIVE_MS / 1000, live(f, now));
    if (f->rtt_ms >= 0)
        evbuffer_add_printf(out,
                            "# HELP aviary_fleet_redis_rtt_seconds The last heartbeat's round trip to Redis.\n"
                            "# TYPE aviary_fleet_redis_rtt_seconds gauge\naviary_fleet_redis_rtt_seconds %.6f\n",
                            f->rtt_ms / 1000.0);
}
