-- graft.load / graft.save: checkpoint files. The format of a file to read is told from
-- its first bytes, never its name: PyTorch's zip format and the legacy pickle go to the
-- .pth reader (graft._pth_load), safetensors to graft._st_load. Requiring this module
-- installs graft.load, graft.save and graft.state on the graft table.
--
--   local sd, info = graft.load("model.safetensors")   -- info.format, info.metadata
--   local ckpt = graft.load("ckpt.pth", {dtype = "float32"})
--   graft.save(sd, "out.safetensors", {metadata = {format = "pt"}})
local graft = require("graft")
local OrderedDict = require("graft.odict")

local M = {}

local FLOAT = { float32 = true, float64 = true, float16 = true, bfloat16 = true }

local function is_dict(x)
  return OrderedDict.is(x) or (type(x) == "table" and getmetatable(x) == nil)
end

-- Canonical dtype name ("half" -> "float16"); raises on unknown names.
local function dtype_name(d, op)
  if type(d) ~= "string" then error(op .. ": dtype must be a string, got " .. type(d), 3) end
  local ok, t = pcall(graft.empty, 0, { dtype = d })
  if not ok then error(op .. ': unknown dtype "' .. d .. '"', 3) end
  return t:dtype()
end

local function check_options(opts, allowed, op)
  if opts == nil then return {} end
  if type(opts) ~= "table" then error(op .. ": options must be a table, got " .. type(opts), 3) end
  for k in pairs(opts) do
    if not allowed[k] then
      local names = {}
      for a in pairs(allowed) do names[#names + 1] = a end
      table.sort(names)
      error(("%s: unknown option %q (options: %s)"):format(op, tostring(k), table.concat(names, ", ")), 3)
    end
  end
  return opts
end

-- What the first bytes of path say it is: "pth", "pth_legacy" or "safetensors".
local function sniff(path)
  local f, err = io.open(path, "rb")
  if not f then error(("load: cannot open %q: %s"):format(path, (err or ""):gsub("^.-: ", "")), 3) end
  local head, rerr = f:read(512)
  local size = f:seek("end")
  f:close()
  if head == nil then
    if rerr then error(("load: cannot read %q: %s"):format(path, rerr:gsub("^.-: ", "")), 3) end
    error(("load: %q is empty: not a checkpoint"):format(path), 3)
  end
  if head:sub(1, 2) == "PK" then return "pth" end
  -- before the pickle test: a header length of 128 + 256k also starts with 0x80
  if #head >= 9 and head:sub(9, 9) == "{" then return "safetensors" end
  if head:byte(1) == 0x80 then return "pth_legacy" end
  if head:sub(1, 8) == "PYTORCH1" then
    error(("load: %q is a preview-era PyTorch archive (PYTORCH1), which PyTorch itself no longer reads"):format(path), 3)
  end
  if head:sub(258, 262) == "ustar" then
    error(("load: %q is a tar archive (the PyTorch format before 1.0?): not supported; re-save it with torch.save"):format(path), 3)
  end
  if #head >= 8 then
    local n = string.unpack("<i8", head)
    if n > 0 and size and n <= size - 8 then return "safetensors" end -- its reader explains what is wrong
  end
  local hex = head:sub(1, 8):gsub(".", function(c) return ("%02x "):format(c:byte()) end)
  error(("load: %q is not a PyTorch checkpoint or a safetensors file (%d bytes, starting with %s)"):format(
    path, size or #head, hex:sub(1, -2)), 3)
end

-- Walks a loaded object (dicts, lists, placeholders) and replaces each floating tensor
-- by its cast to dtype, in place (the object is fresh from the file). A tensor seen
-- twice is cast once, so two names for one tensor stay one tensor.
local function cast_walk(obj, dtype, report)
  local done, seen = {}, {}
  local function key_str(k)
    return type(k) == "string" and k or tostring(k)
  end
  local function walk(x, prefix)
    if seen[x] then return end
    seen[x] = true
    local function visit(container, k, v, set)
      local name = prefix == "" and key_str(k) or prefix .. "." .. key_str(k)
      if graft.is_tensor(v) then
        if FLOAT[v:dtype()] and v:dtype() ~= dtype then
          local c = done[v]
          if not c then
            c = v:to(dtype)
            done[v] = c
          end
          report[name] = { from = v:dtype(), to = dtype }
          set(container, k, c)
        end
      elseif type(v) == "table" and v ~= graft.None then
        walk(v, name)
      end
    end
    if OrderedDict.is(x) then
      for _, k in ipairs(x:keys()) do visit(x, k, x[k], function(c, kk, v) c[kk] = v end) end
    elseif graft.is_placeholder and graft.is_placeholder(x) then
      for _, field in ipairs({ "__args", "__state" }) do
        local v = rawget(x, field)
        if type(v) == "table" then walk(v, prefix) end
      end
    elseif getmetatable(x) == nil then
      local keys = {}
      for k in pairs(x) do keys[#keys + 1] = k end
      for _, k in ipairs(keys) do visit(x, k, x[k], rawset) end
    end
  end
  if graft.is_tensor(obj) then
    if FLOAT[obj:dtype()] and obj:dtype() ~= dtype then
      report[""] = { from = obj:dtype(), to = dtype }
      return obj:to(dtype)
    end
    return obj
  end
  if type(obj) == "table" then walk(obj, "") end
  return obj
end

local LOAD_OPTIONS = { map_location = true, dtype = true, allow_unknown = true }

-- The device of a map_location string ("cpu", "cuda", "cuda:N"), or an error naming why
-- it cannot be used.
local function map_device(ml)
  if type(ml) ~= "string" then error('load: map_location must be a string ("cpu", "cuda" or "cuda:N"), got ' .. type(ml), 3) end
  if ml == "cpu" then return "cpu" end
  if ml ~= "cuda" and not ml:match("^cuda:%d+$") then
    error(('load: map_location "%s" is not a device ("cpu", "cuda" or "cuda:N")'):format(ml), 3)
  end
  local cuda = graft.cuda
  if not cuda or cuda.backend() == "none" then
    error(('load: map_location "%s": CUDA is not available (this build of graft has no CUDA backend); load to "cpu"'):format(ml), 3)
  end
  if not cuda.is_available() then
    error(('load: map_location "%s": CUDA is not available (no NVIDIA driver or GPU found); load to "cpu"'):format(ml), 3)
  end
  return ml
end

-- graft.load(path [, {map_location = "cpu", dtype = "float32", allow_unknown = false}])
-- -> obj, info. info = {format = "pth" | "pth_legacy" | "safetensors", metadata =
-- OrderedDict of the safetensors __metadata__ strings (empty when none; nil for .pth),
-- cast = OrderedDict {name -> {from =, to =}} of the tensors dtype cast (empty when
-- none), mapped = tensors mapped from the file (safetensors)}. map_location "cuda" or
-- "cuda:N" puts every tensor on that device, copied from the file mapping through pinned
-- memory (tensors that share a storage in a .pth keep sharing one on the device); the
-- location a .pth recorded is ignored, as torch.load with map_location does.
function M.load(path, opts)
  if type(path) ~= "string" then error("load: path must be a string, got " .. type(path), 2) end
  opts = check_options(opts, LOAD_OPTIONS, "load")
  local device = "cpu"
  if opts.map_location ~= nil then device = map_device(opts.map_location) end
  local dtype
  if opts.dtype ~= nil then
    dtype = dtype_name(opts.dtype, "load")
    if not FLOAT[dtype] then
      error(('load: dtype "%s" is not a floating dtype (the cast applies to floating tensors only)'):format(dtype), 2)
    end
  end
  local kind = sniff(path)
  local obj
  local info = { format = kind, cast = OrderedDict() }
  if kind == "safetensors" then
    local names, tensors, mk, mv, mapped = graft._st_load(path, device)
    obj = OrderedDict.from_pairs(names, tensors)
    info.metadata = OrderedDict.from_pairs(mk, mv)
    info.mapped = mapped
  else
    if not graft._pth_load then
      error(('load: %q is a PyTorch .pth file, and this build of graft cannot read them'):format(path), 2)
    end
    obj = graft._pth_load(path, { allow_unknown = opts.allow_unknown and true or false, map_location = device })
  end
  if dtype then obj = cast_walk(obj, dtype, info.cast) end
  return obj, info
end

-- The format a path's extension names, or nil.
local EXT = { safetensors = "safetensors", pth = "pth", pt = "pth", bin = "pth", ckpt = "pth", tar = "pth" }

local SAVE_OPTIONS = { format = true, metadata = true }

-- Ordered (key, value) lists of a dict: an OrderedDict's order, a plain table's keys sorted.
local function dict_items(d)
  local od = OrderedDict.is(d) and d or OrderedDict.from_table(d)
  return od:keys(), od:values()
end

-- graft.save(obj, path [, {format = "safetensors" | "pth", metadata = {k = "v"}}]):
-- writes atomically; the format from the extension (.safetensors; .pth, .pt, .bin,
-- .ckpt, .tar are PyTorch's zip format) unless given. CUDA tensors are copied to the host
-- and written as CPU tensors: a .pth records the location "cpu" (torch.save would write
-- "cuda:0"), so torch.load reads it on a machine without a GPU; load with
-- {map_location = "cuda"} to put them back on the device.
function M.save(obj, path, opts)
  if type(path) ~= "string" then error("save: path must be a string, got " .. type(path), 2) end
  opts = check_options(opts, SAVE_OPTIONS, "save")
  local fmt = opts.format
  if fmt == nil then
    local ext = path:match("%.([%w_]+)$")
    fmt = ext and EXT[ext:lower()]
    if not fmt then
      error(('save: cannot tell the format from the name %q: use .safetensors or .pth/.pt, or {format = "safetensors" | "pth"}')
        :format(path), 2)
    end
  elseif fmt ~= "safetensors" and fmt ~= "pth" then
    error(('save: unknown format %q (expected "safetensors" or "pth")'):format(tostring(fmt)), 2)
  end
  if fmt == "safetensors" then
    if not is_dict(obj) then
      error("save: safetensors holds a state dict (names -> tensors), got " ..
        (graft.is_tensor(obj) and "a tensor" or type(obj)), 2)
    end
    local names, values = dict_items(obj)
    for i, k in ipairs(names) do
      if type(k) ~= "string" then
        error(("save: safetensors names are strings, got the %s key %s"):format(type(k), tostring(k)), 2)
      end
      if not graft.is_tensor(values[i]) then
        error(("save: safetensors holds only tensors, but %q is a %s (take the weights out first: graft.state.unwrap)")
          :format(k, type(values[i]) == "table" and "table" or type(values[i])), 2)
      end
    end
    local mk, mv
    if opts.metadata ~= nil then
      if not is_dict(opts.metadata) then error("save: metadata must be a table of strings", 2) end
      mk, mv = dict_items(opts.metadata)
      for i, k in ipairs(mk) do
        if type(k) ~= "string" or type(mv[i]) ~= "string" then
          error(("save: metadata must map strings to strings: %s = %s"):format(tostring(k), tostring(mv[i])), 2)
        end
      end
    end
    graft._st_save(path, names, values, mk, mv)
  else
    if opts.metadata ~= nil then error("save: metadata is a safetensors option", 2) end
    if not graft._pth_save then
      error(("save: %q: this build of graft cannot write .pth files"):format(path), 2)
    end
    graft._pth_save(obj, path)
  end
end

graft.load = M.load
graft.save = M.save
graft.state = require("graft.state")
return M
