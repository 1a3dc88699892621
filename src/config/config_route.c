/* config_route.c: the "routes" of the config: match, variants and their
 * prompts and params, sticky keys, overrides, geo rules, shadow, policies, rollouts. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "av.h"
#include "config_int.h"
#include "judge.h"
#include "prompt.h"

static int c_match_headers(av_cfg_ctx_t *x, const cJSON *v, void *base)
{
    av_route_t *r = base;
    return av_cfg_load_kv(x, v, &r->match_headers, &r->nmatch_headers);
}

static const av_cfg_key_t match_spec[] = {
    {"path_prefix", K_STR, offsetof(av_route_t, path_prefix), 1, 0, 0, NULL, 0, NULL, NULL},
    {"path", K_STR, offsetof(av_route_t, path), 1, 0, 0, NULL, 0, NULL, NULL},
    {"host", K_STR, offsetof(av_route_t, host), 1, 0, 0, NULL, 0, NULL, NULL},
    {"headers", K_CUSTOM, 0, 0, 0, 0, NULL, 0, NULL, c_match_headers},
    {NULL, 0, 0, 0, 0, 0, NULL, 0, NULL, NULL},
};

static int c_prompt_vars(av_cfg_ctx_t *x, const cJSON *v, void *base)
{
    av_variant_t *var = base;
    if (!cJSON_IsObject(v))
        return av_cfg_fail(x, "expected an object of strings, like {\"product\": \"Aviary\"}");
    var->nprompt_vars = (size_t)cJSON_GetArraySize(v);
    if (var->nprompt_vars > 64)
        return av_cfg_fail(x, "at most 64 prompt variables");
    var->prompt_vars = av_arena_calloc(x->cfg->arena, var->nprompt_vars * sizeof(*var->prompt_vars));
    size_t i = 0;
    for (const cJSON *m = v->child; m != NULL; m = m->next, i++) {
        av_cfg_push_key(x, m->string);
        if (!cJSON_IsString(m))
            return av_cfg_fail(x, "expected a string, got %s", av_cfg_type_name(m));
        var->prompt_vars[i].name = av_cfg_dup_str(x, m->string);
        var->prompt_vars[i].value = av_cfg_dup_str(x, m->valuestring);
        av_cfg_pop(x);
    }
    return 0;
}

static int c_params(av_cfg_ctx_t *x, const cJSON *v, void *base)
{
    av_variant_t *var = base;
    if (!cJSON_IsObject(v))
        return av_cfg_fail(x, "expected an object of request fields, like {\"temperature\": 0.2}");
    var->nparams = (size_t)cJSON_GetArraySize(v);
    if (var->nparams > AV_VARIANT_MAX_PARAMS)
        return av_cfg_fail(x, "at most %d request fields", AV_VARIANT_MAX_PARAMS);
    var->params = av_arena_calloc(x->cfg->arena, var->nparams * sizeof(*var->params));
    size_t i = 0;
    for (const cJSON *m = v->child; m != NULL; m = m->next, i++) {
        av_cfg_push_key(x, m->string);
        if (strcmp(m->string, "model") == 0)
            return av_cfg_fail(x, "set the model with the variant's \"model\"");
        char *json = cJSON_PrintUnformatted(m);
        if (json == NULL)
            av_oom();
        var->params[i].name = av_cfg_dup_str(x, m->string);
        var->params[i].json = av_cfg_dup_str(x, json);
        var->params[i].json_len = strlen(json);
        free(json);
        av_cfg_pop(x);
    }
    return 0;
}

static const av_cfg_key_t variant_spec[] = {
    {"name", K_STR, offsetof(av_variant_t, name), 1, 0, 0, NULL, K_REQUIRED, NULL, NULL},
    {"backend", K_STR, offsetof(av_variant_t, backend_name), 1, 0, 0, NULL, K_REQUIRED, NULL, NULL},
    {"model", K_STR, offsetof(av_variant_t, model), 1, 0, 0, NULL, 0, NULL, NULL},
    {"weight", K_INT, offsetof(av_variant_t, weight), 0, 1000000, 1, NULL, 0, NULL, NULL},
    {"system_prompt", K_STR, offsetof(av_variant_t, system_prompt_file), 1, 0, 0, NULL, 0, NULL, NULL},
    {"system_prompt_mode", K_STR, offsetof(av_variant_t, system_prompt_mode), 1, 0, 0, "prepend", 0, NULL, NULL},
    {"prompt_vars", K_CUSTOM, 0, 0, 0, 0, NULL, 0, NULL, c_prompt_vars},
    {"params", K_CUSTOM, 0, 0, 0, 0, NULL, 0, NULL, c_params},
    {NULL, 0, 0, 0, 0, 0, NULL, 0, NULL, NULL},
};

/* The variant's prompt file, read and hashed with this generation. */
static int load_prompt(av_cfg_ctx_t *x, av_variant_t *var)
{
    if (strcmp(var->system_prompt_mode, "prepend") == 0) {
        var->prompt_replace = 0;
    } else if (strcmp(var->system_prompt_mode, "replace") == 0) {
        var->prompt_replace = 1;
    } else {
        av_cfg_push_key(x, "system_prompt_mode");
        return av_cfg_fail(x, "\"%s\" is not a mode (use \"prepend\" or \"replace\")", var->system_prompt_mode);
    }
    if (var->system_prompt_file == NULL) {
        if (var->nprompt_vars > 0) {
            av_cfg_push_key(x, "prompt_vars");
            return av_cfg_fail(x, "there is no \"system_prompt\" to fill");
        }
        return 0;
    }
    /* the prompt is written into the member that carries the system message */
    static const char *const prompt_members[] = {"messages", "system", "instructions"};
    for (size_t i = 0; i < var->nparams; i++)
        for (size_t k = 0; k < AV_NELEMS(prompt_members); k++)
            if (strcmp(var->params[i].name, prompt_members[k]) == 0) {
                av_cfg_push_key(x, "params");
                av_cfg_push_key(x, var->params[i].name);
                return av_cfg_fail(x, "the variant's \"system_prompt\" is written into \"%s\": set one or the other",
                                   prompt_members[k]);
            }
    const char *names[64], *values[64];
    size_t n = var->nprompt_vars < 64 ? var->nprompt_vars : 64;
    for (size_t i = 0; i < n; i++) {
        names[i] = var->prompt_vars[i].name;
        values[i] = var->prompt_vars[i].value;
    }
    char why[512];
    const char *path = av_cfg_relative_to(x, x->cfg->dir, var->system_prompt_file);
    if (av_prompt_load(x->cfg->arena, path, names, values, n, &var->prompt, why, sizeof(why)) != 0) {
        av_cfg_push_key(x, "system_prompt");
        return av_cfg_fail(x, "%s", why);
    }
    return 0;
}

static int c_variants(av_cfg_ctx_t *x, const cJSON *v, void *base)
{
    av_route_t *r = base;
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) == 0)
        return av_cfg_fail(x, "expected a non-empty array of variants");
    r->nvariants = (size_t)cJSON_GetArraySize(v);
    r->variants = av_arena_calloc(x->cfg->arena, r->nvariants * sizeof(*r->variants));
    size_t i = 0;
    for (const cJSON *e = v->child; e != NULL; e = e->next, i++) {
        av_variant_t *var = &r->variants[i];
        av_cfg_push_index(x, i);
        if (!cJSON_IsObject(e))
            return av_cfg_fail(x, "expected an object like {\"name\": \"stable\", \"backend\": \"...\"}");
        int rc = av_cfg_load_obj(x, e, variant_spec, var);
        if (rc != 0)
            return rc;
        for (size_t j = 0; j < i; j++)
            if (strcmp(r->variants[j].name, var->name) == 0) {
                av_cfg_push_key(x, "name");
                return av_cfg_fail(x, "variant \"%s\" is named twice in this route", var->name);
            }
        var->backend = av_config_backend(x->cfg, var->backend_name);
        if (var->backend == NULL) {
            av_cfg_push_key(x, "backend");
            return av_cfg_fail(x, "no backend named \"%s\" in \"backends\"", var->backend_name);
        }
        rc = load_prompt(x, var);
        if (rc != 0)
            return rc;
        av_cfg_pop(x);
    }
    return 0;
}

/* "header:NAME", "cookie:NAME", "body:a.b.c", "api_key", "client_ip" */
static int parse_sticky(av_cfg_ctx_t *x, const char *spec, av_sticky_src_t *src)
{
    src->spec = av_cfg_dup_str(x, spec);
    const char *colon = strchr(spec, ':');
    const char *arg = colon ? colon + 1 : "";
    size_t kind_len = colon ? (size_t)(colon - spec) : strlen(spec);
    if (kind_len == 6 && strncmp(spec, "header", 6) == 0 && *arg) {
        src->kind = AV_STICKY_HEADER;
        src->name = av_cfg_dup_str(x, arg);
    } else if (kind_len == 6 && strncmp(spec, "cookie", 6) == 0 && *arg) {
        src->kind = AV_STICKY_COOKIE;
        src->name = av_cfg_dup_str(x, arg);
    } else if (kind_len == 4 && strncmp(spec, "body", 4) == 0 && *arg) {
        src->kind = AV_STICKY_BODY;
        const char *p = arg;
        while (*p) {
            size_t n = strcspn(p, ".");
            if (n == 0 || src->npath == AV_STICKY_MAX_DEPTH)
                return av_cfg_fail(x, "\"%s\": a body field is names joined by dots, at most %d deep (e.g. "
                               "\"body:metadata.user_id\")", spec, AV_STICKY_MAX_DEPTH);
            src->path[src->npath++] = av_arena_strndup(x->cfg->arena, p, n);
            p += n;
            if (*p == '.')
                p++;
        }
    } else if (strcmp(spec, "api_key") == 0) {
        src->kind = AV_STICKY_API_KEY;
    } else if (strcmp(spec, "client_ip") == 0) {
        src->kind = AV_STICKY_CLIENT_IP;
    } else {
        return av_cfg_fail(x, "\"%s\" is not a sticky key source (use \"header:NAME\", \"cookie:NAME\", "
                       "\"body:FIELD[.FIELD]\", \"api_key\" or \"client_ip\")", spec);
    }
    return 0;
}

static int c_sticky_keys(av_cfg_ctx_t *x, const cJSON *v, void *base)
{
    av_route_t *r = base;
    if (cJSON_IsString(v)) {
        r->nsticky = 1;
        r->sticky = av_arena_calloc(x->cfg->arena, sizeof(*r->sticky));
        int rc = parse_sticky(x, v->valuestring, &r->sticky[0]);
        r->nsticky_body = r->sticky[0].kind == AV_STICKY_BODY;
        return rc;
    }
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) == 0 || cJSON_GetArraySize(v) > AV_STICKY_MAX)
        return av_cfg_fail(x, "expected a source like \"header:x-user-id\", or an array of 1 to %d of them (the first "
                       "the request carries is used)", AV_STICKY_MAX);
    r->nsticky = (size_t)cJSON_GetArraySize(v);
    r->sticky = av_arena_calloc(x->cfg->arena, r->nsticky * sizeof(*r->sticky));
    size_t i = 0;
    for (const cJSON *e = v->child; e != NULL; e = e->next, i++) {
        av_cfg_push_index(x, i);
        if (!cJSON_IsString(e))
            return av_cfg_fail(x, "expected a string like \"header:x-user-id\", got %s", av_cfg_type_name(e));
        int rc = parse_sticky(x, e->valuestring, &r->sticky[i]);
        if (rc != 0)
            return rc;
        r->nsticky_body += r->sticky[i].kind == AV_STICKY_BODY;
        av_cfg_pop(x);
    }
    return 0;
}

/* A string or an array of strings, each of exactly two letters (upper case). */
static int codes(av_cfg_ctx_t *x, const cJSON *v, const char (**out)[3], size_t *n)
{
    size_t cnt = cJSON_IsArray(v) ? (size_t)cJSON_GetArraySize(v) : 1;
    char (*c)[3] = av_arena_calloc(x->cfg->arena, cnt * sizeof(*c));
    const cJSON *e = cJSON_IsArray(v) ? v->child : v;
    for (size_t i = 0; i < cnt; i++, e = e->next) {
        if (!cJSON_IsString(e) || strlen(e->valuestring) != 2 || e->valuestring[0] < 'A' || e->valuestring[0] > 'Z' ||
            e->valuestring[1] < 'A' || e->valuestring[1] > 'Z')
            return av_cfg_fail(x, "expected two upper-case letters (e.g. \"DE\", \"EU\"), or an array of them");
        memcpy(c[i], e->valuestring, 3);
    }
    *out = (const char (*)[3])c;
    *n = cnt;
    return 0;
}

/* "policies": ["pii_redact", "max_tokens"]: files in policy.dir, run in order */
static int c_route_policies(av_cfg_ctx_t *x, const cJSON *v, void *base)
{
    av_route_t *r = base;
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) > 16)
        return av_cfg_fail(x, "expected an array of at most 16 policy names");
    r->npolicies = (size_t)cJSON_GetArraySize(v);
    r->policy_names = av_arena_calloc(x->cfg->arena, (r->npolicies ? r->npolicies : 1) * sizeof(char *));
    r->policies = av_arena_calloc(x->cfg->arena, (r->npolicies ? r->npolicies : 1) * sizeof(int));
    size_t i = 0;
    for (const cJSON *e = v->child; e != NULL; e = e->next, i++) {
        av_cfg_push_index(x, i);
        if (!cJSON_IsString(e) || e->valuestring[0] == '\0')
            return av_cfg_fail(x, "expected a policy name (its file is policy.dir/NAME.lua)");
        for (size_t j = 0; j < i; j++)
            if (strcmp(r->policy_names[j], e->valuestring) == 0)
                return av_cfg_fail(x, "policy \"%s\" is listed twice", e->valuestring);
        r->policy_names[i] = av_cfg_dup_str(x, e->valuestring);
        av_cfg_pop(x);
    }
    return 0;
}

static int num_field(av_cfg_ctx_t *x, const cJSON *v, double lo, double hi, double *out)
{
    if (!cJSON_IsNumber(v))
        return av_cfg_fail(x, "expected a number, got %s", av_cfg_type_name(v));
    if (v->valuedouble < lo || v->valuedouble > hi)
        return av_cfg_fail(x, "must be from %g to %g", lo, hi);
    *out = v->valuedouble;
    return 0;
}

/* "rollout": {"baseline", "candidate", "steps", "min_step_s", "max_step_s",
 * "on_timeout", "min_requests", "min_events", "alpha", "approve_before",
 * "kpis": {"error_rate": {"max_increase", "slo"}, "latency": {"max_ratio", "slo_ms"}, ...}} */
static int c_rollout(av_cfg_ctx_t *x, const cJSON *v, void *base)
{
    av_route_t *r = base;
    av_rollout_cfg_t *ro = &r->rollout;
    if (!cJSON_IsObject(v))
        return av_cfg_fail(x, "expected {\"baseline\": ..., \"candidate\": ..., \"steps\": [5, 25, 50, 100], \"kpis\": {...}}");
    ro->enabled = 1;
    ro->min_step_s = 60;
    ro->max_step_s = 3600;
    ro->on_timeout = "hold";
    ro->min_requests = 200;
    ro->min_events = 5;
    ro->alpha = 0.05;
    static const int64_t default_steps[] = {5, 25, 50, 100};
    memcpy(ro->steps, default_steps, sizeof(default_steps));
    ro->nsteps = 4;
    for (const cJSON *m = v->child; m != NULL; m = m->next) {
        const char *k = m->string;
        av_cfg_push_key(x, k);
        double d;
        if (strcmp(k, "baseline") == 0 || strcmp(k, "candidate") == 0 || strcmp(k, "on_timeout") == 0) {
            if (!cJSON_IsString(m))
                return av_cfg_fail(x, "expected a string, got %s", av_cfg_type_name(m));
            if (k[0] == 'b')
                ro->baseline_name = av_cfg_dup_str(x, m->valuestring);
            else if (k[0] == 'c')
                ro->candidate_name = av_cfg_dup_str(x, m->valuestring);
            else if (strcmp(m->valuestring, "hold") == 0 || strcmp(m->valuestring, "rollback") == 0 ||
                     strcmp(m->valuestring, "approve") == 0)
                ro->on_timeout = av_cfg_dup_str(x, m->valuestring);
            else
                return av_cfg_fail(x, "\"%s\" is not an action (use \"hold\", \"rollback\" or \"approve\")",
                            m->valuestring);
        } else if (strcmp(k, "steps") == 0) {
            if (!cJSON_IsArray(m) || cJSON_GetArraySize(m) < 1 || cJSON_GetArraySize(m) > AV_ROLLOUT_MAX_STEPS)
                return av_cfg_fail(x, "expected 1 to %d rising percentages ending at 100, e.g. [5, 25, 50, 100]",
                            AV_ROLLOUT_MAX_STEPS);
            ro->nsteps = 0;
            for (const cJSON *e = m->child; e != NULL; e = e->next) {
                av_cfg_push_index(x, ro->nsteps);
                int64_t step;
                if (!cJSON_IsNumber(e) || !av_whole(e->valuedouble, 1, 100, &step) ||
                    (ro->nsteps > 0 && step <= ro->steps[ro->nsteps - 1]))
                    return av_cfg_fail(x, "a step is a whole percentage from 1 to 100, above the one before");
                ro->steps[ro->nsteps++] = step;
                av_cfg_pop(x);
            }
            if (ro->steps[ro->nsteps - 1] != 100 || ro->nsteps < 2)
                return av_cfg_fail(x, "the last step must be 100 (promotion), after at least one below it");
        } else if (strcmp(k, "shadow_first") == 0) {
            if (!cJSON_IsBool(m))
                return av_cfg_fail(x, "expected true or false, got %s", av_cfg_type_name(m));
            ro->shadow_first = cJSON_IsTrue(m);
        } else if (strcmp(k, "approve_before") == 0) {
            if (!cJSON_IsArray(m))
                return av_cfg_fail(x, "expected step numbers (from 1), e.g. [3]");
            for (const cJSON *e = m->child; e != NULL; e = e->next) {
                int64_t step;
                if (!cJSON_IsNumber(e) || !av_whole(e->valuedouble, 1, AV_ROLLOUT_MAX_STEPS, &step))
                    return av_cfg_fail(x, "a step number is from 1 to the number of steps");
                ro->approve |= 1u << ((unsigned)step - 1);
            }
        } else if (strcmp(k, "min_step_s") == 0 || strcmp(k, "max_step_s") == 0) {
            if (num_field(x, m, 0, 1e9, &d) != 0)
                return AV_EINVAL;
            *(strcmp(k, "min_step_s") == 0 ? &ro->min_step_s : &ro->max_step_s) = (int64_t)d;
        } else if (strcmp(k, "min_requests") == 0) {
            if (num_field(x, m, 1, 1e9, &d) != 0)
                return AV_EINVAL;
            ro->min_requests = (int64_t)d;
        } else if (strcmp(k, "min_events") == 0) {
            if (num_field(x, m, 0, 1e6, &ro->min_events) != 0)
                return AV_EINVAL;
        } else if (strcmp(k, "alpha") == 0) {
            if (num_field(x, m, 1e-6, 0.5, &ro->alpha) != 0)
                return AV_EINVAL;
        } else if (strcmp(k, "kpis") == 0) {
            /* default margins are never zero: two backends that do the same thing still differ a
             * little (another process, another host), and with no margin any difference, however
             * small, is found in time: a true A/A would roll back */
            static const struct {
                const char *name, *margin, *slo;
                int kind;
                double margin_default;
            } kinds[] = {
                {"error_rate", "max_increase", "slo", AV_KPI_ERRORS, 0.01},
                {"rate_429", "max_increase", "slo", AV_KPI_429, 0.01},
                {"block_rate", "max_increase", "slo", AV_KPI_BLOCKS, 0.01},
                {"latency", "max_ratio", "slo_ms", AV_KPI_LATENCY, 1.1},
                {"ttft", "max_ratio", "slo_ms", AV_KPI_TTFT, 1.1},
                {"cost", "max_ratio", "slo_usd", AV_KPI_COST, 1.1},
                {"feedback", "max_decrease", "slo_min", AV_KPI_FEEDBACK, 0.05},
                {"inter_token", "max_ratio", "slo_ms", AV_KPI_ITL, 1.1},
                {"tokens", "max_ratio", "slo", AV_KPI_TOKENS, 1.1},
            };
            if (!cJSON_IsObject(m))
                return av_cfg_fail(x, "expected {\"error_rate\": {\"max_increase\": 0.01}, \"ttft\": {\"max_ratio\": 1.2}, ...}");
            for (const cJSON *e = m->child; e != NULL; e = e->next) {
                av_cfg_push_key(x, e->string);
                size_t i = 0;
                while (i < AV_NELEMS(kinds) && strcmp(kinds[i].name, e->string) != 0)
                    i++;
                if (i == AV_NELEMS(kinds))
                    return av_cfg_fail(x, "unknown KPI (known: error_rate, rate_429, block_rate, latency, ttft, cost, "
                                   "feedback, inter_token, tokens)");
                if (!cJSON_IsObject(e))
                    return av_cfg_fail(x, "expected {\"%s\": ..., \"%s\": ...}", kinds[i].margin, kinds[i].slo);
                av_rollout_cfg_t *q = ro;
                for (size_t j = 0; j < q->nkpis; j++)
                    if (q->kpis[j].kind == kinds[i].kind)
                        return av_cfg_fail(x, "KPI \"%s\" is named twice", kinds[i].name);
                if (q->nkpis == AV_ROLLOUT_MAX_KPIS)
                    return av_cfg_fail(x, "at most %d KPIs", AV_ROLLOUT_MAX_KPIS);
                size_t n = q->nkpis++;
                q->kpis[n].kind = kinds[i].kind;
                int absolute = kinds[i].kind <= AV_KPI_BLOCKS || kinds[i].kind == AV_KPI_FEEDBACK;
                q->kpis[n].margin = kinds[i].margin_default;
                for (const cJSON *f = e->child; f != NULL; f = f->next) {
                    av_cfg_push_key(x, f->string);
                    int is_margin = strcmp(f->string, kinds[i].margin) == 0;
                    if (!is_margin && strcmp(f->string, kinds[i].slo) != 0)
                        return av_cfg_fail(x, "unknown key (known keys: %s, %s)", kinds[i].margin, kinds[i].slo);
                    double lo = is_margin ? (absolute ? 0 : 1) : 0;
                    if (num_field(x, f, lo, 1e9, is_margin ? &q->kpis[n].margin : &q->kpis[n].slo) != 0)
                        return AV_EINVAL;
                    av_cfg_pop(x);
                }
                av_cfg_pop(x);
            }
        } else {
            return av_cfg_fail(x, "unknown key (known keys: baseline, candidate, steps, min_step_s, max_step_s, on_timeout, "
                           "min_requests, min_events, alpha, approve_before, shadow_first, kpis)");
        }
        av_cfg_pop(x);
    }
    if (ro->baseline_name == NULL || ro->candidate_name == NULL)
        return av_cfg_fail(x, "a rollout names its \"baseline\" and \"candidate\" variants");
    if (ro->nkpis == 0)
        return av_cfg_fail(x, "a rollout watches at least one KPI (\"kpis\": {\"error_rate\": {\"max_increase\": 0.01}})");
    for (size_t i = 0; i < AV_ROLLOUT_MAX_STEPS; i++)
        if ((ro->approve >> i) & 1 && i >= ro->nsteps)
            return av_cfg_fail(x, "approve_before names step %zu of %zu", i + 1, ro->nsteps);
    snprintf(ro->fingerprint, sizeof(ro->fingerprint), "%.24s/%.24s", ro->baseline_name, ro->candidate_name);
    return 0;
}

/* "policy_params": {"max_tokens": {"cap": 1024}}: what r:params() gives each policy */
static int c_policy_params(av_cfg_ctx_t *x, const cJSON *v, void *base)
{
    av_route_t *r = base;
    if (!cJSON_IsObject(v) || cJSON_GetArraySize(v) > 16)
        return av_cfg_fail(x, "expected {\"POLICY\": {...}, ...} for at most 16 policies");
    r->nparams_raw = (size_t)cJSON_GetArraySize(v);
    r->params_raw = av_arena_calloc(x->cfg->arena, (r->nparams_raw ? r->nparams_raw : 1) * sizeof(av_kv_t));
    size_t i = 0;
    for (const cJSON *e = v->child; e != NULL; e = e->next, i++) {
        av_cfg_push_key(x, e->string);
        if (!cJSON_IsObject(e))
            return av_cfg_fail(x, "expected an object of the policy's parameters");
        char *text = cJSON_PrintUnformatted(e);
        if (text == NULL)
            av_oom();
        r->params_raw[i].name = av_cfg_dup_str(x, e->string);
        r->params_raw[i].value = av_cfg_dup_str(x, text);
        cJSON_free(text);
        av_cfg_pop(x);
    }
    return 0;
}

static int c_geo_rules(av_cfg_ctx_t *x, const cJSON *v, void *base)
{
    av_route_t *r = base;
    if (!cJSON_IsArray(v))
        return av_cfg_fail(x, "expected an array of rules like {\"country\": [\"DE\", \"FR\"], \"variant\": \"eu\"}");
    r->ngeo = (size_t)cJSON_GetArraySize(v);
    r->geo = av_arena_calloc(x->cfg->arena, (r->ngeo ? r->ngeo : 1) * sizeof(*r->geo));
    size_t i = 0;
    for (const cJSON *e = v->child; e != NULL; e = e->next, i++) {
        av_geo_rule_t *g = &r->geo[i];
        av_cfg_push_index(x, i);
        if (!cJSON_IsObject(e))
            return av_cfg_fail(x, "expected an object like {\"continent\": \"EU\", \"variant\": \"eu\"}");
        int conditions = 0;
        for (const cJSON *m = e->child; m != NULL; m = m->next) {
            av_cfg_push_key(x, m->string);
            int rc = 0;
            if (strcmp(m->string, "country") == 0) {
                rc = codes(x, m, &g->countries, &g->ncountries);
                conditions++;
            } else if (strcmp(m->string, "continent") == 0) {
                rc = codes(x, m, &g->continents, &g->ncontinents);
                conditions++;
            } else if (strcmp(m->string, "asn") == 0) {
                size_t cnt = cJSON_IsArray(m) ? (size_t)cJSON_GetArraySize(m) : 1;
                int64_t *a = av_arena_calloc(x->cfg->arena, cnt * sizeof(*a));
                const cJSON *n = cJSON_IsArray(m) ? m->child : m;
                for (size_t k = 0; k < cnt; k++, n = n->next) {
                    if (!cJSON_IsNumber(n) || n->valuedouble < 1 || n->valuedouble > 4294967295.0 ||
                        n->valuedouble != floor(n->valuedouble))
                        return av_cfg_fail(x, "expected an AS number (e.g. 15169), or an array of them");
                    a[k] = (int64_t)n->valuedouble;
                }
                g->asns = a;
                g->nasns = cnt;
                conditions++;
            } else if (strcmp(m->string, "variant") == 0) {
                if (!cJSON_IsString(m))
                    return av_cfg_fail(x, "expected a variant's name");
                g->variant_name = av_cfg_dup_str(x, m->valuestring);
            } else {
                return av_cfg_fail(x, "unknown key (known keys: country, continent, asn, variant)");
            }
            if (rc != 0)
                return rc;
            av_cfg_pop(x);
        }
        if (g->variant_name == NULL)
            return av_cfg_fail(x, "a rule needs \"variant\"");
        if (conditions == 0)
            return av_cfg_fail(x, "a rule needs \"country\", \"continent\" or \"asn\"");
        av_cfg_pop(x);
    }
    return 0;
}

static const av_cfg_key_t sticky_spec[] = {
    {"keys", K_CUSTOM, 0, 0, 0, 0, NULL, 0, NULL, c_sticky_keys},
    {"salt", K_STR, offsetof(av_route_t, salt), 1, 0, 0, NULL, 0, NULL, NULL},
    {NULL, 0, 0, 0, 0, 0, NULL, 0, NULL, NULL},
};

static const av_cfg_key_t override_spec[] = {
    {"enabled", K_BOOL, offsetof(av_route_t, override_enabled), 0, 1, 1, NULL, 0, NULL, NULL},
    {"token_env", K_STR, offsetof(av_route_t, override_token_env), 1, 0, 0, NULL, 0, NULL, NULL},
    {NULL, 0, 0, 0, 0, 0, NULL, 0, NULL, NULL},
};

static const av_cfg_key_t shadow_spec[] = {
    {"variant", K_STR, offsetof(av_route_t, shadow_variant_name), 1, 0, 0, NULL, 0, NULL, NULL},
    {"percent", K_INT, offsetof(av_route_t, shadow_percent), 0, 100, 100, NULL, 0, NULL, NULL},
    {"max_in_flight", K_INT, offsetof(av_route_t, shadow_max_in_flight), 1, 100000, 64, NULL, 0, NULL, NULL},
    {"compare", K_BOOL, offsetof(av_route_t, shadow_compare), 0, 1, 1, NULL, 0, NULL, NULL},
    {"budget_tokens_per_minute", K_INT, offsetof(av_route_t, shadow_budget_tokens), 0, 1000000000, 0, NULL, 0, NULL, NULL},
    {"budget_millidollars_per_minute", K_INT, offsetof(av_route_t, shadow_budget_usd_milli), 0, 1000000000, 0, NULL, 0,
     NULL, NULL},
    {NULL, 0, 0, 0, 0, 0, NULL, 0, NULL, NULL},
};

static const av_cfg_key_t route_spec[] = {
    {"name", K_STR, offsetof(av_route_t, name), 1, 0, 0, NULL, K_REQUIRED, NULL, NULL},
    {"match", K_OBJ, 0, 0, 0, 0, NULL, 0, match_spec, NULL},
    {"variants", K_CUSTOM, 0, 0, 0, 0, NULL, K_REQUIRED, NULL, c_variants},
    {"sticky", K_OBJ, 0, 0, 0, 0, NULL, 0, sticky_spec, NULL},
    {"override", K_OBJ, 0, 0, 0, 0, NULL, 0, override_spec, NULL},
    {"dialect", K_STR, offsetof(av_route_t, dialect_name), 1, 0, 0, "auto", 0, NULL, NULL},
    {"geo", K_CUSTOM, 0, 0, 0, 0, NULL, 0, NULL, c_geo_rules},
    {"shadow", K_OBJ, 0, 0, 0, 0, NULL, 0, shadow_spec, NULL},
    {"policies", K_CUSTOM, 0, 0, 0, 0, NULL, 0, NULL, c_route_policies},
    {"policy_params", K_CUSTOM, 0, 0, 0, 0, NULL, 0, NULL, c_policy_params},
    {"rollout", K_CUSTOM, 0, 0, 0, 0, NULL, 0, NULL, c_rollout},
    {NULL, 0, 0, 0, 0, 0, NULL, 0, NULL, NULL},
};

int av_cfg_routes(av_cfg_ctx_t *x, const cJSON *v, void *base)
{
    av_config_t *c = base;
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) == 0)
        return av_cfg_fail(x, "expected a non-empty array of routes");
    c->nroutes = (size_t)cJSON_GetArraySize(v);
    c->routes = av_arena_calloc(c->arena, c->nroutes * sizeof(*c->routes));
    size_t i = 0;
    for (const cJSON *e = v->child; e != NULL; e = e->next, i++) {
        av_route_t *r = &c->routes[i];
        av_cfg_push_index(x, i);
        if (!cJSON_IsObject(e))
            return av_cfg_fail(x, "expected an object with \"name\", \"match\" and \"variants\"");
        int rc = av_cfg_load_obj(x, e, route_spec, r);
        if (rc != 0)
            return rc;
        for (size_t j = 0; j < i; j++)
            if (strcmp(c->routes[j].name, r->name) == 0) {
                av_cfg_push_key(x, "name");
                return av_cfg_fail(x, "route \"%s\" is named twice", r->name);
            }
        if (r->path_prefix != NULL && r->path_prefix[0] != '/') {
            av_cfg_push_key(x, "match");
            av_cfg_push_key(x, "path_prefix");
            return av_cfg_fail(x, "must start with /");
        }
        if (r->path != NULL && r->path[0] != '/') {
            av_cfg_push_key(x, "match");
            av_cfg_push_key(x, "path");
            return av_cfg_fail(x, "must start with /");
        }
        if (r->nvariants > AV_SPLIT_MAX_VARIANTS) {
            av_cfg_push_key(x, "variants");
            return av_cfg_fail(x, "at most %d variants in a route", AV_SPLIT_MAX_VARIANTS);
        }
        int64_t total = 0;
        for (size_t k = 0; k < r->nvariants; k++)
            total += r->variants[k].weight;
        if (total == 0) {
            av_cfg_push_key(x, "variants");
            return av_cfg_fail(x, "the weights add up to 0: give at least one variant a weight above 0");
        }
        if (r->salt == NULL)
            r->salt = r->name;
        r->shadow_budget_nano = r->shadow_budget_usd_milli * 1000000;
        if (r->shadow_variant_name != NULL) {
            r->shadow_variant = r->nvariants;
            for (size_t j = 0; j < r->nvariants; j++)
                if (strcmp(r->variants[j].name, r->shadow_variant_name) == 0)
                    r->shadow_variant = j;
            if (r->shadow_variant == r->nvariants) {
                av_cfg_push_key(x, "shadow");
                av_cfg_push_key(x, "variant");
                return av_cfg_fail(x, "no variant \"%s\" in this route", r->shadow_variant_name);
            }
        }
        for (size_t k = 0; k < r->ngeo; k++) {
            av_geo_rule_t *g = &r->geo[k];
            g->variant = r->nvariants;
            for (size_t j = 0; j < r->nvariants; j++)
                if (strcmp(r->variants[j].name, g->variant_name) == 0)
                    g->variant = j;
            if (g->variant == r->nvariants) {
                av_cfg_push_key(x, "geo");
                av_cfg_push_index(x, k);
                av_cfg_push_key(x, "variant");
                return av_cfg_fail(x, "no variant \"%s\" in this route", g->variant_name);
            }
            if (c->geo == NULL) {
                av_cfg_push_key(x, "geo");
                return av_cfg_fail(x, "geo rules need databases: set \"geoip\": {\"databases\": [\"GeoLite2-Country.mmdb\"]}");
            }
        }
        static const char *const dialects[] = {"auto", "openai_chat", "openai_completions", "openai_embeddings",
                                               "openai_responses", "anthropic"};
        r->dialect = -1;
        for (size_t k = 0; k < AV_NELEMS(dialects); k++)
            if (strcmp(r->dialect_name, dialects[k]) == 0)
                r->dialect = (int)k;
        if (r->dialect < 0) {
            av_cfg_push_key(x, "dialect");
            return av_cfg_fail(x, "\"%s\" is not a dialect (use \"auto\", \"openai_chat\", \"openai_completions\", "
                           "\"openai_embeddings\", \"openai_responses\" or \"anthropic\")", r->dialect_name);
        }
        if (r->rollout.enabled) {
            av_rollout_cfg_t *ro = &r->rollout;
            ro->baseline = ro->candidate = r->nvariants;
            for (size_t j = 0; j < r->nvariants; j++) {
                if (strcmp(r->variants[j].name, ro->baseline_name) == 0)
                    ro->baseline = j;
                if (strcmp(r->variants[j].name, ro->candidate_name) == 0)
                    ro->candidate = j;
            }
            av_cfg_push_key(x, "rollout");
            if (ro->baseline == r->nvariants || ro->candidate == r->nvariants || ro->baseline == ro->candidate) {
                av_cfg_push_key(x, ro->baseline == r->nvariants ? "baseline" : "candidate");
                return av_cfg_fail(x, "not a variant of this route (or the baseline twice)");
            }
            if (ro->shadow_first && (r->shadow_variant_name == NULL || r->shadow_variant != ro->candidate ||
                                     r->shadow_percent == 0)) {
                av_cfg_push_key(x, "shadow_first");
                return av_cfg_fail(x, "a shadow stage needs the route's \"shadow\" to copy requests to the candidate, "
                               "\"%s\"", ro->candidate_name);
            }
            av_cfg_pop(x);
        }
        if (r->override_token_env != NULL) {
            av_cfg_push_key(x, "override");
            av_cfg_push_key(x, "token_env");
            const char *tok = getenv(r->override_token_env);
            if (tok == NULL || tok[0] == '\0')
                return av_cfg_fail(x, "environment variable %s is not set", r->override_token_env);
            r->override_token = av_cfg_dup_str(x, tok);
            av_cfg_pop(x);
            av_cfg_pop(x);
        }
        av_cfg_pop(x);
    }
    return 0;
}
