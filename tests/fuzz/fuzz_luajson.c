/* fuzz_luajson.c: the Lua JSON bridge (luajson.c), both ways. The first
 * byte picks the direction.
 *  - Even: JSON text to Lua. Valid JSON decodes, within the decoder's limits
 *    (\u0000, long numbers, nesting past 64); what decodes, cJSON reads to the same
 *    value; the value encodes again (unless it holds a number JSON cannot
 *    say) to strict JSON that decodes to it.
 *  - Odd: Lua values built by a small program in the input (tables, arrays,
 *    cycles, functions, NaN, sparse keys, bytes that are not UTF-8). The
 *    encoder refuses exactly what luajson.h says it refuses; what it writes
 *    is strict JSON that decodes to the same value (arrays by the array
 *    metatable or keys 1..n, nil and aviary.null as null).
 * fuzz-options: -max_len=4096 */
#include <cjson/cJSON.h>
#include <event2/buffer.h>
#include <lauxlib.h>
#include <lua.h>
#include <math.h>

#include "av.h"
#include "fuzz.h"
#include "jscan.h"
#include "luajson.h"

static lua_State *L;

enum { Q_NUL = 1, Q_SURROGATE = 2, Q_LONG_NUMBER = 4, Q_DEEP = 8 };
static unsigned quirks(const char *s, size_t n);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    L = luaL_newstate();
    av_luajson_init(L);
    return 0;
}

static int count_one(void *arg, const av_jmember_t *m)
{
    ++*(int *)arg;
    return 0;
}

/* Strict JSON: the scanner checks it (as an array's element), cJSON reads it. */
static cJSON *strict(const char *s, size_t n)
{
    char *wrapped = malloc(n + 2);
    wrapped[0] = '[';
    if (n > 0)
        memcpy(wrapped + 1, s, n);
    wrapped[n + 1] = ']';
    size_t off;
    int values = 0;
    int ok = av_jscan_array(wrapped, n + 2, count_one, &values, &off) == 0 && values == 1;
    free(wrapped);
    if (!ok)
        return NULL;
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(s, n, &end, 0);
    return j;
}

static int is_array_mt(int idx)
{
    if (!lua_getmetatable(L, idx))
        return 0;
    av_luajson_array_mt(L);
    int same = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return same;
}

static int is_null(int idx)
{
    return lua_isnil(L, idx) || (lua_type(L, idx) == LUA_TLIGHTUSERDATA && lua_touserdata(L, idx) == NULL);
}

/* ---- Lua against cJSON ---- */

static int same_as_cjson(int idx, const cJSON *j)
{
    idx = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
    if (cJSON_IsNull(j))
        return lua_type(L, idx) == LUA_TLIGHTUSERDATA && lua_touserdata(L, idx) == NULL;
    if (cJSON_IsBool(j))
        return lua_type(L, idx) == LUA_TBOOLEAN && lua_toboolean(L, idx) == cJSON_IsTrue(j);
    if (cJSON_IsNumber(j))
        return lua_type(L, idx) == LUA_TNUMBER && lua_tonumber(L, idx) == j->valuedouble;
    if (cJSON_IsString(j)) {
        size_t n;
        const char *s = lua_type(L, idx) == LUA_TSTRING ? lua_tolstring(L, idx, &n) : NULL;
        return s != NULL && n == strlen(j->valuestring) && memcmp(s, j->valuestring, n) == 0;
    }
    if (lua_type(L, idx) != LUA_TTABLE)
        return 0;
    if (cJSON_IsArray(j)) {
        if (!is_array_mt(idx) || lua_objlen(L, idx) != (size_t)cJSON_GetArraySize(j))
            return 0;
        int k = 1;
        for (const cJSON *e = j->child; e != NULL; e = e->next, k++) {
            lua_rawgeti(L, idx, k);
            int ok = same_as_cjson(-1, e);
            lua_pop(L, 1);
            if (!ok)
                return 0;
        }
        return 1;
    }
    /* an object: each name's last value; no other keys */
    if (is_array_mt(idx))
        return 0;
    size_t names = 0;
    for (const cJSON *e = j->child; e != NULL; e = e->next) {
        int last = 1;
        for (const cJSON *f = e->next; f != NULL; f = f->next)
            if (strcmp(f->string, e->string) == 0)
                last = 0;
        if (!last)
            continue;
        names++;
        lua_pushstring(L, e->string);
        lua_rawget(L, idx);
        int ok = same_as_cjson(-1, e);
        lua_pop(L, 1);
        if (!ok)
            return 0;
    }
    size_t keys = 0;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        keys++;
    }
    return keys == names;
}

/* ---- what luajson.h says the encoder does ---- */

/* Whether the table at idx is written as an array. */
static int ref_is_array(int idx)
{
    if (is_array_mt(idx))
        return 1;
    size_t keys = 0, max = 0;
    int numeric = 1, counting = 1;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        keys++;
        if (lua_type(L, -1) != LUA_TNUMBER) {
            numeric = counting = 0;
            continue;
        }
        double d = lua_tonumber(L, -1);
        if (d >= 1 && d == floor(d) && d <= 1e9)
            max = (size_t)d > max ? (size_t)d : max;
        else
            counting = 0;
    }
    if (counting && keys > 0 && keys == max) /* exactly 1..n */
        return 1;
    (void)numeric;
    return 0;
}

/* Whether the value at idx can be written, at this depth. */
static int ref_encodable(int idx, int depth)
{
    idx = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
    case LUA_TBOOLEAN:
    case LUA_TSTRING:
        return 1;
    case LUA_TLIGHTUSERDATA:
        return lua_touserdata(L, idx) == NULL;
    case LUA_TNUMBER:
        return isfinite(lua_tonumber(L, idx));
    case LUA_TTABLE:
        break;
    default:
        return 0;
    }
    if (depth >= AV_LUAJSON_MAX_DEPTH)
        return 0;
    if (ref_is_array(idx)) {
        size_t n = lua_objlen(L, idx);
        for (size_t k = 1; k <= n; k++) {
            lua_rawgeti(L, idx, (int)k);
            int ok = ref_encodable(-1, depth + 1);
            lua_pop(L, 1);
            if (!ok)
                return 0;
        }
        return 1;
    }
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        int ok = lua_type(L, -2) == LUA_TSTRING && ref_encodable(-1, depth + 1);
        lua_pop(L, 1);
        if (!ok) {
            lua_pop(L, 1);
            return 0;
        }
    }
    return 1;
}

/* Whether b (decoded from a's encoding) is a as JSON says it: nil and null
 * alike, arrays by the rule above, strings the same (or, when a's is not
 * UTF-8, some well-formed UTF-8: the writer replaces such bytes). */
static int same_as_json(int a, int b, int depth)
{
    a = a < 0 ? lua_gettop(L) + a + 1 : a;
    b = b < 0 ? lua_gettop(L) + b + 1 : b;
    if (is_null(a))
        return lua_type(L, b) == LUA_TLIGHTUSERDATA && lua_touserdata(L, b) == NULL;
    if (lua_type(L, a) != lua_type(L, b))
        return 0;
    switch (lua_type(L, a)) {
    case LUA_TBOOLEAN:
        return lua_toboolean(L, a) == lua_toboolean(L, b);
    case LUA_TNUMBER:
        return lua_tonumber(L, a) == lua_tonumber(L, b);
    case LUA_TSTRING: {
        size_t an, bn;
        const char *as = lua_tolstring(L, a, &an), *bs = lua_tolstring(L, b, &bn);
        if (!fuzz_utf8_valid(as, an))
            return fuzz_utf8_valid(bs, bn);
        return an == bn && memcmp(as, bs, an) == 0;
    }
    case LUA_TTABLE:
        break;
    default:
        return 0;
    }
    if (depth > AV_LUAJSON_MAX_DEPTH)
        return 0;
    if (ref_is_array(a)) {
        size_t n = lua_objlen(L, a);
        if (!is_array_mt(b) || lua_objlen(L, b) != n)
            return 0;
        for (size_t k = 1; k <= n; k++) {
            lua_rawgeti(L, a, (int)k);
            lua_rawgeti(L, b, (int)k);
            int ok = same_as_json(-2, -1, depth + 1);
            lua_pop(L, 2);
            if (!ok)
                return 0;
        }
        return 1;
    }
    if (is_array_mt(b))
        return 0;
    /* keys that are not UTF-8 are written with U+FFFD: they cannot be looked up (and may merge) */
    lua_pushnil(L);
    while (lua_next(L, a) != 0) {
        size_t kn;
        const char *k = lua_tolstring(L, -2, &kn);
        lua_pop(L, 1);
        if (!fuzz_utf8_valid(k, kn)) {
            lua_pop(L, 1);
            return 1;
        }
    }
    size_t keys = 0, bkeys = 0;
    lua_pushnil(L);
    while (lua_next(L, a) != 0) {
        keys++;
        lua_pushvalue(L, -2);
        lua_rawget(L, b);
        int ok = same_as_json(-2, -1, depth + 1);
        lua_pop(L, 2);
        if (!ok) {
            lua_pop(L, 1);
            return 0;
        }
    }
    lua_pushnil(L);
    while (lua_next(L, b) != 0) {
        lua_pop(L, 1);
        bkeys++;
    }
    return keys == bkeys;
}

/* The value at idx on stderr, for a report. */
static void dump(int idx, int depth)
{
    idx = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
    switch (lua_type(L, idx)) {
    case LUA_TSTRING: fprintf(stderr, "\"%s\"", lua_tostring(L, idx)); return;
    case LUA_TNUMBER: fprintf(stderr, "%.17g", lua_tonumber(L, idx)); return;
    case LUA_TTABLE: break;
    default: fprintf(stderr, "%s", lua_typename(L, lua_type(L, idx))); return;
    }
    if (depth > 3) {
        fprintf(stderr, "{...}");
        return;
    }
    fprintf(stderr, "%s{", is_array_mt(idx) ? "array" : "");
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        fprintf(stderr, "[");
        dump(-2, depth + 1);
        fprintf(stderr, "]=");
        dump(-1, depth + 1);
        fprintf(stderr, ", ");
        lua_pop(L, 1);
    }
    fprintf(stderr, "} (len %zu)", lua_objlen(L, idx));
}

/* Encodes the value at idx; on success checks the text and that it decodes to the value. */
static void round_trip(int idx, int want_ok)
{
    idx = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
    struct evbuffer *out = evbuffer_new();
    char err[256] = "";
    int top = lua_gettop(L);
    int rc = av_luajson_encode(L, idx, out, err, sizeof(err));
    FUZZ_CHECK(lua_gettop(L) == top, "the encoder left the stack at %d, not %d", lua_gettop(L), top);
    if ((rc == 0) != want_ok) {
        dump(idx, 0);
        fprintf(stderr, "\n");
    }
    FUZZ_CHECK((rc == 0) == want_ok, "encode returned %d (%s) where luajson.h says %s", rc, err,
               want_ok ? "it can" : "it cannot");
    if (rc != 0) {
        FUZZ_CHECK(err[0] != '\0', "a refusal without a reason");
        evbuffer_free(out);
        return;
    }
    size_t n = evbuffer_get_length(out);
    const char *text = (const char *)evbuffer_pullup(out, -1);
    cJSON *j = strict(text, n);
    FUZZ_CHECK(j != NULL, "the encoder wrote what is not strict JSON: %.*s", (int)(n < 2000 ? n : 2000), text);
    cJSON_Delete(j);
    char derr[256];
    if (av_luajson_decode(L, text, n, derr, sizeof(derr)) != 0) {
        /* a string with a NUL byte is written \u0000, one of the decoder's limits */
        FUZZ_CHECK(quirks(text, n) & Q_NUL, "its own text does not decode: %s", derr);
        evbuffer_free(out);
        return;
    }
    FUZZ_CHECK(same_as_json(idx, -1, 0), "decoded, it is another value: %.*s", (int)(n < 2000 ? n : 2000), text);
    lua_pop(L, 1);
    evbuffer_free(out);
}

/* ---- JSON text to Lua ---- */

/* Whether the decoded value holds an infinite number. */
static int lua_nonfinite(int idx, int depth)
{
    idx = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
    if (lua_type(L, idx) == LUA_TNUMBER)
        return !isfinite(lua_tonumber(L, idx));
    if (lua_type(L, idx) != LUA_TTABLE || depth > 100)
        return 0;
    int found = 0;
    lua_pushnil(L);
    while (!found && lua_next(L, idx) != 0) {
        found = lua_nonfinite(-1, depth + 1);
        lua_pop(L, 1);
    }
    if (found)
        lua_pop(L, 1);
    return found;
}

/* Where the text (strict JSON) holds what the decoder refuses on purpose or
 * by its limits: \u0000, a lone surrogate, a number token of 60 bytes or
 * more, nesting deeper than AV_LUAJSON_MAX_DEPTH. Returns a bit for each. */
static unsigned quirks(const char *s, size_t n)
{
    unsigned q = 0;
    size_t run = 0;
    int depth = 0, max = 0, in_string = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (in_string) {
            if (c == '\\' && i + 1 < n) {
                if (s[i + 1] == 'u' && i + 5 < n) {
                    if (memcmp(s + i + 2, "0000", 4) == 0)
                        q |= Q_NUL;
                    if (s[i + 2] == 'd' || s[i + 2] == 'D')
                        q |= Q_SURROGATE; /* paired or not: cJSON and the decoder disagree on some pairs */
                }
                i++;
            } else if (c == '"') {
                in_string = 0;
            }
            continue;
        }
        run = ((c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E') ? run + 1 : 0;
        if (run >= 60)
            q |= Q_LONG_NUMBER;
        if (c == '"')
            in_string = 1;
        else if (c == '[' || c == '{')
            max = ++depth > max ? depth : max;
        else if (c == ']' || c == '}')
            depth--;
    }
    if (max > AV_LUAJSON_MAX_DEPTH + 1)
        q |= Q_DEEP;
    return q;
}

/* One strict JSON value, by the scanner alone (it reads \u0000, long numbers
 * and deep nesting): as the only element of an array. */
static int strict_scan(const char *s, size_t n)
{
    char *wrapped = malloc(n + 2);
    wrapped[0] = '[';
    if (n > 0)
        memcpy(wrapped + 1, s, n);
    wrapped[n + 1] = ']';
    size_t off;
    int values = 0;
    int ok = av_jscan_array(wrapped, n + 2, count_one, &values, &off) == 0 && values == 1;
    free(wrapped);
    return ok;
}

static void from_text(const char *s, size_t n)
{
    char err[256];
    int rc = av_luajson_decode(L, s, n, err, sizeof(err));
    FUZZ_CHECK(lua_gettop(L) == (rc == 0 ? 1 : 0), "decode %d left %d values", rc, lua_gettop(L));
    if (rc != 0)
        FUZZ_CHECK(strstr(err, " at byte ") != NULL, "a refusal without its offset: %s", err);
    unsigned q = quirks(s, n);
    /* valid JSON decodes, but past the decoder's limits: \u0000, a number of 64
     * bytes or more, nesting past 64. r:body() refuses such a request body
     * (400 body_unreadable) rather than let the policies step aside for it. */
    if (rc != 0 && strict_scan(s, n) && !(q & Q_SURROGATE))
        FUZZ_CHECK(q & (Q_NUL | Q_LONG_NUMBER | Q_DEEP), "valid JSON refused: %s", err);
    if (rc == 0 && !(q & (Q_NUL | Q_LONG_NUMBER))) {
        const char *end = NULL;
        cJSON *any = cJSON_ParseWithLengthOpts(s, n, &end, 0);
        int whole = any != NULL;
        for (const char *p = end; whole && p < s + n; p++)
            whole = *p == ' ' || *p == '\t' || *p == '\n' || *p == '\r';
        FUZZ_CHECK(whole, "the decoder takes what cJSON refuses");
        FUZZ_CHECK(same_as_cjson(1, any), "the decoder's value is not cJSON's");
        cJSON_Delete(any);
    }
    if (rc == 0) {
        int enc = ref_encodable(1, 0);
        /* what was decoded can be encoded again, but for numbers JSON has no text for (1e400) */
        FUZZ_CHECK(enc || lua_nonfinite(1, 0), "decoded, but the encoder cannot write it back");
        round_trip(1, enc);
    }
}

/* ---- a small program that builds Lua values ---- */

static int a_function(lua_State *l)
{
    return 0;
}

static void build(fuzz_in_t *in)
{
    static char marker;
    while (in->n > 0 && lua_gettop(L) < 48) {
        unsigned op = fuzz_byte(in);
        int top = lua_gettop(L);
        switch (op % 16) {
        case 0: lua_pushnil(L); break;
        case 1: lua_pushboolean(L, op & 16); break;
        case 2: lua_pushlightuserdata(L, NULL); break; /* aviary.null */
        case 3: {
            double d = 0;
            const uint8_t *b;
            size_t k = fuzz_bytes(in, sizeof(d), &b);
            memcpy(&d, b, k);
            lua_pushnumber(L, d);
            break;
        }
        case 4: lua_pushnumber(L, (double)((int)fuzz_byte(in) - 16)); break;
        case 5: {
            const uint8_t *b;
            size_t k = fuzz_bytes(in, fuzz_byte(in) % 24, &b);
            lua_pushlstring(L, (const char *)b, k);
            break;
        }
        case 6: lua_createtable(L, 0, 0); break;
        case 7:
            lua_createtable(L, 0, 0);
            av_luajson_array_mt(L);
            lua_setmetatable(L, -2);
            break;
        case 8: /* t[k] = v: the table, the key, the value on top */
            if (top >= 3 && lua_istable(L, -3) && !lua_isnil(L, -2) &&
                !(lua_type(L, -2) == LUA_TNUMBER && isnan(lua_tonumber(L, -2))))
                lua_rawset(L, -3);
            else if (top >= 2)
                lua_pop(L, 2);
            break;
        case 9: /* t[i] = v */
            if (top >= 2 && lua_istable(L, -2))
                lua_rawseti(L, -2, (int)(fuzz_byte(in) % 12));
            else if (top >= 1)
                lua_pop(L, 1);
            break;
        case 10: lua_pushcfunction(L, a_function); break;
        case 11: lua_pushlightuserdata(L, &marker); break;
        case 12: /* t.self = t */
            if (top >= 1 && lua_istable(L, -1)) {
                lua_pushvalue(L, -1);
                lua_setfield(L, -2, "self");
            }
            break;
        case 13:
            if (top >= 1)
                lua_pushvalue(L, -1);
            break;
        case 14:
            if (top >= 1)
                lua_pop(L, 1);
            break;
        case 15: /* t[#t + 1] = v */
            if (top >= 2 && lua_istable(L, -2))
                lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
            else if (top >= 1)
                lua_pop(L, 1);
            break;
        }
    }
}

static void from_lua(fuzz_in_t *in)
{
    build(in);
    int n = lua_gettop(L);
    for (int i = 1; i <= n; i++)
        round_trip(i, ref_encodable(i, 0));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_in_t in = {data, size};
    unsigned mode = fuzz_byte(&in);
    lua_settop(L, 0);
    if (mode & 1)
        from_lua(&in);
    else
        from_text((const char *)in.p, in.n);
    lua_settop(L, 0);
    return 0;
}
