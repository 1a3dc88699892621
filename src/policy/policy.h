/* policy.h: guardrail policies in Lua (LuaJIT). A policy is a file that
 * returns a table: `fail = "open"|"closed"`, and any of the phase functions
 * on_request(r), on_response(r), on_chunk(r, event), on_complete(r), plus an
 * optional selftest(). A config generation compiles the policies its routes
 * name into a set; each worker thread gets its own VM of that set, made the
 * first time the worker needs it, from the source read at load (so a file
 * changed since is not half-seen). Policy code runs interpreted (the JIT is
 * off in these VMs, so the instruction hook cannot be skipped), with an
 * instruction and a wall-time budget per call and a memory cap per VM, in a
 * sandbox: no io, os, debug, ffi, require, load; strict globals; read-only
 * API tables. The budget holds inside C calls too: string patterns run on a
 * matcher that counts its steps (lpattern.c), table.insert, JSON and
 * bodies count what they move, allocations read the clock, and a policy
 * cannot catch the budget's error and run on. */
#ifndef AV_POLICY_H
#define AV_POLICY_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "kpilog.h"
#include "req_t.h"

typedef struct av_policies_s av_policies_t;


#define AV_VERDICTS_MAX 8

/* Reads, compiles and selftests the policies named (dir/NAME.lua). Returns
 * NULL with "file:line: reason" in err and the failing policy's index in
 * *bad (-1 when none is to blame). */
av_policies_t *av_policies_load(const char *dir, const char *const *names, size_t n, const av_policy_limits_t *lim,
                                char *err, size_t errlen, int *bad);
void av_policies_free(av_policies_t *p);
/* The index of a policy in the set, or -1. */
int av_policies_find(const av_policies_t *p, const char *name);

/* The phases, each running the route's policies in order. on_request returns
 * 0 to go on, or 1 when the request was answered (a deny, or a fail-closed
 * policy's error). */
int av_policy_request(av_req_t *req);
/* Status and headers known: policies may deny (the body is then an error),
 * read and set response headers. Returns 0, or 1 to answer with the error
 * the policy set (req->policy holds it). */
int av_policy_response(av_req_t *req, av_headers_t *hdrs);
void av_policy_complete(av_req_t *req);
/* Whether the request's route has a policy with on_chunk. */
int av_policy_wants_chunks(const av_req_t *req);
/* One whole SSE event of the answer (raw bytes, blank line included): runs
 * on_chunk and appends what the client gets to out: the event as it was,
 * rewritten (event.text or event.data changed), nothing (event.drop), or,
 * when a policy called r:stop(), the dialect's closing (OpenAI: an error
 * event and [DONE]; Anthropic and Responses: an error event). Returns 1
 * after a stop: nothing more goes to the client. */
int av_policy_chunk(av_req_t *req, const char *raw, size_t len, struct evbuffer *out);
/* Lets go of the request's Lua state; before the config is let go. */
void av_policy_done(av_req_t *req);

/* What the policies decided, for the KPI line: verdicts and errors. */
size_t av_policy_verdicts(const av_req_t *req, const av_verdict_t **v);
int av_policy_errors(const av_req_t *req);
/* A deny's answer, once av_policy_request or av_policy_response said 1. */
void av_policy_denial(const av_req_t *req, int *status, const char **code, const char **message);

#endif
