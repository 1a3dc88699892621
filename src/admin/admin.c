/* admin.c: GET /healthz (the process answers), GET /readyz (it serves
 * traffic: config loaded, workers running, not draining), GET /routes (each
 * route's variants, weights and counters) and POST /routes/NAME/weights
 * (token-protected when admin.token_env is set), as JSON. */
#include "admin.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "av.h"
#include "config.h"
#include "fleet.h"
#include "jsonw.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "rollout.h"
#include "split.h"
#include "loop.h"

struct av_admin_s {
    struct evhttp *http;
    const av_admin_state_t *st;
    char address[80];
};

static void reply_json(struct evhttp_request *r, int code, const char *reason, struct evbuffer *body)
{
    evhttp_add_header(evhttp_request_get_output_headers(r), "Content-Type", "application/json");
    evhttp_send_reply(r, code, reason, body);
}

static void healthz(struct evhttp_request *r, void *arg)
{
    struct evbuffer *b = evbuffer_new();
    evbuffer_add_printf(b, "{\"status\":\"ok\"}\n");
    reply_json(r, 200, "OK", b);
    evbuffer_free(b);
}

static void readyz(struct evhttp_request *r, void *arg)
{
    av_admin_t *a = arg;
    const av_admin_state_t *st = a->st;
    int ok = st->ready && !st->draining;
    struct evbuffer *b = evbuffer_new();
    evbuffer_add_printf(b, "{\"status\":\"%s\",\"generation\":%llu,\"workers\":%d}\n",
                        ok ? "ready" : st->draining ? "draining" : "starting",
                        (unsigned long long)st->generation, st->workers);
    reply_json(r, ok ? 200 : 503, ok ? "OK" : "Service Unavailable", b);
    evbuffer_free(b);
}

static void reply_error(struct evhttp_request *r, int code, const char *reason, const char *err_code,
                        const char *msg)
{
    struct evbuffer *b = evbuffer_new();
    evbuffer_add_printf(b, "{\"error\":{\"message\":");
    av_json_str(b, msg, strlen(msg));
    evbuffer_add_printf(b, ",\"type\":\"invalid_request_error\",\"code\":\"%s\"}}\n", err_code);
    reply_json(r, code, reason, b);
    evbuffer_free(b);
}

static void not_found(struct evhttp_request *r, void *arg)
{
    (void)arg;
    reply_error(r, 404, "Not Found", "not_found", "no such admin endpoint");
}

static void route_json(struct evbuffer *b, const av_route_t *rt)
{
    int64_t w[AV_SPLIT_MAX_VARIANTS] = {0};
    if (rt->split != NULL)
        av_split_weights(rt->split, w, rt->nvariants);
    int64_t total = 0;
    for (size_t i = 0; i < rt->nvariants; i++)
        total += w[i];
    evbuffer_add_printf(b, "{\"name\":");
    av_json_str(b, rt->name, strlen(rt->name));
    evbuffer_add_printf(b, ",\"sticky\":[");
    for (size_t i = 0; i < rt->nsticky; i++) {
        if (i)
            evbuffer_add(b, ",", 1);
        av_json_str(b, rt->sticky[i].spec, strlen(rt->sticky[i].spec));
    }
    evbuffer_add_printf(b, "],\"override\":%s,", rt->override_enabled ? "true" : "false");
    if (rt->shadow_variant_name != NULL) {
        uint64_t sent = 0, dropped = 0, over = 0;
        int64_t in_flight = 0, minute_tokens = 0, minute_nano = 0;
        if (rt->split != NULL)
            av_split_shadow_counts(rt->split, &sent, &dropped, &in_flight, &over, &minute_tokens, &minute_nano);
        evbuffer_add_printf(b, "\"shadow\":{\"variant\":");
        av_json_str(b, rt->shadow_variant_name, strlen(rt->shadow_variant_name));
        evbuffer_add_printf(b,
                            ",\"percent\":%lld,\"max_in_flight\":%lld,\"sent\":%llu,\"dropped\":%llu,"
                            "\"in_flight\":%lld,\"over_budget\":%llu,\"minute_tokens\":%lld,\"minute_usd\":%.9f},",
                            (long long)rt->shadow_percent, (long long)rt->shadow_max_in_flight,
                            (unsigned long long)sent, (unsigned long long)dropped, (long long)in_flight,
                            (unsigned long long)over, (long long)minute_tokens, (double)minute_nano / 1e9);
    }
    evbuffer_add_printf(b, "\"variants\":[");
    for (size_t i = 0; i < rt->nvariants; i++) {
        const av_variant_t *v = &rt->variants[i];
        av_split_counts_t n = {0};
        if (rt->split != NULL)
            av_split_counts(rt->split, i, &n);
        evbuffer_add_printf(b, "%s{\"name\":", i ? "," : "");
        av_json_str(b, v->name, strlen(v->name));
        evbuffer_add_printf(b, ",\"baseline\":%s,\"backend\":", i == 0 ? "true" : "false");
        av_json_str(b, v->backend->name, strlen(v->backend->name));
        evbuffer_add_printf(b, ",\"model\":");
        if (v->model != NULL)
            av_json_str(b, v->model, strlen(v->model));
        else
            evbuffer_add(b, "null", 4);
        evbuffer_add_printf(b, ",\"prompt_hash\":");
        if (v->prompt.text != NULL)
            av_json_str(b, v->prompt.hash, strlen(v->prompt.hash));
        else
            evbuffer_add(b, "null", 4);
        evbuffer_add_printf(b,
                            ",\"weight\":%lld,\"share\":%.6f,\"requests\":%llu,\"unkeyed\":%llu,"
                            "\"overridden\":%llu}",
                            (long long)w[i], total > 0 ? (double)w[i] / (double)total : 0.0,
                            (unsigned long long)n.requests, (unsigned long long)n.unkeyed,
                            (unsigned long long)n.overridden);
    }
    evbuffer_add(b, "]}", 2);
}

static const av_route_t *find_route(const av_config_t *c, const char *name, size_t len)
{
    for (size_t i = 0; i < c->nroutes; i++)
        if (strlen(c->routes[i].name) == len && memcmp(c->routes[i].name, name, len) == 0)
            return &c->routes[i];
    return NULL;
}

/* Constant time, so a token cannot be guessed a byte at a time. */
static int authorized(av_admin_t *a, struct evhttp_request *r)
{
    if (a->st->token == NULL)
        return 1;
    const char *h = evhttp_find_header(evhttp_request_get_input_headers(r), "Authorization");
    if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0) /* the scheme is case-insensitive (RFC 9110 11.1) */
        return 0;
    h += 7;
    while (*h == ' ')
        h++;
    size_t n = strlen(a->st->token), m = strlen(h);
    unsigned diff = (unsigned)(n ^ m);
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)a->st->token[i] ^ (unsigned char)(i < m ? h[i] : 0);
    return diff == 0;
}

/* POST /routes/NAME/weights {"weights": {"stable": 90, "canary": 10}}:
 * variants not named keep their weight; all change at once. */
static void set_weights(av_admin_t *a, struct evhttp_request *r, const av_route_t *rt)
{
    if (!authorized(a, r)) {
        reply_error(r, 401, "Unauthorized", "unauthorized", "this endpoint wants \"Authorization: Bearer TOKEN\" "
                                                             "with the token from admin.token_env");
        return;
    }
    struct evbuffer *in = evhttp_request_get_input_buffer(r);
    size_t len = evbuffer_get_length(in);
    cJSON *root = cJSON_ParseWithLength((const char *)evbuffer_pullup(in, -1), len);
    const cJSON *ws = cJSON_GetObjectItemCaseSensitive(root, "weights");
    char msg[512];
    if (!cJSON_IsObject(ws)) {
        cJSON_Delete(root);
        reply_error(r, 400, "Bad Request", "bad_request",
                    "expected {\"weights\": {\"VARIANT\": WEIGHT, ...}} with integer weights from 0 to 1000000");
        return;
    }
    int64_t w[AV_SPLIT_MAX_VARIANTS] = {0};
    av_split_weights(rt->split, w, rt->nvariants);
    for (const cJSON *e = ws->child; e != NULL; e = e->next) {
        size_t i = 0;
        while (i < rt->nvariants && strcmp(rt->variants[i].name, e->string) != 0)
            i++;
        if (i == rt->nvariants) {
            snprintf(msg, sizeof(msg), "route %s has no variant \"%.64s\"", rt->name, e->string);
            cJSON_Delete(root);
            reply_error(r, 400, "Bad Request", "unknown_variant", msg);
            return;
        }
        int64_t wv;
        if (!cJSON_IsNumber(e) || !av_whole(e->valuedouble, 0, 1000000, &wv)) {
            snprintf(msg, sizeof(msg), "weight of \"%.64s\" must be an integer from 0 to 1000000", e->string);
            cJSON_Delete(root);
            reply_error(r, 400, "Bad Request", "bad_weight", msg);
            return;
        }
        w[i] = wv;
    }
    cJSON_Delete(root);
    if (av_split_set_weights(rt->split, w, rt->nvariants) != 0) {
        reply_error(r, 400, "Bad Request", "bad_weight", "the weights add up to 0");
        return;
    }
    struct evbuffer *b = evbuffer_new();
    char *p = msg;
    for (size_t i = 0; i < rt->nvariants && p < msg + sizeof(msg) - 80; i++)
        p += snprintf(p, (size_t)(msg + sizeof(msg) - p), "%s%s=%lld", i ? ", " : "", rt->variants[i].name,
                      (long long)w[i]);
    AV_INFO("admin: route %s weights set: %s", rt->name, msg);
    route_json(b, rt);
    evbuffer_add(b, "\n", 1);
    reply_json(r, 200, "OK", b);
    evbuffer_free(b);
}

/* /routes and /routes/NAME[/weights] */
static void routes(struct evhttp_request *r, void *arg)
{
    av_admin_t *a = arg;
    const av_config_t *c = a->st->cfg;
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(r));
    enum evhttp_cmd_type cmd = evhttp_request_get_command(r);
    if (path == NULL || c == NULL) {
        not_found(r, arg);
        return;
    }
    if (strcmp(path, "/routes") == 0 || strcmp(path, "/routes/") == 0) {
        struct evbuffer *b = evbuffer_new();
        evbuffer_add_printf(b, "{\"generation\":%llu,\"routes\":[", (unsigned long long)c->generation);
        for (size_t i = 0; i < c->nroutes; i++) {
            if (i)
                evbuffer_add(b, ",", 1);
            route_json(b, &c->routes[i]);
        }
        evbuffer_add(b, "]}\n", 3);
        reply_json(r, 200, "OK", b);
        evbuffer_free(b);
        return;
    }
    const char *name = path + 8, *slash = strchr(name, '/');
    size_t nlen = slash ? (size_t)(slash - name) : strlen(name);
    const av_route_t *rt = find_route(c, name, nlen);
    if (rt == NULL) {
        reply_error(r, 404, "Not Found", "route_not_found", "no route of that name");
        return;
    }
    if (slash == NULL && cmd == EVHTTP_REQ_GET) {
        struct evbuffer *b = evbuffer_new();
        route_json(b, rt);
        evbuffer_add(b, "\n", 1);
        reply_json(r, 200, "OK", b);
        evbuffer_free(b);
        return;
    }
    if (slash != NULL && strcmp(slash, "/weights") == 0) {
        if (cmd != EVHTTP_REQ_POST) {
            reply_error(r, 405, "Method Not Allowed", "method_not_allowed", "use POST");
            return;
        }
        if (rt->split == NULL) {
            reply_error(r, 503, "Service Unavailable", "not_ready", "the route's split is not set up");
            return;
        }
        set_weights(a, r, rt);
        return;
    }
    not_found(r, arg);
}

/* Prometheus text format, version 0.0.4. */
static void label_value(struct evbuffer *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            evbuffer_add_printf(b, "\\%c", *s);
        else if (*s == '\n')
            evbuffer_add(b, "\\n", 2);
        else
            evbuffer_add(b, s, 1);
    }
}

/* What policies counted with aviary.count(), and their errors and denies,
 * summed over the workers. */
static void policy_counters(struct evbuffer *b, const av_admin_state_t *st)
{
    if (st->worker_list == NULL)
        return;
    size_t cap = (size_t)st->workers * AV_PCOUNT_MAX, n = 0;
    av_pcount_t *sum = av_calloc(cap ? cap : 1, sizeof(*sum));
    for (int w = 0; w < st->workers; w++) {
        const av_worker_t *wk = st->worker_list[w];
        size_t m = __atomic_load_n(&wk->npcounts, __ATOMIC_ACQUIRE);
        for (size_t i = 0; i < m; i++) {
            const av_pcount_t *c = &wk->pcounts[i];
            size_t j = 0;
            while (j < n && (strcmp(sum[j].policy, c->policy) != 0 || strcmp(sum[j].name, c->name) != 0))
                j++;
            if (j == n)
                sum[n++] = *c, sum[j].v = 0;
            sum[j].v += __atomic_load_n(&c->v, __ATOMIC_RELAXED);
        }
    }
    if (n > 0) {
        evbuffer_add_printf(b, "# HELP aviary_policy_events_total What policies counted (aviary.count), and "
                               "their errors and denies, summed over workers.\n"
                               "# TYPE aviary_policy_events_total counter\n");
        for (size_t j = 0; j < n; j++) {
            evbuffer_add_printf(b, "aviary_policy_events_total{policy=\"");
            label_value(b, sum[j].policy);
            evbuffer_add_printf(b, "\",name=\"");
            label_value(b, sum[j].name);
            evbuffer_add_printf(b, "\"} %llu\n", (unsigned long long)sum[j].v);
        }
    }
    free(sum);
}

static void metrics(struct evhttp_request *r, void *arg)
{
    av_admin_t *a = arg;
    const av_config_t *c = a->st->cfg;
    size_t n = c ? c->nroutes : 0, k = 0;
    av_metrics_route_t *routes = av_calloc(n ? n : 1, sizeof(*routes));
    const char *(*names)[AV_SPLIT_MAX_VARIANTS] = av_calloc(n ? n : 1, sizeof(*names));
    int64_t (*weights)[AV_SPLIT_MAX_VARIANTS] = av_calloc(n ? n : 1, sizeof(*weights));
    for (size_t i = 0; i < n; i++) {
        const av_route_t *rt = &c->routes[i];
        if (rt->split == NULL)
            continue;
        av_split_weights(rt->split, weights[k], rt->nvariants);
        for (size_t v = 0; v < rt->nvariants; v++)
            names[k][v] = rt->variants[v].name;
        routes[k] = (av_metrics_route_t){rt->name, av_split_metrics(rt->split), names[k], weights[k], rt->nvariants};
        k++;
    }
    struct evbuffer *b = evbuffer_new();
    av_metrics_prometheus(b, routes, k);
    policy_counters(b, a->st);
    av_rollouts_prometheus(a->st->rollouts, b);
    av_fleet_prometheus(a->st->fleet, b);
    free(routes);
    free(names);
    free(weights);
    evhttp_add_header(evhttp_request_get_output_headers(r), "Content-Type", "text/plain; version=0.0.4");
    evhttp_send_reply(r, 200, "OK", b);
    evbuffer_free(b);
}

/* GET /kpi?window=SECONDS (10-600, default 300): each route's variants over the window. */
static void kpi(struct evhttp_request *r, void *arg)
{
    av_admin_t *a = arg;
    const av_config_t *c = a->st->cfg;
    int seconds = 300;
    const char *q = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(r));
    if (q != NULL) {
        struct evkeyvalq params;
        if (evhttp_parse_query_str(q, &params) == 0) {
            const char *w = evhttp_find_header(&params, "window");
            if (w != NULL) {
                char *end;
                long v = strtol(w, &end, 10);
                if (*end != '\0' || v < 10 || v > 600) {
                    evhttp_clear_headers(&params);
                    reply_error(r, 400, "Bad Request", "bad_window", "window is seconds from 10 to 600");
                    return;
                }
                seconds = (int)v;
            }
            evhttp_clear_headers(&params);
        }
    }
    struct evbuffer *b = evbuffer_new();
    evbuffer_add_printf(b, "{\"window_seconds\":%d,\"routes\":[", seconds);
    for (size_t i = 0; c != NULL && i < c->nroutes; i++) {
        const av_route_t *rt = &c->routes[i];
        const char *names[AV_SPLIT_MAX_VARIANTS];
        for (size_t v = 0; v < rt->nvariants; v++)
            names[v] = rt->variants[v].name;
        evbuffer_add_printf(b, "%s{\"route\":", i ? "," : "");
        av_json_str(b, rt->name, strlen(rt->name));
        evbuffer_add_printf(b, ",\"variants\":");
        if (rt->split != NULL)
            av_metrics_window_json(b, av_split_metrics(rt->split), names, rt->nvariants, seconds, av_wall_us());
        else
            evbuffer_add(b, "[]", 2);
        evbuffer_add(b, "}", 1);
    }
    evbuffer_add(b, "]}\n", 3);
    reply_json(r, 200, "OK", b);
    evbuffer_free(b);
}

/* GET /rollouts, GET /rollouts/NAME, POST /rollouts/NAME/ACTION */
static void rollouts(struct evhttp_request *r, av_admin_t *a, const char *path)
{
    char name[256] = "", action[32] = "";
    const char *p = path + 9; /* after "/rollouts" */
    if (*p == '/') {
        p++;
        const char *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        if (n == 0 || n >= sizeof(name) || (slash && strlen(slash + 1) >= sizeof(action))) {
            not_found(r, a);
            return;
        }
        memcpy(name, p, n);
        if (slash)
            snprintf(action, sizeof(action), "%s", slash + 1);
    }
    struct evbuffer *b = evbuffer_new();
    if (action[0] != '\0') {
        if (evhttp_request_get_command(r) != EVHTTP_REQ_POST) {
            evbuffer_free(b);
            reply_error(r, 405, "Method Not Allowed", "method_not_allowed", "rollout actions are POST");
            return;
        }
        if (!authorized(a, r)) {
            evbuffer_free(b);
            reply_error(r, 401, "Unauthorized", "unauthorized", "this endpoint wants \"Authorization: Bearer TOKEN\" "
                                                                 "with the token from admin.token_env");
            return;
        }
        char why[512];
        int st = av_rollouts_action(a->st->rollouts, name, action, why, sizeof(why));
        if (st != 0) {
            evbuffer_free(b);
            reply_error(r, st, st == 404 ? "Not Found" : st == 409 ? "Conflict" : "Bad Request",
                        st == 404 ? "not_found" : st == 409 ? "conflict" : "bad_request", why);
            return;
        }
        AV_INFO("admin: rollout %s: %s", name, action);
    }
    if (av_rollouts_json(a->st->rollouts, name[0] ? name : NULL, b) != 0) {
        evbuffer_free(b);
        char why[300];
        snprintf(why, sizeof(why), "no rollout on route \"%.64s\"", name);
        reply_error(r, 404, "Not Found", "not_found", why);
        return;
    }
    evhttp_add_header(evhttp_request_get_output_headers(r), "Content-Type", "application/json");
    evhttp_send_reply(r, 200, "OK", b);
    evbuffer_free(b);
}

static void gencb(struct evhttp_request *r, void *arg)
{
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(r));
    if (path != NULL && strncmp(path, "/rollouts", 9) == 0 && (path[9] == '\0' || path[9] == '/') &&
        ((av_admin_t *)arg)->st->rollouts != NULL) {
        rollouts(r, arg, path);
        return;
    }
    if (path != NULL && strncmp(path, "/routes", 7) == 0 && (path[7] == '\0' || path[7] == '/')) {
        routes(r, arg);
        return;
    }
    if (path != NULL && strcmp(path, "/fleet") == 0) {
        av_admin_t *a = arg;
        if (a->st->fleet == NULL) {
            reply_error(r, 404, "Not Found", "no_fleet", "this process is not in a fleet (no \"fleet\" in its config)");
            return;
        }
        struct evbuffer *b = evbuffer_new();
        av_fleet_json(a->st->fleet, b);
        reply_json(r, 200, "OK", b);
        evbuffer_free(b);
        return;
    }
    not_found(r, arg);
}

av_admin_t *av_admin_start(struct event_base *base, const char *address, const av_admin_state_t *st,
                           char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    unsigned len;
    if (av_parse_hostport(address, 0, 1, &ss, &len) != 0) {
        snprintf(err, errlen, "admin.address \"%s\" is not a numeric host:port", address);
        return NULL;
    }
    char why[256];
    int fd = av_listen_fd((struct sockaddr *)&ss, len, why, sizeof(why));
    if (fd < 0) {
        snprintf(err, errlen, "admin listener %s: %s", address, why);
        return NULL;
    }
    av_admin_t *a = av_calloc(1, sizeof(*a));
    a->st = st;
    a->http = evhttp_new(base);
    if (evhttp_accept_socket(a->http, fd) != 0) {
        snprintf(err, errlen, "admin listener %s: evhttp refused the socket", address);
        evhttp_free(a->http);
        free(a);
        return NULL;
    }
    av_fd_addr_str(fd, a->address, sizeof(a->address));
    evhttp_set_allowed_methods(a->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD);
    evhttp_set_cb(a->http, "/healthz", healthz, a);
    evhttp_set_cb(a->http, "/readyz", readyz, a);
    evhttp_set_cb(a->http, "/metrics", metrics, a);
    evhttp_set_cb(a->http, "/kpi", kpi, a);
    evhttp_set_gencb(a->http, gencb, a);
    return a;
}

const char *av_admin_address(const av_admin_t *a)
{
    return a->address;
}

void av_admin_free(av_admin_t *a)
{
    if (a == NULL)
        return;
    evhttp_free(a->http);
    free(a);
}
