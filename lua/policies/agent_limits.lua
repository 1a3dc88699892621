-- agent_limits: controlled autonomy for agents that loop through tools.
-- A conversation may hold at most so many tool-call rounds (assistant turns
-- that call tools), so many messages, and so many estimated context tokens
-- (a byte count over four: no tokenizer runs in the gateway). Past a limit
-- the request is refused with 400 and the limit's name, so the agent stops
-- instead of spending without end.
--
-- params: max_tool_rounds (default 16), max_messages (200),
-- max_context_tokens (128000).

local function size(v)
  if type(v) == "string" then return #v end
  if type(v) ~= "table" then return 0 end
  local n = 0
  for k, x in pairs(v) do n = n + size(x) + (type(k) == "string" and #k or 0) end
  return n
end

-- Whether an assistant message calls a tool (OpenAI tool_calls or
-- function_call, Anthropic tool_use blocks, Responses function_call items).
local function calls_tool(m)
  if type(m) ~= "table" then return false end
  if m.type == "function_call" then return true end
  if m.role ~= "assistant" then return false end
  if type(m.tool_calls) == "table" and #m.tool_calls > 0 then return true end
  if type(m.function_call) == "table" then return true end
  if type(m.content) == "table" then
    for _, part in ipairs(m.content) do
      if type(part) == "table" and part.type == "tool_use" then return true end
    end
  end
  return false
end

return {
  fail = "closed",
  description = "limits tool rounds, messages and context size per conversation",
  on_request = function(r)
    local body = r:body()
    if type(body) ~= "table" then return end
    local p = r:params()
    local msgs = body.messages
    if type(msgs) ~= "table" then msgs = type(body.input) == "table" and body.input or {} end
    local max_messages = p.max_messages or 200
    if #msgs > max_messages then
      return r:deny(400, string.format("the conversation has %d messages; the limit is %d", #msgs, max_messages),
        "max_messages")
    end
    local rounds = 0
    for _, m in ipairs(msgs) do if calls_tool(m) then rounds = rounds + 1 end end
    local max_rounds = p.max_tool_rounds or 16
    if rounds > max_rounds then
      return r:deny(400, string.format("the agent has made %d tool-call rounds; the limit is %d", rounds, max_rounds),
        "max_tool_rounds")
    end
    local tokens = math.floor((size(msgs) + size(body.system) + size(body.tools) + size(body.instructions)) / 4)
    local max_tokens = p.max_context_tokens or 128000
    if tokens > max_tokens then
      return r:deny(400, string.format("the context is about %d tokens; the limit is %d", tokens, max_tokens),
        "max_context_tokens")
    end
  end,
  selftest = function()
    assert(calls_tool({role = "assistant", tool_calls = {{id = "1"}}}))
    assert(not calls_tool({role = "user", content = "hi"}))
    assert(size({a = "xy"}) == 3)
  end,
}
