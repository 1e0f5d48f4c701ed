-- graft.optim: optimizers with PyTorch's groups, defaults, update rules and state dicts.
-- The update of each parameter is one fused C pass (graft._optim, core/optim); this file
-- keeps the bookkeeping: groups, names, lazily created state, state dicts.
--
--   local optim = require("graft.optim")
--   local opt = optim.AdamW(net, {lr = 1e-3, weight_decay = 0.05, no_decay = "bias_and_norm"})
--   loss:backward(); opt:step(); opt:zero_grad()
--   opt.param_groups[1].lr = 1e-4                       -- read and written between steps
--   graft.save({optimizer = opt:state_dict()}, "ckpt.pth")
--
-- Devices: state tensors are created on their parameter's device; `step` stays a CPU
-- float32 tensor (PyTorch's non-capturable step). The CUDA parameters of a group are
-- updated by one kernel launch per device (graft._optim.*_multi) with the CPU's
-- arithmetic, so a CUDA run gives the CPU's bits. Build the optimizer after net:to("cuda").
--
-- Numerics: float32 updates reproduce PyTorch's CPU single-tensor kernels bit for bit.
-- Adam/AdamW's first moment and centered RMSprop's grad_avg use PyTorch 2.x's lerp by
-- default; {numerics = "1.13"} selects PyTorch 1.13's form (bit-identical to 1.13).
-- float16 and bfloat16 parameters (net:to("bfloat16")) keep their state in their own
-- dtype, as PyTorch's zeros_like(p), and are updated with PyTorch's 16-bit arithmetic:
-- every op of the update rounded to 16 bits (core/optim/optim.c); bfloat16 under "1.13"
-- is bit-identical to PyTorch 1.13 on the CPU, and so is float16 SGD.
local graft = require("graft")
local OrderedDict = require("graft.odict")

local K = graft._optim
local is_tensor = graft.is_tensor
local None = graft.None

local M = {}

-- The dtypes a parameter may have (its state tensors take the same one).
local FLOAT = { float32 = true, float64 = true, float16 = true, bfloat16 = true }

---------------------------------------------------------------------------------------
-- Small helpers

local TENSOR_TYPE = {
  float32 = "FloatTensor", float64 = "DoubleTensor", float16 = "HalfTensor", bfloat16 = "BFloat16Tensor",
  int64 = "LongTensor", int32 = "IntTensor", int16 = "ShortTensor", int8 = "CharTensor",
  uint8 = "ByteTensor", bool = "BoolTensor",
}

-- A value's type as PyTorch would print it in its messages.
local function typename(x)
  if is_tensor(x) then return "torch." .. (TENSOR_TYPE[x:dtype()] or x:dtype()) end
  if x == nil or x == None then return "None" end
  if OrderedDict.is(x) then return "OrderedDict" end
  local mt = type(x) == "table" and getmetatable(x)
  if mt and type(mt.__name) == "string" then return mt.__name end
  return type(x)
end

-- Python's repr of a number: integers plainly, floats shortest round-trip with ".0".
local function pynum(x)
  if math.type(x) == "integer" then return tostring(x) end
  if x ~= x then return "nan" end
  if x == math.huge then return "inf" end
  if x == -math.huge then return "-inf" end
  local s
  for prec = 15, 17 do
    s = ("%." .. prec .. "g"):format(x)
    if tonumber(s) == x then break end
  end
  if not s:find("[%.eni]") then s = s .. ".0" end
  return s
end

local function pyrepr(v)
  if type(v) == "number" then return pynum(v) end
  if type(v) == "boolean" then return v and "True" or "False" end
  if v == nil or v == None then return "None" end
  if type(v) == "string" then return "'" .. v .. "'" end
  if type(v) == "table" and getmetatable(v) == nil then
    local parts = {}
    for i, x in ipairs(v) do parts[i] = pyrepr(x) end
    return "(" .. table.concat(parts, ", ") .. ")"
  end
  return tostring(v)
end

-- Helpers raise without a position (error level 0); public functions re-raise at theirs.
local function fail(fmt, ...) error(fmt:format(...), 0) end

local function copy_value(v)
  if type(v) ~= "table" or v == None or is_tensor(v) then return v end
  local out = {}
  for k, x in pairs(v) do out[k] = copy_value(x) end
  return out
end

local function shape_str(t) return "[" .. table.concat(t:shape(), ", ") .. "]" end

local function same_shape(a, b)
  if a:dim() ~= b:dim() then return false end
  for d = 1, a:dim() do
    if a:size(d) ~= b:size(d) then return false end
  end
  return true
end

-- A model: anything with a named_parameters method (graft.nn modules, stand-ins).
local function is_model(x)
  if type(x) ~= "table" or is_tensor(x) or OrderedDict.is(x) then return false end
  local ok, f = pcall(function() return x.named_parameters end)
  return ok and type(f) == "function"
end

local function quote_list(names, limit)
  limit = limit or 12
  local parts = {}
  for i = 1, math.min(#names, limit) do parts[i] = '"' .. tostring(names[i]) .. '"' end
  if #names > limit then parts[#parts + 1] = ("... (%d more)"):format(#names - limit) end
  return table.concat(parts, ", ")
end

---------------------------------------------------------------------------------------
-- Parameter collections: every accepted form becomes a list of {p = tensor, name = ?}.

-- The (name, parameter, owning module) entries of a model, in named_parameters order.
local ENTRY = {} -- metatable marking internal {p =, name =, module =} entries

local function entry(p, name, module) return setmetatable({ p = p, name = name, module = module }, ENTRY) end

local function model_entries(model)
  local owner = {}
  local ok_mods = pcall(function()
    for _, m in model:named_modules() do
      for _, p in m:named_parameters({ recurse = false }) do
        if owner[p] == nil then owner[p] = m end
      end
    end
  end)
  if not ok_mods then owner = {} end
  local out = {}
  for name, p in model:named_parameters() do
    out[#out + 1] = entry(p, name, owner[p])
  end
  return out
end

local function collect(x)
  if is_tensor(x) then return { entry(x) } end
  if is_model(x) then return model_entries(x), x end
  local out = {}
  if type(x) == "function" then
    for _ = 1, math.maxinteger do
      local a, b = x()
      if a == nil then break end
      if is_tensor(a) then out[#out + 1] = entry(a) else out[#out + 1] = entry(b, a) end
    end
    return out
  end
  if OrderedDict.is(x) then
    for k, v in pairs(x) do out[#out + 1] = entry(v, k) end
    return out
  end
  if type(x) == "table" then
    for _, v in ipairs(x) do
      if getmetatable(v) == ENTRY then
        out[#out + 1] = v
      elseif type(v) == "table" and not is_tensor(v) and getmetatable(v) == nil and type(v[1]) == "string" and v[3] == nil then
        out[#out + 1] = entry(v[2], v[1])
      else
        out[#out + 1] = entry(v)
      end
    end
    return out
  end
  return nil
end

-- Whether a list element is a param group (a table with `params`) rather than a parameter.
local function is_group(v)
  return type(v) == "table" and not is_tensor(v) and (getmetatable(v) == nil or OrderedDict.is(v))
    and v.params ~= nil
end

---------------------------------------------------------------------------------------
-- no_decay: which parameters get weight_decay 0

local function is_norm_module(m)
  if m == nil then return false end
  local ok, name = pcall(function() return m:_get_name() end)
  if not ok or type(name) ~= "string" then
    local mt = getmetatable(m)
    name = mt and mt.__name
  end
  return type(name) == "string" and name:find("Norm") ~= nil
end

-- A predicate(entry) for a no_decay spec: "bias_and_norm", a pattern, a list of patterns
-- or a function(name, p, module).
local function no_decay_fn(spec, op)
  if spec == nil or spec == false then return nil end
  if spec == "bias_and_norm" then
    return function(e)
      local leaf = e.name and e.name:match("([^%.]+)$")
      if leaf == "bias" then return true end
      if e.module ~= nil then return is_norm_module(e.module) end
      return e.p:dim() <= 1
    end
  end
  if type(spec) == "string" then
    return function(e) return e.name ~= nil and e.name:find(spec) ~= nil end
  end
  if type(spec) == "table" and getmetatable(spec) == nil then
    for _, s in ipairs(spec) do
      if type(s) ~= "string" then fail("%s: no_decay lists patterns (strings), got a %s", op, type(s)) end
    end
    return function(e)
      if e.name == nil then return false end
      for _, s in ipairs(spec) do
        if e.name:find(s) then return true end
      end
      return false
    end
  end
  if type(spec) == "function" then
    return function(e) return spec(e.name, e.p, e.module) and true or false end
  end
  fail('%s: no_decay must be "bias_and_norm", a pattern, a list of patterns or a function, got a %s', op, type(spec))
end

---------------------------------------------------------------------------------------
-- The Optimizer base

local Optimizer = {}
Optimizer.__index = Optimizer
M.Optimizer = Optimizer

local MODEL_ENTRIES = setmetatable({}, { __mode = "k" }) -- groups list -> model entries

-- Label of a parameter for messages: its name when known.
function Optimizer:_label(p, gi, j)
  local n = self._names[p]
  if n then return ('parameter "%s"'):format(n) end
  if gi then return ("parameter %d of param group %d"):format(j, gi) end
  return "a parameter"
end

local function check_number(op, key, v, where)
  if type(v) ~= "number" then fail("%s: %s must be a number, got %s%s", op, key, typename(v), where) end
end
local function check_bool(op, key, v, where)
  if type(v) ~= "boolean" then fail("%s: %s must be a boolean, got %s%s", op, key, typename(v), where) end
end
local function check_min(op, v, low, text, where)
  if not (v >= low) then fail("%s: %s: %s%s", op, text, pynum(v), where) end
end

-- Runs fn(...) and re-raises its error at `level` above the caller.
local function rethrow(level, fn, ...)
  local ok, err = pcall(fn, ...)
  if not ok then error(err, level + 1) end
  return err
end

-- The options the constructors accept besides the hyperparameters.
local GRAFT_OPTIONS = { no_decay = true, numerics = true }

local function class_new(cls, params, opts)
  local op = cls.__name
  if opts ~= nil and type(opts) ~= "table" then error(op .. ": options must be a table, got " .. typename(opts), 3) end
  opts = opts or {}
  if is_tensor(opts) or getmetatable(opts) ~= nil then error(op .. ": options must be a table, got " .. typename(opts), 3) end
  for k in pairs(opts) do
    if cls.__defaults[k] == nil and not GRAFT_OPTIONS[k] and k ~= "lr_mult" and k ~= "wd_mult" then
      local names = {}
      for _, key in ipairs(cls.__keys) do names[#names + 1] = key end
      names[#names + 1] = "no_decay"
      names[#names + 1] = "numerics"
      error(("%s: unknown option '%s' (options: %s)"):format(op, tostring(k), table.concat(names, ", ")), 3)
    end
  end
  if opts.lr_mult ~= nil or opts.wd_mult ~= nil then
    error(op .. ": lr_mult and wd_mult belong in param groups (or optim.param_groups rules), not in the defaults", 3)
  end
  local numerics = opts.numerics or "2.x"
  if numerics ~= "2.x" and numerics ~= "1.13" then
    error(('%s: numerics must be "2.x" or "1.13", got %s'):format(op, pyrepr(numerics)), 3)
  end
  local defaults = {}
  for _, k in ipairs(cls.__keys) do
    local v = opts[k]
    if v == nil then v = cls.__defaults[k] end
    defaults[k] = copy_value(v)
  end
  rethrow(3, cls.__validate, defaults, op, "")

  if is_tensor(params) then
    error(("%s: params argument given to the optimizer should be an iterable of Tensors or dicts, but got %s")
      :format(op, typename(params)), 3)
  end
  if type(params) ~= "table" and type(params) ~= "function" then
    error(("%s: params argument given to the optimizer should be an iterable of Tensors or dicts, but got %s")
      :format(op, typename(params)), 3)
  end

  local self = setmetatable({
    defaults = defaults, param_groups = {}, state = {}, numerics = numerics,
    _names = setmetatable({}, { __mode = "k" }), _where = setmetatable({}, { __mode = "k" }),
  }, cls)

  local groups
  local nd = rethrow(3, no_decay_fn, opts.no_decay, op)
  if type(params) == "table" and not is_model(params) and not OrderedDict.is(params) and is_group(params[1]) then
    groups = {}
    for i, g in ipairs(params) do
      if not is_group(g) then
        error(("%s: params mixes param groups and parameters (element %d is a %s)"):format(op, i, typename(g)), 3)
      end
      groups[i] = g
    end
    self._model_entries = MODEL_ENTRIES[params]
    if nd then
      local split = {}
      for _, g in ipairs(groups) do
        local entries = collect(g.params)
        local dec, nodec = {}, {}
        for _, e in ipairs(entries or {}) do
          if nd(e) then nodec[#nodec + 1] = e else dec[#dec + 1] = e end
        end
        for _, part in ipairs({ dec, nodec }) do
          if #part > 0 then
            local ng = {}
            for k, v in pairs(g) do if k ~= "params" and k ~= "param_names" then ng[k] = v end end
            ng.params = part
            if part == nodec then ng.weight_decay = 0 end
            split[#split + 1] = ng
          end
        end
      end
      groups = split
    end
  else
    local entries, model = collect(params)
    if entries == nil then
      error(("%s: params argument given to the optimizer should be an iterable of Tensors or dicts, but got %s")
        :format(op, typename(params)), 3)
    end
    if #entries == 0 then error(op .. ": optimizer got an empty parameter list", 3) end
    if model then self._model_entries = entries end
    if nd then
      local dec, nodec = {}, {}
      for _, e in ipairs(entries) do
        if nd(e) then nodec[#nodec + 1] = e else dec[#dec + 1] = e end
      end
      groups = {}
      if #dec > 0 then groups[#groups + 1] = { params = dec } end
      if #nodec > 0 then groups[#groups + 1] = { params = nodec, weight_decay = 0 } end
    else
      groups = { { params = entries } }
    end
  end
  if #groups == 0 then error(op .. ": optimizer got an empty parameter list", 3) end
  for _, g in ipairs(groups) do
    local ok, err = pcall(self.add_param_group, self, g)
    if not ok then error(err, 3) end
  end
  return self
end

-- add_param_group{params = ..., lr = ...}: a new group; missing hyperparameters come from
-- the defaults. params: a tensor, a list of tensors or {name, tensor} pairs, a model, or
-- an iterator such as net:named_parameters().
function Optimizer:add_param_group(group)
  local op = self.__name
  if type(group) ~= "table" or is_tensor(group) or (getmetatable(group) ~= nil and not OrderedDict.is(group)) then
    error(op .. ": param group must be a dict", 2)
  end
  local gi = #self.param_groups + 1
  local where = (" (param group %d)"):format(gi)
  if group.params == nil then error(("%s: param group %d has no 'params'"):format(op, gi), 2) end
  local entries = collect(group.params)
  if entries == nil then
    error(("%s: param group %d: params must be a tensor, a list of tensors or {name, tensor} pairs, a model or an iterator, got %s")
      :format(op, gi, typename(group.params)), 2)
  end
  local names_given = group.param_names
  if names_given ~= nil then
    if type(names_given) ~= "table" or #names_given ~= #entries then
      error(("%s: param group %d: param_names must list one name per parameter (%d)"):format(op, gi, #entries), 2)
    end
    for j, e in ipairs(entries) do
      local nm = names_given[j]
      if type(nm) ~= "string" then
        error(("%s: param group %d: param_names[%d] is a %s, not a string"):format(op, gi, j, typename(nm)), 2)
      end
      e.name = nm
    end
  end
  if #entries == 0 then error(("%s: param group %d is empty"):format(op, gi), 2) end

  local new = {}
  for k, v in pairs(group) do
    if k ~= "params" and k ~= "param_names" then new[k] = copy_value(v) end
  end
  for _, mk in ipairs({ { "lr_mult", "lr" }, { "wd_mult", "weight_decay" } }) do
    local mult, key = new[mk[1]], mk[2]
    if mult ~= nil then
      check_number(op, mk[1], mult, where)
      if new[key] ~= nil then
        error(("%s: param group %d gives both %s and %s"):format(op, gi, key, mk[1]), 2)
      end
      new[key] = self.defaults[key] * mult
      new[mk[1]] = nil
    end
  end
  for _, k in ipairs(self.__keys) do
    if new[k] == nil then new[k] = copy_value(self.defaults[k]) end
  end
  local ok, err = pcall(self.__validate, new, op, where)
  if not ok then error(err, 2) end

  local params, names, all_named = {}, {}, true
  local seen = {}
  for j, e in ipairs(entries) do
    local p = e.p
    if not is_tensor(p) then
      error(("%s: optimizer can only optimize Tensors, but one of the params is %s"):format(op, typename(p)), 2)
    end
    local label = e.name and ('"' .. e.name .. '"') or ("parameter " .. j)
    if not p.is_leaf then
      error(("%s: can't optimize a non-leaf Tensor (%s of param group %d)"):format(op, label, gi), 2)
    end
    local dt = p:dtype()
    if not FLOAT[dt] then
      error(("%s: %s of param group %d is %s: graft's optimizers update floating-point parameters (float32, "
        .. "float64, float16, bfloat16)"):format(op, label, gi, dt), 2)
    end
    if seen[p] then
      error(("%s: param group %d contains %s twice"):format(op, gi, label), 2)
    end
    seen[p] = true
    local other = self._where[p]
    if other then
      local nm = e.name or self._names[p]
      error(("%s: some parameters appear in more than one parameter group: %s is in param group %d and param group %d")
        :format(op, nm and ('"' .. nm .. '"') or ("a parameter (position " .. j .. ")"), other, gi), 2)
    end
    params[j] = p
    names[j] = e.name or self._names[p]
    if names[j] == nil then all_named = false end
  end
  new.params = params
  if all_named then new.param_names = names end
  self.param_groups[gi] = new
  for j, p in ipairs(params) do
    self._where[p] = gi
    if names[j] then self._names[p] = names[j] end
  end
  if self.__init_state then self:__init_state(new) end
end

-- Checks the hyperparameter types of a group at step time (a scheduler or the user may
-- have written them); full range checks happen when a group is added or loaded.
function Optimizer:_check_types(gi, group)
  local op = self.__name
  for _, k in ipairs(self.__numbers) do
    local v = group[k]
    if type(v) ~= "number" then
      error(("%s: param_groups[%d].%s must be a number, got %s"):format(op, gi, k, typename(v)), 3)
    end
  end
  for _, k in ipairs(self.__flags) do
    local v = group[k]
    if type(v) ~= "boolean" then
      error(("%s: param_groups[%d].%s must be a boolean, got %s"):format(op, gi, k, typename(v)), 3)
    end
  end
  if self.__defaults.betas ~= nil then
    local b = group.betas
    if type(b) ~= "table" or type(b[1]) ~= "number" or type(b[2]) ~= "number" then
      error(("%s: param_groups[%d].betas must be two numbers {beta1, beta2}, got %s"):format(op, gi, typename(b)), 3)
    end
  end
end

-- After each step, one basic step of Lua's collector (a young collection under the
-- generational mode): Lua counts a tensor as its small userdata, not its storage, so
-- without it the last steps' activations and gradients stay allocated for tens of steps
-- (measured: an MLP 784-256-10 at batch 64 peaked at 66 MB instead of 11, resnet18 at
-- 8x3x64x64 at 308 MB instead of 193). Costs 5-150 us a step; set
-- optim.collect_garbage = false to leave collection to Lua's own pacing.
M.collect_garbage = true

-- step([closure]): one update of every parameter that has a gradient; a parameter whose
-- grad is nil is skipped entirely (no state, no weight decay, no momentum). The closure,
-- if given, runs first with grad enabled and its value is returned. The CUDA parameters
-- of a group are updated as one list per device (one kernel launch: PyTorch's foreach);
-- CPU parameters one by one, as before.
function Optimizer:step(closure)
  local loss
  if closure ~= nil then
    if type(closure) ~= "function" then
      error(("%s: step: closure must be a function, got %s"):format(self.__name, typename(closure)), 2)
    end
    loss = graft.enable_grad(closure)
  end
  local update, multi, state, lerp = self.__update, self.__update_multi, self.state, self.numerics ~= "1.13"
  for gi, group in ipairs(self.param_groups) do
    self:_check_types(gi, group)
    local params = group.params
    local lists, order
    for j = 1, #params do
      local p = params[j]
      local g = p.grad
      if g ~= nil then
        if multi and p:is_cuda() then
          lists, order = lists or {}, order or {}
          local dev = p:device()
          local l = lists[dev]
          if l == nil then
            l = { p = {}, g = {}, j = {} }
            lists[dev] = l
            order[#order + 1] = dev
          end
          local k = #l.p + 1
          l.p[k], l.g[k], l.j[k] = p, g, j
        else
          local ok, err = pcall(update, self, group, p, g, state, lerp)
          if not ok then
            error(("%s: %s: %s"):format(self.__name, self:_label(p, gi, j), tostring(err)), 2)
          end
        end
      end
    end
    if order then
      for _, dev in ipairs(order) do
        local l = lists[dev]
        local ok, bad, msg = pcall(multi, self, group, l.p, l.g, state, lerp)
        if not ok then error(("%s: param group %d: %s"):format(self.__name, gi, tostring(bad)), 2) end
        if bad then
          local j = l.j[bad]
          local where = j and self:_label(l.p[bad], gi, j) or ("param group %d"):format(gi)
          error(("%s: %s: %s"):format(self.__name, where, tostring(msg)), 2)
        end
      end
    end
  end
  if M.collect_garbage then collectgarbage("step", 0) end
  return loss
end

-- zero_grad([{set_to_none = true}]): grads to nil (the default, as PyTorch 2.x), or, with
-- set_to_none = false, existing grads detached and filled with zeros.
function Optimizer:zero_grad(opts)
  if opts ~= nil and type(opts) ~= "table" then
    error(("%s: zero_grad: options must be a table, got %s"):format(self.__name, typename(opts)), 2)
  end
  local to_none = not (opts and opts.set_to_none == false)
  if to_none then
    for _, group in ipairs(self.param_groups) do
      for _, p in ipairs(group.params) do p.grad = nil end
    end
    return
  end
  graft.no_grad(function()
    for _, group in ipairs(self.param_groups) do
      for _, p in ipairs(group.params) do
        local g = p.grad
        if g ~= nil then
          if g.grad_fn ~= nil then
            g = g:detach()
            p.grad = g
          end
          g:zero_()
        end
      end
    end
  end)
end

---------------------------------------------------------------------------------------
-- State dicts (PyTorch's layout)

-- state_dict() -> {state = OrderedDict{[index] = {...}}, param_groups = {{..., params =
-- {indices}, param_names = {...}}}}: indices count from 0 across groups, in group order;
-- state tensors are references to the live ones (save them, or copy before changing).
function Optimizer:state_dict()
  local index, start = {}, 0
  local groups = {}
  for gi, group in ipairs(self.param_groups) do
    local packed = {}
    for k, v in pairs(group) do
      if k ~= "params" and k ~= "param_names" then packed[k] = copy_value(v) end
    end
    local idx = {}
    for j, p in ipairs(group.params) do
      if index[p] == nil then index[p] = start + j - 1 end
      idx[j] = index[p]
    end
    start = start + #group.params
    packed.params = idx
    if group.param_names then packed.param_names = copy_value(group.param_names) end
    groups[gi] = packed
  end
  local state = OrderedDict()
  for _, group in ipairs(self.param_groups) do
    for _, p in ipairs(group.params) do
      local st = self.state[p]
      if st ~= nil and state[index[p]] == nil then
        local entry = {}
        for k, v in pairs(st) do entry[k] = v end
        state[index[p]] = entry
      end
    end
  end
  if self._orphan_state then
    for k, v in pairs(self._orphan_state) do
      if state[k] == nil then state[k] = v end
    end
  end
  return { state = state, param_groups = groups }
end

-- The state tensors shaped like their parameter, in the order they are checked.
local SHAPED = { "momentum_buffer", "exp_avg", "exp_avg_sq", "max_exp_avg_sq", "square_avg", "grad_avg", "sum" }

-- A loaded state entry made ready for p: tensors copied onto p's device (floating ones
-- cast to p's dtype), except `step`, which stays a CPU tensor as in PyTorch (copied to
-- the CPU if it was saved or loaded elsewhere); a numeric step as a float32 tensor; a
-- None momentum buffer dropped. Returns nil and a reason when a shaped state tensor does
-- not fit p.
local function adopt_entry(p, entry)
  for _, k in ipairs(SHAPED) do
    local v = entry[k]
    if is_tensor(v) and not same_shape(v, p) then
      return nil, ("%s is %s, the parameter is %s"):format(k, shape_str(v), shape_str(p))
    end
  end
  local out = {}
  local pdev = p:device()
  for k, v in pairs(entry) do
    if is_tensor(v) then
      local c
      if k == "step" then
        c = v:device() ~= "cpu" and v:cpu() or v:clone()
      else
        local dt = (FLOAT[v:dtype()] and v:dtype() ~= p:dtype()) and p:dtype() or v:dtype()
        if dt ~= v:dtype() or v:device() ~= pdev then
          c = v:to({ dtype = dt, device = pdev })
        else
          c = v:clone()
        end
      end
      out[k] = c
    elseif k == "step" and type(v) == "number" then
      out[k] = graft.tensor(v + 0.0)
    elseif k == "momentum_buffer" and v == None then
      -- "no buffer yet": the next step starts it from the gradient
    elseif type(v) == "table" and v ~= None then
      out[k] = copy_value(v)
    else
      out[k] = v
    end
  end
  return out
end

local function get(d, k)
  if d == nil then return nil end
  return d[k]
end

-- The saved groups and state of a state dict, checked for shape.
local function read_state_dict(op, sd)
  local dict_like = OrderedDict.is(sd) or (type(sd) == "table" and getmetatable(sd) == nil)
  if not dict_like then
    error(("%s: load_state_dict: expected a state dict (a table with 'state' and 'param_groups'), got %s")
      :format(op, typename(sd)), 3)
  end
  local groups, state = get(sd, "param_groups"), get(sd, "state")
  if type(groups) ~= "table" or getmetatable(groups) ~= nil then
    error(("%s: load_state_dict: the state dict has no 'param_groups' list%s"):format(op,
      groups ~= nil and (" (it is a " .. typename(groups) .. ")") or ""), 3)
  end
  if state == nil or type(state) ~= "table" then
    error(("%s: load_state_dict: the state dict has no 'state' dict"):format(op), 3)
  end
  for i, g in ipairs(groups) do
    local params = type(g) == "table" and get(g, "params")
    if type(params) ~= "table" then
      error(("%s: load_state_dict: saved param group %d has no 'params' list"):format(op, i), 3)
    end
  end
  return groups, state
end

local function saved_hparams(g)
  local out = {}
  for k, v in pairs(g) do
    if k ~= "params" and k ~= "param_names" then out[k] = copy_value(v) end
  end
  return out
end

-- Replaces group's hyperparameters (in place, so references to the group stay valid).
local function set_hparams(self, group, hp)
  local params, names = group.params, group.param_names
  for k in pairs(group) do group[k] = nil end
  for k, v in pairs(hp) do group[k] = v end
  for _, k in ipairs(self.__keys) do
    if group[k] == nil then group[k] = copy_value(self.defaults[k]) end
  end
  group.params, group.param_names = params, names
end

local Report = {}
Report.__index = Report
Report.__name = "graft.optim.LoadReport"
Report.__tostring = function(r)
  local lines = { ("restored the state of %d parameters (matched by %s)"):format(#r.restored, r.match) }
  if #r.reset > 0 then
    lines[#lines + 1] = ("reset %d (no saved state to take):"):format(#r.reset)
    for _, e in ipairs(r.reset) do lines[#lines + 1] = ("  %s: %s"):format(e.name, e.reason) end
  end
  if #r.unused > 0 then
    lines[#lines + 1] = ("unused saved parameters: %s"):format(quote_list(r.unused, 20))
  end
  return table.concat(lines, "\n")
end

-- load_state_dict(sd [, {match = "position" | "name", verbose = false}]) -> report.
-- Position (PyTorch's rule): groups and their sizes must agree; the hyperparameters of
-- each group (lr included) come from the state dict. When both sides carry names, a
-- difference is an error instead of a silent mis-mapping. By name: each parameter takes
-- the saved state of the parameter of the same name (when the shapes agree), each group
-- the hyperparameters of the saved group most of its parameters came from; the report
-- lists what was restored, what was reset and what was not used.
function Optimizer:load_state_dict(sd, opts)
  local op = self.__name
  if opts ~= nil and type(opts) ~= "table" then
    error(("%s: load_state_dict: options must be a table, got %s"):format(op, typename(opts)), 2)
  end
  opts = opts or {}
  local match = opts.match or "position"
  if match ~= "position" and match ~= "name" then
    error(('%s: load_state_dict: match must be "position" or "name", got %s'):format(op, pyrepr(match)), 2)
  end
  local sgroups, sstate = read_state_dict(op, sd)
  local report = setmetatable({ match = match, restored = {}, reset = {}, unused = {} }, Report)
  local new_state, orphans = {}, nil
  local hp_for = {}

  local function label(p, gi, j)
    return self:_label(p, gi, j)
  end

  if match == "position" then
    if #sgroups ~= #self.param_groups then
      error(("%s: loaded state dict has a different number of parameter groups (the optimizer has %d, the state dict %d)")
        :format(op, #self.param_groups, #sgroups), 2)
    end
    local bad = {}
    for gi, group in ipairs(self.param_groups) do
      local n, sn = #group.params, #get(sgroups[gi], "params")
      if n ~= sn then bad[#bad + 1] = ("param group %d has %d parameters here and %d in the state dict"):format(gi, n, sn) end
    end
    if #bad > 0 then
      error(("%s: loaded state dict contains a parameter group that doesn't match the size of optimizer's group: %s")
        :format(op, table.concat(bad, "; ")), 2)
    end
    local diffs = {}
    for gi, group in ipairs(self.param_groups) do
      local snames = get(sgroups[gi], "param_names")
      if type(snames) == "table" and group.param_names then
        for j, nm in ipairs(group.param_names) do
          if snames[j] ~= nil and snames[j] ~= nm then
            diffs[#diffs + 1] = ('param group %d position %d: "%s" here, "%s" in the state dict'):format(gi, j, nm, tostring(snames[j]))
          end
        end
      end
    end
    if #diffs > 0 then
      local shown = {}
      for i = 1, math.min(#diffs, 5) do shown[i] = diffs[i] end
      if #diffs > 5 then shown[#shown + 1] = ("... (%d more)"):format(#diffs - 5) end
      error(("%s: load_state_dict: the parameter names differ from the state dict's, so matching by position would give parameters the state of others (pass {match = \"name\"} to restore by name): %s")
        :format(op, table.concat(shown, "; ")), 2)
    end
    local id_map = {}
    for gi, group in ipairs(self.param_groups) do
      local sparams = get(sgroups[gi], "params")
      for j, p in ipairs(group.params) do
        id_map[sparams[j]] = { p = p, gi = gi, j = j }
      end
    end
    for k, v in pairs(sstate) do
      local m = id_map[k]
      if m then
        if type(v) ~= "table" then
          error(("%s: load_state_dict: the saved state of %s is a %s, not a dict"):format(op, label(m.p, m.gi, m.j), typename(v)), 2)
        end
        local entry, why = adopt_entry(m.p, v)
        if not entry then
          error(("%s: load_state_dict: the saved state does not fit %s (index %s): %s"):format(
            op, label(m.p, m.gi, m.j), tostring(k), why), 2)
        end
        new_state[m.p] = entry
      else
        orphans = orphans or {}
        orphans[k] = v
      end
    end
    for gi, group in ipairs(self.param_groups) do
      hp_for[gi] = saved_hparams(sgroups[gi])
      for j, p in ipairs(group.params) do
        report.restored[#report.restored + 1] = self._names[p] or ("param group %d #%d"):format(gi, j)
      end
    end
  else
    local by_name, saved_names = {}, {}
    for sgi, sg in ipairs(sgroups) do
      local snames, sparams = get(sg, "param_names"), get(sg, "params")
      if type(snames) ~= "table" then
        error(("%s: load_state_dict: {match = \"name\"} needs parameter names, and saved param group %d has none (PyTorch writes param_names from 2.6 on, when built from named_parameters; match by position instead)")
          :format(op, sgi), 2)
      end
      for j, nm in ipairs(snames) do
        by_name[nm] = { index = sparams[j], group = sgi }
        saved_names[#saved_names + 1] = nm
      end
    end
    local used = {}
    for gi, group in ipairs(self.param_groups) do
      local votes = {}
      for j, p in ipairs(group.params) do
        local nm = self._names[p]
        local s = nm and by_name[nm]
        if not nm then
          report.reset[#report.reset + 1] = { name = ("param group %d #%d"):format(gi, j), reason = "it has no name" }
        elseif not s then
          report.reset[#report.reset + 1] = { name = nm, reason = "not in the state dict" }
        else
          used[nm] = true
          local v = sstate[s.index]
          local entry, why = {}, nil
          if v ~= nil then
            if type(v) ~= "table" then
              entry, why = nil, "its saved state is a " .. typename(v)
            else
              entry, why = adopt_entry(p, v)
            end
          end
          if entry then
            if v ~= nil then new_state[p] = entry end -- matched, with no saved state: none here either
            report.restored[#report.restored + 1] = nm
            votes[s.group] = (votes[s.group] or 0) + 1
          else
            report.reset[#report.reset + 1] = { name = nm, reason = why }
          end
        end
      end
      local best, bestn = nil, 0
      for sgi, n in pairs(votes) do
        if n > bestn or (n == bestn and sgi < best) then best, bestn = sgi, n end
      end
      if best then hp_for[gi] = saved_hparams(sgroups[best]) end
    end
    for _, nm in ipairs(saved_names) do
      if not used[nm] then report.unused[#report.unused + 1] = nm end
    end
  end

  -- Everything checked: validate the hyperparameters to be taken, then commit.
  for gi, hp in pairs(hp_for) do
    local probe = {}
    for k, v in pairs(hp) do probe[k] = v end
    for _, k in ipairs(self.__keys) do
      if probe[k] == nil then probe[k] = self.defaults[k] end
    end
    local ok, err = pcall(self.__validate, probe, op, (" (saved param group for param group %d)"):format(gi))
    if not ok then error(err, 2) end
  end
  for gi, hp in pairs(hp_for) do set_hparams(self, self.param_groups[gi], hp) end
  if match == "position" then
    self.state = new_state
  else
    for _, group in ipairs(self.param_groups) do
      for _, p in ipairs(group.params) do self.state[p] = new_state[p] end
    end
  end
  if self.__init_state then
    for _, group in ipairs(self.param_groups) do self:__init_state(group) end
  end
  self._orphan_state = orphans
  if opts.verbose then print(tostring(report)) end
  return report
end

---------------------------------------------------------------------------------------
-- Printing

local function commas(n)
  local s = tostring(n)
  local out = s:reverse():gsub("(%d%d%d)", "%1,"):reverse()
  return (out:gsub("^,", ""))
end

-- Names abbreviated: names that differ only in numeric path parts (layer indices) are
-- shown once with * for those parts and a count; other names as they are.
local function abbrev(names, width)
  local order, count, first = {}, {}, {}
  for _, n in ipairs(names) do
    local parts = {}
    for part in n:gmatch("[^%.]+") do parts[#parts + 1] = part:match("^%d+$") and "*" or part end
    local pat = table.concat(parts, ".")
    if not count[pat] then
      order[#order + 1] = pat
      first[pat] = n
    end
    count[pat] = (count[pat] or 0) + 1
  end
  local out, len = {}, 0
  for i, pat in ipairs(order) do
    local s = count[pat] > 1 and ("%s (%d)"):format(pat, count[pat]) or first[pat]
    if len + #s > width and i > 1 then
      out[#out + 1] = ("... +%d more"):format(#order - i + 1)
      break
    end
    out[#out + 1] = s
    len = len + #s + 2
  end
  return table.concat(out, ", ")
end

local KERNEL_KEYS = { foreach = true, differentiable = true, capturable = true, fused = true }

-- describe([{print = true}]) -> the text: one row per group (tensors, elements, lr,
-- weight decay, the other hyperparameters that differ from the defaults, names), then
-- the frozen parameters (in a group but requires_grad off) and those left out.
function Optimizer:describe(opts)
  local cls = getmetatable(self)
  local rows = { { "group", "tensors", "params", "lr", "weight_decay", "other", "names" } }
  local total_t, total_n = 0, 0
  local frozen = {}
  for gi, group in ipairs(self.param_groups) do
    local n, names = 0, {}
    for j, p in ipairs(group.params) do
      n = n + p:numel()
      names[j] = self._names[p] or ("#" .. j)
      if not p.requires_grad then frozen[#frozen + 1] = names[j] end
    end
    total_t, total_n = total_t + #group.params, total_n + n
    local other, keys = {}, {}
    for k in pairs(group) do
      if k ~= "params" and k ~= "param_names" and k ~= "lr" and k ~= "weight_decay" and not KERNEL_KEYS[k] then
        keys[#keys + 1] = k
      end
    end
    table.sort(keys)
    for _, k in ipairs(keys) do
      local v, d = group[k], cls.__defaults[k]
      if pyrepr(v) ~= pyrepr(d) or d == nil then other[#other + 1] = k .. "=" .. pyrepr(v) end
    end
    rows[#rows + 1] = { tostring(gi), tostring(#group.params), commas(n), pyrepr(group.lr),
      pyrepr(group.weight_decay), #other > 0 and table.concat(other, " ") or "-", abbrev(names, 60) }
  end
  local widths = {}
  for _, r in ipairs(rows) do
    for c, s in ipairs(r) do widths[c] = math.max(widths[c] or 0, #s) end
  end
  local lines = { ("%s: %d param groups, %d tensors, %s parameters%s"):format(self.__name, #self.param_groups,
    total_t, commas(total_n), self.numerics == "1.13" and " (PyTorch 1.13 numerics)" or "") }
  for _, r in ipairs(rows) do
    local cells = {}
    for c, s in ipairs(r) do cells[c] = c < #r and (s .. string.rep(" ", widths[c] - #s)) or s end
    lines[#lines + 1] = "  " .. table.concat(cells, "  ")
  end
  if #frozen > 0 then
    lines[#lines + 1] = ("frozen (in a group, requires_grad off, skipped while they have no grad): %s"):format(abbrev(frozen, 90))
  end
  if self._model_entries then
    local out, n = {}, 0
    for _, e in ipairs(self._model_entries) do
      if not self._where[e.p] then
        out[#out + 1] = e.name
        n = n + e.p:numel()
      end
    end
    if #out > 0 then
      lines[#lines + 1] = ("left out (frozen when the groups were built): %d tensors, %s parameters: %s"):format(
        #out, commas(n), abbrev(out, 90))
    end
  end
  local text = table.concat(lines, "\n")
  if not (opts and opts.print == false) then print(text) end
  return text
end

-- tostring(opt): PyTorch's repr (each group's hyperparameters, keys sorted).
function Optimizer:__tostring()
  local lines = { self.__name .. " (" }
  for gi, group in ipairs(self.param_groups) do
    lines[#lines + 1] = "Parameter Group " .. (gi - 1)
    local keys = {}
    for k in pairs(group) do if k ~= "params" and k ~= "param_names" then keys[#keys + 1] = k end end
    table.sort(keys)
    for _, k in ipairs(keys) do lines[#lines + 1] = ("    %s: %s"):format(k, pyrepr(group[k])) end
  end
  lines[#lines + 1] = ")"
  return table.concat(lines, "\n")
end

---------------------------------------------------------------------------------------
-- The optimizers

local function define(name, spec)
  local cls = setmetatable({}, { __index = Optimizer, __call = function(c, params, opts)
    local o = class_new(c, params, opts)
    return o
  end })
  cls.__index = cls
  cls.__name = name
  cls.__tostring = Optimizer.__tostring
  cls.__keys, cls.__defaults = {}, {}
  for i, kv in ipairs(spec.defaults) do
    cls.__keys[i] = kv[1]
    cls.__defaults[kv[1]] = kv[2]
  end
  cls.__numbers, cls.__flags = spec.numbers, spec.flags
  cls.__validate = spec.validate
  cls.__update = spec.update
  cls.__update_multi = spec.update_multi
  cls.__init_state = spec.init_state
  M[name] = cls
  return cls
end

local function check_common(h, op, where, spec)
  for _, k in ipairs(spec.numbers) do check_number(op, k, h[k], where) end
  for _, k in ipairs(spec.flags) do check_bool(op, k, h[k], where) end
  local fe = h.foreach
  if fe ~= nil and fe ~= None and type(fe) ~= "boolean" then
    fail("%s: foreach must be None or a boolean, got %s%s", op, typename(fe), where)
  end
  check_min(op, h.lr, 0, "Invalid learning rate", where)
  if h.weight_decay ~= nil then check_min(op, h.weight_decay, 0, "Invalid weight_decay value", where) end
end

local SGD_SPEC = {
  defaults = { { "lr", 1e-3 }, { "momentum", 0 }, { "dampening", 0 }, { "weight_decay", 0 }, { "nesterov", false },
    { "maximize", false }, { "foreach", None }, { "differentiable", false } },
  numbers = { "lr", "momentum", "dampening", "weight_decay" },
  flags = { "nesterov", "maximize" },
}
SGD_SPEC.validate = function(h, op, where)
  check_common(h, op, where, SGD_SPEC)
  check_min(op, h.momentum, 0, "Invalid momentum value", where)
  if h.nesterov and (h.momentum <= 0 or h.dampening ~= 0) then
    fail("%s: Nesterov momentum requires a momentum and zero dampening%s", op, where)
  end
end
-- p's SGD state, created empty (its momentum buffer comes with the first step).
local function sgd_state(p, state)
  local st = state[p]
  if st == nil then
    st = {}
    state[p] = st
  end
  return st
end
SGD_SPEC.update = function(self, group, p, g, state)
  if group.momentum ~= 0 then
    local st = sgd_state(p, state)
    local buf = st.momentum_buffer
    if buf == None then buf = nil end
    st.momentum_buffer = K.sgd(p, g, buf, group.lr, group.momentum, group.dampening, group.weight_decay,
      group.nesterov, group.maximize)
  else
    K.sgd(p, g, nil, group.lr, 0, group.dampening, group.weight_decay, false, group.maximize)
  end
end
-- The CUDA parameters of a group with grads, as lists (ps, gs): one launch.
SGD_SPEC.update_multi = function(self, group, ps, gs, state)
  if group.momentum == 0 then
    return K.sgd_multi(ps, gs, nil, nil, group.lr, 0, group.dampening, group.weight_decay, false, group.maximize)
  end
  local bufs, firsts = {}, {}
  for k, p in ipairs(ps) do
    local buf = sgd_state(p, state).momentum_buffer
    if buf == nil or buf == None then
      bufs[k], firsts[k] = graft.empty_like(p), true
    else
      bufs[k], firsts[k] = buf, false
    end
  end
  local bad, msg = K.sgd_multi(ps, gs, bufs, firsts, group.lr, group.momentum, group.dampening, group.weight_decay,
    group.nesterov, group.maximize)
  if bad then return bad, msg end
  for k, p in ipairs(ps) do state[p].momentum_buffer = bufs[k] end
end
define("SGD", SGD_SPEC)

local function check_betas(h, op, where)
  local b = h.betas
  if type(b) ~= "table" or getmetatable(b) ~= nil or type(b[1]) ~= "number" or type(b[2]) ~= "number" or b[3] ~= nil then
    fail("%s: betas must be two numbers {beta1, beta2}, got %s%s", op, typename(b), where)
  end
  for i = 1, 2 do
    if not (b[i] >= 0 and b[i] < 1) then
      fail("%s: Invalid beta parameter at index %d: %s%s", op, i - 1, pynum(b[i]), where)
    end
  end
end

-- p's Adam state, created (or completed) on p's device; `step` a CPU float32 tensor.
local function adam_state(group, p, state)
  local st = state[p]
  if st == nil then
    st = { step = graft.tensor(0.0), exp_avg = graft.zeros_like(p), exp_avg_sq = graft.zeros_like(p) }
    if group.amsgrad then st.max_exp_avg_sq = graft.zeros_like(p) end
    state[p] = st
  end
  if not is_tensor(st.step) then st.step = graft.tensor((tonumber(st.step) or 0) + 0.0) end
  if st.exp_avg == nil then st.exp_avg = graft.zeros_like(p) end
  if st.exp_avg_sq == nil then st.exp_avg_sq = graft.zeros_like(p) end
  if group.amsgrad and st.max_exp_avg_sq == nil then st.max_exp_avg_sq = graft.zeros_like(p) end
  return st
end

local function adam_update(decoupled)
  return function(self, group, p, g, state, lerp)
    local st = adam_state(group, p, state)
    local b = group.betas
    K.adam(p, g, st.step, st.exp_avg, st.exp_avg_sq, group.amsgrad and st.max_exp_avg_sq or nil, group.lr, b[1], b[2],
      group.eps, group.weight_decay, group.amsgrad, group.maximize, decoupled, lerp)
  end
end

local function adam_update_multi(decoupled)
  return function(self, group, ps, gs, state, lerp)
    local steps, ms, vs, vmaxs = {}, {}, {}, group.amsgrad and {} or nil
    for k, p in ipairs(ps) do
      local st = adam_state(group, p, state)
      steps[k], ms[k], vs[k] = st.step, st.exp_avg, st.exp_avg_sq
      if vmaxs then vmaxs[k] = st.max_exp_avg_sq end
    end
    local b = group.betas
    return K.adam_multi(ps, gs, steps, ms, vs, vmaxs, group.lr, b[1], b[2], group.eps, group.weight_decay,
      group.amsgrad, group.maximize, decoupled, lerp)
  end
end

local ADAM_SPEC = {
  defaults = { { "lr", 1e-3 }, { "betas", { 0.9, 0.999 } }, { "eps", 1e-8 }, { "weight_decay", 0 },
    { "amsgrad", false }, { "maximize", false }, { "foreach", None }, { "capturable", false },
    { "differentiable", false }, { "fused", false } },
  numbers = { "lr", "eps", "weight_decay" },
  flags = { "amsgrad", "maximize" },
  update = adam_update(false),
  update_multi = adam_update_multi(false),
}
ADAM_SPEC.validate = function(h, op, where)
  check_common(h, op, where, ADAM_SPEC)
  check_min(op, h.eps, 0, "Invalid epsilon value", where)
  check_betas(h, op, where)
end
define("Adam", ADAM_SPEC)

local ADAMW_SPEC = {
  defaults = { { "lr", 1e-3 }, { "betas", { 0.9, 0.999 } }, { "eps", 1e-8 }, { "weight_decay", 1e-2 },
    { "amsgrad", false }, { "foreach", None }, { "maximize", false }, { "capturable", false } },
  numbers = ADAM_SPEC.numbers,
  flags = ADAM_SPEC.flags,
  update = adam_update(true),
  update_multi = adam_update_multi(true),
}
ADAMW_SPEC.validate = function(h, op, where)
  check_common(h, op, where, ADAMW_SPEC)
  check_min(op, h.eps, 0, "Invalid epsilon value", where)
  check_betas(h, op, where)
end
define("AdamW", ADAMW_SPEC)

local RMSPROP_SPEC = {
  defaults = { { "lr", 1e-2 }, { "momentum", 0 }, { "alpha", 0.99 }, { "eps", 1e-8 }, { "centered", false },
    { "weight_decay", 0 }, { "foreach", None }, { "maximize", false }, { "differentiable", false } },
  numbers = { "lr", "momentum", "alpha", "eps", "weight_decay" },
  flags = { "centered", "maximize" },
}
RMSPROP_SPEC.validate = function(h, op, where)
  check_common(h, op, where, RMSPROP_SPEC)
  check_min(op, h.eps, 0, "Invalid epsilon value", where)
  check_min(op, h.momentum, 0, "Invalid momentum value", where)
  check_min(op, h.alpha, 0, "Invalid alpha value", where)
end
local function rmsprop_state(group, p, state)
  local st = state[p]
  if st == nil then
    st = { step = graft.tensor(0.0), square_avg = graft.zeros_like(p) }
    state[p] = st
  end
  if not is_tensor(st.step) then st.step = graft.tensor((tonumber(st.step) or 0) + 0.0) end
  if st.square_avg == nil then st.square_avg = graft.zeros_like(p) end
  if group.momentum > 0 and st.momentum_buffer == nil then st.momentum_buffer = graft.zeros_like(p) end
  if group.centered and st.grad_avg == nil then st.grad_avg = graft.zeros_like(p) end
  return st
end
RMSPROP_SPEC.update = function(self, group, p, g, state, lerp)
  local st = rmsprop_state(group, p, state)
  local mom, centered = group.momentum > 0, group.centered
  K.rmsprop(p, g, st.square_avg, centered and st.grad_avg or nil, mom and st.momentum_buffer or nil, group.lr,
    group.alpha, group.eps, group.weight_decay, group.momentum, centered, group.maximize, lerp)
  st.step:add_(1)
end
RMSPROP_SPEC.update_multi = function(self, group, ps, gs, state, lerp)
  local mom, centered = group.momentum > 0, group.centered
  local steps, sqs, gas, bufs = {}, {}, centered and {} or nil, mom and {} or nil
  for k, p in ipairs(ps) do
    local st = rmsprop_state(group, p, state)
    steps[k], sqs[k] = st.step, st.square_avg
    if gas then gas[k] = st.grad_avg end
    if bufs then bufs[k] = st.momentum_buffer end
  end
  return K.rmsprop_multi(ps, gs, steps, sqs, gas, bufs, group.lr, group.alpha, group.eps, group.weight_decay,
    group.momentum, centered, group.maximize, lerp)
end
define("RMSprop", RMSPROP_SPEC)

local ADAGRAD_SPEC = {
  defaults = { { "lr", 1e-2 }, { "lr_decay", 0 }, { "eps", 1e-10 }, { "weight_decay", 0 },
    { "initial_accumulator_value", 0 }, { "foreach", None }, { "maximize", false } },
  numbers = { "lr", "lr_decay", "eps", "weight_decay", "initial_accumulator_value" },
  flags = { "maximize" },
}
ADAGRAD_SPEC.validate = function(h, op, where)
  check_common(h, op, where, ADAGRAD_SPEC)
  check_min(op, h.lr_decay, 0, "Invalid lr_decay value", where)
  check_min(op, h.initial_accumulator_value, 0, "Invalid initial_accumulator_value value", where)
  check_min(op, h.eps, 0, "Invalid epsilon value", where)
end
-- PyTorch creates Adagrad's state for every parameter when the optimizer is built.
ADAGRAD_SPEC.init_state = function(self, group)
  for _, p in ipairs(group.params) do
    if self.state[p] == nil then
      self.state[p] = { step = graft.tensor(0.0), sum = graft.full_like(p, group.initial_accumulator_value) }
    end
  end
end
local function adagrad_state(group, p, state)
  local st = state[p]
  if st == nil then
    st = { step = graft.tensor(0.0), sum = graft.full_like(p, group.initial_accumulator_value) }
    state[p] = st
  end
  if not is_tensor(st.step) then st.step = graft.tensor((tonumber(st.step) or 0) + 0.0) end
  return st
end
ADAGRAD_SPEC.update = function(self, group, p, g, state)
  local st = adagrad_state(group, p, state)
  K.adagrad(p, g, st.step, st.sum, group.lr, group.lr_decay, group.eps, group.weight_decay, group.maximize)
end
ADAGRAD_SPEC.update_multi = function(self, group, ps, gs, state)
  local steps, sums = {}, {}
  for k, p in ipairs(ps) do
    local st = adagrad_state(group, p, state)
    steps[k], sums[k] = st.step, st.sum
  end
  return K.adagrad_multi(ps, gs, steps, sums, group.lr, group.lr_decay, group.eps, group.weight_decay, group.maximize)
end
define("Adagrad", ADAGRAD_SPEC)

---------------------------------------------------------------------------------------
-- Building groups from rules

-- A selector as a predicate on entries: a Lua pattern on the name, a list of patterns,
-- a module class (nn.LayerNorm: parameters owned directly by such modules), a function
-- (name, p, module) -> bool, or true (everything).
local function selector(sel, op, what)
  if sel == true then return function() return true end end
  if type(sel) == "string" then
    return function(e) return e.name ~= nil and e.name:find(sel) ~= nil end
  end
  if type(sel) == "function" then
    return function(e) return sel(e.name, e.p, e.module) and true or false end
  end
  if type(sel) == "table" and rawget(sel, "__typename") ~= nil then
    local isinstance = require("graft.nn.module").isinstance
    return function(e) return e.module ~= nil and isinstance(e.module, sel) end
  end
  if type(sel) == "table" and getmetatable(sel) == nil and #sel > 0 then
    for _, s in ipairs(sel) do
      if type(s) ~= "string" then
        fail("%s: %s: a list selector holds patterns (strings), got a %s", op, what, typename(s))
      end
    end
    return function(e)
      if e.name == nil then return false end
      for _, s in ipairs(sel) do
        if e.name:find(s) then return true end
      end
      return false
    end
  end
  fail("%s: %s: a selector is a Lua pattern, a list of patterns, a module class (type = nn.X), a function or true, got %s",
    op, what, typename(sel))
end

local RULE_KEYS = { [1] = true, type = true, no_decay = true }

-- The groups for entries and rules: first match wins; every entry must match one rule.
local function build_groups(op, entries, rules, defaults, what)
  what = what or "rule"
  if type(rules) ~= "table" or getmetatable(rules) ~= nil then
    error(("%s: rules must be a list of rule tables, got %s"):format(op, typename(rules)), 3)
  end
  defaults = defaults or {}
  if type(defaults) ~= "table" then error(("%s: defaults must be a table, got %s"):format(op, typename(defaults)), 3) end
  local preds = {}
  for i, rule in ipairs(rules) do
    if type(rule) ~= "table" or getmetatable(rule) ~= nil then
      error(("%s: rule %d must be a table such as {\"^head%%.\", lr = 1e-3}, got %s"):format(op, i, typename(rule)), 3)
    end
    local sel = rule[1]
    if sel == nil then sel = rule.type end
    if sel == nil then
      error(("%s: rule %d has no selector (a pattern, a list of patterns, type = nn.X, a function or true as its first entry)")
        :format(op, i), 3)
    end
    if rule[1] ~= nil and rule.type ~= nil then
      error(("%s: rule %d has two selectors (a first entry and type =)"):format(op, i), 3)
    end
    preds[i] = rethrow(3, selector, sel, op, what .. " " .. i)
  end
  local default_nd = rethrow(3, no_decay_fn, defaults.no_decay, op)
  local members = {}
  for i = 1, #rules do members[i] = {} end
  local unmatched = {}
  for _, e in ipairs(entries) do
    local hit
    for i, pred in ipairs(preds) do
      if pred(e) then
        hit = i
        break
      end
    end
    if hit then
      local list = members[hit]
      list[#list + 1] = e
    elseif e.p.requires_grad then -- a frozen parameter no rule takes stays out
      unmatched[#unmatched + 1] = e.name or "?"
    end
  end
  if #unmatched > 0 then
    error(("%s: %d trainable parameters match no %s: %s (%s)"):format(op, #unmatched, what,
      quote_list(unmatched, 20), what == "rule" and 'add a catch-all rule such as {".*"} or {true}' or "add them to a block"), 3)
  end
  local groups = {}
  for i, rule in ipairs(rules) do
    local list = members[i]
    if #list > 0 then
      local hp = {}
      for k, v in pairs(defaults) do
        if k ~= "no_decay" then hp[k] = copy_value(v) end
      end
      for k, v in pairs(rule) do
        if not RULE_KEYS[k] then hp[k] = copy_value(v) end
      end
      for _, mk in ipairs({ { "lr_mult", "lr" }, { "wd_mult", "weight_decay" } }) do
        local mult, key = rule[mk[1]], mk[2]
        if mult ~= nil then
          if type(mult) ~= "number" then
            error(("%s: rule %d: %s must be a number, got %s"):format(op, i, mk[1], typename(mult)), 3)
          end
          if rule[key] ~= nil then error(("%s: rule %d gives both %s and %s"):format(op, i, key, mk[1]), 3) end
          if type(defaults[key]) == "number" then
            hp[key] = defaults[key] * mult
            hp[mk[1]] = nil
          else
            hp[key] = nil -- resolved by the optimizer against its own default
          end
        end
      end
      local nd = default_nd
      if rule.no_decay ~= nil then nd = rethrow(3, no_decay_fn, rule.no_decay, op) end
      if nd and hp.weight_decay ~= 0 then
        local dec, nodec = {}, {}
        for _, e in ipairs(list) do
          if nd(e) then nodec[#nodec + 1] = e else dec[#dec + 1] = e end
        end
        for _, part in ipairs({ dec, nodec }) do
          if #part > 0 then
            local g = copy_value(hp)
            if part == nodec then
              g.weight_decay = 0
              g.wd_mult = nil
            end
            g.params = part
            groups[#groups + 1] = g
          end
        end
      else
        hp.params = list
        groups[#groups + 1] = hp
      end
    end
  end
  -- the entries as the optimizer takes them: params and param_names lists
  for _, g in ipairs(groups) do
    local params, names = {}, {}
    for j, e in ipairs(g.params) do
      params[j], names[j] = e.p, e.name
    end
    g.params, g.param_names = params, (#names == #params) and names or nil
  end
  return groups
end

local function trainable_entries(op, model)
  local entries
  if is_model(model) then
    entries = model_entries(model)
  else
    entries = collect(model)
    if entries == nil or is_tensor(model) then
      error(("%s: expected a model (with named_parameters) or named parameters, got %s"):format(op, typename(model)), 3)
    end
  end
  local out = {}
  for _, e in ipairs(entries) do
    if not is_tensor(e.p) then
      error(("%s: optimizer can only optimize Tensors, but one of the params is %s"):format(op, typename(e.p)), 3)
    end
    if e.p.requires_grad then out[#out + 1] = e end
  end
  return out, entries
end

-- optim.param_groups(net, rules [, defaults]) -> groups for an optimizer constructor.
-- rules: ordered; each {selector, overrides...}; the first rule that matches a parameter
-- takes it. A frozen parameter joins its rule's group too, as in PyTorch's explicit
-- lists (the step skips it while it has no grad; unfreezing it later trains it, and group
-- positions do not depend on what is frozen); one that no rule matches is left out
-- (opt:describe() lists it), a trainable one is an error. Overrides are hyperparameters
-- (lr = 1e-3, momentum = 0.9, ...) or multipliers of the defaults (lr_mult, wd_mult).
-- defaults: hyperparameters for every group, and no_decay ("bias_and_norm", a pattern, a
-- list of patterns or a function) to split each rule's parameters into a decayed group
-- and a group with weight_decay 0.
--
--   local groups = optim.param_groups(net, {
--     {"^head%.", lr_mult = 10},
--     {type = nn.LayerNorm, weight_decay = 0},
--     {true},                                            -- everything else
--   }, {lr = 1e-4, weight_decay = 0.05, no_decay = "bias_and_norm"})
--   local opt = optim.AdamW(groups)
function M.param_groups(model, rules, defaults)
  local _, all = trainable_entries("param_groups", model)
  local groups = build_groups("param_groups", all, rules, defaults)
  MODEL_ENTRIES[groups] = all
  return groups
end

-- optim.layer_decay(net, blocks, {base_lr =, decay = [, weight_decay =, no_decay =, ...]})
-- -> groups with layer-wise learning-rate decay: blocks lists selectors from input to
-- output; block i of n gets base_lr * decay^(n - i) (the last block base_lr). A parameter
-- takes the first block that matches it (a frozen one too, as in param_groups); a
-- trainable parameter that matches none is an error.
function M.layer_decay(model, blocks, opts)
  local op = "layer_decay"
  if type(blocks) ~= "table" or getmetatable(blocks) ~= nil or #blocks == 0 then
    error(op .. ": blocks must be a non-empty list of selectors (patterns from input to output), got " .. typename(blocks), 2)
  end
  if type(opts) ~= "table" then error(op .. ": options {base_lr =, decay =} are required", 2) end
  local base, decay = opts.base_lr, opts.decay
  if type(base) ~= "number" or base < 0 then error(op .. ": base_lr must be a non-negative number, got " .. pyrepr(base), 2) end
  if type(decay) ~= "number" or decay <= 0 or decay > 1 then
    error(op .. ": decay must be a number in (0, 1], got " .. pyrepr(decay), 2)
  end
  local rules, defaults = {}, {}
  for k, v in pairs(opts) do
    if k ~= "base_lr" and k ~= "decay" then defaults[k] = v end
  end
  local n = #blocks
  for i, sel in ipairs(blocks) do
    rules[i] = { sel, lr = base * decay ^ (n - i) }
  end
  local _, all = trainable_entries(op, model)
  local groups = build_groups(op, all, rules, defaults, "block")
  MODEL_ENTRIES[groups] = all
  return groups
end

---------------------------------------------------------------------------------------
-- Resumable training

-- optim.training_state{model =, optimizer =, scheduler =, epoch =, ...} -> a table for
-- graft.save: model (its state dict), frozen (names of parameters with requires_grad
-- off), optimizer and scheduler state dicts, rng (graft.get_rng_state()), and every other
-- field as given.
function M.training_state(parts)
  if type(parts) ~= "table" then error("training_state: expected a table {model =, optimizer =, ...}", 2) end
  local out = {}
  for k, v in pairs(parts) do out[k] = v end
  if parts.model ~= nil then
    if not is_model(parts.model) then error("training_state: model must be a module, got " .. typename(parts.model), 2) end
    out.model = parts.model:state_dict()
    local frozen = {}
    for name, p in parts.model:named_parameters() do
      if not p.requires_grad then frozen[#frozen + 1] = name end
    end
    out.frozen = frozen
  end
  if parts.optimizer ~= nil then out.optimizer = parts.optimizer:state_dict() end
  if parts.scheduler ~= nil then out.scheduler = parts.scheduler:state_dict() end
  if out.rng == nil then out.rng = graft.get_rng_state() end
  return out
end

-- optim.load_training_state(state, {model =, optimizer =, scheduler =}) -> state: restores
-- the model's weights and freeze state, the optimizer, the scheduler and the generator
-- (in that order: the optimizer's saved lr overrides what a freshly built scheduler set).
function M.load_training_state(state, parts)
  if type(state) ~= "table" then error("load_training_state: expected a saved training state, got " .. typename(state), 2) end
  parts = parts or {}
  local net = parts.model
  if net ~= nil then
    if state.model == nil then error("load_training_state: the saved state has no model", 2) end
    net:load_state_dict(state.model)
    if state.frozen ~= nil then
      local frozen = {}
      for _, n in ipairs(state.frozen) do frozen[n] = true end
      for name, p in net:named_parameters() do p.requires_grad = not frozen[name] end
    end
  end
  if parts.optimizer ~= nil then
    if state.optimizer == nil then error("load_training_state: the saved state has no optimizer", 2) end
    parts.optimizer:load_state_dict(state.optimizer)
  end
  if parts.scheduler ~= nil then
    if state.scheduler == nil then error("load_training_state: the saved state has no scheduler", 2) end
    parts.scheduler:load_state_dict(state.scheduler)
  end
  if state.rng ~= nil then graft.set_rng_state(state.rng) end
  return state
end

-- graft.optim.lr_scheduler, loaded on first use.
return setmetatable(M, {
  __index = function(t, k)
    if k == "lr_scheduler" then
      local ok, mod = pcall(require, "graft.optim.lr_scheduler")
      if ok then
        rawset(t, k, mod)
        return mod
      end
    end
    return nil
  end,
})
