/* router.h: picks the route for a request: routes are tried in config order,
 * and the first whose every condition holds wins. */
#ifndef AV_ROUTER_H
#define AV_ROUTER_H

#include "config.h"
#include "req_t.h"

/* The route for req, or NULL when none matches. */
const av_route_t *av_route_match(const av_config_t *c, const av_req_t *req);

#endif
