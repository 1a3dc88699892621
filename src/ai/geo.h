/* geo.h: where a client is: its address (from X-Forwarded-For only when the
 * peer is a trusted proxy) and, from MaxMind databases opened with mmap per
 * config generation, its country, continent and autonomous system. */
#ifndef AV_GEO_H
#define AV_GEO_H

#include <stddef.h>
#include <stdint.h>

#include "req_t.h"

typedef struct av_geo_s av_geo_t;

typedef struct {
    char country[3];   /* ISO 3166 alpha-2, "" when unknown */
    char continent[3]; /* "EU", "NA", ... */
    uint32_t asn;      /* 0 when unknown */
} av_geo_info_t;

/* Opens the databases (paths as given) and parses the trusted proxies
 * ("10.0.0.0/8", "::1", ...). Returns NULL with the reason in err. */
av_geo_t *av_geo_open(const char *const *dbs, size_t ndbs, const char *const *proxies, size_t nproxies, char *err,
                      size_t errlen);
void av_geo_close(av_geo_t *g);
/* Whether s parses as an address or a CIDR block. */
int av_geo_cidr_valid(const char *s);

/* The client's address: the peer's, or when the peer is a trusted proxy, the
 * right-most X-Forwarded-For entry that is not one. Writes into out (48). */
void av_geo_client_ip(const av_geo_t *g, const av_req_t *req, char *out, size_t outlen);
/* Looks ip up in every database; fields no database has stay empty. */
void av_geo_lookup(const av_geo_t *g, const char *ip, av_geo_info_t *info);

#endif
