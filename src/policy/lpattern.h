/* lpattern.h: string.find, match, gmatch and gsub for policy VMs, on a Lua
 * pattern matcher of our own that counts its steps, so that a budget holds
 * inside a call as it does between the VM's instructions. */
#ifndef AV_LPATTERN_H
#define AV_LPATTERN_H

#include <lua.h>
#include <stdint.h>

/* How a VM pays for matching. charge is called every few thousand steps
 * and at the end of each call with the steps since its last call; it may
 * raise a Lua error to cut the call off (the matcher holds no memory of its
 * own, so a longjmp out of it leaks nothing). A step is one pattern item
 * tried at one place, or one byte a repetition looks at (a quarter of one
 * past a few hundred: byte tables); a search that skips with memchr,
 * strcspn or memmem costs one step per 16 bytes it passes. */
typedef struct {
    void (*charge)(lua_State *L, uint32_t steps);
    /* Around each call of gsub's function or table: a function that calls
     * gsub calls back into C, and the C stack has no room for that without
     * end (LuaJIT's own gsub crashes the process there). enter may raise an
     * error; after one, leave is not called. Either may be NULL. */
    void (*enter)(lua_State *L);
    void (*leave)(lua_State *L);
} av_lpat_budget_t;

/* Sets find, match, gmatch and gsub in the table at index t (a string
 * library) to the counted ones, which pay through budget (kept by
 * pointer: it must outlive the VM). They behave as LuaJIT 2.1's do: the
 * same results, captures, errors and quirks (a pattern ends at its first
 * NUL; '^' is a plain character in gmatch), with these differences: a
 * plain find is linear in the subject (LuaJIT's is subject times needle),
 * a gsub that replaced nothing returns its subject itself, and gsub's
 * calls of a function or table are bounded by budget->enter. */
void av_lpat_open(lua_State *L, int t, const av_lpat_budget_t *budget);

#endif
