/* router.h: picks the route for a request: routes are tried in config order,
 * and the first whose every condition holds wins. */
#ifndef AV_ROUTER_H
#define AV_ROUTER_H

#include "config.h"
#include "req_t.h"

/* Removes the dot segments of a request target's path in place (RFC 3986
 * 5.2.4; "%2e" counts as a dot), so that /v1/../x is routed, logged and sent
 * as /x; the query stays as it is. Returns 0, or AV_EINVAL when the path
 * does not start with / or climbs above the root. t[*len] must be writable. */
int av_target_normalize(char *t, size_t *len);

/* The route for req, or NULL when none matches. */
const av_route_t *av_route_match(const av_config_t *c, const av_req_t *req);

#endif
