-- `graft diff A B [--top N] [--unwrap]`: how two checkpoints differ: keys only in A,
-- only in B, tensors whose shape or dtype differ, the largest absolute differences of
-- the shared tensors (sorted, top N), and differing non-tensor entries.
local graft = require("graft")
require("graft.checkpoint")
local U = require("graft.cli.inspect").util

local USAGE = "usage: graft diff A B [--top N] [--unwrap] [--strip-prefix P]"
local HELP = [[
Compares two checkpoints (any mix of .pth and .safetensors), key by key (nested dicts
with dotted names): the keys only in A, only in B, the tensors whose shape or dtype
differ, and for the tensors of equal shape the largest absolute difference max|A - B|
(computed in float64; NaN equals NaN), largest first.

  --top N           how many entries of each list to show (default 10; 0 for all)
  --unwrap          compare the weights of training checkpoints (graft.state.unwrap)
  --strip-prefix P  remove P from the keys of both that start with it (e.g. "module.")
]]

-- max |a - b| for tensors of one shape, NaN and equal infinities counting as equal.
local function max_abs_diff(a, b)
  if a:numel() == 0 then return 0 end
  local x, y = a:to("float64"), b:to("float64")
  local d = (x - y):abs()
  d = d:masked_fill(x:eq(y), 0)
  d = d:masked_fill(x:isnan():logical_and(y:isnan()), 0)
  local m = d:max():item()
  if d:isnan():any():item() then return 0 / 0 end
  return m
end

local function describe(t) return t:dtype() .. " " .. U.shape_str(t:shape()) end

local function diff(args)
  local pos, opts = U.parse_args(args, { ["--top"] = "value", ["--unwrap"] = "flag", ["--strip-prefix"] = "value" })
  if #pos ~= 2 then U.usage_error(#pos < 2 and "A and B are needed" or "too many arguments") end
  local top = 10
  if opts.top then
    top = math.tointeger(tonumber(opts.top))
    if not top or top < 0 then U.usage_error(("--top must be a count, not '%s'"):format(opts.top)) end
  end
  local objs, infos, flats = {}, {}, {}
  for i = 1, 2 do
    objs[i], infos[i] = U.load(pos[i])
    if opts.unwrap then objs[i] = graft.state.unwrap(objs[i]) end
    if opts.strip_prefix then objs[i] = graft.state.strip_prefix(objs[i], opts.strip_prefix) end
    flats[i] = graft.state.flatten(objs[i], { scalar_lists = true })
  end
  local A, B = flats[1], flats[2]
  local only_a, only_b, layout, values, entries = {}, {}, {}, {}, {}
  local same, ntensors = 0, { 0, 0 }
  for k, v in pairs(A) do
    if graft.is_tensor(v) then ntensors[1] = ntensors[1] + 1 end
    local w = B[k]
    if w == nil then
      only_a[#only_a + 1] = k
    elseif graft.is_tensor(v) and graft.is_tensor(w) then
      local ss = table.concat(v:shape(), ",") == table.concat(w:shape(), ",")
      if not ss or v:dtype() ~= w:dtype() then
        layout[#layout + 1] = ("  %s: A %s, B %s"):format(k, describe(v), describe(w))
      end
      if ss then
        local m = max_abs_diff(v, w)
        if m == 0 then same = same + 1 else values[#values + 1] = { k, m } end
      end
    elseif graft.is_tensor(v) or graft.is_tensor(w) then
      layout[#layout + 1] = ("  %s: A %s, B %s"):format(k, graft.is_tensor(v) and describe(v) or U.value_str(v),
        graft.is_tensor(w) and describe(w) or U.value_str(w))
    elseif U.value_str(v) ~= U.value_str(w) then
      entries[#entries + 1] = ("  %s: A %s, B %s"):format(k, U.value_str(v), U.value_str(w))
    end
  end
  for k, w in pairs(B) do
    if graft.is_tensor(w) then ntensors[2] = ntensors[2] + 1 end
    if A[k] == nil then only_b[#only_b + 1] = k end
  end
  table.sort(values, function(x, y)
    local a, b = x[2] ~= x[2] and math.huge or x[2], y[2] ~= y[2] and math.huge or y[2]
    if a ~= b then return a > b end
    return x[1] < y[1]
  end)

  local out = {}
  out[#out + 1] = ("A: %s (%s, %d tensors)"):format(pos[1], infos[1].format, ntensors[1])
  out[#out + 1] = ("B: %s (%s, %d tensors)"):format(pos[2], infos[2].format, ntensors[2])
  -- each list shows --top lines (at least 10 for the key lists), then a count
  local function list(title, names, indent, at_least)
    out[#out + 1] = ("%s (%d)%s"):format(title, #names, #names > 0 and ":" or "")
    local cap = top > 0 and math.max(top, at_least) or #names
    for i = 1, math.min(#names, cap) do out[#out + 1] = indent .. names[i] end
    if #names > cap then out[#out + 1] = ("  ... and %d more (--top 0 lists all)"):format(#names - cap) end
  end
  list("only in A", only_a, "  ", 10)
  list("only in B", only_b, "  ", 10)
  list("shape or dtype differs", layout, "", 1)
  out[#out + 1] = ("values differ (%d tensors)%s"):format(#values, #values > 0 and ", largest max|A - B| first:" or "")
  if #values > 0 then
    local rows = {}
    local n = top > 0 and math.min(top, #values) or #values
    for i = 1, n do rows[i] = { values[i][1], U.number_str(values[i][2]) } end
    out[#out + 1] = U.table_text({ "  name", "max|A - B|" }, (function()
      for _, r in ipairs(rows) do r[1] = "  " .. r[1] end
      return rows
    end)(), { false, true })
    if #values > n then out[#out + 1] = ("  ... and %d more (--top 0 lists all)"):format(#values - n) end
  end
  out[#out + 1] = ("identical: %d tensors"):format(same)
  if #entries > 0 then
    out[#out + 1] = ("other entries differ (%d):"):format(#entries)
    for _, l in ipairs(entries) do out[#out + 1] = l end
  end
  io.stdout:write(table.concat(out, "\n"), "\n")
  return 0
end

return {
  main = function(...) return U.run("diff", USAGE, HELP, diff, ...) end,
}
