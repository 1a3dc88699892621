/* test_luajson.c: JSON to Lua and back: round trips keep the value (arrays,
 * empty arrays, null, escapes, numbers), bad text is refused with its
 * offset, and what Lua cannot say in JSON is refused with the reason. */
#include <event2/buffer.h>
#include <lauxlib.h>
#include <lualib.h>
#include <stdlib.h>

#include "luajson.h"
#include "../test.h"

static lua_State *L;

/* decode then encode: the text back (objects with one member keep their order) */
static const char *round_trip(const char *in)
{
    static char out[512];
    char err[128];
    if (av_luajson_decode(L, in, strlen(in), err, sizeof(err)) != 0) {
        snprintf(out, sizeof(out), "ERR %s", err);
        return out;
    }
    struct evbuffer *b = evbuffer_new();
    if (av_luajson_encode(L, -1, b, err, sizeof(err)) != 0)
        snprintf(out, sizeof(out), "ERR %s", err);
    else
        snprintf(out, sizeof(out), "%.*s", (int)evbuffer_get_length(b), (const char *)evbuffer_pullup(b, -1));
    evbuffer_free(b);
    lua_settop(L, 0);
    return out;
}

static void test_round_trips(void)
{
    CHECK_STR(round_trip("[1,2.5,-3,true,false,null,\"a\"]"), "[1,2.5,-3,true,false,null,\"a\"]");
    CHECK_STR(round_trip("[]"), "[]");
    CHECK_STR(round_trip("{}"), "{}");
    CHECK_STR(round_trip(" {\"a\" : [ [], {} ] } "), "{\"a\":[[],{}]}");
    CHECK_STR(round_trip("\"q\\\"\\\\\\n\\u00e9\\ud83d\\ude00\""), "\"q\\\"\\\\\\n\xc3\xa9\xf0\x9f\x98\x80\"");
    CHECK_STR(round_trip("1e3"), "1000");
    CHECK_STR(round_trip("12345678901234567"), "12345678901234568");
    CHECK_STR(round_trip("0.1"), "0.10000000000000001");
}

static void test_rejects(void)
{
    CHECK_STR(round_trip("{\"a\":1,}"), "ERR a member name should be here at byte 7");
    CHECK_STR(round_trip("[1 2]"), "ERR ',' or ']' should be here at byte 3");
    CHECK_STR(round_trip("\"abc"), "ERR an unterminated string at byte 4");
    CHECK_STR(round_trip("[1] x"), "ERR text after the value at byte 4");
    CHECK_STR(round_trip("tru"), "ERR a bad number at byte 0");
    char deep[200];
    memset(deep, '[', 100);
    memset(deep + 100, ']', 100);
    char in[201];
    memcpy(in, deep, 200);
    in[200] = '\0';
    CHECK(strncmp(round_trip(in), "ERR nested too deeply", 21) == 0);
}

static const char *encode_lua(const char *chunk)
{
    static char out[256];
    char err[160];
    if (luaL_dostring(L, chunk) != 0) {
        snprintf(out, sizeof(out), "LUA %s", lua_tostring(L, -1));
        lua_settop(L, 0);
        return out;
    }
    struct evbuffer *b = evbuffer_new();
    if (av_luajson_encode(L, -1, b, err, sizeof(err)) != 0)
        snprintf(out, sizeof(out), "ERR %s", err);
    else
        snprintf(out, sizeof(out), "%.*s", (int)evbuffer_get_length(b), (const char *)evbuffer_pullup(b, -1));
    evbuffer_free(b);
    lua_settop(L, 0);
    return out;
}

static void test_encode_lua(void)
{
    CHECK_STR(encode_lua("return {1, 2, 3}"), "[1,2,3]");
    CHECK_STR(encode_lua("return {[1] = 'a', [3] = 'c'}"), "ERR an object key that is not a string");
    CHECK_STR(encode_lua("return {x = 1}"), "{\"x\":1}");
    CHECK_STR(encode_lua("return {f = print}"), "ERR a function cannot be written as JSON");
    CHECK_STR(encode_lua("return {0/0}"), "ERR a NaN or infinite number cannot be written as JSON");
    CHECK(strncmp(encode_lua("local t = {} t.t = t return t"), "ERR tables nested too deeply", 28) == 0);
    CHECK_STR(encode_lua("return 'tab\\tctl\\1'"), "\"tab\\u0009ctl\\u0001\"");
}

int main(void)
{
    L = luaL_newstate();
    luaL_openlibs(L);
    av_luajson_init(L);
    RUN(test_round_trips);
    RUN(test_rejects);
    RUN(test_encode_lua);
    lua_close(L);
    TEST_DONE();
}
