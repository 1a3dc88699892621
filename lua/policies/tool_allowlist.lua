-- tool_allowlist: which tools a route may offer the model, and which the
-- model may call. Requests offering a tool not on the list are refused (or,
-- with strip = true, sent on without it); a streamed answer that starts
-- calling a tool not on the list is stopped.
--
-- params: allow (list of tool names; default none), strip (false).

-- A tool's name in each dialect: OpenAI chat {type, function = {name}},
-- Responses and Anthropic {name}.
local function tool_name(t)
  if type(t) ~= "table" then return nil end
  if type(t["function"]) == "table" then return t["function"].name end
  return t.name
end

local function allowed(r)
  local set = {}
  for _, n in ipairs(r:params().allow or {}) do set[n] = true end
  return set
end

-- The tool names a streamed event starts calling: OpenAI chat
-- delta.tool_calls[].function.name, Anthropic content_block_start of a
-- tool_use block, Responses output_item.added of a function_call.
local function called(data)
  if not (data:find("tool_calls", 1, true) or data:find("tool_use", 1, true)
          or data:find("function_call", 1, true)) then
    return nil
  end
  local j = aviary.json_decode(data)
  if type(j) ~= "table" then return nil end
  local names = {}
  for _, c in ipairs(j.choices or {}) do
    for _, tc in ipairs((c.delta or {}).tool_calls or {}) do
      local n = tool_name(tc)
      if n then names[#names + 1] = n end
    end
  end
  if j.type == "content_block_start" and type(j.content_block) == "table"
      and j.content_block.type == "tool_use" then
    names[#names + 1] = j.content_block.name
  end
  if j.type == "response.output_item.added" and type(j.item) == "table"
      and j.item.type == "function_call" then
    names[#names + 1] = j.item.name
  end
  return names
end

return {
  fail = "closed",
  description = "tools offered and called must be on the route's list",
  on_request = function(r)
    local body = r:body()
    if type(body) ~= "table" or type(body.tools) ~= "table" then return end
    local ok = allowed(r)
    local kept, refused = aviary.array(), {}
    for _, t in ipairs(body.tools) do
      local n = tool_name(t)
      if n ~= nil and ok[n] then kept[#kept + 1] = t else refused[#refused + 1] = tostring(n) end
    end
    if #refused == 0 then return end
    if r:params().strip then
      body.tools = kept
      if #kept == 0 then body.tools = nil; body.tool_choice = nil end
      r:set_body(body)
      return r:audit("tool_stripped")
    end
    return r:deny(400, "tools not allowed on this route: " .. table.concat(refused, ", "), "tool_not_allowed")
  end,
  on_chunk = function(r, event)
    local names = called(event.data)
    if names == nil then return end
    local ok = allowed(r)
    for _, n in ipairs(names) do
      if not ok[n] then
        return r:stop("the model called a tool this route does not allow: " .. n, "tool_call_not_allowed")
      end
    end
  end,
  selftest = function()
    assert(tool_name({type = "function", ["function"] = {name = "a"}}) == "a")
    assert(tool_name({name = "b"}) == "b")
    assert(called('{"choices":[{"delta":{"tool_calls":[{"function":{"name":"x"}}]}}]}')[1] == "x")
  end,
}
