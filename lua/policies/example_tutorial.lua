-- example_tutorial: a custom policy, written step by step. Copy it, rename
-- it, and list it in a route's "policies". It does three small things a team
-- might want when it ships a new model:
--
--   1. requests from users on the "free" plan (header x-plan) may not ask
--      for the big model: they are refused with a clear message;
--   2. beta testers (header x-beta: 1) are sent to the route's "next"
--      variant, whatever the split says;
--   3. answers that end because they hit the length limit are counted, so
--      /metrics shows how often a variant's answers are cut short.
--
-- Try it without a gateway:
--   aviary policy-test lua/policies/example_tutorial.lua lua/tests/example_tutorial.json

-- Step 1: settings. r:params() gives the route's "policy_params" for this
-- policy; defaults here keep the policy usable without any.
local DEFAULTS = {big_models = {"gpt-4o", "claude-opus"}, beta_variant = "next"}

local function setting(r, name)
  local v = r:params()[name]
  if v == nil then return DEFAULTS[name] end
  return v
end

-- Step 2: helpers are plain local functions. Globals are not allowed in a
-- policy (the sandbox refuses them), so everything is local.
local function is_big(model, big)
  for _, m in ipairs(big) do
    if model == m then return true end
  end
  return false
end

-- Step 3: the table the file returns. "fail" says what happens when this
-- code errs (or runs out of its budget): "open" lets requests through.
return {
  fail = "open",
  description = "tutorial: plan limits, beta routing, cut-short answers counted",

  -- on_request runs before the variant is chosen.
  on_request = function(r)
    local body = r:body() -- the JSON body as a Lua table (nil if not JSON)
    if type(body) ~= "table" then return end
    if r:header("x-plan") == "free" and is_big(body.model, setting(r, "big_models")) then
      -- r:deny answers in the route's dialect (OpenAI or Anthropic errors)
      return r:deny(403, "the free plan cannot use " .. tostring(body.model), "plan_model")
    end
    if r:header("x-beta") == "1" then
      r:set_variant(setting(r, "beta_variant")) -- an error if the route has no such variant
      r.ctx.beta = true                         -- r.ctx lives until the request ends
    end
  end,

  -- on_complete runs after the answer; usage and cost are known here.
  on_complete = function(r)
    local u = r:usage()
    if u.finish_reason == "length" or u.finish_reason == "max_tokens" then
      aviary.count("cut_short")        -- aviary_policy_events_total{policy="example_tutorial",name="cut_short"}
    end
    if r.ctx.beta then aviary.count("beta_requests") end
  end,

  -- selftest runs at every load; if it fails, the running policies stay.
  selftest = function()
    assert(is_big("gpt-4o", DEFAULTS.big_models))
    assert(not is_big("gpt-4o-mini", DEFAULTS.big_models))
  end,
}
