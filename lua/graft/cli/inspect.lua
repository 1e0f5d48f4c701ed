-- `graft inspect FILE [--json] [--stats]`: what a checkpoint holds. A table of the
-- tensors (name, dtype, shape, size), totals (tensors, parameters, bytes, per dtype),
-- the safetensors metadata and the non-tensor entries of a checkpoint (epoch, ...),
-- nested dicts walked with dotted names. The module also carries the helpers that the
-- other checkpoint commands (convert, diff) share: M.util.
local graft = require("graft")
require("graft.checkpoint")
local OrderedDict = require("graft.odict")

local M = { util = {} }
local U = M.util

---------------------------------------------------------------------------------------
-- Shared helpers.

-- A usage error: exits 2 with the usage line.
function U.usage_error(msg) error({ usage = true, msg = msg }, 0) end

-- Runs body(args) for command `name`: --help prints help; a usage error exits 2 with
-- the usage line; any other error exits 1 with the message (no traceback).
function U.run(name, usage, help, body, ...)
  local args = table.pack(...)
  for i = 1, args.n do
    if args[i] == "--help" or args[i] == "-h" then
      io.stdout:write(usage, "\n", help)
      return 0
    end
    if args[i] == "--" then break end
  end
  local ok, res = pcall(body, args)
  io.stdout:flush()
  if ok then return res or 0 end
  if type(res) == "table" and res.usage then
    io.stderr:write(("graft %s: %s\n%s\n"):format(name, res.msg, usage))
    return 2
  end
  local msg = tostring(res):gsub("^[^\n]-%.lua:%d+: ", "")
  io.stderr:write(("graft %s: %s\n"):format(name, msg))
  return 1
end

-- Splits args into positionals and options. spec: {["--json"] = "flag",
-- ["--top"] = "value"}; returns positionals (list), options (name without dashes ->
-- true or the value).
function U.parse_args(args, spec)
  local pos, opts, i, rest = {}, {}, 1, false
  while i <= args.n do
    local a = args[i]
    if rest or a == "-" or a:sub(1, 1) ~= "-" then
      pos[#pos + 1] = a
    elseif a == "--" then
      rest = true
    else
      local name, inline = a:match("^(%-%-[^=]+)=(.*)$")
      name = name or a
      local kind = spec[name]
      if not kind then U.usage_error(("unknown option '%s'"):format(a)) end
      local key = name:gsub("^%-+", ""):gsub("%-", "_")
      if kind == "flag" then
        if inline then U.usage_error(("option '%s' takes no value"):format(name)) end
        opts[key] = true
      else
        local v = inline
        if not v then
          i = i + 1
          v = args[i]
          if v == nil then U.usage_error(("option '%s' needs a value"):format(name)) end
        end
        opts[key] = v
      end
    end
    i = i + 1
  end
  return pos, opts
end

local UNITS = { "B", "KiB", "MiB", "GiB", "TiB" }
function U.human_bytes(n)
  local u = 1
  while n >= 1024 and u < #UNITS do
    n = n / 1024
    u = u + 1
  end
  if u == 1 then return ("%d B"):format(n) end
  return ("%.1f %s"):format(n, UNITS[u])
end

-- 1234567 -> "1,234,567"
function U.commas(n)
  local s = tostring(math.tointeger(n) or n)
  local sign, digits = s:match("^(-?)(%d+)$")
  if not digits then return s end
  return sign .. digits:reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^,", "")
end

function U.shape_str(s) return "[" .. table.concat(s, ", ") .. "]" end

function U.number_str(v)
  if v ~= v then return "nan" end
  if v == math.huge then return "inf" end
  if v == -math.huge then return "-inf" end
  if math.type(v) == "integer" then return tostring(v) end
  return ("%.6g"):format(v)
end

-- A string in double quotes, with control characters escaped (one line).
function U.quote(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    local map = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }
    return map[c] or ("\\x%02x"):format(c:byte())
  end) .. '"'
end

-- A leaf value as text (entries of a checkpoint).
function U.value_str(v)
  if v == graft.None then return "None" end
  if type(v) == "number" then return U.number_str(v) end
  if type(v) == "string" then return U.quote(v) end
  if graft.is_placeholder and graft.is_placeholder(v) then return tostring(v) end
  if type(v) == "table" then
    local parts = {}
    for i = 1, #v do parts[i] = U.value_str(v[i]) end
    return "[" .. table.concat(parts, ", ") .. "]"
  end
  return tostring(v)
end

-- JSON text of a Lua value: OrderedDicts and tables with string keys as objects (an
-- OrderedDict in its order, a table's keys sorted), sequences as arrays; NaN and
-- infinities as the strings "nan", "inf", "-inf" (JSON has no such numbers).
function U.json(v, indent, lvl)
  lvl = lvl or 0
  local nl = indent and "\n" .. string.rep(indent, lvl + 1) or ""
  local close = indent and "\n" .. string.rep(indent, lvl) or ""
  local sep = indent and ": " or ":"
  local t = type(v)
  if v == nil or v == graft.None then return "null" end
  if t == "boolean" then return tostring(v) end
  if t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then return '"' .. U.number_str(v) .. '"' end
    if math.type(v) == "integer" then return tostring(v) end
    for digits = 15, 16 do -- the shortest text that reads back as v
      local s = ("%." .. digits .. "g"):format(v)
      if tonumber(s) == v then return s end
    end
    return ("%.17g"):format(v)
  end
  if t == "string" then
    return '"' .. v:gsub('[%c"\\]', function(c)
      local map = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }
      return map[c] or ("\\u%04x"):format(c:byte())
    end) .. '"'
  end
  if graft.is_placeholder and graft.is_placeholder(v) then return U.json(tostring(v)) end
  if t == "table" then
    local keys
    if OrderedDict.is(v) then
      keys = v:keys()
    else
      local n = #v
      local count = 0
      for _ in pairs(v) do count = count + 1 end
      if count == n then
        local parts, flat = {}, true
        for i = 1, n do
          parts[i] = U.json(v[i], indent, lvl + 1)
          if type(v[i]) == "table" and v[i] ~= graft.None then flat = false end
        end
        if flat then return "[" .. table.concat(parts, indent and ", " or ",") .. "]" end
        return "[" .. nl .. table.concat(parts, "," .. nl) .. close .. "]"
      end
      keys = {}
      for k in pairs(v) do keys[#keys + 1] = k end
      table.sort(keys, function(a, b)
        if type(a) == type(b) then return a < b end
        return type(a) == "number"
      end)
    end
    if #keys == 0 then return "{}" end
    local parts = {}
    for i, k in ipairs(keys) do parts[i] = U.json(tostring(k)) .. sep .. U.json(v[k], indent, lvl + 1) end
    return "{" .. nl .. table.concat(parts, "," .. nl) .. close .. "}"
  end
  return U.json(tostring(v))
end

-- min, max, mean, std over the finite values, and the NaN and Inf counts.
function U.stats(t)
  local s = { nan = 0, inf = 0 }
  if t:numel() == 0 then return s end
  local x = t
  local d = t:dtype()
  if d ~= "float32" and d ~= "float64" then x = t:to("float64") end
  if t:is_floating_point() then
    s.nan = x:isnan():sum():item()
    s.inf = x:isinf():sum():item()
    if s.nan + s.inf > 0 then x = x:masked_select(x:isfinite()) end
  end
  if x:numel() == 0 then return s end
  local exact = t:dtype() ~= "bool" and not t:is_floating_point()
  s.min = (exact and t or x):min():item()
  s.max = (exact and t or x):max():item()
  s.mean = x:mean():item()
  s.std = x:numel() > 1 and x:std():item() or 0 / 0
  return s
end

-- Loads a file for the commands: allow_unknown (nothing is ever executed), so whole
-- pickled models show their weights.
function U.load(path, opts)
  opts = opts or {}
  if opts.allow_unknown == nil then opts.allow_unknown = true end
  return graft.load(path, opts)
end

-- Left-aligned columns.
function U.table_text(header, rows, right)
  local widths = {}
  for i, h in ipairs(header) do widths[i] = #h end
  for _, r in ipairs(rows) do
    for i, c in ipairs(r) do widths[i] = math.max(widths[i], utf8.len(c) or #c) end
  end
  local out = {}
  local function line(r)
    local cells = {}
    for i, c in ipairs(r) do
      local pad = string.rep(" ", widths[i] - (utf8.len(c) or #c))
      cells[i] = (right and right[i]) and pad .. c or c .. pad
    end
    out[#out + 1] = table.concat(cells, "  "):gsub("%s+$", "")
  end
  line(header)
  for _, r in ipairs(rows) do line(r) end
  return table.concat(out, "\n")
end

---------------------------------------------------------------------------------------
-- inspect

local USAGE = "usage: graft inspect FILE [--json] [--stats]"
local HELP = [[
Lists the tensors of a checkpoint (.pth, .pt, .bin or .safetensors; the format is read
from the file's bytes): name, dtype, shape and size, then totals (tensors, parameters,
bytes, per dtype), the safetensors metadata and the other entries (epoch, ...). Nested
dicts are walked with dotted names (list positions are 1-based); a whole pickled model
shows its state dict. Nothing in the file is ever executed.

  --json    the same as JSON
  --stats   add min, max, mean, std (over the finite values) and the NaN/Inf counts
]]

local function inspect(args)
  local pos, opts = U.parse_args(args, { ["--json"] = "flag", ["--stats"] = "flag" })
  if #pos ~= 1 then U.usage_error(#pos == 0 and "no FILE given" or "one FILE at a time") end
  local path = pos[1]
  local obj, info = U.load(path)
  local flat = graft.state.flatten(obj, { scalar_lists = true })
  local f = io.open(path, "rb")
  local file_bytes = f and f:seek("end") or 0
  if f then f:close() end

  local tensors, entries = {}, OrderedDict()
  local totals = OrderedDict()
  totals.tensors = 0
  totals.parameters = 0
  totals.bytes = 0
  totals.by_dtype = OrderedDict()
  for name, v in pairs(flat) do
    if graft.is_tensor(v) then
      local numel, bytes = v:numel(), v:numel() * v:element_size()
      local row = OrderedDict()
      row.name = name
      row.dtype = v:dtype()
      row.shape = v:shape()
      row.numel = numel
      row.bytes = bytes
      if opts.stats then row.stats = U.stats(v) end
      tensors[#tensors + 1] = row
      totals.tensors = totals.tensors + 1
      totals.parameters = totals.parameters + numel
      totals.bytes = totals.bytes + bytes
      local d = totals.by_dtype[v:dtype()]
      if not d then
        d = OrderedDict()
        d.tensors = 0
        d.parameters = 0
        d.bytes = 0
        totals.by_dtype[v:dtype()] = d
      end
      d.tensors, d.parameters, d.bytes = d.tensors + 1, d.parameters + numel, d.bytes + bytes
    else
      entries[name] = v
    end
  end

  if opts.json then
    local doc = OrderedDict()
    doc.file = path
    doc.format = info.format
    doc.file_bytes = file_bytes
    doc.tensors = tensors
    doc.totals = totals
    doc.metadata = info.metadata or OrderedDict()
    local e = OrderedDict()
    for k, v in pairs(entries) do
      e[k] = graft.is_placeholder(v) and tostring(v) or v
    end
    doc.entries = e
    io.stdout:write(U.json(doc, "  "), "\n")
    return 0
  end

  local out = {}
  out[#out + 1] = ("%s: %s, %s"):format(path, info.format, U.human_bytes(file_bytes))
  if #tensors > 0 then
    local header = { "name", "dtype", "shape", "size" }
    local right = { false, false, false, true }
    if opts.stats then
      for _, h in ipairs({ "min", "max", "mean", "std", "nan", "inf" }) do header[#header + 1] = h end
      for i = 5, 10 do right[i] = true end
    end
    local rows = {}
    for _, r in ipairs(tensors) do
      local row = { r.name, r.dtype, U.shape_str(r.shape), U.human_bytes(r.bytes) }
      if r.stats then
        local s = r.stats
        for _, k in ipairs({ "min", "max", "mean", "std" }) do
          row[#row + 1] = s[k] ~= nil and U.number_str(s[k]) or "-"
        end
        row[#row + 1] = tostring(s.nan)
        row[#row + 1] = tostring(s.inf)
      end
      rows[#rows + 1] = row
    end
    out[#out + 1] = U.table_text(header, rows, right)
  end
  out[#out + 1] = ("total: %s tensors, %s parameters, %s"):format(U.commas(totals.tensors),
    U.commas(totals.parameters), U.human_bytes(totals.bytes))
  for d, t in pairs(totals.by_dtype) do
    out[#out + 1] = ("  %-9s %s tensor%s, %s parameters, %s"):format(d, U.commas(t.tensors),
      t.tensors == 1 and "" or "s", U.commas(t.parameters), U.human_bytes(t.bytes))
  end
  if info.metadata and #info.metadata > 0 then
    out[#out + 1] = "metadata:"
    for k, v in pairs(info.metadata) do out[#out + 1] = ("  %s = %s"):format(k, U.quote(v)) end
  end
  if #entries > 0 then
    out[#out + 1] = "other entries:"
    for k, v in pairs(entries) do out[#out + 1] = ("  %s = %s"):format(k, U.value_str(v)) end
  end
  io.stdout:write(table.concat(out, "\n"), "\n")
  return 0
end

function M.main(...)
  return U.run("inspect", USAGE, HELP, inspect, ...)
end

return M
