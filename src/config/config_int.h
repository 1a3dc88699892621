/* config_int.h: what the config loader's files share (config.c: the loader,
 * listeners, backends, pricing, geo; config_route.c: routes). Not a public surface. */
#ifndef AV_CONFIG_INT_H
#define AV_CONFIG_INT_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "jsonc.h"

#define AV_CONFIG_MAX_DEPTH 16

/* One key of an object: its type, where it goes in the struct being filled,
 * its bounds and default. The K_ names are this header's own. */
typedef enum { K_INT, K_BOOL, K_STR, K_OBJ, K_CUSTOM } av_cfg_type_t;

enum { K_REQUIRED = 1, K_RESTART = 2 };

typedef struct av_cfg_ctx_s av_cfg_ctx_t;
typedef int (*av_cfg_custom_cb)(av_cfg_ctx_t *x, const cJSON *v, void *base);

typedef struct av_cfg_key_s {
    const char *key;
    av_cfg_type_t type;
    size_t off;
    int64_t min, max, idef;
    const char *sdef;
    unsigned flags;
    const struct av_cfg_key_s *sub; /* K_OBJ: fields of the nested object, same base */
    av_cfg_custom_cb custom;        /* K_CUSTOM */
} av_cfg_key_t;

struct av_cfg_ctx_s {
    const char *name;
    const char *text;
    size_t len;
    av_jpath_seg_t path[AV_CONFIG_MAX_DEPTH];
    size_t depth;
    char *err;
    size_t errlen;
    av_config_t *cfg;
};

/* The key path, for the position errors name. */
void av_cfg_push_key(av_cfg_ctx_t *x, const char *key);
void av_cfg_push_index(av_cfg_ctx_t *x, size_t i);
void av_cfg_pop(av_cfg_ctx_t *x);
/* Writes "file:line:col: key.path: message" into the context's error; returns AV_EINVAL. */
int av_cfg_fail(av_cfg_ctx_t *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A copy in the generation's arena. */
const char *av_cfg_dup_str(av_cfg_ctx_t *x, const char *s);
/* "an object", "a string", ...: for messages. */
const char *av_cfg_type_name(const cJSON *v);
/* Fills base from obj by the table spec (unknown keys are errors); 0 or AV_EINVAL. */
int av_cfg_load_obj(av_cfg_ctx_t *x, const cJSON *obj, const av_cfg_key_t *spec, void *base);
/* {"name": "value", ...} into an arena array; 0 or AV_EINVAL. */
int av_cfg_load_kv(av_cfg_ctx_t *x, const cJSON *v, av_kv_t **out, size_t *n);
/* p relative to dir unless absolute (NULL and "-" stay as they are), in the arena. */
const char *av_cfg_relative_to(av_cfg_ctx_t *x, const char *dir, const char *p);

/* config_route.c: "routes": [...]; 0 or AV_EINVAL. */
int av_cfg_routes(av_cfg_ctx_t *x, const cJSON *v, void *base);

#endif
