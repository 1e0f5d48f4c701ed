-- graft.state: tools to reshape a state dict before loading it into a model. Each
-- returns a NEW OrderedDict (the tensors themselves are shared, not copied, except by
-- cast) and never modifies its input; most also return a second value that says what
-- they did.
--
--   local ckpt = graft.load("ckpt.pth")
--   local sd, info = graft.state.unwrap(ckpt)          -- info.key == "state_dict"
--   sd = graft.state.strip_prefix(sd, "module.")
--   sd = graft.state.rename(sd, {{"^fc%.", "head."}})
--   local r = graft.state.check_keys(model:state_dict(), sd)   -- prints a short report
local graft = require("graft")
local OrderedDict = require("graft.odict")

local M = {}

local FLOAT = { float32 = true, float64 = true, float16 = true, bfloat16 = true }
local WEIGHT_KEYS = { "state_dict", "model", "model_state_dict", "state_dict_ema", "module" }
local CAP = 10 -- names printed per list in check_keys' report

local function is_tensor(x) return graft.is_tensor(x) end
local function is_placeholder(x) return graft.is_placeholder ~= nil and graft.is_placeholder(x) end
local function is_plain(x) return type(x) == "table" and getmetatable(x) == nil end
local function is_dict(x) return OrderedDict.is(x) or is_plain(x) end

local function shape_str(s)
  return "[" .. table.concat(s, ", ") .. "]"
end

local function same_shape(a, b)
  if #a ~= #b then return false end
  for i = 1, #a do
    if a[i] ~= b[i] then return false end
  end
  return true
end

-- x as an OrderedDict (a plain table's keys sorted), or an error naming op.
local function as_dict(x, op, what)
  if OrderedDict.is(x) then return x end
  if type(x) == "table" and not is_placeholder(x) and type(x.state_dict) == "function" then return x:state_dict() end
  if is_plain(x) then return OrderedDict.from_table(x) end
  error(("%s: %s must be a state dict (an OrderedDict or a table of tensors), got %s"):format(
    op, what or "the state dict", is_tensor(x) and "a tensor" or type(x)), 3)
end

-- A new OrderedDict carrying sd's module metadata (PyTorch's _metadata), if any.
local function new_like(sd)
  local out = OrderedDict()
  if OrderedDict.is(sd) and sd:metadata() then out:set_metadata(sd:metadata()) end
  return out
end

local function capped(names, cap)
  cap = cap or CAP
  local shown = {}
  for i = 1, math.min(#names, cap) do shown[i] = names[i] end
  local s = table.concat(shown, ", ")
  if #names > cap then s = s .. (", ... and %d more"):format(#names - cap) end
  return s
end
-- "a, b, c, ... and N more": shared with the report of net:load_pretrained
M._capped = capped

local function count_tensors(d)
  local n = 0
  for _, v in pairs(d) do
    if is_tensor(v) then n = n + 1 end
  end
  return n
end

-- Whether a placeholder looks like a pickled nn.Module (its state has _parameters).
local function module_state(p)
  if not is_placeholder(p) then return nil end
  local st = rawget(p, "__state")
  -- BUILD with (dict_state, slot_state)
  if is_plain(st) and #st == 2 and is_dict(st[1]) then st = st[1] end
  if is_dict(st) and st._parameters ~= nil then return st end
  return nil
end

---------------------------------------------------------------------------------------
-- extract(obj): the state dict of a whole pickled model (placeholders from
-- graft.load(path, {allow_unknown = true})), with PyTorch's keys and order: each
-- module's parameters, then its persistent buffers, then its children depth-first.

-- The names in a pickled set (_non_persistent_buffers_set): a placeholder
-- builtins.set(list), a list, or a table keyed by name.
local function name_set(x)
  local out = {}
  if x == nil or x == graft.None then return out end
  if is_placeholder(x) then
    local args = rawget(x, "__args")
    if type(args) == "table" and type(args[1]) == "table" then x = args[1] else return out end
  end
  if type(x) == "table" then
    if #x > 0 then
      for _, n in ipairs(x) do out[n] = true end
    else
      for k, v in pairs(x) do
        if v then out[k] = true end
      end
    end
  end
  return out
end

function M.extract(obj)
  if OrderedDict.is(obj) and not module_state(obj) then
    -- already a state dict
    local out = new_like(obj)
    for k, v in pairs(obj) do out[k] = v end
    return out
  end
  local root = module_state(obj)
  if not root then
    error("extract: expected a pickled model (a placeholder module from graft.load(path, {allow_unknown = true})), got " ..
      (is_placeholder(obj) and tostring(obj) or type(obj)), 2)
  end
  local out = OrderedDict()
  local seen = {}
  local function walk(st, prefix)
    if seen[st] then return end -- a cycle guard; shared children still appear under each name
    seen[st] = true
    local params = st._parameters
    if is_dict(params) then
      for k, v in pairs(OrderedDict.is(params) and params or OrderedDict.from_table(params)) do
        if is_tensor(v) then out[prefix .. k] = v end
      end
    end
    local buffers = st._buffers
    if is_dict(buffers) then
      local np = name_set(st._non_persistent_buffers_set)
      for k, v in pairs(OrderedDict.is(buffers) and buffers or OrderedDict.from_table(buffers)) do
        if is_tensor(v) and not np[k] then out[prefix .. k] = v end
      end
    end
    local mods = st._modules
    if is_dict(mods) then
      for k, child in pairs(OrderedDict.is(mods) and mods or OrderedDict.from_table(mods)) do
        local cs = module_state(child)
        if cs then walk(cs, prefix .. k .. ".") end
      end
    end
    seen[st] = nil
  end
  walk(root, "")
  return out
end

---------------------------------------------------------------------------------------
-- unwrap(ckpt) -> sd, info: the weights of a training checkpoint.

function M.unwrap(ckpt)
  if is_tensor(ckpt) or not (is_dict(ckpt) or module_state(ckpt)) then
    error("unwrap: expected a checkpoint (a table or OrderedDict), got " .. (is_tensor(ckpt) and "a tensor" or type(ckpt)), 2)
  end
  if module_state(ckpt) then
    local sd = M.extract(ckpt)
    return sd, { key = nil, extracted = true, other_keys = {}, entries = OrderedDict(), tensors = #sd }
  end
  local top = as_dict(ckpt, "unwrap")
  local cur, path, extracted = top, {}, false
  while true do
    local chosen
    for _, k in ipairs(WEIGHT_KEYS) do
      local v = cur[k]
      if (is_dict(v) and (count_tensors(v) > 0 or v.state_dict ~= nil or v.model ~= nil))
          or module_state(v) then
        chosen = k
        break
      end
    end
    if not chosen then break end
    path[#path + 1] = chosen
    local v = cur[chosen]
    if module_state(v) then
      cur, extracted = M.extract(v), true
      break
    end
    cur = as_dict(v, "unwrap")
    if count_tensors(cur) > 0 then break end
  end
  if count_tensors(cur) == 0 then
    error(("unwrap: no tensors found in the checkpoint (keys: %s)"):format(capped(top:keys())), 2)
  end
  local sd = new_like(cur)
  for k, v in pairs(cur) do sd[k] = v end
  local info = { key = #path > 0 and table.concat(path, ".") or nil, extracted = extracted or nil,
                 other_keys = {}, entries = OrderedDict(), tensors = count_tensors(sd) }
  if #path > 0 then
    for k, v in pairs(top) do
      if k ~= path[1] then
        info.other_keys[#info.other_keys + 1] = k
        if type(v) ~= "table" then info.entries[k] = v end
      end
    end
  end
  return sd, info
end

---------------------------------------------------------------------------------------
-- Keys: prefixes, filter, rename.

-- Module metadata keys are module paths without the trailing dot ("" the root).
local function meta_map(sd, fn)
  local m = OrderedDict.is(sd) and sd:metadata()
  if not m then return nil end
  local out = {}
  for k, v in pairs(m) do
    local nk = fn(k)
    if nk ~= nil then out[nk] = v end
  end
  return out
end

-- strip_prefix(sd, prefix) -> new sd, n: removes prefix from the keys that start with
-- it (others are kept as they are); n says how many keys changed.
function M.strip_prefix(sd, prefix)
  sd = as_dict(sd, "strip_prefix")
  if type(prefix) ~= "string" then error("strip_prefix: prefix must be a string", 2) end
  local out, from, n = OrderedDict(), {}, 0
  for k, v in pairs(sd) do
    local nk = k
    if type(k) == "string" and prefix ~= "" and k:sub(1, #prefix) == prefix then
      nk, n = k:sub(#prefix + 1), n + 1
    end
    if out:has(nk) then error(("strip_prefix: %q and %q both become %q"):format(from[nk], k, nk), 2) end
    from[nk] = k
    out[nk] = v
  end
  local m = meta_map(sd, function(k)
    local kd = k .. "."
    if kd:sub(1, #prefix) == prefix then return (kd:sub(#prefix + 1):gsub("%.$", "")) end
    return k
  end)
  if m then out:set_metadata(m) end
  return out, n
end

-- add_prefix(sd, prefix) -> new sd: prefix + key for every key.
function M.add_prefix(sd, prefix)
  sd = as_dict(sd, "add_prefix")
  if type(prefix) ~= "string" then error("add_prefix: prefix must be a string", 2) end
  local out = OrderedDict()
  for k, v in pairs(sd) do out[prefix .. tostring(k)] = v end
  local m = meta_map(sd, function(k)
    if k == "" then return (prefix:gsub("%.$", "")) end
    return prefix .. k
  end)
  if m then out:set_metadata(m) end
  return out
end

-- filter(sd, pattern | function(key, value)) -> new sd, dropped keys (a list). A string
-- is a Lua pattern searched in the key (string.find): "^encoder%.", "bias$".
function M.filter(sd, pred)
  sd = as_dict(sd, "filter")
  local keep
  if type(pred) == "string" then
    keep = function(k) return type(k) == "string" and k:find(pred) ~= nil end
  elseif type(pred) == "function" then
    keep = pred
  else
    error("filter: expected a Lua pattern or a function(key, value), got " .. type(pred), 2)
  end
  local out, dropped = new_like(sd), {}
  for k, v in pairs(sd) do
    if keep(k, v) then out[k] = v else dropped[#dropped + 1] = k end
  end
  return out, dropped
end

-- rename(sd, {{pattern, replacement}, ...}) -> new sd, renamed ({{from, to}, ...}).
-- Every rule is applied to every key, in order, each to the result of the one before
-- (as sed -e a -e b): string.gsub(key, pattern, replacement), so a replacement may be
-- a string with %1 captures, a table or a function. Two keys that end up equal raise.
function M.rename(sd, rules)
  sd = as_dict(sd, "rename")
  if type(rules) ~= "table" then error("rename: rules must be a list of {pattern, replacement}", 2) end
  for i, r in ipairs(rules) do
    if type(r) ~= "table" or type(r[1]) ~= "string" or r[2] == nil then
      error(("rename: rule %d must be {pattern, replacement}"):format(i), 2)
    end
  end
  local out, from, renamed = new_like(sd), {}, {}
  for k, v in pairs(sd) do
    local nk = k
    if type(k) == "string" then
      for _, r in ipairs(rules) do nk = nk:gsub(r[1], r[2]) end
    end
    if out:has(nk) then error(("rename: %q and %q both become %q"):format(from[nk], k, nk), 2) end
    from[nk] = k
    out[nk] = v
    if nk ~= k then renamed[#renamed + 1] = { k, nk } end
  end
  return out, renamed
end

---------------------------------------------------------------------------------------
-- Matching against a model's state dict.

-- select_matching(target_sd, sd) -> new sd, dropped: the entries of sd whose key is in
-- target with the same shape (in sd's order). dropped lists the others, in sd's order:
-- {key =, reason = "missing in target" | "shape mismatch" | "not a tensor", expected =
-- shape in target, got = shape in sd}.
function M.select_matching(target, sd)
  target = as_dict(target, "select_matching", "the target")
  sd = as_dict(sd, "select_matching")
  local out, dropped = new_like(sd), {}
  for k, v in pairs(sd) do
    local t = target[k]
    if t == nil then
      dropped[#dropped + 1] = { key = k, reason = "missing in target", got = is_tensor(v) and v:shape() or nil }
    elseif is_tensor(t) and not is_tensor(v) then
      dropped[#dropped + 1] = { key = k, reason = "not a tensor", expected = t:shape() }
    elseif is_tensor(t) and not same_shape(t:shape(), v:shape()) then
      dropped[#dropped + 1] = { key = k, reason = "shape mismatch", expected = t:shape(), got = v:shape() }
    else
      out[k] = v
    end
  end
  return out, dropped
end

-- cast(sd, dtype) -> new sd, report: floating tensors converted to the floating dtype;
-- other values kept. report = OrderedDict {key -> {from =, to =}} of what changed.
function M.cast(sd, dtype)
  sd = as_dict(sd, "cast")
  if type(dtype) ~= "string" then error("cast: dtype must be a string", 2) end
  local ok, probe = pcall(graft.empty, 0, { dtype = dtype })
  if not ok then error(('cast: unknown dtype "%s"'):format(dtype), 2) end
  dtype = probe:dtype()
  if not FLOAT[dtype] then error(('cast: dtype "%s" is not a floating dtype'):format(dtype), 2) end
  local out, report, done = new_like(sd), OrderedDict(), {}
  for k, v in pairs(sd) do
    if is_tensor(v) and FLOAT[v:dtype()] and v:dtype() ~= dtype then
      done[v] = done[v] or v:to(dtype)
      report[k] = { from = v:dtype(), to = dtype }
      out[k] = done[v]
    else
      out[k] = v
    end
  end
  return out, report
end

-- The prefix that, stripped from (or added to) the checkpoint's keys, makes the most of
-- them model keys: "strip", prefix, count, example (or nil).
local function prefix_hint(tkeys, skeys)
  local tset, sset = {}, {}
  for _, k in ipairs(tkeys) do tset[k] = true end
  for _, k in ipairs(skeys) do sset[k] = true end
  local best
  local function scan(keys, other, kind)
    local counts, example = {}, {}
    for _, k in ipairs(keys) do
      if type(k) == "string" then
        local pos = 1
        while true do
          local i = k:find(".", pos, true)
          if not i then break end
          local rest = k:sub(i + 1)
          if other[rest] then
            local p = k:sub(1, i)
            counts[p] = (counts[p] or 0) + 1
            example[p] = example[p] or k
          end
          pos = i + 1
        end
      end
    end
    for p, c in pairs(counts) do
      if not best or c > best.count or (c == best.count and p < best.prefix) then
        best = { kind = kind, prefix = p, count = c, example = example[p] }
      end
    end
  end
  scan(skeys, tset, "strip")
  scan(tkeys, sset, "add")
  return best
end

local function hint_text(h)
  if not h then return nil end
  if h.kind == "strip" then
    return ('the checkpoint\'s keys carry the prefix "%s" (%d would match once stripped, e.g. "%s"): use graft.state.strip_prefix(sd, "%s")')
      :format(h.prefix, h.count, h.example, h.prefix)
  end
  return ('the model\'s keys carry the prefix "%s" (%d would match once added, e.g. "%s"): use graft.state.add_prefix(sd, "%s")')
    :format(h.prefix, h.count, h.example, h.prefix)
end

-- check_keys(target_sd, sd [, {quiet = true}]) -> {used, missing, unused, mismatched,
-- mismatched_keys}: used = model keys found with the same shape (model order), missing =
-- model keys absent from sd, unused = sd keys absent from the model (sd order),
-- mismatched = {key -> {expected = model shape, got = sd shape}} (and mismatched_keys
-- their list). Prints a short report unless quiet; raises when nothing would be used.
function M.check_keys(target, sd, opts)
  target = as_dict(target, "check_keys", "the model's state dict")
  sd = as_dict(sd, "check_keys")
  opts = opts or {}
  local r = { used = {}, missing = {}, unused = {}, mismatched = {}, mismatched_keys = {} }
  local tkeys, skeys = target:keys(), sd:keys()
  for _, k in ipairs(tkeys) do
    local t, v = target[k], sd[k]
    if v == nil then
      r.missing[#r.missing + 1] = k
    elseif is_tensor(t) and (not is_tensor(v) or not same_shape(t:shape(), v:shape())) then
      r.mismatched[k] = { expected = t:shape(), got = is_tensor(v) and v:shape() or type(v) }
      r.mismatched_keys[#r.mismatched_keys + 1] = k
    else
      r.used[#r.used + 1] = k
    end
  end
  for _, k in ipairs(skeys) do
    if target[k] == nil then r.unused[#r.unused + 1] = k end
  end
  local hint = (#r.missing > 0 and #r.unused > 0) and hint_text(prefix_hint(r.missing, r.unused)) or nil
  if #r.used == 0 and (#tkeys > 0 or #skeys > 0) then
    local why = hint
    if not why then
      for _, k in ipairs(WEIGHT_KEYS) do
        if sd[k] ~= nil and not is_tensor(sd[k]) then
          why = ('the checkpoint holds "%s": take the weights out first (graft.state.unwrap)'):format(k)
          break
        end
      end
    end
    if not why and #r.mismatched_keys > 0 and #r.missing == 0 then
      local k = r.mismatched_keys[1]
      local m = r.mismatched[k]
      why = ('every key has another shape in the checkpoint (e.g. "%s": model %s, checkpoint %s): a different configuration of the model?')
        :format(k, shape_str(m.expected), type(m.got) == "table" and shape_str(m.got) or m.got)
    end
    if not why then
      why = ("the model's keys look like %s; the checkpoint's like %s. A prefix to strip or add " ..
        "(graft.state.strip_prefix / add_prefix), a checkpoint to unwrap (graft.state.unwrap), or the wrong file?")
        :format(#tkeys > 0 and ('"' .. table.concat({ table.unpack(tkeys, 1, math.min(2, #tkeys)) }, '", "') .. '"') or "(none)",
          #skeys > 0 and ('"' .. table.concat({ table.unpack(skeys, 1, math.min(2, #skeys)) }, '", "') .. '"') or "(none)")
    end
    local mm = #r.mismatched_keys > 0 and (" and %d with other shapes"):format(#r.mismatched_keys) or ""
    error(("check_keys: no key of the checkpoint matches the model (0 of %d used%s): %s"):format(#tkeys, mm, why), 2)
  end
  r.hint = hint
  if not opts.quiet then
    local lines = {}
    lines[1] = ("check_keys: %d of %d model keys loaded; %d missing, %d shape mismatch%s, %d unused in the checkpoint")
      :format(#r.used, #tkeys, #r.missing, #r.mismatched_keys, #r.mismatched_keys == 1 and "" or "es", #r.unused)
    if #r.missing > 0 then lines[#lines + 1] = ("  missing (%d): %s"):format(#r.missing, capped(r.missing)) end
    if #r.mismatched_keys > 0 then
      local parts = {}
      for i = 1, math.min(#r.mismatched_keys, CAP) do
        local k = r.mismatched_keys[i]
        local m = r.mismatched[k]
        parts[i] = ("%s (model %s, checkpoint %s)"):format(k, shape_str(m.expected),
          type(m.got) == "table" and shape_str(m.got) or m.got)
      end
      local s = table.concat(parts, ", ")
      if #r.mismatched_keys > CAP then s = s .. (", ... and %d more"):format(#r.mismatched_keys - CAP) end
      lines[#lines + 1] = ("  shape mismatch (%d): %s"):format(#r.mismatched_keys, s)
    end
    if #r.unused > 0 then lines[#lines + 1] = ("  unused (%d): %s"):format(#r.unused, capped(r.unused)) end
    if hint then lines[#lines + 1] = "  hint: " .. hint end
    print(table.concat(lines, "\n"))
  end
  return r
end

---------------------------------------------------------------------------------------
-- flatten(obj [, {scalar_lists = true}]) -> OrderedDict {dotted name -> leaf}: a nested
-- checkpoint walked in order (dict keys; list positions 1-based, as Lua reads them);
-- tensors, numbers, strings, booleans and None are leaves; a pickled model (placeholder
-- module) is replaced by its extracted state dict; other placeholders are leaves. With
-- scalar_lists, a non-empty list of numbers, strings and booleans is one leaf.
local function scalar_list(x)
  if not is_plain(x) or #x == 0 then return false end
  local n = 0
  for _, v in pairs(x) do
    local t = type(v)
    if t ~= "number" and t ~= "string" and t ~= "boolean" then return false end
    n = n + 1
  end
  return n == #x
end

function M.flatten(obj, opts)
  local lists = opts and opts.scalar_lists
  local out, seen = OrderedDict(), {}
  local function walk(x, prefix)
    local function name(k)
      k = type(k) == "string" and k or tostring(k)
      return prefix == "" and k or prefix .. "." .. k
    end
    if module_state(x) then x = M.extract(x) end
    if (OrderedDict.is(x) or is_plain(x)) and not (lists and scalar_list(x)) then
      if seen[x] then return end
      seen[x] = true
      if OrderedDict.is(x) then
        for k, v in pairs(x) do walk(v, name(k)) end
      else
        local n = #x
        local keys = {}
        for k in pairs(x) do
          if not (math.type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
        end
        table.sort(keys, function(a, b)
          if type(a) == type(b) then return a < b end
          return type(a) == "number"
        end)
        for i = 1, n do walk(x[i], name(i)) end
        for _, k in ipairs(keys) do walk(x[k], name(k)) end
      end
      seen[x] = nil
    else
      if prefix == "" then prefix = "(value)" end
      out[prefix] = x
    end
  end
  walk(obj, "")
  return out
end

return M
