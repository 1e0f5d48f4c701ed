-- `graft convert IN OUT [--unwrap] [--strip-prefix P] [--dtype D] [--format F]`: a
-- checkpoint from one format to the other (.pth/.pt/.bin <-> .safetensors), optionally
-- taking the weights out of a training checkpoint, stripping a key prefix and casting
-- the floating tensors.
local graft = require("graft")
require("graft.checkpoint")
local OrderedDict = require("graft.odict")
local U = require("graft.cli.inspect").util

local USAGE = "usage: graft convert IN OUT [--unwrap] [--strip-prefix P] [--dtype D] [--format safetensors|pth]"
local HELP = [[
Converts a checkpoint between PyTorch's format (.pth, .pt, .bin) and safetensors. The
input format is read from the file's bytes, the output's from OUT's extension (or
--format). The file is written atomically.

  --unwrap          take the weights out of a training checkpoint ('state_dict',
                    'model', 'model_state_dict', 'state_dict_ema' or 'module'); a whole
                    pickled model gives its state dict
  --strip-prefix P  remove P from the keys that start with it (e.g. "module.")
  --dtype D         cast the floating tensors to D (float32, float16, bfloat16, float64)
  --format F        the output format, when OUT's extension does not say it

safetensors holds a flat dict of tensors: a training checkpoint needs --unwrap. Tensors
that share storage (tied weights, views) are written once per name, each in full.
]]

local function convert(args)
  local pos, opts = U.parse_args(args, {
    ["--unwrap"] = "flag", ["--strip-prefix"] = "value", ["--dtype"] = "value", ["--format"] = "value",
  })
  if #pos ~= 2 then U.usage_error(#pos < 2 and "IN and OUT are needed" or "too many arguments") end
  local src, dst = pos[1], pos[2]
  if opts.format and opts.format ~= "safetensors" and opts.format ~= "pth" then
    U.usage_error(("--format must be safetensors or pth, not '%s'"):format(opts.format))
  end
  -- the cast: of the weights alone after --unwrap, else of every tensor in the file
  local obj, info = U.load(src, { dtype = not opts.unwrap and opts.dtype or nil })
  local ncast = #info.cast
  local notes = {}
  if opts.unwrap then
    local uinfo
    obj, uinfo = graft.state.unwrap(obj)
    if uinfo.key then
      local also = #uinfo.other_keys > 0 and (" (the checkpoint also held: %s)"):format(table.concat(uinfo.other_keys, ", ")) or ""
      notes[#notes + 1] = ("unwrapped '%s'%s"):format(uinfo.key, also)
    elseif uinfo.extracted then
      notes[#notes + 1] = "extracted the state dict of the pickled model"
    end
    if opts.dtype then
      local report
      obj, report = graft.state.cast(obj, opts.dtype)
      ncast = #report
    end
  elseif graft.is_placeholder(obj) then
    U.usage_error("IN is a whole pickled model: add --unwrap to write its state dict")
  end
  if opts.strip_prefix then
    local n
    obj, n = graft.state.strip_prefix(obj, opts.strip_prefix)
    notes[#notes + 1] = ("stripped '%s' from %d keys"):format(opts.strip_prefix, n)
  end
  if opts.dtype then notes[#notes + 1] = ("cast %d tensors to %s"):format(ncast, opts.dtype) end

  local fmt = opts.format
  if not fmt then
    local ext = (dst:match("%.([%w_]+)$") or ""):lower()
    fmt = ext == "safetensors" and "safetensors" or nil
  end
  if fmt == "safetensors" and OrderedDict.is(obj) then
    for k, v in pairs(obj) do
      if not graft.is_tensor(v) then
        error(("'%s' is not a tensor (a %s): safetensors holds only tensors; add --unwrap to take the weights out of a training checkpoint")
          :format(k, type(v) == "table" and "table" or type(v)), 0)
      end
    end
  end
  graft.save(obj, dst, { format = opts.format })
  local count, bytes = 0, 0
  for _, v in pairs(graft.state.flatten(obj)) do
    if graft.is_tensor(v) then
      count = count + 1
      bytes = bytes + v:numel() * v:element_size()
    end
  end
  for _, n in ipairs(notes) do print(n) end
  print(("wrote %s: %d tensors, %s (from %s, %s)"):format(dst, count, U.human_bytes(bytes), src, info.format))
  return 0
end

return {
  main = function(...) return U.run("convert", USAGE, HELP, convert, ...) end,
}
