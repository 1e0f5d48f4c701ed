-- Tensor printing, as PyTorch prints: `tensor([[0.1000, 2.0000], ...])`, with dtype and
-- device suffixes when they are not the defaults, large tensors summarised with `...`
-- (and their size appended), long rows wrapped at 80 columns.
local M = {}

local THRESHOLD = 1000   -- more elements than this are summarised
local EDGE = 3           -- items kept at each edge of a summarised dim
local LINEWIDTH = 80

local function is_finite(v) return v == v and v ~= math.huge and v ~= -math.huge end

-- The values that will be shown, flattened (for choosing the number format).
local function shown_values(t, summarize, out)
  local n = t:dim()
  if n == 0 then
    out[#out + 1] = t:item()
    return out
  end
  local size = t:size(1)
  local function visit(i) shown_values(t[i], summarize, out) end
  if n == 1 then
    local list = t:tolist()
    if summarize and size > 2 * EDGE then
      for i = 1, EDGE do out[#out + 1] = list[i] end
      for i = size - EDGE + 1, size do out[#out + 1] = list[i] end
    else
      for i = 1, size do out[#out + 1] = list[i] end
    end
    return out
  end
  if summarize and size > 2 * EDGE then
    for i = 1, EDGE do visit(i) end
    for i = size - EDGE + 1, size do visit(i) end
  else
    for i = 1, size do visit(i) end
  end
  return out
end

-- PyTorch's _Formatter: picks integer, fixed (4 decimals) or scientific notation.
local function make_formatter(values, floating, is_bool)
  if is_bool then
    local w = 4
    for _, v in ipairs(values) do if not v then w = 5 end end
    return function(v) return v and "True" or "False" end, w
  end
  local fmt
  if not floating then
    fmt = function(v) return string.format("%d", v) end
  else
    local int_mode, minv, maxv = true, math.huge, 0
    local any = false
    for _, v in ipairs(values) do
      if is_finite(v) and v ~= 0 then
        any = true
        local a = math.abs(v)
        if a < minv then minv = a end
        if a > maxv then maxv = a end
        if v ~= math.ceil(v) then int_mode = false end
      end
    end
    local sci = false
    if any then
      if int_mode then
        sci = maxv / minv > 1000 or maxv > 1e8
      else
        sci = maxv / minv > 1000 or maxv > 1e8 or minv < 1e-4
      end
    end
    local function special(v)
      if v ~= v then return "nan" end
      if v == math.huge then return "inf" end
      if v == -math.huge then return "-inf" end
    end
    if sci then
      fmt = function(v) return special(v) or string.format("%.4e", v) end
    elseif int_mode then
      fmt = function(v) return special(v) or (string.format("%.0f", v) .. ".") end
    else
      fmt = function(v) return special(v) or string.format("%.4f", v) end
    end
  end
  -- the column width: of every value for integers; for floats, of the nonzero finite
  -- values only, as PyTorch measures them (nan, inf and 0. may stick out or pad less)
  local width = 1
  for _, v in ipairs(values) do
    if not floating or (is_finite(v) and v ~= 0) then
      local s = fmt(v)
      if #s > width then width = #s end
    end
  end
  return fmt, width
end

local function pad(s, w) return string.rep(" ", w - #s) .. s end

local function format_rec(t, fmt, width, indent, summarize)
  local n = t:dim()
  if n == 0 then return pad(fmt(t:item()), width) end
  local size = t:size(1)
  if n == 1 then
    local list = t:tolist()
    local items = {}
    local function add(i) items[#items + 1] = pad(fmt(list[i]), width) end
    if summarize and size > 2 * EDGE then
      for i = 1, EDGE do add(i) end
      items[#items + 1] = " ..."
      for i = size - EDGE + 1, size do add(i) end
    else
      for i = 1, size do add(i) end
    end
    -- wrap long rows as PyTorch does
    local per_line = math.max(1, math.floor((LINEWIDTH - indent) / (width + 2)))
    if #items <= per_line then return "[" .. table.concat(items, ", ") .. "]" end
    local lines = {}
    for i = 1, #items, per_line do
      lines[#lines + 1] = table.concat(items, ", ", i, math.min(i + per_line - 1, #items))
    end
    return "[" .. table.concat(lines, ",\n" .. string.rep(" ", indent + 1)) .. "]"
  end
  local parts = {}
  local function add(i) parts[#parts + 1] = format_rec(t[i], fmt, width, indent + 1, summarize) end
  if summarize and size > 2 * EDGE then
    for i = 1, EDGE do add(i) end
    parts[#parts + 1] = "..."
    for i = size - EDGE + 1, size do add(i) end
  else
    for i = 1, size do add(i) end
  end
  local sep = "," .. string.rep("\n", n - 1) .. string.rep(" ", indent + 1)
  return "[" .. table.concat(parts, sep) .. "]"
end

-- PyTorch prints the size of an empty tensor as a tuple: size=(0, 3), size=(0,).
local function shape_str(t)
  local s = t:shape()
  return "(" .. table.concat(s, ", ") .. (#s == 1 and ",)" or ")")
end

function M.tensor_tostring(t)
  local grad_fn, requires_grad = t.grad_fn, t.requires_grad
  t = t:detach() -- printing reads elements through selects: record none
  local dtype, numel = t:dtype(), t:numel()
  local floating = t:is_floating_point()
  local prefix = "tensor("
  local body
  local suffixes = {}
  local summarize = numel > THRESHOLD
  if numel == 0 then
    body = "[]"
    if t:dim() ~= 1 then suffixes[#suffixes + 1] = "size=" .. shape_str(t) end
  else
    local values = shown_values(t, summarize, {})
    local fmt, width = make_formatter(values, floating, dtype == "bool")
    body = format_rec(t, fmt, width, #prefix, summarize)
  end
  if t:device() ~= "cpu" then suffixes[#suffixes + 1] = "device='" .. t:device() .. "'" end
  if dtype ~= "float32" and dtype ~= "int64" and dtype ~= "bool" then
    suffixes[#suffixes + 1] = "dtype=" .. dtype
  end
  if grad_fn then
    suffixes[#suffixes + 1] = "grad_fn=<" .. tostring(grad_fn) .. ">"
  elseif requires_grad then
    suffixes[#suffixes + 1] = "requires_grad=True"
  end
  local s = prefix .. body
  if #suffixes > 0 then s = s .. ", " .. table.concat(suffixes, ", ") end
  return s .. ")"
end

return M
