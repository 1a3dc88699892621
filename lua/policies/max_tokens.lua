-- max_tokens: a cap on how long an answer may be, and a default when the
-- client names none. The field depends on the API: max_tokens (OpenAI chat
-- and completions, Anthropic), max_completion_tokens (newer OpenAI chat),
-- max_output_tokens (Responses).
--
-- params: cap (default 4096), default (1024), deny_over_cap (false: a
-- request over the cap is lowered to it; true: it is refused with 400).
local FIELDS = { "max_tokens", "max_completion_tokens", "max_output_tokens" }

local function field_for(r, body)
  for _, f in ipairs(FIELDS) do
    if body[f] ~= nil then return f end
  end
  if r:path():find("/responses", 1, true) then return "max_output_tokens" end
  return "max_tokens"
end

return {
  fail = "closed",
  description = "caps max_tokens and sets a default",
  on_request = function(r)
    local body = r:body()
    if type(body) ~= "table" then return end
    local p = r:params()
    local cap, default = p.cap or 4096, p.default or 1024
    local f = field_for(r, body)
    local asked = body[f]
    if asked == nil then
      body[f] = math.min(default, cap)
      r:set_body(body)
      return r:audit("default")
    end
    if type(asked) ~= "number" or asked < 1 or asked ~= math.floor(asked) then
      return r:deny(400, f .. " must be a positive integer", "invalid")
    end
    if asked > cap then
      if p.deny_over_cap then
        return r:deny(400, string.format("%s is %d; this route allows at most %d", f, asked, cap), "over_cap")
      end
      body[f] = cap
      r:set_body(body)
      r:audit("capped")
    end
  end,
  selftest = function()
    assert(#FIELDS == 3)
  end,
}
