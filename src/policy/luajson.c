/* luajson.c: a recursive decoder that pushes Lua values straight from the
 * text (no tree in between), and an encoder that walks Lua tables. */
#include "luajson.h"

#include <event2/buffer.h>
#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "av.h"
#include "jscan.h"
#include "jsonw.h"

static char array_mt_key; /* its address keys the registry */

void av_luajson_init(lua_State *L)
{
    lua_pushlightuserdata(L, &array_mt_key);
    lua_createtable(L, 0, 1);
    lua_pushstring(L, "array");
    lua_setfield(L, -2, "__name");
    lua_rawset(L, LUA_REGISTRYINDEX);
}

void av_luajson_array_mt(lua_State *L)
{
    lua_pushlightuserdata(L, &array_mt_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
}

/* ---- decoding ---- */

typedef struct {
    lua_State *L;
    const char *s;
    size_t n, i;
    const char *why;
} dec_t;

static void ws(dec_t *d)
{
    while (d->i < d->n && (d->s[d->i] == ' ' || d->s[d->i] == '\n' || d->s[d->i] == '\r' || d->s[d->i] == '\t'))
        d->i++;
}

static int fail(dec_t *d, const char *why)
{
    d->why = why;
    return -1;
}

/* At an opening quote: pushes the string, moves past its closing quote. */
static int dec_string(dec_t *d)
{
    size_t start = ++d->i;
    int escaped = 0;
    while (d->i < d->n) {
        unsigned char c = (unsigned char)d->s[d->i];
        if (c == '"')
            break;
        if (c < 0x20)
            return fail(d, "a control character in a string");
        if (c == '\\') {
            escaped = 1;
            d->i++;
        }
        d->i++;
    }
    if (d->i >= d->n)
        return fail(d, "an unterminated string");
    size_t len = d->i - start;
    d->i++;
    if (!escaped) {
        lua_pushlstring(d->L, d->s + start, len);
        return 0;
    }
    char small[512];
    char *buf = len < sizeof(small) ? small : av_malloc(len + 1);
    long m = av_jscan_unescape(d->s + start, len, buf);
    if (m >= 0)
        lua_pushlstring(d->L, buf, (size_t)m);
    if (buf != small)
        free(buf);
    return m < 0 ? fail(d, "a bad escape in a string") : 0;
}

static int dec_number(dec_t *d)
{
    char buf[64];
    size_t k = 0;
    while (d->i < d->n && k < sizeof(buf) - 1 && strchr("+-0123456789.eE", d->s[d->i]) != NULL && d->s[d->i])
        buf[k++] = d->s[d->i++];
    buf[k] = '\0';
    char *end;
    double v = strtod(buf, &end);
    if (k == 0 || *end != '\0' || !(buf[0] == '-' || (buf[0] >= '0' && buf[0] <= '9')))
        return fail(d, "a bad number");
    lua_pushnumber(d->L, v);
    return 0;
}

static int dec_value(dec_t *d, int depth)
{
    ws(d);
    if (d->i >= d->n)
        return fail(d, "the text ends where a value should be");
    if (depth > AV_LUAJSON_MAX_DEPTH)
        return fail(d, "nested too deeply");
    if (!lua_checkstack(d->L, 4))
        return fail(d, "out of stack");
    char c = d->s[d->i];
    if (c == '"')
        return dec_string(d);
    if (c == '{') {
        d->i++;
        lua_createtable(d->L, 0, 4);
        ws(d);
        if (d->i < d->n && d->s[d->i] == '}') {
            d->i++;
            return 0;
        }
        for (;;) {
            ws(d);
            if (d->i >= d->n || d->s[d->i] != '"')
                return fail(d, "a member name should be here");
            if (dec_string(d) != 0)
                return -1;
            ws(d);
            if (d->i >= d->n || d->s[d->i] != ':')
                return fail(d, "':' should be here");
            d->i++;
            if (dec_value(d, depth + 1) != 0)
                return -1;
            lua_rawset(d->L, -3);
            ws(d);
            if (d->i < d->n && d->s[d->i] == ',') {
                d->i++;
                continue;
            }
            if (d->i < d->n && d->s[d->i] == '}') {
                d->i++;
                return 0;
            }
            return fail(d, "',' or '}' should be here");
        }
    }
    if (c == '[') {
        d->i++;
        lua_createtable(d->L, 4, 0);
        av_luajson_array_mt(d->L);
        lua_setmetatable(d->L, -2);
        ws(d);
        if (d->i < d->n && d->s[d->i] == ']') {
            d->i++;
            return 0;
        }
        for (int k = 1;; k++) {
            if (dec_value(d, depth + 1) != 0)
                return -1;
            lua_rawseti(d->L, -2, k);
            ws(d);
            if (d->i < d->n && d->s[d->i] == ',') {
                d->i++;
                continue;
            }
            if (d->i < d->n && d->s[d->i] == ']') {
                d->i++;
                return 0;
            }
            return fail(d, "',' or ']' should be here");
        }
    }
    static const struct {
        const char *word;
        size_t len;
        int kind;
    } lit[] = {{"true", 4, 1}, {"false", 5, 0}, {"null", 4, -1}};
    for (size_t k = 0; k < AV_NELEMS(lit); k++)
        if (d->n - d->i >= lit[k].len && memcmp(d->s + d->i, lit[k].word, lit[k].len) == 0) {
            d->i += lit[k].len;
            if (lit[k].kind < 0)
                lua_pushlightuserdata(d->L, NULL);
            else
                lua_pushboolean(d->L, lit[k].kind);
            return 0;
        }
    return dec_number(d);
}

int av_luajson_decode(lua_State *L, const char *text, size_t len, char *err, size_t errlen)
{
    int top = lua_gettop(L);
    dec_t d = {.L = L, .s = text, .n = len};
    if (dec_value(&d, 0) == 0) {
        ws(&d);
        if (d.i == d.n)
            return 0;
        d.why = "text after the value";
    }
    lua_settop(L, top);
    snprintf(err, errlen, "%s at byte %zu", d.why, d.i);
    return -1;
}

/* ---- encoding ---- */

typedef struct {
    lua_State *L;
    struct evbuffer *out;
    char *err;
    size_t errlen;
} enc_t;

static int efail(enc_t *e, const char *fmt, const char *detail)
{
    snprintf(e->err, e->errlen, fmt, detail);
    return -1;
}

static void put_str(enc_t *e, const char *s, size_t len)
{
    av_json_str(e->out, s, len);
}

/* Whether the table at idx is an array: the array metatable, or keys 1..n. */
static int is_array(lua_State *L, int idx)
{
    if (lua_getmetatable(L, idx)) {
        av_luajson_array_mt(L);
        int same = lua_rawequal(L, -1, -2);
        lua_pop(L, 2);
        if (same)
            return 1;
    }
    size_t n = lua_objlen(L, idx), keys = 0;
    if (n == 0)
        return 0;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        keys++;
        /* each key a whole number from 1 to n: {[0] = "z", [2] = 1} has length 2 and
         * two keys, and is an object (it was written [null, 1], its key 0 lost) */
        lua_Number k = lua_type(L, -1) == LUA_TNUMBER ? lua_tonumber(L, -1) : 0;
        if (!(k >= 1 && k <= (lua_Number)n && k == (lua_Number)(size_t)k)) {
            lua_pop(L, 1);
            return 0;
        }
    }
    return keys == n;
}

static int enc_value(enc_t *e, int idx, int depth)
{
    lua_State *L = e->L;
    if (idx < 0)
        idx = lua_gettop(L) + idx + 1;
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        evbuffer_add(e->out, "null", 4);
        return 0;
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) != NULL)
            return efail(e, "%s cannot be written as JSON", "a userdata");
        evbuffer_add(e->out, "null", 4);
        return 0;
    case LUA_TBOOLEAN:
        if (lua_toboolean(L, idx))
            evbuffer_add(e->out, "true", 4);
        else
            evbuffer_add(e->out, "false", 5);
        return 0;
    case LUA_TNUMBER: {
        double v = lua_tonumber(L, idx);
        if (!isfinite(v))
            return efail(e, "%s cannot be written as JSON", "a NaN or infinite number");
        if (v == floor(v) && fabs(v) < 9007199254740992.0)
            evbuffer_add_printf(e->out, "%lld", (long long)v);
        else
            evbuffer_add_printf(e->out, "%.17g", v);
        return 0;
    }
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        put_str(e, s, len);
        return 0;
    }
    case LUA_TTABLE:
        break;
    default:
        return efail(e, "a %s cannot be written as JSON", lua_typename(L, lua_type(L, idx)));
    }
    if (depth >= AV_LUAJSON_MAX_DEPTH)
        return efail(e, "%s", "tables nested too deeply (or a table that contains itself)");
    if (!lua_checkstack(L, 4))
        return efail(e, "%s", "out of stack");
    if (is_array(L, idx)) {
        size_t n = lua_objlen(L, idx);
        evbuffer_add(e->out, "[", 1);
        for (size_t k = 1; k <= n; k++) {
            if (k > 1)
                evbuffer_add(e->out, ",", 1);
            lua_rawgeti(L, idx, (int)k);
            int rc = enc_value(e, -1, depth + 1);
            lua_pop(L, 1);
            if (rc != 0)
                return -1;
        }
        evbuffer_add(e->out, "]", 1);
        return 0;
    }
    evbuffer_add(e->out, "{", 1);
    int first = 1;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        if (lua_type(L, -2) != LUA_TSTRING) {
            lua_pop(L, 2);
            return efail(e, "%s", "an object key that is not a string");
        }
        if (!first)
            evbuffer_add(e->out, ",", 1);
        first = 0;
        size_t klen;
        const char *k = lua_tolstring(L, -2, &klen);
        put_str(e, k, klen);
        evbuffer_add(e->out, ":", 1);
        int rc = enc_value(e, -1, depth + 1);
        lua_pop(L, 1);
        if (rc != 0) {
            lua_pop(L, 1);
            return -1;
        }
    }
    evbuffer_add(e->out, "}", 1);
    return 0;
}

int av_luajson_encode(lua_State *L, int idx, struct evbuffer *out, char *err, size_t errlen)
{
    enc_t e = {L, out, err, errlen};
    int top = lua_gettop(L);
    int rc = enc_value(&e, idx, 0);
    lua_settop(L, top);
    return rc;
}
