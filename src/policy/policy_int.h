/* policy_int.h: what policy.c (sets, VMs, sandbox, phases, on_chunk) and
 * policy_api.c (the request object r and the aviary table) share. Not a public surface. */
#ifndef AV_POLICY_INT_H
#define AV_POLICY_INT_H

#include <lauxlib.h>
#include <lua.h>
#include <stddef.h>
#include <stdint.h>

#include "headers.h"
#include "policy.h"
#include "req_t.h"

#define AV_POLICY_MAX_WORKERS 256

/* The phase a call runs in, which r's calls check (the PH_ names are this header's own). */
enum { PH_REQUEST = 1, PH_RESPONSE = 2, PH_CHUNK = 4, PH_COMPLETE = 8, PH_SELFTEST = 16, PH_LOAD = 32 };

typedef struct av_pol_vm_s av_pol_vm_t;

typedef struct {
    char *name, *path, *src;
    size_t src_len;
    int fail_closed;
    unsigned phases;
} av_pol_t;

struct av_policies_s {
    av_policy_limits_t lim;
    av_pol_t *pol;
    size_t n;
    av_pol_vm_t *vms[AV_POLICY_MAX_WORKERS];
};

struct av_pol_vm_s {
    lua_State *L;
    const av_policies_t *set;
    size_t used;
    lua_Alloc lj_alloc;        /* LuaJIT's allocator, which vm_alloc counts and caps */
    void *lj_ud;
    int *refs;                 /* per policy: its table */
    int *chunk_refs;           /* per policy: its on_chunk, or LUA_NOREF */
    int r_mt;                  /* the metatable of r */
    int keys;                  /* a table of the event's field names, by K_* (no hashing per event) */
    /* the call running */
    int active;
    int64_t count;             /* instructions so far, and what C work is worth in them */
    int64_t next_clock;        /* count at which the clock is read next */
    uint32_t steps;            /* C work not yet counted (AV_POL_STEPS_PER_INSTRUCTION make one) */
    size_t alloc_since;        /* bytes allocated since the clock was last read */
    int spent;                 /* the budget ran out: the call fails whatever it catches */
    int cdepth;                /* C functions that call back into Lua, running inside each other */
    char spent_why[96];
    uint64_t deadline_us;
    unsigned phase;
    size_t policy;
    av_req_t *req;
    struct av_preq_s *pr;
    av_headers_t *resp_headers;
};

/* A Responses API stream's text as sent, per (output, content) part. */
#define AV_POL_RESP_PARTS 8
typedef struct {
    int64_t output, content;
    struct evbuffer *text;
} av_pol_resp_part_t;

/* A request's policy state, in its arena. */
typedef struct av_preq_s {
    av_pol_vm_t *vm;
    int r_ref, body_ref;
    int body_dirty;            /* r:set_body() was called */
    int denied, status;
    char code[64], message[512];
    int errors;
    int stopped;               /* r:stop(): the stream ends */
    char stop_rule[64], stop_message[512];
    uint64_t events;
    /* the last text event's bytes around its text (as in usage.c): the next
     * one with the same bytes there has its text found without a scan */
    uint16_t tmpl_pre, tmpl_suf;
    char tmpl[320];
    av_verdict_t verdicts[AV_VERDICTS_MAX];
    size_t nverdicts;
    /* a Responses stream: the delta text sent, for its closing events (policy_resp.c) */
    av_pol_resp_part_t resp[AV_POL_RESP_PARTS];
    size_t nresp;
    int resp_rewrote, resp_overflow;
} av_pol_req_t;

/* policy_resp.c: an output_text.delta's text as sent (changed: a policy
 * rewrote it); the data of a closing event with the sent text put in, or
 * NULL to send it as it is (nothing was rewritten, or it holds no text). */
void av_pol_resp_delta(av_pol_req_t *pr, const char *d, size_t dn, const char *text, size_t tn, int changed);
char *av_pol_resp_rewrite(av_pol_req_t *pr, const char *d, size_t dn, size_t *out_len);
void av_pol_resp_free(av_pol_req_t *pr);

/* The VM a Lua state belongs to: its allocator's user data. */
static inline av_pol_vm_t *av_pol_vm_of(lua_State *L)
{
    void *ud;
    lua_getallocf(L, &ud);
    return ud;
}

/* Steps of C work (a pattern item tried, a table element moved, a few
 * bytes of JSON) one instruction of the budget is worth. A step costs
 * about what an interpreted instruction does, a few nanoseconds at most;
 * at 16, C work gets more room than Lua code: a pass over a 1 MiB prompt
 * is at most 64 K instructions of the default million, while a match that
 * grows faster than its input (quadratic over 20 KB: 10^8 steps and more)
 * is stopped after 16 M steps, some tens of milliseconds. */
#define AV_POL_STEPS_PER_INSTRUCTION 16

/* policy.c: charges steps of C work to the running call's budget; raises
 * the budget's error when it ran out (at once when it already had). */
void av_pol_spend_steps(lua_State *L, uint64_t steps);
/* policy.c: replaces the table on top of the stack by a read-only view of it
 * (writes fail naming name). */
void av_pol_make_readonly(lua_State *L, const char *name);
/* policy_api.c: notes a verdict once per policy, action and rule. */
void av_pol_verdict(av_pol_req_t *pr, const char *policy, const char *action, const char *rule);
/* policy_api.c: r's methods and the aviary table's functions. */
extern const luaL_Reg av_pol_r_methods[];
extern const luaL_Reg av_pol_aviary_fns[];

#endif
