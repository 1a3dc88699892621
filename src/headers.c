/* headers.c: what crosses from the client to the backend and back. Secrets
 * (the client's Authorization, the backend key) cross only as configured. */
#include "headers.h"

#include <event2/buffer.h>
#include <string.h>
#include <strings.h>

#include "arena.h"
#include "av.h"

void av_headers_push(av_arena_t *a, av_headers_t *h, const av_header_t *e)
{
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 16;
        av_header_t *v = av_arena_alloc(a, cap * sizeof(*v));
        if (h->n)
            memcpy(v, h->v, h->n * sizeof(*v));
        h->v = v;
        h->cap = cap;
    }
    h->v[h->n++] = *e;
}

void av_headers_add(av_arena_t *a, av_headers_t *h, const char *name, size_t nlen, const char *value,
                    size_t vlen)
{
    av_header_t e = {av_arena_strndup(a, name, nlen), av_arena_strndup(a, value, vlen), nlen, vlen};
    av_headers_push(a, h, &e);
}

const av_header_t *av_headers_get(const av_headers_t *h, const char *name)
{
    for (size_t i = 0; i < h->n; i++)
        if (av_streq_ci(h->v[i].name, h->v[i].name_len, name))
            return &h->v[i];
    return NULL;
}

static const char *const hop_headers[] = {
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
    "proxy-authorization", "proxy-authenticate",
};

/* Whether name is one of the comma-separated tokens of a Connection header. */
static int in_connection(const av_headers_t *h, const char *name, size_t len)
{
    for (size_t i = 0; i < h->n; i++) {
        if (!av_streq_ci(h->v[i].name, h->v[i].name_len, "connection"))
            continue;
        const char *p = h->v[i].value, *end = p + h->v[i].value_len;
        while (p < end) {
            while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
                p++;
            const char *t = p;
            while (p < end && *p != ',' && *p != ' ' && *p != '\t')
                p++;
            if ((size_t)(p - t) == len && strncasecmp(t, name, len) == 0)
                return 1;
        }
    }
    return 0;
}

int av_header_is_hop(const av_headers_t *h, const char *name, size_t len)
{
    for (size_t i = 0; i < AV_NELEMS(hop_headers); i++)
        if (av_streq_ci(name, len, hop_headers[i]))
            return 1;
    return h != NULL && in_connection(h, name, len);
}

int av_request_id_valid(const char *s, size_t len)
{
    if (len == 0 || len > 128)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
              c == '_' || c == ':' || c == '-'))
            return 0;
    }
    return 1;
}

/* Headers the gateway sets itself, so the client's copies are dropped. */
static int replaced(const av_header_t *e, const av_backend_t *b)
{
    static const char *const ours[] = {
        "host", "content-length", "expect", "x-forwarded-for", "x-forwarded-proto", "x-request-id",
    };
    for (size_t i = 0; i < AV_NELEMS(ours); i++)
        if (av_streq_ci(e->name, e->name_len, ours[i]))
            return 1;
    if (av_streq_ci(e->name, e->name_len, "authorization") && !b->forward_authorization)
        return 1;
    if (b->api_key != NULL && av_streq_ci(e->name, e->name_len, b->api_key_header))
        return 1;
    for (size_t i = 0; i < b->nheaders; i++)
        if (av_streq_ci(e->name, e->name_len, b->headers[i].name))
            return 1;
    return 0;
}

void av_headers_backend_request(struct evbuffer *out, const av_req_t *req, const av_backend_t *b,
                                size_t body_len)
{
    evbuffer_add_printf(out, "%s %s%.*s HTTP/1.1\r\nHost: %s\r\n", req->method_str, b->base_path,
                        (int)req->target_len, req->target, b->host_header);
    const av_header_t *xff = NULL;
    for (size_t i = 0; i < req->headers.n; i++) {
        const av_header_t *e = &req->headers.v[i];
        if (av_streq_ci(e->name, e->name_len, "x-forwarded-for") && xff == NULL)
            xff = e;
        if (av_header_is_hop(&req->headers, e->name, e->name_len) || replaced(e, b))
            continue;
        evbuffer_add(out, e->name, e->name_len);
        evbuffer_add(out, ": ", 2);
        evbuffer_add(out, e->value, e->value_len);
        evbuffer_add(out, "\r\n", 2);
    }
    if (xff != NULL)
        evbuffer_add_printf(out, "X-Forwarded-For: %.*s, %s\r\n", (int)xff->value_len, xff->value,
                            req->client_ip);
    else
        evbuffer_add_printf(out, "X-Forwarded-For: %s\r\n", req->client_ip);
    evbuffer_add_printf(out, "X-Forwarded-Proto: %s\r\nX-Request-Id: %s\r\n", req->tls ? "https" : "http",
                        req->id);
    if (b->api_key != NULL) {
        if (strcasecmp(b->api_key_header, "authorization") == 0)
            evbuffer_add_printf(out, "Authorization: Bearer %s\r\n", b->api_key);
        else
            evbuffer_add_printf(out, "%s: %s\r\n", b->api_key_header, b->api_key);
    }
    for (size_t i = 0; i < b->nheaders; i++)
        evbuffer_add_printf(out, "%s: %s\r\n", b->headers[i].name, b->headers[i].value);
    if (body_len > 0 || req->body != NULL)
        evbuffer_add_printf(out, "Content-Length: %zu\r\n", body_len);
    evbuffer_add(out, "Connection: keep-alive\r\n\r\n", 26);
}

int av_header_forward_response(const av_headers_t *resp, const av_header_t *hdr)
{
    if (av_header_is_hop(resp, hdr->name, hdr->name_len))
        return 0;
    return !av_streq_ci(hdr->name, hdr->name_len, "content-length") &&
           !av_streq_ci(hdr->name, hdr->name_len, "x-request-id");
}
