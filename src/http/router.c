/* router.c: match on path prefix, exact path (query ignored), host (port ignored)
 * and header values; a route with no conditions matches everything. */
#include "router.h"

#include <string.h>
#include <strings.h>

#include "av.h"
#include "headers.h"

/* 1 for a "." segment, 2 for "..", with %2e standing for a dot; else 0. */
static int dot_segment(const char *s, size_t n)
{
    int dots = 0;
    for (size_t i = 0; i < n; dots++) {
        if (s[i] == '.')
            i++;
        else if (i + 3 <= n && s[i] == '%' && s[i + 1] == '2' && (s[i + 2] == 'e' || s[i + 2] == 'E'))
            i += 3;
        else
            return 0;
        if (dots == 2)
            return 0;
    }
    return dots;
}

int av_target_normalize(char *t, size_t *len)
{
    size_t n = *len;
    const char *q = memchr(t, '?', n);
    size_t end = q ? (size_t)(q - t) : n;
    if (end == 0 || t[0] != '/')
        return AV_EINVAL;
    /* the usual path has no segment starting with a dot: nothing to do */
    int any = 0;
    for (size_t i = 0; i + 1 < end && !any; i++)
        any = t[i] == '/' && (t[i + 1] == '.' || t[i + 1] == '%');
    if (!any)
        return 0;
    size_t r = 0, w = 0; /* read and write offsets: w never passes r */
    while (r < end) {
        size_t seg = r + 1, e = seg; /* t[r] is a slash */
        while (e < end && t[e] != '/')
            e++;
        int dots = dot_segment(t + seg, e - seg);
        if (dots == 2) {
            if (w == 0)
                return AV_EINVAL; /* above the root */
            while (w > 0 && t[w - 1] != '/')
                w--;
            w--; /* drop the segment's slash too */
        }
        if (dots > 0) {
            if (e == end)
                t[w++] = '/'; /* "/a/." and "/a/b/.." end in a slash */
        } else {
            memmove(t + w, t + r, e - r);
            w += e - r;
        }
        r = e;
    }
    if (w == 0)
        t[w++] = '/';
    memmove(t + w, t + end, n - end);
    *len = w + (n - end);
    t[*len] = '\0';
    return 0;
}

static int host_matches(const char *want, const char *host)
{
    if (host == NULL)
        return 0;
    size_t n = strcspn(host, ":");
    if (host[0] == '[') /* [v6]:port */
        n = strcspn(host, "]") + 1;
    return strlen(want) == n && strncasecmp(want, host, n) == 0;
}

static int route_matches(const av_route_t *r, const av_req_t *req)
{
    size_t plen = strcspn(req->target, "?");
    if (plen > req->target_len)
        plen = req->target_len;
    if (r->path != NULL && (strlen(r->path) != plen || memcmp(r->path, req->target, plen) != 0))
        return 0;
    if (r->path_prefix != NULL) {
        size_t n = strlen(r->path_prefix);
        if (plen < n || memcmp(r->path_prefix, req->target, n) != 0)
            return 0;
    }
    if (r->host != NULL && !host_matches(r->host, req->host))
        return 0;
    for (size_t i = 0; i < r->nmatch_headers; i++) {
        const av_header_t *h = av_headers_get(&req->headers, r->match_headers[i].name);
        if (h == NULL || strlen(r->match_headers[i].value) != h->value_len ||
            memcmp(r->match_headers[i].value, h->value, h->value_len) != 0)
            return 0;
    }
    return 1;
}

const av_route_t *av_route_match(const av_config_t *c, const av_req_t *req)
{
    for (size_t i = 0; i < c->nroutes; i++)
        if (route_matches(&c->routes[i], req))
            return &c->routes[i];
    return NULL;
}
