/* router.c: match on path prefix, exact path (query ignored), host (port ignored)
 * and header values; a route with no conditions matches everything. */
#include "router.h"

#include <string.h>
#include <strings.h>

#include "av.h"
#include "headers.h"

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
