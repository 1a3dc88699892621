/* policy_api.c: what a policy calls: the request object r (read and rewrite
 * the request, deny, stop, pick a variant, usage, params) and the aviary table. */
#include <event2/buffer.h>
#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "av.h"
#include "config.h"
#include "geo.h"
#include "headers.h"
#include "log.h"
#include "jscan.h"
#include "luajson.h"
#include "policy_int.h"
#include "usage.h"
#include "loop.h"

/* JSON bytes read or written per step of the budget (policy_int.h): a
 * byte of JSON costs a nanosecond or so, a few times less than a step. */
#define JSON_BYTES_PER_STEP 4

/* ---- the request object's calls ---- */

static av_pol_vm_t *call_vm(lua_State *L, unsigned allowed, const char *what)
{
    av_pol_vm_t *vm = av_pol_vm_of(L);
    if (!(vm->phase & allowed) || vm->req == NULL) {
        static const char *const names[] = {"on_request", "on_response", "on_chunk", "on_complete", "selftest",
                                            "loading"};
        const char *now = "?";
        for (int i = 0; i < 6; i++)
            if (vm->phase == (1u << i))
                now = names[i];
        luaL_error(L, "%s is not allowed in %s", what, now);
    }
    return vm;
}

#define ANY (PH_REQUEST | PH_RESPONSE | PH_CHUNK | PH_COMPLETE)

void av_pol_verdict(av_pol_req_t *pr, const char *policy, const char *action, const char *rule)
{
    for (size_t i = 0; i < pr->nverdicts; i++) /* once per policy, action and rule: a stream rewrites often */
        if (pr->verdicts[i].policy == policy && strcmp(pr->verdicts[i].action, action) == 0 &&
            strcmp(pr->verdicts[i].rule, rule ? rule : "") == 0)
            return;
    if (pr->nverdicts == AV_VERDICTS_MAX)
        return;
    av_verdict_t *v = &pr->verdicts[pr->nverdicts++];
    v->policy = policy;
    v->action = action;
    snprintf(v->rule, sizeof(v->rule), "%s", rule ? rule : "");
}

static int r_id(lua_State *L)
{
    av_pol_vm_t *vm = call_vm(L, ANY, "r:id()");
    lua_pushstring(L, vm->req->id);
    return 1;
}

static int r_route(lua_State *L)
{
    av_pol_vm_t *vm = call_vm(L, ANY, "r:route()");
    lua_pushstring(L, vm->req->route->name);
    return 1;
}

static int r_variant(lua_State *L)
{
    av_pol_vm_t *vm = call_vm(L, ANY, "r:variant()");
    if (vm->req->variant == NULL)
        lua_pushnil(L);
    else
        lua_pushstring(L, vm->req->variant->name);
    return 1;
}

static int r_method(lua_State *L)
{
    av_pol_vm_t *vm = call_vm(L, ANY, "r:method()");
    lua_pushstring(L, vm->req->method_str);
    return 1;
}

static int r_path(lua_State *L)
{
    av_pol_vm_t *vm = call_vm(L, ANY, "r:path()");
    lua_pushlstring(L, vm->req->target, vm->req->target_len);
    return 1;
}

static int r_set_path(lua_State *L)
{
    av_pol_vm_t *vm = call_vm(L, PH_REQUEST, "r:set_path()");
    size_t n;
    const char *p = luaL_checklstring(L, 2, &n);
    if (n == 0 || p[0] != '/' || n > 8192 || memchr(p, ' ', n) || memchr(p, '\r', n) || memchr(p, '\n', n))
        return luaL_error(L, "r:set_path(): a path starts with / and has no spaces or line breaks");
    vm->req->target = av_arena_strndup(vm->req->arena, p, n);
    vm->req->target_len = n;
    return 0;
}

static int r_header(lua_State *L)
{
    av_pol_vm_t *vm = call_vm(L, ANY, "r:header()");
    const av_header_t *h = av_headers_get(&vm->req->headers, luaL_checkstring(L, 2));
    if (h == NULL)
        lua_pushnil(L);
    else
        lua_pushlstring(L, h->value, h->value_len);
    return 1;
}

static int r_headers(lua_State *L)
{
    av_pol_vm_t *vm = call_vm(L, ANY, "r:headers()");
    const av_headers_t *hs = &vm->req->headers;
    lua_createtable(L, 0, (int)hs->n);
    for (size_t i = 0; i < hs->n; i++) {
        char name[256];
        size_t n = hs->v[i].name_len < sizeof(name) ? hs->v[i].name_len : sizeof(name) - 1;
        for (size_t k = 0; k < n; k++)
            name[k] = (char)((hs->v[i].name[k] >= 'A' && hs->v[i].name[k] <= 'Z') ? hs->v[i].name[k] + 32
                                                                                    : hs->v[i].name[k]);
        lua_pushlstring(L, name, n);
        lua_pushlstring(L, hs->v[i].value, hs->v[i].value_len);
        lua_rawset(L, -3);
    }
    return 1;
}

static int valid_header(const char *s, size_t n, int name)
{
    if (name && n == 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\r' || c == '\n' || c == 0 || (name && (c <= ' ' || c == ':' || c >= 0x7f)))
            return 0;
    }
    return 1;
}

/* Sets (or with nil removes) a header in h. */
static void set_header(lua_State *L, av_arena_t *a, av_headers_t *h, const char *what)
{
    size_t nlen, vlen = 0;
    const char *name = luaL_checklstring(L, 2, &nlen);
    const char *value = lua_isnil(L, 3) ? NULL : luaL_checklstring(L, 3, &vlen);
    if (!valid_header(name, nlen, 1) || (value != NULL && !valid_header(value, vlen, 0)))
        luaL_error(L, "%s: not a valid header name or value", what);
    size_t out = 0;
    for (size_t i = 0; i < h->n; i++)
        if (!av_streq_ci(h->v[i].name, h->v[i].name_len, name))
            h->v[out++] = h->v[i];
    h->n = out;
    if (value != NULL)
        av_headers_add(a, h, av_arena_strndup(a, name, nlen), nlen, av_arena_strndup(a, value, vlen), vlen);
}

static int r_set_header(lua_State *L)
{
    av_pol_vm_t *vm = call_vm(L, PH_REQUEST, "r:set_header()");
    set_header(L, vm->req->arena, &vm->req->headers, "r:set_header()");
    return 0;
}

static int r_client_ip(lua_State *L)
{
    av_pol_vm_t *vm = call_vm(L, ANY, "r:client_ip()");
    lua_pushstring(L, vm->req->client_ip);
    return 1;
}

static int r_geo(lua_State *L)
{
    av_pol_vm_t *vm = call_vm(L, ANY, "r:geo()");
    av_req_t *req = vm->req;
    lua_createtable(L, 0, 4);
    if (req->cfg->geo != NULL && req->geo_country[0] == '\0' && req->geo_continent[0] == '\0') {
        av_geo_info_t info;
        av_geo_client_ip(req->cfg->geo, req, req->real_ip, sizeof(req->real_ip));
        av_geo_lookup(req->cfg->geo, req->real_ip, &info);
        memcpy(req->geo_country, info.country, 3);
        memcpy(req->geo_continent, info.continent, 3);
        req->geo_asn = info.asn;
    }
    lua_pushstring(L, req->real_ip[0] ? req->real_ip : req->client_ip);
    lua_setfield(L, -2, "ip");
    if (req->geo_country[0]) {
        lua_pushstring(L, req->geo_country);
        lua_setfield(L, -2, "country");
    }
    if (req->geo_continent[0]) {
        lua_pushstring(L, req->geo_continent);
        lua_setfield(L, -2, "continent");
    }
    if (req->geo_asn) {
        lua_pushnumber(L, req->geo_asn);
        lua_setfield(L, -2, "asn");
    }
    return 1;
}

/* The request body, decoded once per request; the same table each call. */
static int body_any(void *arg, const av_jmember_t *m)
{
    (void)arg;
    (void)m;
    return 0;
}

static int r_body(lua_State *L)
{
    av_pol_vm_t *vm = call_vm(L, PH_REQUEST | PH_RESPONSE | PH_CHUNK | PH_COMPLETE, "r:body()");
    av_pol_req_t *pr = vm->pr;
    if (pr->body_ref != LUA_NOREF) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, pr->body_ref);
        return 1;
    }
    struct evbuffer *b = vm->req->body;
    size_t n = evbuffer_get_length(b);
    av_pol_spend_steps(L, n / JSON_BYTES_PER_STEP); /* decoding is C work the hook does not see */
    char err[128];
    const char *text = n > 0 ? (const char *)evbuffer_pullup(b, -1) : NULL;
    if (n == 0 || av_luajson_decode(L, text, n, err, sizeof(err)) != 0) {
        size_t off;
        if (n > 0 && vm->phase == PH_REQUEST && !pr->denied && av_jscan_object(text, n, body_any, NULL, &off) == 0) {
            /* valid JSON past what policies can be given (nesting, a number's length): it would go on
             * unchecked; refused instead, whatever the policy's fail mode */
            pr->denied = 1;
            pr->status = 400;
            snprintf(pr->code, sizeof(pr->code), "body_unreadable");
            snprintf(pr->message, sizeof(pr->message),
                     "the request body cannot be checked by this route's policies (%s); it is refused", err);
            av_pol_verdict(pr, vm->set->pol[vm->policy].name, "deny", "body_unreadable");
        }
        lua_pushnil(L);
        return 1; /* not JSON: nil, and the policy decides */
    }
    lua_pushvalue(L, -1);
    pr->body_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 1;
}

static int r_set_body(lua_State *L)
{
    av_pol_vm_t *vm = call_vm(L, PH_REQUEST, "r:set_body()");
    luaL_checktype(L, 2, LUA_TTABLE);
    struct evbuffer *out = evbuffer_new();
    char err[160];
    if (av_luajson_encode(L, 2, out, err, sizeof(err)) != 0) {
        evbuffer_free(out);
        return luaL_error(L, "r:set_body(): %s", err);
    }
    if (evbuffer_get_length(out) > (size_t)vm->req->cfg->max_body_bytes) {
        evbuffer_free(out);
        return luaL_error(L, "r:set_body(): the body would be over max_body_bytes");
    }
    size_t n = evbuffer_get_length(out);
    evbuffer_drain(vm->req->body, evbuffer_get_length(vm->req->body));
    evbuffer_add_buffer(vm->req->body, out);
    evbuffer_free(out);
    if (vm->pr->body_ref != LUA_NOREF)
        luaL_unref(L, LUA_REGISTRYINDEX, vm->pr->body_ref);
    lua_pushvalue(L, 2);
    vm->pr->body_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    vm->pr->body_dirty = 1;
    av_pol_spend_steps(L, n / JSON_BYTES_PER_STEP);
    return 0;
}

static int r_deny(lua_State *L)
{
    av_pol_vm_t *vm = call_vm(L, PH_REQUEST | PH_RESPONSE, "r:deny()");
    av_pol_req_t *pr = vm->pr;
    int status = (int)luaL_checkinteger(L, 2);
    const char *msg = luaL_checkstring(L, 3);
    const char *rule = luaL_optstring(L, 4, "denied");
    if (status < 400 || status > 599)
        return luaL_error(L, "r:deny(): the status must be 400-599, not %d", status);
    if (pr->denied)
        return 0; /* the first deny stands */
    pr->denied = 1;
    pr->status = status;
    snprintf(pr->message, sizeof(pr->message), "%s", msg);
    snprintf(pr->code, sizeof(pr->code), "%s", rule);
    av_pol_verdict(pr, vm->set->pol[vm->policy].name, "deny", rule);
    return 0;
}

static int r_stop(lua_State *L)
{
    av_pol_vm_t *vm = call_vm(L, PH_CHUNK, "r:stop()");
    av_pol_req_t *pr = vm->pr;
    const char *msg = luaL_checkstring(L, 2);
    const char *rule = luaL_optstring(L, 3, "stopped");
    if (pr->stopped)
        return 0;
    pr->stopped = 1;
    snprintf(pr->stop_message, sizeof(pr->stop_message), "%s", msg);
    snprintf(pr->stop_rule, sizeof(pr->stop_rule), "%s", rule);
    av_pol_verdict(pr, vm->set->pol[vm->policy].name, "stop", rule);
    return 0;
}

static int r_audit(lua_State *L)
{
    av_pol_vm_t *vm = call_vm(L, ANY, "r:audit()");
    const char *rule = luaL_checkstring(L, 2);
    const char *action = luaL_optstring(L, 3, "rewrite");
    static const char *const actions[] = {"rewrite", "flag", NULL};
    int k = 0;
    while (actions[k] != NULL && strcmp(actions[k], action) != 0)
        k++;
    if (actions[k] == NULL)
        return luaL_error(L, "r:audit(): the action is \"rewrite\" or \"flag\"");
    av_pol_verdict(vm->pr, vm->set->pol[vm->policy].name, actions[k], rule);
    return 0;
}

static int r_set_variant(lua_State *L)
{
    av_pol_vm_t *vm = call_vm(L, PH_REQUEST, "r:set_variant()");
    const char *name = luaL_checkstring(L, 2);
    const av_route_t *rt = vm->req->route;
    for (size_t i = 0; i < rt->nvariants; i++)
        if (strcmp(rt->variants[i].name, name) == 0) {
            vm->req->policy_variant = (int)i + 1;
            return 0;
        }
    return luaL_error(L, "r:set_variant(): route %s has no variant \"%s\"", rt->name, name);
}

static int r_status(lua_State *L)
{
    av_pol_vm_t *vm = call_vm(L, PH_RESPONSE | PH_CHUNK | PH_COMPLETE, "r:status()");
    lua_pushinteger(L, vm->req->status);
    return 1;
}

static int r_response_header(lua_State *L)
{
    av_pol_vm_t *vm = call_vm(L, PH_RESPONSE, "r:response_header()");
    const av_header_t *h = av_headers_get(vm->resp_headers, luaL_checkstring(L, 2));
    if (h == NULL)
        lua_pushnil(L);
    else
        lua_pushlstring(L, h->value, h->value_len);
    return 1;
}

static int r_set_response_header(lua_State *L)
{
    av_pol_vm_t *vm = call_vm(L, PH_RESPONSE, "r:set_response_header()");
    set_header(L, vm->req->arena, vm->resp_headers, "r:set_response_header()");
    return 0;
}

static void set_num(lua_State *L, const char *k, double v)
{
    lua_pushnumber(L, v);
    lua_setfield(L, -2, k);
}

static int r_usage(lua_State *L)
{
    av_pol_vm_t *vm = call_vm(L, PH_COMPLETE, "r:usage()");
    av_req_t *req = vm->req;
    lua_createtable(L, 0, 12);
    uint64_t end = req->t_end_us ? req->t_end_us : av_now_us();
    set_num(L, "latency_ms", (double)(end - req->t_start_us) / 1000.0);
    set_num(L, "status", req->status);
    if (req->model != NULL) {
        lua_pushstring(L, req->model);
        lua_setfield(L, -2, "model");
    }
    const av_usage_t *u = req->usage;
    if (u == NULL)
        return 1;
    av_tokens_t t;
    av_usage_tokens(u, req->bytes_in, &t);
    set_num(L, "input_tokens", (double)t.input);
    set_num(L, "output_tokens", (double)t.output);
    set_num(L, "cached_tokens", (double)t.cached);
    set_num(L, "cache_write_tokens", (double)t.cache_write);
    set_num(L, "reasoning_tokens", (double)t.reasoning);
    lua_pushboolean(L, t.estimated);
    lua_setfield(L, -2, "estimated");
    const av_price_t *price = av_config_price(req->cfg, req->model);
    if (price != NULL)
        set_num(L, "cost_usd", (double)av_usage_cost_pico(&t, price) / 1e12);
    if (u->first_token_us)
        set_num(L, "ttft_ms", (double)(u->first_token_us - req->t_start_us) / 1000.0);
    if (u->finish[0]) {
        lua_pushstring(L, u->finish);
        lua_setfield(L, -2, "finish_reason");
    }
    set_num(L, "tool_calls", u->tool_calls);
    return 1;
}

/* r:params(): the route's "policy_params" for the running policy, decoded
 * once per VM and route; read-only. */
static int r_params(lua_State *L)
{
    av_pol_vm_t *vm = call_vm(L, ANY, "r:params()");
    const av_route_t *rt = vm->req->route;
    size_t k = 0;
    while (k < rt->npolicies && (size_t)rt->policies[k] != vm->policy)
        k++;
    char key[64];
    snprintf(key, sizeof(key), "aviary.params.%zu.%zu", (size_t)(rt - vm->req->cfg->routes), k);
    lua_getfield(L, LUA_REGISTRYINDEX, key);
    if (!lua_isnil(L, -1))
        return 1;
    lua_pop(L, 1);
    const char *text = k < rt->npolicies && rt->policy_params ? rt->policy_params[k] : NULL;
    char err[128];
    if (text == NULL || av_luajson_decode(L, text, strlen(text), err, sizeof(err)) != 0)
        lua_newtable(L);
    av_pol_make_readonly(L, "r:params()");
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, key);
    return 1;
}

static int r_log(lua_State *L)
{
    av_pol_vm_t *vm = call_vm(L, ANY, "r:log()");
    AV_INFO("policy %s: request %s: %s", vm->set->pol[vm->policy].name, vm->req->id, luaL_checkstring(L, 2));
    return 0;
}

static int a_log(lua_State *L)
{
    av_pol_vm_t *vm = av_pol_vm_of(L);
    const char *level = luaL_checkstring(L, 1);
    const char *msg = luaL_checkstring(L, 2);
    const char *name = vm->active ? vm->set->pol[vm->policy].name : "?";
    if (strcmp(level, "error") == 0)
        AV_ERR("policy %s: %s", name, msg);
    else if (strcmp(level, "warn") == 0)
        AV_WARN("policy %s: %s", name, msg);
    else if (strcmp(level, "info") == 0)
        AV_INFO("policy %s: %s", name, msg);
    else if (strcmp(level, "debug") == 0)
        AV_DEBUG("policy %s: %s", name, msg);
    else
        return luaL_error(L, "aviary.log(): the level is error, warn, info or debug");
    return 0;
}

/* aviary.count(name [, n]): adds to the worker's counter for this policy and
 * name; returns the new value. */
static int a_count(lua_State *L)
{
    av_pol_vm_t *vm = av_pol_vm_of(L);
    size_t n;
    const char *name = luaL_checklstring(L, 1, &n);
    lua_Number by = luaL_optnumber(L, 2, 1);
    if (!vm->active || vm->req == NULL) {
        lua_pushnumber(L, 0);
        return 1; /* selftest and loading count nothing */
    }
    if (n == 0 || n > 64)
        return luaL_error(L, "aviary.count(): a name of 1 to 64 bytes");
    uint64_t v = av_worker_policy_count(vm->req->worker, vm->set->pol[vm->policy].name, name, (int64_t)by);
    lua_pushnumber(L, (lua_Number)v);
    return 1;
}

static int a_json_decode(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    av_pol_spend_steps(L, n / JSON_BYTES_PER_STEP);
    char err[128];
    if (av_luajson_decode(L, s, n, err, sizeof(err)) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    return 1;
}

static int a_json_encode(lua_State *L)
{
    luaL_checkany(L, 1);
    struct evbuffer *out = evbuffer_new();
    char err[160];
    if (av_luajson_encode(L, 1, out, err, sizeof(err)) != 0) {
        evbuffer_free(out);
        return luaL_error(L, "aviary.json_encode(): %s", err);
    }
    size_t n = evbuffer_get_length(out);
    lua_pushlstring(L, (const char *)evbuffer_pullup(out, -1), n);
    evbuffer_free(out);
    av_pol_spend_steps(L, n / JSON_BYTES_PER_STEP);
    return 1;
}

static int a_array(lua_State *L)
{
    if (lua_isnoneornil(L, 1))
        lua_newtable(L);
    else
        luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, lua_isnoneornil(L, 1) ? 2 : 1);
    if (lua_gettop(L) == 2)
        lua_remove(L, 1);
    av_luajson_array_mt(L);
    lua_setmetatable(L, -2);
    return 1;
}

static int a_phase(lua_State *L)
{
    av_pol_vm_t *vm = av_pol_vm_of(L);
    static const char *const names[] = {"request", "response", "chunk", "complete", "selftest", "load"};
    for (int i = 0; i < 6; i++)
        if (vm->phase == (1u << i)) {
            lua_pushstring(L, names[i]);
            return 1;
        }
    lua_pushnil(L);
    return 1;
}

const luaL_Reg av_pol_r_methods[] = {
    {"id", r_id},
    {"route", r_route},
    {"variant", r_variant},
    {"method", r_method},
    {"path", r_path},
    {"set_path", r_set_path},
    {"header", r_header},
    {"headers", r_headers},
    {"set_header", r_set_header},
    {"client_ip", r_client_ip},
    {"geo", r_geo},
    {"body", r_body},
    {"set_body", r_set_body},
    {"deny", r_deny},
    {"audit", r_audit},
    {"stop", r_stop},
    {"set_variant", r_set_variant},
    {"status", r_status},
    {"response_header", r_response_header},
    {"set_response_header", r_set_response_header},
    {"usage", r_usage},
    {"params", r_params},
    {"log", r_log},
    {NULL, NULL},
};

const luaL_Reg av_pol_aviary_fns[] = {
    {"log", a_log},
    {"count", a_count},
    {"json_decode", a_json_decode},
    {"json_encode", a_json_encode},
    {"array", a_array},
    {"phase", a_phase},
    {NULL, NULL},
};
