/* policy.c: policy sets, their VMs (one per worker, made on first use), the
 * sandbox, the budgets, the phases and on_chunk; what r and aviary offer is in policy_api.c. */
#include "policy.h"

#include <errno.h>
#include <event2/buffer.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <lua.h>
#include <luajit.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "arena.h"
#include "av.h"
#include "config.h"
#include "headers.h"
#include "jscan.h"
#include "jsonw.h"
#include "log.h"
#include "lpattern.h"
#include "luajson.h"
#include "policy_int.h"
#include "reqbody.h"
#include "usage.h"
#include "loop.h"

#define MAX_SOURCE (1u << 20)
#define HOOK_EVERY 1000        /* instructions between budget checks */
#define CLOCK_EVERY (1u << 20) /* bytes allocated between readings of the clock */
#define MAX_CDEPTH 200         /* gsub, pcall, xpcall, table.sort within themselves: each takes C stack */

enum { K_DATA = 1, K_EVENT, K_INDEX, K_DONE, K_TEXT, K_DROP, K_BEFORE, K_NKEYS };
static const char *const key_names[K_NKEYS] = {NULL, "data", "event", "index", "done", "text", "drop", "before"};
static const char *const phase_fn[] = {"on_request", "on_response", "on_chunk", "on_complete"};



/* ---- the VM: memory, budget, sandbox ---- */

/* Notes that the running call's budget ran out, and why. */
static void run_out(av_pol_vm_t *vm, int by_time)
{
    vm->spent = 1;
    if (by_time)
        snprintf(vm->spent_why, sizeof(vm->spent_why), "the policy ran past its time budget of %lld ms",
                 (long long)(vm->set->lim.max_us / 1000));
    else
        snprintf(vm->spent_why, sizeof(vm->spent_why), "the policy ran past its budget of %lld instructions",
                 (long long)vm->set->lim.max_instructions);
}

/* Counts n instructions (or their worth of C work) against the running
 * call's budget, reading the clock every HOOK_EVERY of them. Once the
 * budget ran out every count raises its error again: a policy that caught
 * one (pcall) gets the next at once, so what catches it cannot run on. */
static void spend(lua_State *L, av_pol_vm_t *vm, int64_t n)
{
    if (!vm->active)
        return;
    vm->count += n;
    if (!vm->spent) {
        if (vm->count > vm->set->lim.max_instructions) {
            run_out(vm, 0);
        } else if (vm->count >= vm->next_clock) {
            vm->next_clock = vm->count + HOOK_EVERY;
            if (av_now_us() > vm->deadline_us)
                run_out(vm, 1);
        }
    }
    if (vm->spent)
        luaL_error(L, "%s", vm->spent_why); /* LuaJIT's formats know no %lld */
}

void av_pol_spend_steps(lua_State *L, uint64_t steps)
{
    av_pol_vm_t *vm = av_pol_vm_of(L);
    if (!vm->active)
        return;
    if (steps < AV_POL_STEPS_PER_INSTRUCTION - vm->steps && !vm->spent) { /* most calls: less than one */
        vm->steps += (uint32_t)steps;
        return;
    }
    steps += vm->steps;
    vm->steps = (uint32_t)(steps % AV_POL_STEPS_PER_INSTRUCTION);
    spend(L, vm, (int64_t)(steps / AV_POL_STEPS_PER_INSTRUCTION));
}

static void charge_pattern(lua_State *L, uint32_t steps)
{
    av_pol_spend_steps(L, steps);
}

/* Around a C function's call back into Lua: a bound on how deep they nest,
 * or a policy recursing through gsub (say) overflows the worker's C stack.
 * After an error the depth comes back with the pcall that caught it. */
static void c_enter(lua_State *L)
{
    av_pol_vm_t *vm = av_pol_vm_of(L);
    if (vm->cdepth >= MAX_CDEPTH)
        luaL_error(L, "gsub, pcall, xpcall or table.sort nested %d deep, in one another", MAX_CDEPTH);
    vm->cdepth++;
}

static void c_leave(lua_State *L)
{
    av_pol_vm_of(L)->cdepth--;
}

static const av_lpat_budget_t pattern_budget = {charge_pattern, c_enter, c_leave};

/* LuaJIT's own allocator (faster than malloc for its small objects), with
 * the VM's bytes counted against its cap. A call's allocations also read
 * the clock now and then: C functions that make big strings (rep, concat,
 * gsub, lower) run between the hook's checks, and one refused allocation
 * ends such a call when its time is up. */
static void *vm_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    av_pol_vm_t *vm = ud;
    if (nsize == 0) {
        vm->used -= osize;
        return vm->lj_alloc(vm->lj_ud, ptr, osize, 0);
    }
    size_t old = ptr ? osize : 0;
    if (nsize > old && vm->used - old + nsize > (size_t)vm->set->lim.memory_bytes)
        return NULL; /* Lua raises "not enough memory" in the policy */
    if (nsize > old && vm->active && (vm->alloc_since += nsize - old) >= CLOCK_EVERY) {
        vm->alloc_since = 0;
        if (!vm->spent && av_now_us() > vm->deadline_us) {
            run_out(vm, 1);
            return NULL; /* "not enough memory", which vm_call reports as the time budget */
        }
    }
    void *p = vm->lj_alloc(vm->lj_ud, ptr, osize, nsize);
    if (p != NULL)
        vm->used = vm->used - old + nsize;
    return p;
}

static void budget_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    spend(L, av_pol_vm_of(L), HOOK_EVERY);
}

/* ---- the sandbox's own versions of library functions ---- */

/* pcall and xpcall as Lua's, but the error of a spent budget goes on up. */
static void rethrow_if_spent(lua_State *L)
{
    if (av_pol_vm_of(L)->spent)
        lua_error(L); /* the error is on top */
}

static int sb_pcall(lua_State *L)
{
    luaL_checkany(L, 1);
    av_pol_vm_t *vm = av_pol_vm_of(L);
    int depth = vm->cdepth;
    c_enter(L);
    int rc = lua_pcall(L, lua_gettop(L) - 1, LUA_MULTRET, 0);
    vm->cdepth = depth;
    if (rc != 0)
        rethrow_if_spent(L);
    lua_pushboolean(L, rc == 0);
    lua_insert(L, 1);
    return lua_gettop(L);
}

static int sb_xpcall(lua_State *L)
{
    luaL_checktype(L, 2, LUA_TFUNCTION);
    av_pol_vm_t *vm = av_pol_vm_of(L);
    int depth = vm->cdepth;
    c_enter(L);
    lua_pushvalue(L, 1); /* the handler below the function: handler, function, arguments */
    lua_pushvalue(L, 2);
    lua_replace(L, 1);
    lua_replace(L, 2);
    int rc = lua_pcall(L, lua_gettop(L) - 2, LUA_MULTRET, 1);
    vm->cdepth = depth;
    if (rc != 0)
        rethrow_if_spent(L);
    lua_pushboolean(L, rc == 0);
    lua_replace(L, 1);
    return lua_gettop(L);
}

/* table.insert(t, pos, v) moves the elements after pos in C: charged. */
static int sb_insert(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    if (lua_gettop(L) >= 3) {
        size_t n = lua_objlen(L, 1);
        lua_Integer pos = luaL_checkinteger(L, 2);
        if (pos >= 1 && (size_t)pos <= n)
            av_pol_spend_steps(L, n - (size_t)pos + 1);
    }
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
}

/* table.sort: the Lua sorter below, with a bound on how deep sorts nest
 * (a comparison may sort). */
static int sb_sort(lua_State *L)
{
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    c_enter(L);
    lua_call(L, lua_gettop(L) - 1, 0);
    c_leave(L);
    return 0;
}

/* table.sort compares in C when given no function, and table.maxn walks
 * the whole table: both get Lua code the hook counts. */
static const char sandbox_lua[] =
    "local sort, next, type, error = ...\n"
    "local function lt(a, b) return a < b end\n"
    "return function(t, f) if f == nil then f = lt end return sort(t, f) end,\n"
    "  function(t)\n"
    "    if type(t) ~= 'table' then error(\"bad argument #1 to 'maxn' (table expected, got \" .. type(t) .. ')', 2) end\n"
    "    local n = 0\n"
    "    for k in next, t do if type(k) == 'number' and k > n then n = k end end\n"
    "    return n\n"
    "  end\n";

/* Puts the counted pattern functions, pcall, xpcall and the table
 * functions above in the VM's libraries, before the sandbox copies them.
 * Returns 0, or -1 with the reason on the stack. */
static int install_counted(lua_State *L)
{
    lua_getglobal(L, LUA_STRLIBNAME); /* also the strings' metatable's __index: s:find() */
    av_lpat_open(L, -1, &pattern_budget);
    lua_pop(L, 1);
    lua_pushcfunction(L, sb_pcall);
    lua_setglobal(L, "pcall");
    lua_pushcfunction(L, sb_xpcall);
    lua_setglobal(L, "xpcall");
    lua_getglobal(L, LUA_TABLIBNAME);
    int t = lua_gettop(L);
    lua_getfield(L, t, "insert");
    lua_pushcclosure(L, sb_insert, 1);
    lua_setfield(L, t, "insert");
    if (luaL_loadbuffer(L, sandbox_lua, sizeof(sandbox_lua) - 1, "=sandbox") != 0)
        return -1;
    lua_getfield(L, t, "sort");
    lua_getglobal(L, "next");
    lua_getglobal(L, "type");
    lua_getglobal(L, "error");
    if (lua_pcall(L, 4, 2, 0) != 0)
        return -1;
    lua_setfield(L, t, "maxn");
    lua_pushcclosure(L, sb_sort, 1);
    lua_setfield(L, t, "sort");
    lua_pop(L, 1);
    return 0;
}

static int ro_newindex(lua_State *L)
{
    return luaL_error(L, "%s is read-only", lua_tostring(L, lua_upvalueindex(1)));
}

/* Replaces the table on top with a read-only view of it named name. */
void av_pol_make_readonly(lua_State *L, const char *name)
{
    lua_newtable(L);               /* view */
    lua_createtable(L, 0, 3);      /* its metatable */
    lua_pushvalue(L, -3);
    lua_setfield(L, -2, "__index");
    lua_pushstring(L, name);
    lua_pushcclosure(L, ro_newindex, 1);
    lua_setfield(L, -2, "__newindex");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
    lua_remove(L, -2);
}

static int strict_index(lua_State *L)
{
    return luaL_error(L, "'%s' is not defined (policies see only the sandbox's globals; declare your own with local)",
                      lua_tostring(L, 2));
}

static int strict_newindex(lua_State *L)
{
    return luaL_error(L, "assignment to undeclared global '%s' (use local)", lua_tostring(L, 2));
}

static int r_newindex(lua_State *L)
{
    return luaL_error(L, "r is read-only: keep per-request state in r.ctx");
}

/* The sandbox's globals: the safe part of base, string (no dump), table,
 * math, bit, and aviary; every library a read-only view. */
static void push_safe_globals(lua_State *L)
{
    static const char *const base[] = {"assert", "error", "ipairs", "next", "pairs", "pcall", "select", "tonumber",
                                       "tostring", "type", "unpack", "xpcall", "getmetatable", "setmetatable",
                                       "rawequal", NULL};
    lua_newtable(L);
    for (int i = 0; base[i]; i++) {
        lua_getglobal(L, base[i]);
        lua_setfield(L, -2, base[i]);
    }
    static const char *const libs[] = {"string", "table", "math", "bit", NULL};
    for (int i = 0; libs[i]; i++) {
        lua_getglobal(L, libs[i]);
        lua_newtable(L); /* a copy, so what the policy sees is not the VM's own */
        lua_pushnil(L);
        while (lua_next(L, -3) != 0) {
            if (strcmp(libs[i], "string") == 0 && strcmp(lua_tostring(L, -2), "dump") == 0) {
                lua_pop(L, 1);
                continue;
            }
            lua_pushvalue(L, -2);
            lua_insert(L, -2);
            lua_rawset(L, -4);
        }
        lua_remove(L, -2);
        av_pol_make_readonly(L, libs[i]);
        lua_setfield(L, -2, libs[i]);
    }
    lua_newtable(L);
    for (const luaL_Reg *f = av_pol_aviary_fns; f->name; f++) {
        lua_pushcfunction(L, f->func);
        lua_setfield(L, -2, f->name);
    }
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    av_pol_make_readonly(L, "aviary");
    lua_setfield(L, -2, "aviary");
    lua_pushstring(L, "_VERSION");
    lua_pushstring(L, "aviary policy (LuaJIT, interpreted)");
    lua_rawset(L, -3);
}

static int open_lib(lua_State *L, lua_CFunction f, const char *name)
{
    lua_pushcfunction(L, f);
    lua_pushstring(L, name);
    return lua_pcall(L, 1, 0, 0);
}

static void vm_free(av_pol_vm_t *vm)
{
    if (vm == NULL)
        return;
    if (vm->L != NULL)
        lua_close(vm->L);
    free(vm->refs);
    free(vm->chunk_refs);
    free(vm);
}

/* Runs the function on top with nargs arguments under the budget, in phase
 * for policy i. Returns 0, or -1 with the error message in err. Leaves nres
 * results on success. */
static int vm_call(av_pol_vm_t *vm, int nargs, int nres, unsigned phase, size_t i, char *err, size_t errlen)
{
    vm->active = 1;
    vm->count = 0;
    vm->next_clock = HOOK_EVERY;
    vm->steps = 0;
    vm->alloc_since = 0;
    vm->spent = 0;
    vm->cdepth = 0;
    vm->deadline_us = av_now_us() + (uint64_t)vm->set->lim.max_us;
    vm->phase = phase;
    vm->policy = i;
    int rc = lua_pcall(vm->L, nargs, nres, 0);
    vm->active = 0;
    vm->phase = 0;
    if (rc == 0 && !vm->spent)
        return 0;
    if (rc == 0) /* cannot happen (pcall passes the budget's error on), but a spent call failed */
        lua_pop(vm->L, nres);
    const char *msg = rc != 0 ? lua_tostring(vm->L, -1) : NULL;
    if (vm->spent) /* the budget's words, with the place when the error is ours */
        snprintf(err, errlen, "%s", msg && strstr(msg, vm->spent_why) ? msg : vm->spent_why);
    else
        snprintf(err, errlen, "%s", rc == LUA_ERRMEM ? "the policy ran out of memory (its VM's cap)"
                                    : msg ? msg : "an error that is not a string");
    if (rc != 0)
        lua_pop(vm->L, 1);
    if (rc == LUA_ERRMEM)
        lua_gc(vm->L, LUA_GCCOLLECT, 0);
    return -1;
}

/* A VM with every policy of the set loaded; NULL with the reason in err. */
static av_pol_vm_t *vm_new(const av_policies_t *set, char *err, size_t errlen, int *bad)
{
    av_pol_vm_t *vm = av_calloc(1, sizeof(*vm));
    vm->set = set;
    vm->refs = av_calloc(set->n ? set->n : 1, sizeof(int));
    vm->chunk_refs = av_calloc(set->n ? set->n : 1, sizeof(int));
    vm->L = luaL_newstate();
    if (vm->L != NULL) {
        vm->lj_alloc = lua_getallocf(vm->L, &vm->lj_ud);
        vm->used = (size_t)lua_gc(vm->L, LUA_GCCOUNT, 0) * 1024 + (size_t)lua_gc(vm->L, LUA_GCCOUNTB, 0);
        lua_setallocf(vm->L, vm_alloc, vm);
    }
    if (vm->L == NULL) {
        snprintf(err, errlen, "cannot make a Lua VM (memory cap %lld bytes)", (long long)set->lim.memory_bytes);
        free(vm->refs);
        free(vm);
        return NULL;
    }
    lua_State *L = vm->L;
    luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF); /* interpreted: the hook sees every instruction */
    if (open_lib(L, luaopen_base, "") || open_lib(L, luaopen_string, LUA_STRLIBNAME) ||
        open_lib(L, luaopen_table, LUA_TABLIBNAME) || open_lib(L, luaopen_math, LUA_MATHLIBNAME) ||
        open_lib(L, luaopen_bit, LUA_BITLIBNAME)) {
        snprintf(err, errlen, "cannot open the Lua libraries: %s", lua_tostring(L, -1));
        vm_free(vm);
        return NULL;
    }
    if (install_counted(L) != 0) {
        snprintf(err, errlen, "cannot set up the sandbox: %s", lua_tostring(L, -1));
        vm_free(vm);
        return NULL;
    }
    av_luajson_init(L);
    /* strings' metatable: hidden, so a policy cannot reach the string library through it */
    lua_pushliteral(L, "");
    lua_getmetatable(L, -1);
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 2);
    /* r's metatable: methods read-only, r itself read-only but for ctx */
    lua_createtable(L, 0, 3);
    lua_newtable(L);
    for (const luaL_Reg *f = av_pol_r_methods; f->name; f++) {
        lua_pushcfunction(L, f->func);
        lua_setfield(L, -2, f->name);
    }
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, r_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    vm->r_mt = luaL_ref(L, LUA_REGISTRYINDEX);
    push_safe_globals(L);
    int safe = lua_gettop(L);
    lua_createtable(L, 0, 2);
    lua_pushcfunction(L, strict_index);
    lua_setfield(L, -2, "__index");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, safe);
    lua_sethook(L, budget_hook, LUA_MASKCOUNT, HOOK_EVERY);
    for (size_t i = 0; i < set->n; i++) {
        const av_pol_t *p = &set->pol[i];
        char chunk[600];
        snprintf(chunk, sizeof(chunk), "@%s", p->path);
        *bad = (int)i;
        if (luaL_loadbuffer(L, p->src, p->src_len, chunk) != 0) {
            snprintf(err, errlen, "%s", lua_tostring(L, -1));
            vm_free(vm);
            return NULL;
        }
        /* the policy's own globals: reads fall back to the sandbox's (and past
         * them to an error); new globals are refused */
        lua_newtable(L);
        lua_createtable(L, 0, 3);
        lua_pushvalue(L, safe);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, strict_newindex);
        lua_setfield(L, -2, "__newindex");
        lua_pushboolean(L, 0);
        lua_setfield(L, -2, "__metatable");
        lua_setmetatable(L, -2);
        lua_setfenv(L, -2);
        char why[512];
        if (vm_call(vm, 0, 1, PH_LOAD, i, why, sizeof(why)) != 0) {
            snprintf(err, errlen, "%s", why);
            vm_free(vm);
            return NULL;
        }
        if (!lua_istable(L, -1)) {
            snprintf(err, errlen, "%s:1: the policy must return a table of phase functions (got %s)", p->path,
                     lua_typename(L, lua_type(L, -1)));
            vm_free(vm);
            return NULL;
        }
        lua_getfield(L, -1, "on_chunk");
        vm->chunk_refs[i] = lua_isfunction(L, -1) ? luaL_ref(L, LUA_REGISTRYINDEX) : (lua_pop(L, 1), LUA_NOREF);
        vm->refs[i] = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    lua_createtable(L, K_NKEYS, 0);
    for (int k = 1; k < K_NKEYS; k++) {
        lua_pushstring(L, key_names[k]);
        lua_rawseti(L, -2, k);
    }
    vm->keys = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_settop(L, 0);
    *bad = -1;
    return vm;
}

/* ---- loading a set ---- */

static char *read_source(const char *path, size_t *len, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > (off_t)MAX_SOURCE) {
        snprintf(err, errlen, "%s: %s", path,
                 fd < 0 ? strerror(errno) : "not a regular file of at most 1 MiB");
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    char *buf = av_malloc((size_t)st.st_size + 1);
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    buf[got] = '\0';
    *len = got;
    return buf;
}

/* Checks the table a policy returned (in vm) and notes its phases. */
static int check_policy(av_pol_vm_t *vm, av_pol_t *p, size_t i, char *err, size_t errlen)
{
    lua_State *L = vm->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->refs[i]);
    int t = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, t) != 0) {
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
        int known = 0;
        for (int ph = 0; ph < 4; ph++)
            if (k != NULL && strcmp(k, phase_fn[ph]) == 0) {
                if (!lua_isfunction(L, -1)) {
                    snprintf(err, errlen, "%s:1: %s must be a function", p->path, k);
                    return -1;
                }
                p->phases |= 1u << ph;
                known = 1;
            }
        if (k != NULL && strcmp(k, "selftest") == 0 && lua_isfunction(L, -1))
            known = 1;
        if (k != NULL && (strcmp(k, "fail") == 0 || strcmp(k, "name") == 0 || strcmp(k, "description") == 0))
            known = 1;
        if (!known) {
            snprintf(err, errlen, "%s:1: unknown field \"%s\" in the policy's table (known: fail, description, "
                     "on_request, on_response, on_chunk, on_complete, selftest)", p->path, k ? k : "?");
            return -1;
        }
        lua_pop(L, 1);
    }
    lua_getfield(L, t, "fail");
    const char *fail = lua_tostring(L, -1);
    if (fail == NULL || (strcmp(fail, "open") != 0 && strcmp(fail, "closed") != 0)) {
        snprintf(err, errlen, "%s:1: the policy must say fail = \"open\" or fail = \"closed\" (what a request "
                 "gets when the policy errs)", p->path);
        return -1;
    }
    p->fail_closed = strcmp(fail, "closed") == 0;
    lua_getfield(L, t, "selftest");
    if (lua_isfunction(L, -1)) {
        char why[512];
        if (vm_call(vm, 0, 0, PH_SELFTEST, i, why, sizeof(why)) != 0) {
            snprintf(err, errlen, "%s: selftest failed: %s", p->path, why);
            return -1;
        }
    } else {
        lua_pop(L, 1);
    }
    lua_settop(L, 0);
    return 0;
}

av_policies_t *av_policies_load(const char *dir, const char *const *names, size_t n, const av_policy_limits_t *lim,
                                char *err, size_t errlen, int *bad)
{
    *bad = -1;
    av_policies_t *p = av_calloc(1, sizeof(*p));
    p->lim = *lim;
    p->pol = av_calloc(n ? n : 1, sizeof(*p->pol));
    for (size_t i = 0; i < n; i++) {
        av_pol_t *q = &p->pol[p->n];
        for (const char *c = names[i]; *c; c++)
            if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '_' ||
                  *c == '-')) {
                snprintf(err, errlen, "\"%s\" is not a policy name (letters, digits, _ and -)", names[i]);
                *bad = (int)i;
                av_policies_free(p);
                return NULL;
            }
        q->name = av_strdup(names[i]);
        size_t plen = strlen(dir) + strlen(names[i]) + 6;
        q->path = av_malloc(plen);
        snprintf(q->path, plen, "%s/%s.lua", dir, names[i]);
        p->n++;
        q->src = read_source(q->path, &q->src_len, err, errlen);
        if (q->src == NULL) {
            *bad = (int)i;
            av_policies_free(p);
            return NULL;
        }
    }
    av_pol_vm_t *vm = vm_new(p, err, errlen, bad); /* compiles them all; the selftests run in it */
    if (vm == NULL) {
        av_policies_free(p);
        return NULL;
    }
    for (size_t i = 0; i < p->n; i++)
        if (check_policy(vm, &p->pol[i], i, err, errlen) != 0) {
            *bad = (int)i;
            vm_free(vm);
            av_policies_free(p);
            return NULL;
        }
    vm_free(vm); /* the selftests ran in it: workers start from clean VMs */
    return p;
}

void av_policies_free(av_policies_t *p)
{
    if (p == NULL)
        return;
    for (size_t i = 0; i < AV_POLICY_MAX_WORKERS; i++)
        vm_free(p->vms[i]);
    for (size_t i = 0; i < p->n; i++) {
        free(p->pol[i].name);
        free(p->pol[i].path);
        free(p->pol[i].src);
    }
    free(p->pol);
    free(p);
}

int av_policies_find(const av_policies_t *p, const char *name)
{
    for (size_t i = 0; p != NULL && i < p->n; i++)
        if (strcmp(p->pol[i].name, name) == 0)
            return (int)i;
    return -1;
}

/* ---- phases ---- */

/* The worker's VM of the request's generation, made on first use. */
static av_pol_vm_t *worker_vm(av_req_t *req)
{
    av_policies_t *set = req->cfg->policies;
    int w = req->worker->id;
    if (set == NULL || w < 0 || w >= AV_POLICY_MAX_WORKERS)
        return NULL;
    if (set->vms[w] == NULL) {
        char err[1024];
        int bad;
        set->vms[w] = vm_new(set, err, sizeof(err), &bad);
        if (set->vms[w] == NULL) {
            AV_ERR("policies: worker %d cannot load them: %s", w, err);
            return NULL;
        }
    }
    return set->vms[w];
}

static void free_preq(av_pol_req_t *pr)
{
    av_pol_resp_free(pr);
    if (pr->vm == NULL)
        return;
    if (pr->r_ref != LUA_NOREF)
        luaL_unref(pr->vm->L, LUA_REGISTRYINDEX, pr->r_ref);
    if (pr->body_ref != LUA_NOREF)
        luaL_unref(pr->vm->L, LUA_REGISTRYINDEX, pr->body_ref);
    pr->r_ref = pr->body_ref = LUA_NOREF;
    pr->vm = NULL;
}

static av_pol_req_t *preq(av_req_t *req)
{
    if (req->policy != NULL)
        return req->policy;
    av_pol_req_t *pr = av_arena_calloc(req->arena, sizeof(*pr));
    pr->r_ref = pr->body_ref = LUA_NOREF;
    req->policy = pr;
    return pr;
}

/* Pushes r, made on the request's first call. */
static void push_r(av_pol_vm_t *vm, av_pol_req_t *pr)
{
    lua_State *L = vm->L;
    if (pr->r_ref != LUA_NOREF) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, pr->r_ref);
        return;
    }
    lua_createtable(L, 0, 1);
    lua_newtable(L);
    lua_setfield(L, -2, "ctx");
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->r_mt);
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    pr->r_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

/* Runs phase ph of the route's policies. Returns 1 when a policy denied or
 * a fail-closed policy erred (pr holds the answer), else 0. */
static int run_phase(av_req_t *req, unsigned ph, int ph_index, av_headers_t *resp)
{
    const av_route_t *rt = req->route;
    if (rt == NULL || rt->npolicies == 0)
        return 0;
    av_pol_vm_t *vm = worker_vm(req);
    av_pol_req_t *pr = preq(req);
    if (vm == NULL) { /* cannot happen once the set loaded; treated as every policy failing */
        pr->errors++;
        for (size_t k = 0; k < rt->npolicies; k++)
            if (req->cfg->policies->pol[rt->policies[k]].fail_closed) {
                pr->denied = 1;
                pr->status = 503;
                snprintf(pr->code, sizeof(pr->code), "policy_error");
                snprintf(pr->message, sizeof(pr->message), "the route's policies could not be loaded");
                return 1;
            }
        return 0;
    }
    if (pr->vm == NULL) {
        pr->vm = vm;
        av_arena_on_free(req->arena, (void (*)(void *))free_preq, pr);
    }
    lua_State *L = vm->L;
    vm->req = req;
    vm->pr = pr;
    vm->resp_headers = resp;
    int stop = 0;
    for (size_t k = 0; k < rt->npolicies && !stop; k++) {
        size_t i = (size_t)rt->policies[k];
        const av_pol_t *p = &vm->set->pol[i];
        if (!(p->phases & ph))
            continue;
        lua_rawgeti(L, LUA_REGISTRYINDEX, vm->refs[i]);
        lua_getfield(L, -1, phase_fn[ph_index]);
        lua_remove(L, -2);
        push_r(vm, pr);
        char err[512];
        if (vm_call(vm, 1, 0, ph, i, err, sizeof(err)) != 0) {
            pr->errors++;
            av_worker_policy_count(req->worker, p->name, "errors", 1);
            AV_WARN("policy %s: request %s: %s failed (%s): %s", p->name, req->id, phase_fn[ph_index],
                    ph == PH_COMPLETE ? "after the answer: counted only"
                    : p->fail_closed  ? "fail-closed: the request is refused"
                                      : "fail-open: the request goes on",
                    err);
            av_pol_verdict(pr, p->name, "error", phase_fn[ph_index]);
            if (p->fail_closed && ph != PH_COMPLETE && !pr->denied) {
                pr->denied = 1;
                pr->status = 503;
                snprintf(pr->code, sizeof(pr->code), "policy_error");
                snprintf(pr->message, sizeof(pr->message), "policy %s failed and is fail-closed", p->name);
                stop = 1;
            }
        } else if (pr->denied && ph != PH_COMPLETE) {
            av_worker_policy_count(req->worker, p->name, "denies", 1);
            stop = 1;
        }
        lua_settop(L, 0);
    }
    vm->req = NULL;
    vm->pr = NULL;
    vm->resp_headers = NULL;
    return pr->denied && ph != PH_COMPLETE;
}

int av_policy_request(av_req_t *req)
{
    return run_phase(req, PH_REQUEST, 0, NULL);
}

int av_policy_response(av_req_t *req, av_headers_t *hdrs)
{
    return run_phase(req, PH_RESPONSE, 1, hdrs);
}

void av_policy_complete(av_req_t *req)
{
    run_phase(req, PH_COMPLETE, 3, NULL);
}

int av_policy_wants_chunks(const av_req_t *req)
{
    const av_route_t *rt = req->route;
    if (rt == NULL || rt->npolicies == 0 || req->cfg->policies == NULL || req->shadow)
        return 0;
    for (size_t k = 0; k < rt->npolicies; k++)
        if (req->cfg->policies->pol[rt->policies[k]].phases & PH_CHUNK)
            return 1;
    return 0;
}

typedef struct {
    const char *key, *s;
    size_t key_len, n, val;
    int found;
} text_find_t;

static int on_text_key(void *arg, const char *k, size_t n, size_t val)
{
    text_find_t *t = arg;
    if (n == t->key_len && memcmp(k, t->key, n) == 0 && val < t->n && t->s[val] == '"') {
        t->val = val;
        t->found = 1;
        return 1;
    }
    return 0;
}

/* Where the answer's text is in an event's data: the value (quotes
 * included) of the dialect's text member. Returns 0 or -1. */
static int find_text(int dialect, const char *d, size_t n, size_t *off, size_t *len)
{
    text_find_t t = {.s = d, .n = n};
    switch (dialect) {
    case AV_DIALECT_CHAT: t.key = "content"; break;
    case AV_DIALECT_COMPLETIONS:
    case AV_DIALECT_ANTHROPIC: t.key = "text"; break;
    case AV_DIALECT_RESPONSES:
        if (memmem(d, n, "\"response.output_text.delta\"", 28) == NULL)
            return -1;
        t.key = "delta";
        break;
    default: return -1;
    }
    t.key_len = strlen(t.key);
    if (av_jscan_keys(d, n, on_text_key, &t) < 0 || !t.found)
        return -1;
    size_t i = t.val + 1;
    while (i < n && d[i] != '"')
        i += d[i] == '\\' ? 2 : 1;
    if (i >= n)
        return -1;
    *off = t.val;
    *len = i + 1 - t.val;
    return 0;
}

/* The closing quote of the string whose opening quote is at v, or NULL. */
static const char *string_close(const char *v, const char *end)
{
    const char *q = v + 1;
    while (q < end && *q != '"')
        q += *q == '\\' ? 2 : 1;
    return q < end ? q : NULL;
}

/* Appends an event with this data (lines split at newlines) and name. */
static void put_event(struct evbuffer *out, const char *name, size_t name_len, const char *d, size_t n)
{
    if (name != NULL)
        evbuffer_add_printf(out, "event: %.*s\n", (int)name_len, name);
    for (;;) {
        const char *nl = memchr(d, '\n', n);
        size_t k = nl ? (size_t)(nl - d) : n;
        evbuffer_add(out, "data: ", 6);
        evbuffer_add(out, d, k);
        evbuffer_add(out, "\n", 1);
        if (nl == NULL)
            break;
        d += k + 1;
        n -= k + 1;
    }
    evbuffer_add(out, "\n", 1);
}

/* The dialect's way to end a stream with an error a client SDK raises. */
static void put_stop(av_req_t *req, av_pol_req_t *pr, struct evbuffer *out)
{
    struct evbuffer *e = evbuffer_new();
    int dialect = av_body_dialect(req);
    if (dialect == AV_DIALECT_ANTHROPIC) {
        evbuffer_add_printf(e, "{\"type\":\"error\",\"error\":{\"type\":\"permission_error\",\"message\":");
        av_json_str(e, pr->stop_message, strlen(pr->stop_message));
        evbuffer_add(e, "}}", 2);
        put_event(out, "error", 5, (const char *)evbuffer_pullup(e, -1), evbuffer_get_length(e));
    } else if (dialect == AV_DIALECT_RESPONSES) {
        evbuffer_add_printf(e, "{\"type\":\"error\",\"code\":");
        av_json_str(e, pr->stop_rule, strlen(pr->stop_rule));
        evbuffer_add(e, ",\"message\":", 11);
        av_json_str(e, pr->stop_message, strlen(pr->stop_message));
        evbuffer_add(e, ",\"param\":null}", 14);
        put_event(out, "error", 5, (const char *)evbuffer_pullup(e, -1), evbuffer_get_length(e));
    } else {
        evbuffer_add_printf(e, "{\"error\":{\"message\":");
        av_json_str(e, pr->stop_message, strlen(pr->stop_message));
        evbuffer_add_printf(e, ",\"type\":\"policy_violation\",\"code\":");
        av_json_str(e, pr->stop_rule, strlen(pr->stop_rule));
        evbuffer_add_printf(e, ",\"request_id\":\"%s\"}}", req->id);
        put_event(out, NULL, 0, (const char *)evbuffer_pullup(e, -1), evbuffer_get_length(e));
        put_event(out, NULL, 0, "[DONE]", 6);
    }
    evbuffer_free(e);
}

int av_policy_chunk(av_req_t *req, const char *raw, size_t len, struct evbuffer *out)
{
    const av_route_t *rt = req->route;
    av_pol_vm_t *vm = worker_vm(req);
    av_pol_req_t *pr = preq(req);
    if (pr->stopped)
        return 1;
    if (vm == NULL) {
        evbuffer_add(out, raw, len);
        return 0;
    }
    if (pr->vm == NULL) {
        pr->vm = vm;
        av_arena_on_free(req->arena, (void (*)(void *))free_preq, pr);
    }
    /* the event's name and data (its data lines joined by newlines) */
    const char *name = NULL;
    size_t name_len = 0;
    struct evbuffer *data = NULL;
    const char *d = NULL;
    size_t dn = 0, ndata = 0;
    for (size_t i = 0; i < len;) {
        const char *nl = memchr(raw + i, '\n', len - i);
        size_t k = nl ? (size_t)(nl - (raw + i)) : len - i, l = k;
        const char *line = raw + i;
        i += k + 1;
        if (l > 0 && line[l - 1] == '\r')
            l--;
        if (l >= 6 && memcmp(line, "event:", 6) == 0) {
            name = line + 6 + (l > 6 && line[6] == ' ');
            name_len = l - (size_t)(name - line);
        } else if (l >= 5 && memcmp(line, "data:", 5) == 0) {
            const char *v = line + 5 + (l > 5 && line[5] == ' ');
            size_t vn = l - (size_t)(v - line);
            if (ndata++ == 0) {
                d = v;
                dn = vn;
            } else {
                if (data == NULL) {
                    data = evbuffer_new();
                    evbuffer_add(data, d, dn);
                }
                evbuffer_add(data, "\n", 1);
                evbuffer_add(data, v, vn);
            }
        }
    }
    if (data != NULL) {
        dn = evbuffer_get_length(data);
        d = (const char *)evbuffer_pullup(data, -1);
    }
    if (ndata == 0) { /* comments, retry: nothing to judge */
        evbuffer_add(out, raw, len);
        if (data != NULL)
            evbuffer_free(data);
        return 0;
    }
    size_t toff = 0, tlen = 0, pre = pr->tmpl_pre, suf = pr->tmpl_suf;
    int has_text;
    if (pre > 0 && dn >= pre + suf && memcmp(d, pr->tmpl, pre) == 0 &&
        memcmp(d + dn - suf, pr->tmpl + pre, suf) == 0 && string_close(d + pre - 1, d + dn) == d + dn - suf) {
        toff = pre - 1;
        tlen = dn - suf + 1 - toff;
        has_text = 1;
    } else {
        has_text = find_text(av_body_dialect(req), d, dn, &toff, &tlen) == 0;
        pre = toff + 1;
        suf = dn - (toff + tlen - 1);
        if (has_text && pre + suf <= sizeof(pr->tmpl)) {
            memcpy(pr->tmpl, d, pre);
            memcpy(pr->tmpl + pre, d + toff + tlen - 1, suf);
            pr->tmpl_pre = (uint16_t)pre;
            pr->tmpl_suf = (uint16_t)suf;
        }
    }
    lua_State *L = vm->L;
    vm->req = req;
    vm->pr = pr;
    /* the event table, shared by the route's on_chunk policies in turn; its
     * field names come from the keys table (interned once per VM) */
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->keys);
    int keys = lua_gettop(L);
#define SET_K(k) (lua_rawgeti(L, keys, (k)), lua_insert(L, -2), lua_rawset(L, ev))
#define GET_K(k) (lua_rawgeti(L, keys, (k)), lua_rawget(L, ev))
    lua_createtable(L, 0, 6);
    int ev = lua_gettop(L);
    lua_pushlstring(L, d, dn);
    SET_K(K_DATA);
    if (name != NULL) {
        lua_pushlstring(L, name, name_len);
        SET_K(K_EVENT);
    }
    lua_pushnumber(L, (lua_Number)++pr->events);
    SET_K(K_INDEX);
    if (dn == 6 && memcmp(d, "[DONE]", 6) == 0) {
        lua_pushboolean(L, 1);
        SET_K(K_DONE);
    }
    if (has_text) {
        char small[512];
        char *buf = tlen <= sizeof(small) ? small : av_malloc(tlen);
        long m = av_jscan_unescape(d + toff + 1, tlen - 2, buf);
        if (m >= 0) {
            lua_pushlstring(L, buf, (size_t)m);
            SET_K(K_TEXT);
        } else {
            has_text = 0;
        }
        if (buf != small)
            free(buf);
    }
    /* what the policies may change, kept to compare */
    GET_K(K_DATA);
    int data0 = lua_gettop(L);
    GET_K(K_TEXT);
    int text0 = lua_gettop(L);
    for (size_t k = 0; k < rt->npolicies && !pr->stopped; k++) {
        size_t i = (size_t)rt->policies[k];
        const av_pol_t *p = &vm->set->pol[i];
        if (!(p->phases & PH_CHUNK))
            continue;
        lua_rawgeti(L, LUA_REGISTRYINDEX, vm->chunk_refs[i]);
        push_r(vm, pr);
        lua_pushvalue(L, ev);
        char err[512];
        if (vm_call(vm, 2, 0, PH_CHUNK, i, err, sizeof(err)) != 0) {
            pr->errors++;
            av_worker_policy_count(req->worker, p->name, "errors", 1);
            AV_WARN("policy %s: request %s: on_chunk failed (%s): %s", p->name, req->id,
                    p->fail_closed ? "fail-closed: the stream is stopped" : "fail-open: the stream goes on", err);
            av_pol_verdict(pr, p->name, "error", "on_chunk");
            if (p->fail_closed) {
                pr->stopped = 1;
                snprintf(pr->stop_rule, sizeof(pr->stop_rule), "policy_error");
                snprintf(pr->stop_message, sizeof(pr->stop_message), "policy %s failed and is fail-closed", p->name);
            }
        }
    }
    int stopped = pr->stopped;
    if (stopped) {
        put_stop(req, pr, out);
    } else {
        GET_K(K_DROP);
        int drop = lua_toboolean(L, -1);
        lua_pop(L, 1);
        GET_K(K_DATA);
        GET_K(K_TEXT);
        int data_changed = !lua_rawequal(L, -2, data0), text_changed = !lua_rawequal(L, -1, text0);
        GET_K(K_BEFORE); /* events to send first: strings (data) or {event =, data =} */
        int bt = lua_gettop(L);
        for (int k = 1; lua_istable(L, bt); k++) {
            lua_rawgeti(L, bt, k);
            int item = lua_gettop(L);
            if (lua_isnil(L, item))
                break;
            size_t bn = 0, en = 0;
            const char *bd = NULL, *ename = NULL;
            if (lua_type(L, item) == LUA_TSTRING) {
                bd = lua_tolstring(L, item, &bn);
            } else if (lua_istable(L, item)) {
                lua_getfield(L, item, "data");
                lua_getfield(L, item, "event");
                if (lua_type(L, item + 1) == LUA_TSTRING)
                    bd = lua_tolstring(L, item + 1, &bn);
                if (lua_type(L, item + 2) == LUA_TSTRING)
                    ename = lua_tolstring(L, item + 2, &en);
            }
            if (bd != NULL)
                put_event(out, ename, en, bd, bn);
            lua_settop(L, bt);
        }
        lua_settop(L, bt - 1);
        int responses = av_body_dialect(req) == AV_DIALECT_RESPONSES;
        char *closing = NULL;
        size_t closing_len = 0;
        if (responses && !drop && !data_changed) {
            if (has_text && lua_type(L, -1) == LUA_TSTRING) { /* a delta: its text as it goes out */
                size_t n;
                const char *nt = lua_tolstring(L, -1, &n);
                av_pol_resp_delta(pr, d, dn, nt, n, text_changed);
            } else if (!has_text) {
                closing = av_pol_resp_rewrite(pr, d, dn, &closing_len);
            }
        }
        if (drop) {
            /* nothing goes out */
        } else if (data_changed && lua_type(L, -2) == LUA_TSTRING) {
            size_t n;
            const char *nd = lua_tolstring(L, -2, &n);
            put_event(out, name, name_len, nd, n);
        } else if (text_changed && has_text && lua_type(L, -1) == LUA_TSTRING) {
            size_t n;
            const char *nt = lua_tolstring(L, -1, &n);
            struct evbuffer *e = evbuffer_new();
            evbuffer_add(e, d, toff);
            av_json_str(e, nt, n);
            evbuffer_add(e, d + toff + tlen, dn - toff - tlen);
            put_event(out, name, name_len, (const char *)evbuffer_pullup(e, -1), evbuffer_get_length(e));
            evbuffer_free(e);
        } else if (closing != NULL) {
            put_event(out, name, name_len, closing, closing_len);
        } else {
            evbuffer_add(out, raw, len);
        }
        free(closing);
    }
#undef SET_K
#undef GET_K
    lua_settop(L, 0);
    vm->req = NULL;
    vm->pr = NULL;
    if (data != NULL)
        evbuffer_free(data);
    return stopped;
}

void av_policy_done(av_req_t *req)
{
    if (req->policy != NULL)
        free_preq(req->policy);
}

size_t av_policy_verdicts(const av_req_t *req, const av_verdict_t **v)
{
    const av_pol_req_t *pr = req->policy;
    *v = pr ? pr->verdicts : NULL;
    return pr ? pr->nverdicts : 0;
}

int av_policy_errors(const av_req_t *req)
{
    return req->policy ? ((const av_pol_req_t *)req->policy)->errors : 0;
}

void av_policy_denial(const av_req_t *req, int *status, const char **code, const char **message)
{
    const av_pol_req_t *pr = req->policy;
    *status = pr->status;
    *code = pr->code;
    *message = pr->message;
}
