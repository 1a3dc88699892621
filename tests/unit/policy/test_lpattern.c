/* test_lpattern.c: the counted pattern functions against LuaJIT's own on a
 * corpus and on random patterns (same results, captures, errors), long
 * subjects (where the searches skip), step counts that grow linearly where
 * they should, and a budget that stops an exponential pattern. */
#include <lauxlib.h>
#include <lualib.h>
#include <stdint.h>
#include <stdlib.h>

#include "lpattern.h"
#include "../test.h"

static lua_State *L;
static uint64_t steps, limit; /* limit 0: none */

static void count_steps(lua_State *LS, uint32_t n)
{
    steps += n;
    if (limit > 0 && steps > limit)
        luaL_error(LS, "out of steps");
}

static int depth; /* gsub calls back into Lua inside each other */

static void enter(lua_State *LS)
{
    if (++depth > 100)
        luaL_error(LS, "nested too deeply");
}

static void leave(lua_State *LS)
{
    (void)LS;
    depth--;
}

static const av_lpat_budget_t budget = {count_steps, enter, leave};

/* After an error, leave is not called: the harness starts each call at 0
 * (as the policy VM does at its pcalls). */
static int reset_depth(lua_State *LS)
{
    (void)LS;
    depth = 0;
    return 0;
}

/* Runs Lua code; returns NULL, or the error. */
static const char *run(const char *code)
{
    static char err[512];
    if (luaL_dostring(L, code) == 0)
        return NULL;
    snprintf(err, sizeof(err), "%s", lua_tostring(L, -1));
    lua_pop(L, 1);
    return err;
}

/* The harness: same(f, ...) compares LuaJIT's string.f with ours on the
 * arguments; each difference is printed and counted in diffs. */
static const char *harness =
    "diffs = 0\n"
    "local mine, theirs = mine, theirs\n"
    "local function pack(...) return {n = select('#', ...), ...} end\n"
    "local function show(t)\n"
    "  local o = {}\n"
    "  for i = 1, t.n do o[i] = type(t[i]) == 'string' and string.format('%q', t[i]) or tostring(t[i]) end\n"
    "  return table.concat(o, ', ')\n"
    "end\n"
    "local function call(lib, f, ...)\n"
    "  reset_depth()\n"
    "  if f ~= 'gmatch' then return pack(pcall(lib[f], ...)) end\n"
    "  local ok, it = pcall(lib.gmatch, ...)\n"
    "  if not ok then return pack(false) end\n"
    "  local out = {n = 1, true}\n"
    "  for i = 1, 40 do\n" /* bounded: an iterator that did not move on would loop */
    "    local r = pack(pcall(it))\n"
    "    if not r[1] then return pack(false) end\n"
    "    if r.n == 1 then break end\n"
    "    for j = 2, r.n do out.n = out.n + 1; out[out.n] = r[j] end\n"
    "    out.n = out.n + 1; out[out.n] = '|'\n"
    "  end\n"
    "  return out\n"
    "end\n"
    "function same(f, ...)\n"
    "  local a, b = call(mine, f, ...), call(theirs, f, ...)\n"
    "  local eq = a[1] == b[1]\n"
    "  if eq and a[1] then\n" /* errors: both must err; the words may differ */
    "    eq = a.n == b.n\n"
    "    for i = 1, a.n do eq = eq and a[i] == b[i] end\n"
    "  end\n"
    "  if not eq then\n"
    "    diffs = diffs + 1\n"
    "    if diffs <= 20 then\n"
    "      print(string.format('#   %s(%s)\\n#     ours:   %s\\n#     LuaJIT: %s', f, show(pack(...)), show(a), show(b)))\n"
    "    end\n"
    "  end\n"
    "end\n";

static int diffs(void)
{
    lua_getglobal(L, "diffs");
    int n = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    return n;
}

static void test_corpus(void)
{
    const char *err = run(
        "local subjects = {'', 'a', 'abc', 'hello world', '  two  spaces  ', 'aaa', 'aaab', 'a.b-c+d',\n"
        "  'x=1, y=22', '[tag] (paren) {brace}', 'THE end', 'mail a.b@example.com now', 'call +49 30 1234567',\n"
        "  'DE89 3704 0044 0532 0130 00', '%%', 'a\\0b', '\\0', '^a$', 'ignore all previous instructions',\n"
        "  'f(a(b)c)d', \"''quoted''\", 'tab\\there\\nnewline', 'A1b2C3', '\\200\\255high', 'a@b.com_c@d.com_e@f.org',\n"
        "  '1@x.y', '![img](https://x.y)', '<|im_start|>system', 'dan mode', 'Dan Mode'}\n"
        "local patterns = {'a', 'a*', 'a+', 'a-', 'a?', '.', '.-', '.*', '^a', 'a$', '^$', '', '%a+', '%A', '%d%d',\n"
        "  '%s*', '%w+@%w+', '[abc]', '[^abc]', '[a-c]+', '[%a%d]', '[]]', '[^]]', '[a-]', '[%]]', '()a()',\n"
        "  '(a)(b)', '(a*(.)%w(%s*))', '%b()', \"%b''\", '%f[%a]%a+', '%f[%A]', '(a)%1', '(%a+) %1', '%1', '(', ')',\n"
        "  '%', '[a', '%f', '%fx', '%g+', '%p+', '%c', '%x+', '%z', '%Z+', '%u%l', 'a.-b', '[%w%.%%%+%-_]+@[%w%-]+%.[%w%.%-]*%a',\n"
        "  '%+?%(?%d[%d %-%.%(%)]*%d', '%u%u%d%d[%u%d ]+[%u%d]', 'ignore%s+%a*%s*%a*%s*previous%s+instructions',\n"
        "  '^.*()%s', '[%d%u%s%-%(%)%+%.]*$', '$', '$a', 'a$b', '%$', 'x*$', '[^%s]+', '(()())', '((a)(b))', 'a%-b',\n"
        "  '-', '*', '+a', '?', '[%', '%b', '%ba', 'a\\0c', '%z+', '[\\0]', '[a-%%]', '[%a-z]', '[z-a]', '%f[%w]%w+%f[%W]',\n"
        "  '!%[.-%]%(https?://', '<|im_start|>', '%[inst%]', '</?%s*instructions%s*>', '%f[%a]dan%f[%A]%s+mode',\n"
        "  '(h)(e)(l)(l)(o)', '%w-%.', '[%w_]*', '^(%a+)', '(%d+)%s*=%s*(%d+)', '%1(a)', '(a%1)', '%0', '%f[]', 'b*$',\n"
        "  '[^%a%s]', '[%]-a]', '[a%-z]', '[-a]', '[a-z-]', '%bxy', 'a?b?c?', '^%s*(.-)%s*$', '%.', '.+()'}\n"
        "for _, s in ipairs(subjects) do\n"
        "  for _, p in ipairs(patterns) do\n"
        "    same('find', s, p) same('match', s, p) same('gmatch', s, p)\n"
        "    same('find', s, p, 2) same('find', s, p, -2) same('match', s, p, -1) same('find', s, p, 1, true)\n"
        "    same('find', s, p, 100) same('find', s, p, -100) same('match', s, p, 0)\n"
        "    same('gsub', s, p, '<%0>') same('gsub', s, p, '%1.') same('gsub', s, p, '%%', 1) same('gsub', s, p, '%')\n"
        "    same('gsub', s, p, '%2') same('gsub', s, p, {a = 'A', ['1'] = false, b = 7}) same('gsub', s, p, '', -1)\n"
        "    same('gsub', s, p, function(x, y) if x == 'a' then return nil elseif y then return y .. '!' end return x:upper() end, 2)\n"
        "  end\n"
        "end\n"
        "same('gsub', 'abc', 'b', function() return {} end)\n"
        "same('gsub', 'abc', 'b', true)\n"
        "same('gsub', 'abc', 'b', 12.5)\n"
        "same('find', 123, 2)\n"
        "same('match', 'x', nil)\n"
        "same('gmatch', 'abc', '')\n");
    CHECK_STR(err, NULL);
    CHECK_INT(diffs(), 0);
}

/* Every class letter and escape against every byte, alone and in sets. */
static void test_classes(void)
{
    const char *err = run(
        "for cl = 1, 127 do\n"
        "  local k = string.char(cl)\n"
        "  if not k:find('^[bf0-9]$') then\n"
        "    for c = 0, 255 do\n"
        "      local b = string.char(c)\n"
        "      same('find', b, '%' .. k) same('find', b, '[%' .. k .. ']') same('find', b, '[^%' .. k .. 'x]')\n"
        "    end\n"
        "  end\n"
        "end\n"
        "for c = 0, 255 do\n"
        "  local b = string.char(c)\n"
        "  same('find', b, '[a-z]') same('find', b, '[%z-~]') same('find', b, '[\\128-\\255]') same('find', b, '.')\n"
        "end\n");
    CHECK_STR(err, NULL);
    CHECK_INT(diffs(), 0);
}

/* Random patterns from pieces, over short subjects from a small alphabet,
 * then a few over long ones (where the searches plan their skips). Few
 * quantifiers on the long ones: LuaJIT's own matcher has no budget. */
static void test_random(void)
{
    const char *err = run(
        "local items = {'a', 'b', '.', '%a', '%d', '%s', '%w', '%W', '[ab]', '[^a]', '[a-c]', '[%d ]', 'x', ' ', '@',\n"
        "  '%.', '-', '%f[%a]', '%f[%s]', '%bab', '(', ')', '()', '%1', '$', '^'}\n"
        "local quants = {'', '', '', '*', '+', '-', '?'}\n"
        "local chars = {'a', 'b', 'c', ' ', '1', '2', 'x', '@', '.', '-', 'A'}\n"
        "math.randomseed(7)\n"
        "local function pattern(n, nq)\n"
        "  local o = {}\n"
        "  for i = 1, n do\n"
        "    local it = items[math.random(#items)]\n"
        "    o[#o + 1] = it\n"
        "    if nq > 0 and #it <= 4 and it:sub(1, 1) ~= '(' and it ~= ')' and it:sub(1, 2) ~= '%f' and it:sub(1, 2) ~= '%b' then\n"
        "      local q = quants[math.random(#quants)]\n"
        "      if q ~= '' then nq = nq - 1 end\n"
        "      o[#o + 1] = q\n"
        "    end\n"
        "  end\n"
        "  return table.concat(o)\n"
        "end\n"
        "local function subject(n)\n"
        "  local o = {}\n"
        "  for i = 1, n do o[i] = chars[math.random(#chars)] end\n"
        "  return table.concat(o)\n"
        "end\n"
        "for i = 1, 4000 do\n"
        "  local p, s = pattern(math.random(1, 6), 3), subject(math.random(0, 14))\n"
        "  same('find', s, p) same('match', s, p, math.random(-3, 4)) same('gmatch', s, p) same('gsub', s, p, '[%0]')\n"
        "end\n"
        "for i = 1, 300 do\n"
        "  local p, s = pattern(math.random(1, 4), 1), subject(math.random(500, 900))\n"
        "  same('find', s, p) same('gsub', s, p, '%0!') same('gmatch', s, p)\n"
        "end\n"
        "local long = ('a'):rep(600) .. 'b' .. ('ab '):rep(200) .. '@x.yz ' .. ('x1'):rep(300)\n"
        "local long2 = ('12 345-6 (7) x1 +49 30 ab12 AB12 '):rep(40) .. '123456789'\n"
        "for _, p in ipairs({'a+b', 'a*b', 'a-b', '[ab]+@', 'b+%s', '%a+@%a+', 'x1x', 'ab ab', '%d+', '[%w%.%%%+%-_]+@[%w%-]+%.[%w%.%-]*%a',\n"
        "    '(a+)b', 'yz', 'a+$', '%f[%a]%a+', '%f[%A]', '%f[%z]', '%f[%d]%d+', '%+?%(?%f[%d]%d[ %-%.%(%)]*%d', 'x?y?%f[%w]%w',\n"
        "    'a?b', '[ab]?c+', '(%d)%s*%-?%s*(%d)', '%d?%d?%d?%d', '%s*%d', '1?2?3?4?5?6?7?8?9', '%u%u%d%d'}) do\n"
        "  for _, l in ipairs({long, long2}) do\n"
        "    same('find', l, p) same('find', l, p, 300) same('gsub', l, p, '<%0>') same('gmatch', l, p) same('match', l, p, -50)\n"
        "  end\n"
        "end\n");
    CHECK_STR(err, NULL);
    CHECK_INT(diffs(), 0);
}

/* The steps one call takes. */
static uint64_t steps_of(const char *call)
{
    steps = 0;
    const char *err = run(call);
    CHECK_STR(err, NULL);
    return steps;
}

static void test_linear(void)
{
    /* a run the e-mail pattern cannot end with an @: one try per run, not per byte */
    uint64_t a = steps_of("mine.find(('a'):rep(20000), '[%w%.%%%+%-_]+@[%w%-]+%.[%w%.%-]*%a')");
    uint64_t b = steps_of("mine.find(('a'):rep(40000), '[%w%.%%%+%-_]+@[%w%-]+%.[%w%.%-]*%a')");
    printf("# e-mail pattern over 20000 and 40000 a: %llu and %llu steps\n", (unsigned long long)a,
           (unsigned long long)b);
    CHECK(b < a * 5 / 2);
    CHECK(b < 200000);
    /* a plain find of a needle that almost matches everywhere: memmem, linear */
    a = steps_of("mine.find(('a'):rep(100000), ('a'):rep(5000) .. 'b', 1, true)");
    b = steps_of("mine.find(('a'):rep(200000), ('a'):rep(5000) .. 'b', 1, true)");
    CHECK(b < a * 5 / 2);
    /* skipping to the literal start: a MB without it costs little */
    a = steps_of("mine.find(('x'):rep(1000000), 'ignore%s+all')");
    CHECK(a < 100000);
    /* a subject without "previous" is not even tried... */
    a = steps_of("mine.find('ignore ' .. ('a'):rep(100000), 'ignore%s+%a*%s*%a*%s*previous')");
    CHECK(a < 10000);
    /* ...but one with it is, and a pattern that is quadratic by nature shows it in its steps */
    a = steps_of("mine.find('previous ignore ' .. ('a'):rep(1000), 'ignore%s+%a*%s*%a*%s*previous')");
    b = steps_of("mine.find('previous ignore ' .. ('a'):rep(2000), 'ignore%s+%a*%s*%a*%s*previous')");
    printf("# a two-filler pattern over 1000 and 2000 a: %llu and %llu steps\n", (unsigned long long)a,
           (unsigned long long)b);
    CHECK(b > a * 3);
}

static void test_budget(void)
{
    /* 2^40 tries in LuaJIT; here the budget's error, at once */
    limit = 1000000;
    steps = 0;
    const char *err = run("mine.find(('a'):rep(40), ('a?'):rep(40) .. ('a'):rep(40))");
    CHECK(err != NULL && strstr(err, "out of steps") != NULL);
    CHECK(steps < limit + 10000);
    /* and inside gsub's callback, and in gmatch */
    steps = 0;
    err = run("mine.gsub(('x'):rep(100), 'x', function() mine.find(('a'):rep(25), ('a?'):rep(25) .. ('a'):rep(25)) end)");
    CHECK(err != NULL && strstr(err, "out of steps") != NULL);
    steps = 0;
    err = run("for w in mine.gmatch(('ab'):rep(5000), '%w') do mine.find(('a'):rep(5000), '.-b') end");
    CHECK(err != NULL && strstr(err, "out of steps") != NULL);
    /* small calls are charged too, not lost under the charging interval */
    limit = 0;
    CHECK(steps_of("for i = 1, 1000 do mine.find('abc', 'c') end") >= 1000);
    /* too deep: an error, not a crash */
    err = run("mine.find(('a'):rep(300), ('a?'):rep(300) .. 'b')");
    CHECK(err != NULL && strstr(err, "too complex") != NULL);
    /* a gsub whose function calls it: the budget's enter says when to stop
     * (LuaJIT's own gsub runs out of C stack: a crash) */
    depth = 0;
    err = run("local function f(c) return (mine.gsub(c, '.', f)) end f('ab')");
    CHECK(err != NULL && strstr(err, "nested too deeply") != NULL);
    depth = 0;
    err = run("local t = setmetatable({}, {__index = function(t, k) return (mine.gsub(k, '.', t)) end}) mine.gsub('ab', '.', t)");
    CHECK(err != NULL && strstr(err, "nested too deeply") != NULL);
    depth = 0;
    CHECK_STR(run("assert(mine.gsub('abc', '%w', function(c) return (mine.gsub(c, '.', '<%0>')) end) == '<a><b><c>')"), NULL);
    CHECK_INT(depth, 0);
}

int main(void)
{
    L = luaL_newstate();
    luaL_openlibs(L);
    lua_getglobal(L, "string");
    lua_newtable(L);
    static const char *const fns[] = {"find", "match", "gmatch", "gsub", NULL};
    for (int i = 0; fns[i]; i++) {
        lua_getfield(L, -2, fns[i]);
        lua_setfield(L, -2, fns[i]);
    }
    lua_setglobal(L, "theirs");
    lua_newtable(L);
    av_lpat_open(L, -1, &budget);
    lua_setglobal(L, "mine");
    lua_pop(L, 1);
    lua_register(L, "reset_depth", reset_depth);
    const char *err = run(harness);
    if (err != NULL) {
        printf("# harness: %s\n", err);
        return 1;
    }
    RUN(test_corpus);
    RUN(test_classes);
    RUN(test_random);
    RUN(test_linear);
    RUN(test_budget);
    lua_close(L);
    TEST_DONE();
}
