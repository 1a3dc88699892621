/* front.c: protocol selection for new client connections. */
#include "front.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>

#include "av.h"
#include "config.h"
#include "h1_server.h"
#include "h2_server.h"
#include "log.h"
#include "sock.h"
#include "tls.h"
#include "loop.h"

static const char H2_PREFACE[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
#define H2_PREFACE_LEN (sizeof(H2_PREFACE) - 1)

struct av_front_s {
    av_worker_t *w;
    av_sock_t *sock;
    int tls, h2; /* h2: the listener allows HTTP/2 */
    char client_ip[48];
    TAILQ_ENTRY(av_front_s) link;
};

static void front_free(av_front_t *f, int closed)
{
    TAILQ_REMOVE(&f->w->fronts, f, link);
    if (closed) {
        av_sock_free(f->sock);
        av_worker_conn_closed(f->w);
    }
    free(f);
}

static void hand_off(av_front_t *f, int h2)
{
    av_worker_t *w = f->w;
    av_sock_t *sock = f->sock;
    char ip[48];
    int tls = f->tls;
    memcpy(ip, f->client_ip, sizeof(ip));
    front_free(f, 0);
    av_sock_set_timeouts(sock, 0, 0);
    if (h2)
        av_h2_accept(w, sock, ip, tls);
    else
        av_h1_accept(w, sock, ip, tls);
}

/* Cleartext: HTTP/2 with prior knowledge starts with the preface. */
static void front_read(av_sock_t *s, void *arg)
{
    av_front_t *f = arg;
    struct evbuffer *in = av_sock_input(s);
    size_t n = evbuffer_get_length(in);
    size_t m = n < H2_PREFACE_LEN ? n : H2_PREFACE_LEN;
    const unsigned char *p = evbuffer_pullup(in, (ev_ssize_t)m);
    if (!f->h2 || memcmp(p, H2_PREFACE, m) != 0) {
        hand_off(f, 0);
        return;
    }
    if (n >= H2_PREFACE_LEN)
        hand_off(f, 1);
}

static void front_event(av_sock_t *s, int what, void *arg)
{
    av_front_t *f = arg;
    if (what & AV_SOCK_CONNECTED) { /* the TLS handshake is done */
        hand_off(f, f->h2 && av_tls_is_h2(av_sock_ssl(s)));
        return;
    }
    if (what & AV_SOCK_ERROR)
        AV_DEBUG("client %s: %s before the first request", f->client_ip, av_sock_error_str(s));
    else if (what & AV_SOCK_TIMEOUT)
        AV_DEBUG("client %s: %s timed out", f->client_ip, f->tls ? "TLS handshake" : "first bytes");
    front_free(f, 1);
}

void av_front_accept(av_worker_t *w, int fd, const struct sockaddr *sa, size_t li)
{
    const av_listen_t *l = &w->cfg->listen[li];
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    av_front_t *f = av_calloc(1, sizeof(*f));
    f->w = w;
    f->h2 = l->http2;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, f->client_ip,
                  sizeof(f->client_ip));
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, f->client_ip,
                  sizeof(f->client_ip));
    f->sock = av_sock_new(w->base, fd);
    TAILQ_INSERT_TAIL(&w->fronts, f, link);
    w->stats.client_conns++;
    if (l->tls_ctx != NULL) {
        f->tls = 1;
        if (av_sock_tls_server(f->sock, l->tls_ctx) != 0) {
            AV_WARN("client %s: cannot start TLS: %s", f->client_ip, av_sock_error_str(f->sock));
            front_free(f, 1);
            return;
        }
    }
    av_sock_setcb(f->sock, f->tls ? NULL : front_read, NULL, front_event, f);
    /* a handshake is work under way (header timeout); a silent cleartext
     * connection is an idle one, as between keep-alive requests */
    int64_t ms = f->tls ? w->cfg->header_timeout_ms : w->cfg->idle_timeout_ms;
    av_sock_set_timeouts(f->sock, ms, ms);
    av_sock_read(f->sock, 1);
}

void av_front_close_all(av_worker_t *w)
{
    av_front_t *f;
    while ((f = TAILQ_FIRST(&w->fronts)) != NULL)
        front_free(f, 1);
}
