-- content_denylist: terms the model must not say. The answer's text is
-- watched as it streams, across event boundaries (a term split over two
-- events is still seen); the first term found stops the stream with the
-- dialect's error, or, with action = "redact", is masked in the event where
-- it ends. Whole (non-streamed) answers are not rewritten; use on_request
-- policies to keep such prompts out.
--
-- params: terms (list; matched case-insensitively as plain text),
-- action ("stop" or "redact"; default "stop").

local function terms_of(r)
  local t = {}
  for _, term in ipairs(r:params().terms or {}) do
    if type(term) == "string" and term ~= "" then t[#t + 1] = term:lower() end
  end
  return t
end

return {
  fail = "open",
  description = "stops (or masks) terms in streamed answers",
  on_chunk = function(r, event)
    local text = event.text
    if text == nil or text == "" then return end
    local ctx = r.ctx
    ctx.denylist_terms = ctx.denylist_terms or terms_of(r)
    local terms = ctx.denylist_terms
    if #terms == 0 then return end
    local tail = ctx.denylist_tail or ""
    local seen = (tail .. text):lower()
    for _, term in ipairs(terms) do
      local s, e = seen:find(term, 1, true)
      if s then
        if r:params().action == "redact" and e > #tail then
          -- mask what of the term is in this event (a part in an earlier event already went out)
          local from = math.max(s - #tail, 1)
          text = text:sub(1, from - 1) .. string.rep("*", e - #tail - from + 1) .. text:sub(e - #tail + 1)
          event.text = text
          r:audit("masked")
          seen = (tail .. text):lower()
        else
          return r:stop("the answer contained a term this route does not allow", "denied_term")
        end
      end
    end
    -- keep as much as the longest term needs to be found across the next boundary
    local keep = 0
    for _, term in ipairs(terms) do keep = math.max(keep, #term - 1) end
    ctx.denylist_tail = seen:sub(-keep)
  end,
  selftest = function()
    assert(("Abc"):lower():find("bc", 1, true) == 2)
  end,
}
