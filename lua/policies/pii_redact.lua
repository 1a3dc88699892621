-- pii_redact: e-mail addresses, phone numbers, card numbers (Luhn-checked)
-- and IBANs (checksum-checked) replaced by [EMAIL], [PHONE], [CARD], [IBAN]:
-- in the prompt before it leaves (messages, Anthropic system, Responses
-- input), and in streamed answers, across event boundaries: the end of each
-- event's text that could be the start of one (the last word, and digit
-- groups before it) is held back and sent with the next event's text, or,
-- at the end, in an event of its own before the closing one.
--
-- At most 256 bytes are held back (an e-mail address has at most 254):
-- a longer word goes out in parts.
--
-- Every pattern costs time linear in the text: what can start a match is
-- found once per place, and a candidate is handed to Lua only when it has
-- the digits (9 for a phone, 15 characters for an IBAN) the checks need.
--
-- params: kinds (list, default all four), prompts (default true),
-- answers (default true).

local function luhn(d)
  local sum, alt = 0, false
  for i = #d, 1, -1 do
    local n = d:byte(i) - 48
    if alt then n = n * 2; if n > 9 then n = n - 9 end end
    sum, alt = sum + n, not alt
  end
  return sum % 10 == 0
end

-- A letter's value in an IBAN's check: A = 10 ... Z = 35.
local LETTER = {}
for i = 0, 25 do LETTER[string.char(65 + i)] = tostring(10 + i) end

-- s: capital letters, digits and spaces. Its first four characters moved
-- to the end, letters as numbers, the decimal number mod 97 is 1; taken
-- seven digits at a time (the remainder and seven digits fit a double).
local function iban_ok(s)
  s = s:gsub(" ", "")
  if #s < 15 or #s > 34 then return false end
  local digits, rem = (s:sub(5) .. s:sub(1, 4)):gsub("%u", LETTER), 0
  for i = 1, #digits, 7 do
    rem = tonumber(rem .. digits:sub(i, i + 6)) % 97
  end
  return rem == 1
end

-- An IBAN: two letters, two digits, then letters, digits and spaces up to
-- 15 letters and digits in all (fewer never pass iban_ok) and on to the
-- last one.
local IBAN = "%u%u%d%d" .. (" *[%u%d]"):rep(10) .. "[%u%d ]*[%u%d]"
local EMAIL = "[%w%.%%%+%-_]+@[%w%-]+%.[%w%.%-]*%a"
-- A phone or card number: a digit (after a + and a parenthesis, maybe),
-- then digits and separators up to 9 digits in all (a phone's least) and
-- on to the last digit. Each "[sep]*%d" has one way to match. A digit
-- right after a digit starts none (%f[%d]): the try from the one before
-- saw more digits, or a match took both.
local PHONE_OR_CARD = "%+?%(?%f[%d]%d" .. ("[ %-%.%(%)]*%d"):rep(7) .. "[%d %-%.%(%)]*%d"

-- Redacts s; found[kind] = true for each kind replaced.
local function redact(s, kinds, found)
  -- cheap looks first: most text has no @ and few digits (a search for a
  -- class skips to its bytes as fast as memchr to one)
  local digit = s:find("%d") ~= nil
  if not digit and not s:find("@", 1, true) then return s end
  if kinds.iban and digit and s:find("%u%u%d%d") then
    s = s:gsub(IBAN, function(m)
      if iban_ok(m) then found.iban = true; return "[IBAN]" end
    end)
  end
  if kinds.email and s:find("@", 1, true) then
    local n
    s, n = s:gsub(EMAIL, "[EMAIL]") -- a string, not a function: no Lua per address
    if n > 0 then found.email = true end
  end
  if (kinds.card or kinds.phone) and digit then
    s = s:gsub(PHONE_OR_CARD, function(m)
      local digits = m:gsub("%D", "")
      if kinds.card and #digits >= 13 and #digits <= 19 and luhn(digits) then
        found.card = true
        return "[CARD]"
      end
      if kinds.phone and #digits >= 9 and #digits <= 15 then
        found.phone = true
        return "[PHONE]"
      end
    end)
  end
  return s
end

local ALL = {"email", "phone", "card", "iban"}

local function kinds_of(r)
  local k = r.ctx.pii_kinds
  if k then return k end
  k = {}
  for _, name in ipairs(r:params().kinds or ALL) do k[name] = true end
  r.ctx.pii_kinds = k
  return k
end

local function audit(r, found)
  for _, kind in ipairs(ALL) do
    if found[kind] then r:audit(kind) end
  end
end

-- Where the text's end that must wait begins: the last word, and the digit
-- groups (with spaces, dashes, parentheses) before it, at most 40 bytes;
-- at most MAX_HOLD bytes in all, so that a stream without white space does
-- not make each event's work grow with all the text before it.
local MAX_HOLD = 256
local function hold_from(s)
  local ws = s:match("^.*()%s") -- the last whitespace, found from the end
  local i = ws and ws + 1 or 1
  if i > 1 and s:find("%d") then
    local j = s:find("[%d%u%s%-%(%)%+%.]*$", math.max(#s - 40, 1))
    if j and j < i and s:sub(j, i - 1):find("%d") then i = math.max(j, #s - 40 + 1, 1) end
  end
  return math.max(i, #s - MAX_HOLD + 1)
end

-- A text event like the last one, with this text.
local function text_event(r, text)
  local last = r.ctx.pii_event
  local j = last and aviary.json_decode(last.data or "")
  if type(j) ~= "table" then return nil end
  if type(j.choices) == "table" and type(j.choices[1]) == "table" then
    local c = j.choices[1]
    if type(c.delta) == "table" then c.delta.content = text else c.text = text end
  elseif j.type == "content_block_delta" and type(j.delta) == "table" then
    j.delta.text = text
  elseif j.type == "response.output_text.delta" then
    j.delta = text
  else
    return nil
  end
  return {event = last.event, data = aviary.json_encode(j)}
end

return {
  fail = "closed",
  description = "redacts e-mails, phone numbers, cards and IBANs in prompts and streamed answers",
  on_request = function(r)
    if r:params().prompts == false then return end
    local body = r:body()
    if type(body) ~= "table" then return end
    local kinds, found, changed = kinds_of(r), {}, false
    local function fix(t, k)
      if type(t[k]) == "string" then
        local v = redact(t[k], kinds, found)
        if v ~= t[k] then t[k] = v; changed = true end
      end
    end
    local function fix_content(m)
      if type(m) ~= "table" then return end
      fix(m, "content")
      if type(m.content) == "table" then
        for _, part in ipairs(m.content) do
          if type(part) == "table" then fix(part, "text"); fix(part, "content") end
        end
      end
    end
    for _, m in ipairs(type(body.messages) == "table" and body.messages or {}) do fix_content(m) end
    fix(body, "system")
    fix(body, "prompt")
    fix(body, "input")
    if type(body.input) == "table" then
      for _, m in ipairs(body.input) do fix_content(m) end
    end
    if changed then
      r:set_body(body)
      audit(r, found)
    end
  end,
  on_chunk = function(r, event)
    local ctx = r.ctx
    if ctx.pii_off == nil then ctx.pii_off = r:params().answers == false end
    if ctx.pii_off then return end
    local carry = ctx.pii_carry or ""
    if event.text == nil then
      if carry ~= "" then -- the end: what was held goes out in its own event first
        local found = {}
        local ev = text_event(r, redact(carry, kinds_of(r), found))
        if ev then event.before = {ev} end
        audit(r, found)
        ctx.pii_carry = ""
      end
      return
    end
    ctx.pii_event = event -- its data, read only if the stream ends with text held
    local s = carry .. event.text
    local cut = hold_from(s)
    local emit = s:sub(1, cut - 1)
    ctx.pii_carry = s:sub(cut)
    local found = {}
    local out = redact(emit, kinds_of(r), found)
    if out ~= event.text then event.text = out end
    if next(found) then audit(r, found) end
  end,
  selftest = function()
    local all, f = {email = true, phone = true, card = true, iban = true}, {}
    assert(redact("mail a.b@example.com now", all, f) == "mail [EMAIL] now")
    assert(redact("card 4111 1111 1111 1111.", all, f) == "card [CARD].")
    assert(redact("order 4111 1111 1111 1112.", all, f) == "order 4111 1111 1111 1112.") -- not Luhn: kept
    assert(redact("IBAN DE89 3704 0044 0532 0130 00", all, f) == "IBAN [IBAN]")
    assert(redact("call +49 30 1234567", all, f) == "call [PHONE]")
    assert(redact("in 2024 we sold 300", all, f) == "in 2024 we sold 300")
    assert(redact("GB82 WEST 1234 5698 7654 32 or GB82 WEST 1234 5698 7654 33", {iban = true}, f)
           == "[IBAN] or GB82 WEST 1234 5698 7654 33")
    assert(hold_from(("x"):rep(1000)) == 1000 - MAX_HOLD + 1)
  end,
}
