/* config.h: the routing config, loaded from one JSON file into an immutable,
 * refcounted snapshot (a "generation"). Requests hold the one they began under. */
#ifndef AV_CONFIG_H
#define AV_CONFIG_H

#include <stdint.h>
#include <sys/socket.h>

#include "arena.h"

typedef struct {
    const char *name, *value;
} av_kv_t;

typedef struct ssl_ctx_st SSL_CTX;

typedef struct {
    const char *address;                 /* as written: "127.0.0.1:8080" */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    const char *tls_cert, *tls_key;      /* paths, relative to the config's directory */
    SSL_CTX *tls_ctx;                    /* loaded with this generation; NULL: cleartext */
    int http2;                           /* offer h2 (ALPN) / accept h2c prior knowledge */
} av_listen_t;

enum { AV_PROTO_HTTP1 = 1, AV_PROTO_H2, AV_PROTO_H2C };

typedef struct av_backend_s {
    const char *name;
    int index;
    const char *url;
    int protocol;
    const char *protocol_name;
    const char *host_header;             /* "host" or "host:port" as sent in Host */
    const char *base_path;               /* "" or "/prefix" without a trailing slash */
    const char *pool_key;                /* "name@host:port/protocol": one pool per backend, address and protocol */
    const char *shadow_pool_key;         /* the same + "#shadow": shadow copies never share connections */
    int tls;                             /* https:// */
    const char *tls_name;                /* the URL's host: SNI and the name the certificate must carry */
    int tls_verify;                      /* 0 only when the config says "tls_verify": false */
    const char *tls_ca_file;             /* NULL: the system store */
    SSL_CTX *tls_ctx;                    /* this generation's; NULL for http:// */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    int64_t max_connections;
    int64_t connect_timeout_ms, first_byte_timeout_ms, read_timeout_ms, idle_timeout_ms;
    int64_t ping_interval_ms;            /* HTTP/2: PING an idle connection this often */
    const char *api_key_env;
    const char *api_key;                 /* secret: never logged */
    const char *api_key_header;          /* "authorization" sends "Bearer KEY" */
    int forward_authorization;
    int stream_usage;                    /* ask OpenAI-style backends for the usage chunk of streams */
    av_kv_t *headers;
    size_t nheaders;
} av_backend_t;

/* A model's prices, in picodollars per token (USD per million tokens x 10^6). */
typedef struct av_price_s {
    const char *model;
    int64_t input, output, cached_input, cache_write, reasoning;
} av_price_t;

/* A request field a variant sets: its name and value as JSON text. */
typedef struct {
    const char *name;
    const char *json;
    size_t json_len;
} av_param_t;
#define AV_VARIANT_MAX_PARAMS 64 /* request fields a variant sets */

#include "prompt.h"

typedef struct av_variant_s {
    const char *name;
    const char *backend_name;
    const av_backend_t *backend;
    const char *model;                   /* NULL: send the client's */
    int64_t weight;
    const char *system_prompt_file;      /* relative to the config's directory */
    const char *system_prompt_mode;      /* "prepend" or "replace" */
    int prompt_replace;
    av_prompt_t prompt;                  /* .text NULL: none */
    av_kv_t *prompt_vars;
    size_t nprompt_vars;
    av_param_t *params;
    size_t nparams;
} av_variant_t;

/* The API a route speaks, which decides where a system prompt goes (and,
 * later, how usage is read). AUTO: by the path's last segments. */
enum { AV_DIALECT_AUTO = 0, AV_DIALECT_CHAT, AV_DIALECT_COMPLETIONS, AV_DIALECT_EMBEDDINGS, AV_DIALECT_RESPONSES,
       AV_DIALECT_ANTHROPIC };

/* Where a route's sticky key comes from; the first present one is used. */
enum { AV_STICKY_HEADER = 1, AV_STICKY_COOKIE, AV_STICKY_BODY, AV_STICKY_API_KEY, AV_STICKY_CLIENT_IP };
#define AV_STICKY_MAX_DEPTH 4
#define AV_STICKY_MAX 8                  /* sources per route */
typedef struct {
    int kind;
    const char *spec;                    /* as written: "header:x-user-id" */
    const char *name;                    /* header or cookie name */
    const char *path[AV_STICKY_MAX_DEPTH]; /* body: member names, outermost first */
    size_t npath;
} av_sticky_src_t;

/* A geo rule: every condition given must hold (each list: any of it). */
typedef struct {
    const char (*countries)[3];
    size_t ncountries;
    const char (*continents)[3];
    size_t ncontinents;
    const int64_t *asns;
    size_t nasns;
    const char *variant_name;
    size_t variant;                      /* index in the route's variants */
} av_geo_rule_t;

#define AV_SPLIT_MAX_VARIANTS 32 /* variants in a route (split.h) */

/* Fleet mode: replicas that act as one gateway on shared state in Redis. */
typedef struct {
    const char *redis;                   /* as written: "redis://host:port/db" or "unix:/path[?db=N]"; NULL: off */
    const char *host;                    /* parsed: NULL for a unix socket */
    int port, db;
    const char *unix_path;
    const char *password_env;
    const char *password;                /* secret: never logged */
    const char *name;                    /* the fleet's key prefix ("aviary") */
    const char *replica_id;              /* this replica (default: host name and pid) */
} av_fleet_cfg_t;

/* A route's progressive rollout (rollout.h runs it). */
#define AV_ROLLOUT_MAX_STEPS 16
#define AV_ROLLOUT_MAX_KPIS 9
typedef struct {
    int enabled;
    const char *baseline_name, *candidate_name;
    size_t baseline, candidate;          /* variant indexes */
    int64_t steps[AV_ROLLOUT_MAX_STEPS]; /* the candidate's share, percent, rising, the last 100 */
    size_t nsteps;
    unsigned approve;                    /* bit i: step i waits for POST .../approve before it starts */
    int shadow_first;                    /* judge the candidate's shadow copies before the first step */
    int64_t min_step_s, max_step_s;
    const char *on_timeout;              /* "hold", "rollback" or "approve" (wait for approval of the next step) */
    int64_t min_requests;
    double min_events, alpha;
    struct { int kind; double margin, slo; } kpis[AV_ROLLOUT_MAX_KPIS]; /* judge.h's av_kpi_t */
    size_t nkpis;
    char fingerprint[64];                /* what a reload compares: candidate and steps */
} av_rollout_cfg_t;

struct av_split_state_s;
typedef struct av_route_s {
    const char *name;
    const char *path_prefix, *path, *host;
    av_kv_t *match_headers;
    size_t nmatch_headers;
    av_variant_t *variants;
    size_t nvariants;
    av_sticky_src_t *sticky;
    size_t nsticky, nsticky_body;
    const char *salt;                    /* hashed with sticky keys; default: the route's name */
    const char *dialect_name;
    int dialect;                         /* AV_DIALECT_* */
    av_geo_rule_t *geo;
    size_t ngeo;
    const char *shadow_variant_name;     /* NULL: no shadow traffic */
    size_t shadow_variant;
    int64_t shadow_percent;              /* of the route's requests, 0-100 */
    int64_t shadow_max_in_flight;        /* per route, split across workers */
    int shadow_compare;                  /* a comparison line per pair */
    int64_t shadow_budget_tokens;        /* per minute, input + output of the copies; 0: none */
    int64_t shadow_budget_nano;          /* per minute, the copies' cost in nanodollars; 0: none */
    int64_t shadow_budget_usd_milli;     /* as written: thousandths of a dollar */
    int override_enabled;                /* x-aviary-variant is obeyed */
    const char *override_token_env;
    const char *override_token;          /* secret: never logged */
    struct av_split_state_s *split;      /* shared weights and counters (set by av_split_attach) */
    const char **policy_names;           /* as written, run in this order */
    int *policies;                       /* their indexes in the generation's set */
    const char **policy_params;          /* per listed policy: its "policy_params" as JSON text, or NULL */
    size_t npolicies;
    av_kv_t *params_raw;                 /* "policy_params" as written: name, JSON text */
    size_t nparams_raw;
    av_rollout_cfg_t rollout;
} av_route_t;

typedef struct av_config_s {
    int _refs;
    uint64_t generation;
    av_arena_t *arena;
    const char *path, *dir;
    int64_t workers;
    av_listen_t *listen;
    size_t nlisten;
    const char *admin_address;
    struct sockaddr_storage admin_addr;
    socklen_t admin_addrlen;
    const char *admin_token_env;
    const char *admin_token;             /* secret: never logged */
    const char *kpi_log;                 /* "-" is standard output */
    const char *audit_log;               /* NULL: none */
    const char *log_level;
    int64_t header_timeout_ms, idle_timeout_ms, max_header_bytes, max_headers, max_body_bytes;
    int64_t drain_timeout_ms;
    av_backend_t *backends;
    size_t nbackends;
    av_route_t *routes;
    size_t nroutes;
    const char *variant_header;          /* response header naming the variant; "" = none */
    struct av_geo_s *geo;                /* this generation's databases and trusted proxies; NULL: none */
    av_price_t *prices;                  /* by model name */
    size_t nprices;
    const char *rollout_state_file;      /* where rollouts persist their state; NULL: nowhere */
    av_fleet_cfg_t fleet;                /* fleet mode (fleet.h); .redis NULL: one process on its own */
    const char *rollout_webhook;         /* http:// URL each transition is POSTed to; NULL: none */
    const char *feedback_path;           /* POST here scores a served request; "": none */
    const char *policy_dir;              /* policy files: DIR/NAME.lua */
    int64_t policy_memory_mb, policy_max_instructions, policy_max_ms;
    struct av_policies_s *policies;      /* compiled for this generation; NULL: no route has any */
} av_config_t;

/* Loads and validates a file. On failure returns NULL and writes
 * "file:line:column: key: reason" into err. */
av_config_t *av_config_load(const char *path, uint64_t generation, char *err, size_t errlen);
/* Same, from text in memory; name is used in messages and to resolve paths. */
av_config_t *av_config_parse(const char *name, const char *text, size_t len, uint64_t generation,
                             char *err, size_t errlen);
av_config_t *av_config_ref(av_config_t *c);
void av_config_unref(av_config_t *c);

/* Keys that only a restart changes; calls warn(key) for each one that differs. */
void av_config_restart_keys(const av_config_t *old, const av_config_t *cur,
                            void (*warn)(const char *key, void *arg), void *arg);

const av_backend_t *av_config_backend(const av_config_t *c, const char *name);
/* The prices of a model, or NULL. */
const av_price_t *av_config_price(const av_config_t *c, const char *model);

/* The policies' limits, as the config sets them (policy.h runs them). */
typedef struct {
    int64_t memory_bytes;     /* per VM */
    int64_t max_instructions; /* per call */
    int64_t max_us;           /* per call, wall time */
} av_policy_limits_t;

/* What the loader needs from the layers above config: compiling the
 * policies the routes name, opening geo databases. Config is below them and
 * includes neither; the program fills this in (main.c) before it loads a
 * config. Left unset, a config that names policies or geo databases is
 * refused, and says why. */
struct av_policies_s;
struct av_geo_s;
typedef struct {
    struct av_policies_s *(*policies_load)(const char *dir, const char *const *names, size_t n,
                                           const av_policy_limits_t *lim, char *err, size_t errlen, int *bad);
    void (*policies_free)(struct av_policies_s *p);
    int (*policies_find)(const struct av_policies_s *p, const char *name);
    struct av_geo_s *(*geo_open)(const char *const *dbs, size_t ndbs, const char *const *proxies, size_t nproxies,
                                 char *err, size_t errlen);
    void (*geo_close)(struct av_geo_s *g);
    int (*geo_cidr_valid)(const char *s);
} av_config_loaders_t;
/* Sets them (the struct is copied); once, before any config is loaded. */
void av_config_set_loaders(const av_config_loaders_t *l);

#endif
