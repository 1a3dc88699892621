/* admin.c: GET /healthz (the process answers) and GET /readyz (it serves
 * traffic: config loaded, workers running, not draining), as JSON. */
#include "admin.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <stdio.h>
#include <string.h>

#include "av.h"
#include "listener.h"

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

static void not_found(struct evhttp_request *r, void *arg)
{
    struct evbuffer *b = evbuffer_new();
    evbuffer_add_printf(b, "{\"error\":{\"message\":\"no such admin endpoint\",\"type\":\"invalid_request_error\","
                           "\"code\":\"not_found\"}}\n");
    reply_json(r, 404, "Not Found", b);
    evbuffer_free(b);
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
    evhttp_set_gencb(a->http, not_found, a);
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
