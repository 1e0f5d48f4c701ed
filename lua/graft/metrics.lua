-- graft.metrics: a training run's metrics as a CSV or JSON-lines file, one row per
-- log() call, flushed at once (a crash keeps every row logged), and read back for
-- `graft plot`.
--
--   local m = graft.metrics.open("runs/metrics.csv")        -- {format = "jsonl"}, {append = true}
--   m:log({epoch = 1, step = 100, loss = 0.31, acc = 0.92, lr = 0.01})
--   m:close()
--   local t = graft.metrics.read("runs/metrics.csv")        -- {columns = {...}, rows = {...}}
--   graft.metrics.plot("runs/metrics.csv")                  -- runs/metrics.png, as `graft plot`
--
-- Columns: epoch, step, time first, then losses, accuracies, other keys and learning
-- rates, each alphabetical (opts.columns, when given, come first as listed). A key that a later row brings becomes a new last column: a
-- CSV file is then rewritten once with the new header (earlier rows get empty cells).
-- Keys a row lacks are empty cells (CSV) or absent (JSON lines).
local graft = require("graft")

local M = {}

local Writer = {}
Writer.__index = Writer
Writer.__name = "graft.metrics.Writer"

local LEADING = { "run", "epoch", "step", "iter", "batch", "time" }
local LEADING_RANK = {}
for i, k in ipairs(LEADING) do LEADING_RANK[k] = i end

local function format_of(path, opts)
  local f = opts.format
  if f == nil then
    local ext = path:match("%.([%w]+)$")
    ext = ext and ext:lower()
    f = (ext == "jsonl" or ext == "json" or ext == "ndjson") and "jsonl" or "csv"
  end
  if f ~= "csv" and f ~= "jsonl" then
    error(("metrics: format must be \"csv\" or \"jsonl\", got %q"):format(tostring(f)), 3)
  end
  return f
end

-- The rank of a metric's name in displays: losses, accuracies, the rest, learning rates.
function M.kind(name)
  local low = name:lower()
  if low:find("loss") then return "loss" end
  if low:find("acc") then return "acc" end
  if low == "lr" or low:find("^lr[_%d]") or low:find("_lr$") or low:find("learning_rate") then return "lr" end
  return "other"
end
local KIND_RANK = { loss = 1, acc = 2, other = 3, lr = 4 }

-- Keys in the file's order: the leading counters, then losses, accuracies, the rest and
-- learning rates, each alphabetical.
local function sort_keys(keys)
  table.sort(keys, function(a, b)
    local ra, rb = LEADING_RANK[a] or 10 + KIND_RANK[M.kind(a)], LEADING_RANK[b] or 10 + KIND_RANK[M.kind(b)]
    if ra ~= rb then return ra < rb end
    return a < b
  end)
  return keys
end
M._sort_keys = sort_keys

---------------------------------------------------------------------------------------
-- Values.

-- The shortest decimal that reads back as the same float.
local function num_text(v)
  if math.type(v) == "integer" then return tostring(v) end
  if v ~= v then return "nan" end
  if v == math.huge then return "inf" end
  if v == -math.huge then return "-inf" end
  local s
  for prec = 15, 17 do
    s = ("%." .. prec .. "g"):format(v)
    if tonumber(s) == v then break end
  end
  return s
end

-- A row's value as a number, string or boolean (one-element tensors through item()).
local function plain_value(k, v)
  local t = type(v)
  if t == "number" or t == "string" or t == "boolean" then return v end
  if graft.is_tensor(v) then
    if v:numel() ~= 1 then
      error(("metrics: column '%s' is a tensor of %d elements; log a number or a one-element tensor")
        :format(k, v:numel()), 4)
    end
    return v:item()
  end
  error(("metrics: column '%s' is a %s; expected a number, string, boolean or one-element tensor"):format(k, t), 4)
end

local function csv_cell(v)
  if v == nil then return "" end
  if type(v) == "number" then return num_text(v) end
  if type(v) == "boolean" then return tostring(v) end
  if v:find('[,"\r\n]') or v:match("^%s") or v:match("%s$") then return '"' .. v:gsub('"', '""') .. '"' end
  return v
end

local JSON_ESC = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f", ["\n"] = "\\n",
  ["\r"] = "\\r", ["\t"] = "\\t" }
local function json_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c) return JSON_ESC[c] or ("\\u%04x"):format(c:byte()) end) .. '"'
end

-- NaN and infinities as Python's json writes them (json.loads reads them back).
local function json_value(v)
  if type(v) == "number" then
    if v ~= v then return "NaN" end
    if v == math.huge then return "Infinity" end
    if v == -math.huge then return "-Infinity" end
    return num_text(v)
  end
  if type(v) == "boolean" then return tostring(v) end
  return json_string(v)
end

---------------------------------------------------------------------------------------
-- Reading: CSV (RFC 4180 quoting) and JSON lines of flat objects.

-- The records of a CSV text: a list of lists of strings.
local function csv_parse(text, path)
  local records, rec, i, n = {}, {}, 1, #text
  local field_start = true
  while i <= n do
    local c = text:sub(i, i)
    if c == '"' and field_start then
      local buf, j = {}, i + 1
      while true do
        local q = text:find('"', j, true)
        if not q then error(("metrics: %s: unterminated quoted field"):format(path), 0) end
        buf[#buf + 1] = text:sub(j, q - 1)
        if text:sub(q + 1, q + 1) == '"' then
          buf[#buf + 1] = '"'
          j = q + 2
        else
          i = q + 1
          break
        end
      end
      rec[#rec + 1] = table.concat(buf)
      field_start = false
    else
      local e = text:find("[,\r\n]", i) or n + 1
      if field_start or e > i then rec[#rec + 1] = text:sub(i, e - 1) end
      i = e
      field_start = false
    end
    c = text:sub(i, i)
    if c == "," then
      i = i + 1
      field_start = true
      if i > n then rec[#rec + 1] = "" end
    elseif c == "\r" or c == "\n" then
      if text:sub(i, i + 1) == "\r\n" then i = i + 1 end
      i = i + 1
      records[#records + 1] = rec
      rec, field_start = {}, true
    end
  end
  if #rec > 0 then records[#records + 1] = rec end
  return records
end

local SPECIAL = { nan = 0 / 0, ["-nan"] = 0 / 0, inf = math.huge, ["+inf"] = math.huge, ["-inf"] = -math.huge,
  infinity = math.huge, ["-infinity"] = -math.huge }

-- A CSV cell as a value: "" is nil, numbers are numbers, true/false booleans.
local function cell_value(s)
  if s == "" then return nil end
  local v = tonumber(s)
  if v then return v end
  local low = s:lower()
  if SPECIAL[low] then return SPECIAL[low] end
  if s == "true" then return true end
  if s == "false" then return false end
  return s
end

-- One flat JSON object: returns its keys in order and a key -> value table.
local function json_object(line, where)
  local i = 1
  local function fail(what) error(("metrics: %s: %s"):format(where, what), 0) end
  local function ws() i = line:find("[^ \t\r\n]", i) or #line + 1 end
  local function str()
    if line:sub(i, i) ~= '"' then fail("expected a string") end
    local buf = {}
    i = i + 1
    while true do
      local c = line:sub(i, i)
      if c == "" then fail("unterminated string") end
      if c == '"' then
        i = i + 1
        return table.concat(buf)
      end
      if c == "\\" then
        local e = line:sub(i + 1, i + 1)
        local map = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }
        if map[e] then
          buf[#buf + 1] = map[e]
          i = i + 2
        elseif e == "u" then
          local hex = line:sub(i + 2, i + 5)
          if not hex:match("^%x%x%x%x$") then fail("bad \\u escape") end
          buf[#buf + 1] = utf8.char(tonumber(hex, 16))
          i = i + 6
        else
          fail("bad escape")
        end
      else
        buf[#buf + 1] = c
        i = i + 1
      end
    end
  end
  local function value()
    ws()
    local c = line:sub(i, i)
    if c == '"' then return str() end
    for word, v in pairs({ ["true"] = true, ["false"] = false, null = graft.None, NaN = 0 / 0,
      Infinity = math.huge, ["-Infinity"] = -math.huge }) do
      if line:sub(i, i + #word - 1) == word then
        i = i + #word
        return v
      end
    end
    local num = line:match("^-?%d+%.?%d*[eE]?[-+]?%d*", i)
    if num and num ~= "" and tonumber(num) then
      i = i + #num
      return tonumber(num)
    end
    fail("expected a number, string, boolean or null (nested values are not metrics)")
  end
  ws()
  if line:sub(i, i) ~= "{" then fail("expected a JSON object") end
  i = i + 1
  local keys, obj = {}, {}
  ws()
  if line:sub(i, i) == "}" then return keys, obj end
  while true do
    ws()
    local k = str()
    ws()
    if line:sub(i, i) ~= ":" then fail("expected ':'") end
    i = i + 1
    local v = value()
    if obj[k] == nil then keys[#keys + 1] = k end
    obj[k] = v ~= graft.None and v or nil
    ws()
    local c = line:sub(i, i)
    i = i + 1
    if c == "}" then break end
    if c ~= "," then fail("expected ',' or '}'") end
  end
  ws()
  if i <= #line then fail("text after the object") end
  return keys, obj
end

local function read_all(path)
  local f, err = io.open(path, "rb")
  if not f then error(("metrics: cannot open %s: %s"):format(path, err), 0) end
  local text = f:read("a")
  f:close()
  return text
end

-- graft.metrics.read(path [, {format = ...}]) -> {columns = {...}, rows = {{col = v}}, format}
-- Numbers come back as numbers; empty cells and JSON nulls are absent.
function M.read(path, opts)
  opts = opts or {}
  local fmt = format_of(path, opts)
  local text = read_all(path)
  local columns, rows = {}, {}
  if fmt == "csv" then
    local recs = csv_parse(text, path)
    if #recs == 0 then return { columns = columns, rows = rows, format = fmt } end
    columns = recs[1]
    for r = 2, #recs do
      local rec, row = recs[r], {}
      if #rec > #columns then
        error(("metrics: %s: row %d has %d cells, the header %d"):format(path, r, #rec, #columns), 0)
      end
      for c, name in ipairs(columns) do row[name] = cell_value(rec[c] or "") end
      rows[#rows + 1] = row
    end
  else
    local seen, lineno = {}, 0
    for line in (text .. "\n"):gmatch("([^\n]*)\n") do
      lineno = lineno + 1
      if line:match("%S") then
        local keys, obj = json_object(line, path .. ":" .. lineno)
        for _, k in ipairs(keys) do
          if not seen[k] then
            seen[k] = true
            columns[#columns + 1] = k
          end
        end
        rows[#rows + 1] = obj
      end
    end
  end
  return { columns = columns, rows = rows, format = fmt }
end

---------------------------------------------------------------------------------------
-- Writing.

-- graft.metrics.open(path, opts) -> a writer. opts: format ("csv" | "jsonl"; default by
-- the extension: .jsonl/.json/.ndjson are JSON lines), append (keep the file's rows and,
-- for CSV, its columns; default false: start the file anew), columns (a list: the first
-- columns, in this order).
function M.open(path, opts)
  if type(path) ~= "string" then error("metrics.open: path must be a string", 2) end
  opts = opts or {}
  if type(opts) ~= "table" then error("metrics.open: options must be a table", 2) end
  local fmt = format_of(path, opts)
  local self = setmetatable({ path = path, format = fmt, columns = {}, known = {}, rows = 0, closed = false }, Writer)
  local needs_newline = false
  if opts.append then
    local f = io.open(path, "rb")
    if f then
      local text = f:read("a")
      f:close()
      needs_newline = #text > 0 and text:sub(-1) ~= "\n" -- a row cut short by a crash
      if fmt == "csv" and #text > 0 then
        local header = csv_parse(text:match("^[^\r\n]*"), path)[1] or {}
        for _, k in ipairs(header) do self:_add_column(k) end
      end
    end
  end
  if opts.columns then
    for _, k in ipairs(opts.columns) do self:_add_column(tostring(k)) end
  end
  local f, err = io.open(path, opts.append and "ab" or "wb")
  if not f then error(("metrics.open: cannot open %s: %s"):format(path, err), 2) end
  self.file = f
  if needs_newline then f:write("\n") end
  self.header_written = fmt == "csv" and opts.append and #self.columns > 0 and self:_file_size() > 0
  if fmt == "csv" and #self.columns > 0 and not self.header_written then self:_write_header() end
  f:flush()
  return self
end

function Writer:_file_size()
  local cur = self.file:seek("cur")
  local size = self.file:seek("end")
  self.file:seek("set", cur)
  return size
end

function Writer:_add_column(k)
  if not self.known[k] then
    self.known[k] = true
    self.columns[#self.columns + 1] = k
  end
end

function Writer:_write_header()
  local cells = {}
  for i, k in ipairs(self.columns) do cells[i] = csv_cell(k) end
  self.file:write(table.concat(cells, ","), "\n")
  self.header_written = true
end

-- A CSV file gains columns: rewrite it with the new header (through a temporary file
-- renamed over it, so a crash leaves the old file or the new one).
function Writer:_rewrite_csv(old_columns)
  self.file:close()
  local text = read_all(self.path)
  local recs = csv_parse(text, self.path)
  local tmp = self.path .. ".tmp"
  local f, err = io.open(tmp, "wb")
  if not f then error(("metrics: cannot rewrite %s: %s"):format(self.path, err), 0) end
  local cells = {}
  for i, k in ipairs(self.columns) do cells[i] = csv_cell(k) end
  f:write(table.concat(cells, ","), "\n")
  for r = 2, #recs do
    local out = {}
    for c = 1, #self.columns do
      local v = recs[r][c]
      out[c] = v and (c <= #old_columns and csv_cell(v) or "") or ""
    end
    f:write(table.concat(out, ","), "\n")
  end
  f:close()
  local ok, rerr = os.rename(tmp, self.path)
  if not ok then error(("metrics: cannot replace %s: %s"):format(self.path, rerr), 0) end
  self.file = assert(io.open(self.path, "ab"))
end

-- Appends one row (a table of column -> number, string, boolean or one-element tensor)
-- and flushes it to the file.
function Writer:log(row)
  if self.closed then error(("metrics: log on a closed writer (%s)"):format(self.path), 2) end
  if type(row) ~= "table" then error("metrics: log expects a table of column = value", 2) end
  local values, new = {}, {}
  for k, v in pairs(row) do
    if type(k) ~= "string" then
      error(("metrics: column names must be strings, got a %s key"):format(type(k)), 2)
    end
    values[k] = plain_value(k, v)
    if not self.known[k] then new[#new + 1] = k end
  end
  if #new > 0 then
    local old = { table.unpack(self.columns) }
    for _, k in ipairs(sort_keys(new)) do self:_add_column(k) end
    if self.format == "csv" then
      if self.header_written then self:_rewrite_csv(old) else self:_write_header() end
    end
  end
  local parts = {}
  if self.format == "csv" then
    for i, k in ipairs(self.columns) do parts[i] = csv_cell(values[k]) end
    self.file:write(table.concat(parts, ","), "\n")
  else
    for _, k in ipairs(self.columns) do
      if values[k] ~= nil then parts[#parts + 1] = json_string(k) .. ":" .. json_value(values[k]) end
    end
    self.file:write("{", table.concat(parts, ","), "}\n")
  end
  self.file:flush()
  self.rows = self.rows + 1
  return self
end

-- Closes the file; closing twice does nothing.
function Writer:close()
  if self.closed then return end
  self.closed = true
  self.file:close()
end
Writer.__close = Writer.close

function Writer:__tostring()
  return ("metrics writer %s (%s, %d columns, %d rows%s)"):format(self.path, self.format, #self.columns, self.rows,
    self.closed and ", closed" or "")
end

-- graft.metrics.plot(path, opts): the curves of a metrics file as a PNG, as `graft plot`
-- draws them (gnuplot). opts: output (default: path with .png), x, y (a list), title,
-- width, height. Returns the PNG's path.
function M.plot(path, opts)
  if type(path) ~= "string" then error("metrics.plot: path must be a string", 2) end
  local ok, out = pcall(require("graft.cli.plot").draw, path, opts)
  if not ok then error("metrics.plot: " .. tostring(out), 2) end
  return out
end

M.Writer = Writer
M._csv_parse = csv_parse
return M
