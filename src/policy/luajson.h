/* luajson.h: JSON text to Lua values and back, for policies. Objects become
 * tables, arrays tables marked with the array metatable (so an empty array
 * stays an array), null the light userdata aviary.null. Member order is not
 * kept: a body a policy writes back is the same JSON, not the same bytes. */
#ifndef AV_LUAJSON_H
#define AV_LUAJSON_H

#include <lua.h>
#include <stddef.h>

struct evbuffer;

#define AV_LUAJSON_MAX_DEPTH 64

/* Stores the array metatable in the registry; once per VM. */
void av_luajson_init(lua_State *L);
/* Pushes the array metatable. */
void av_luajson_array_mt(lua_State *L);
/* Pushes the value text holds (exactly one, whitespace around it allowed).
 * Returns 0, or -1 with nothing pushed and the reason and byte offset in err. */
int av_luajson_decode(lua_State *L, const char *text, size_t len, char *err, size_t errlen);
/* Appends the value at index idx as JSON. A table is an array when it has
 * the array metatable, or when its keys are exactly 1..n with n > 0; else an
 * object, whose keys must be strings. Returns 0, or -1 with the reason (a
 * function, a NaN, a key that is not a string, nesting past the limit). */
int av_luajson_encode(lua_State *L, int idx, struct evbuffer *out, char *err, size_t errlen);

#endif
