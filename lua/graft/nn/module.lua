-- graft.nn.Module: the base of every layer and model, with PyTorch's contract.
-- A module keeps three ordered registries (parameters, buffers, children), filled by
-- assignment (`self.fc = nn.Linear(4, 2)`, `self.w = nn.Parameter(t)`) or explicitly
-- (register_parameter / register_buffer / add_module); their order gives PyTorch's
-- state-dict keys. Plain values (numbers, strings, functions, plain tensors) are
-- attributes. Classes come from Module:extend("Name"):
--
--   local Net = nn.Module:extend("Net")
--   function Net:__init(n) self.fc = nn.Linear(n, 10) end
--   function Net:forward(x) return self.fc(x) end
--   local net = Net(784); net(x); net:state_dict()
local graft = require("graft")
local OrderedDict = require("graft.odict")

local M = {}

---------------------------------------------------------------------------------------
-- Small helpers

local is_tensor = graft.is_tensor

-- Tensors marked by nn.Parameter (weak keys: a dead tensor leaves the set).
local PARAM = setmetatable({}, { __mode = "k" })

local TENSOR_TYPE = {
  float32 = "FloatTensor", float64 = "DoubleTensor", float16 = "HalfTensor",
  bfloat16 = "BFloat16Tensor", int64 = "LongTensor", int32 = "IntTensor", int16 = "ShortTensor",
  int8 = "CharTensor", uint8 = "ByteTensor", bool = "BoolTensor",
}

local function shape_str(t)
  return "[" .. table.concat(t:shape(), ", ") .. "]"
end
M.shape_str = shape_str

-- An ordered registry: keys in first-insertion order; vals[k] == false is a member
-- registered as None (present, invisible to iteration and state_dict).
local function reg_new() return { keys = {}, vals = {} } end

local function reg_set(r, k, v)
  if r.vals[k] == nil then r.keys[#r.keys + 1] = k end
  r.vals[k] = v
end

local function reg_del(r, k)
  if r.vals[k] == nil then return end
  r.vals[k] = nil
  for i, n in ipairs(r.keys) do
    if n == k then table.remove(r.keys, i) break end
  end
end

---------------------------------------------------------------------------------------
-- Parameters

-- nn.Parameter(t [, requires_grad]): marks t as a parameter (requires_grad true unless
-- false is given) and returns it. A tensor with a history is detached first, since a
-- parameter is a leaf. Unlike PyTorch, t itself becomes the parameter (no new object).
function M.Parameter(t, requires_grad)
  if not is_tensor(t) then
    error(("Parameter: expected a tensor, got %s"):format(type(t)), 2)
  end
  if not t.is_leaf then t = t:detach() end
  if requires_grad ~= false then
    if not t:is_floating_point() then
      error("Parameter: only tensors of floating point dtype can require gradients, got " .. t:dtype(), 2)
    end
    t.requires_grad = true
  else
    t.requires_grad = false
  end
  PARAM[t] = true
  return t
end

function M.is_parameter(t) return PARAM[t] == true end

---------------------------------------------------------------------------------------
-- Skipping initialisation: {init = false} on a constructor, or nn.skip_init(fn, ...)
-- for everything fn builds; parameters are then allocated (graft.empty) but not
-- initialised, for weights that a checkpoint will overwrite.

local skip_depth = 0

function M.should_init(opts)
  return skip_depth == 0 and not (opts and opts.init == false)
end

-- nn.skip_init(fn, ...): fn's results, built without parameter initialisation.
function M.skip_init(fn, ...)
  if type(fn) ~= "function" and not (type(fn) == "table" and getmetatable(fn) and getmetatable(fn).__call) then
    error(("skip_init: expected a function, got %s"):format(type(fn)), 2)
  end
  skip_depth = skip_depth + 1
  local res = table.pack(pcall(fn, ...))
  skip_depth = skip_depth - 1
  if not res[1] then error(res[2], 0) end
  return table.unpack(res, 2, res.n)
end

---------------------------------------------------------------------------------------
-- Classes

local Module = {}
M.Module = Module

-- Whether x is a module (an instance of Module or a subclass).
local function is_module(x)
  if type(x) ~= "table" then return false end
  local mt = getmetatable(x)
  return type(mt) == "table" and rawget(mt, "__graft_module") == true
end
M.is_module = is_module

local function class_of(m) return getmetatable(m).__class end

-- typename as PyTorch's torch.typename prints it, for error messages.
local function typename(x)
  if is_tensor(x) then return "torch." .. (TENSOR_TYPE[x:dtype()] or x:dtype()) end
  if is_module(x) then return class_of(x).__typename end
  if x == nil then return "None" end
  return type(x)
end
M.typename = typename

local function has_attr(self, name)
  if self._parameters.vals[name] ~= nil or self._buffers.vals[name] ~= nil
    or self._modules.vals[name] ~= nil or self._attrs[name] ~= nil then
    return true
  end
  return class_of(self)[name] ~= nil
end

-- Removes name from every registry and the attributes, except the one named by keep
-- ("p", "b", "m" or "a"): PyTorch's remove_from before a (re)registration.
local function drop(self, name, keep)
  if keep ~= "p" then reg_del(self._parameters, name) end
  if keep ~= "b" then
    reg_del(self._buffers, name)
    self._non_persistent[name] = nil
  end
  if keep ~= "m" then reg_del(self._modules, name) end
  if keep ~= "a" then self._attrs[name] = nil end
end

-- Instance lookup: members, then plain attributes, then positional children for
-- containers (cls.__getitem), then the class chain (methods).
local function instance_index(self, k)
  local v = self._parameters.vals[k]
  if v ~= nil then return v or nil end
  v = self._buffers.vals[k]
  if v ~= nil then return v or nil end
  v = self._modules.vals[k]
  if v ~= nil then return v or nil end
  v = self._attrs[k]
  if v ~= nil then return v end
  local cls = getmetatable(self).__class
  if type(k) == "number" then
    local get = cls.__getitem
    if get then return get(self, k) end
    return nil
  end
  return cls[k]
end

-- Assignment routes parameters, modules and buffers into their registries, as
-- PyTorch's Module.__setattr__ (nil plays Python's None).
local function instance_newindex(self, k, v)
  if type(k) == "number" then
    local cls = getmetatable(self).__class
    if cls.__setitem then return cls.__setitem(self, k, v) end
    error(("%s does not support item assignment"):format(cls.__name), 2)
  end
  if type(k) ~= "string" then
    error(("module attribute name must be a string, got %s"):format(type(k)), 2)
  end
  local params, mods, bufs = self._parameters, self._modules, self._buffers
  if PARAM[v] then
    drop(self, k, "p")
    self:register_parameter(k, v)
  elseif params.vals[k] ~= nil then
    if v ~= nil then
      error(("cannot assign '%s' as parameter '%s' (torch.nn.Parameter or None expected)"):format(typename(v), k), 2)
    end
    params.vals[k] = false
  elseif is_module(v) then
    -- a child may not hide a method (net.train = ... would break net:train())
    if getmetatable(self).__class[k] ~= nil and mods.vals[k] == nil then
      error(("attribute '%s' already exists"):format(k), 2)
    end
    drop(self, k, "m")
    reg_set(mods, k, v)
  elseif mods.vals[k] ~= nil then
    if v ~= nil then
      error(("cannot assign '%s' as child module '%s' (torch.nn.Module or None expected)"):format(typename(v), k), 2)
    end
    mods.vals[k] = false
  elseif bufs.vals[k] ~= nil then
    if v ~= nil and not is_tensor(v) then
      error(("cannot assign '%s' as buffer '%s' (torch.Tensor or None expected)"):format(typename(v), k), 2)
    end
    bufs.vals[k] = v or false
  else
    self._attrs[k] = v
  end
end

-- Errors raised inside forward travel up as a tagged table (the innermost module and
-- the message); the outermost call turns it into "in <path> (<type>): <message>".
local ModError = {}
ModError.__index = ModError
ModError.__tostring = function(e) return e.msg end

local depth = 0

local function module_path(root, target)
  for name, m in root:named_modules() do
    if m == target then return name end
  end
  return nil
end

local function format_error(root, err)
  local msg = tostring(err.msg)
  if err.module == root then return msg end
  local path = module_path(root, err.module)
  local tn = class_of(err.module).__typename
  if path then return ("in %s (%s): %s"):format(path, tn, msg) end
  return ("in (%s): %s"):format(tn, msg)
end

local function call_finish(self, ok, ...)
  depth = depth - 1
  if ok then return ... end
  local err = ...
  if getmetatable(err) ~= ModError then
    err = setmetatable({ module = self, msg = err }, ModError)
  end
  if depth > 0 then error(err, 0) end
  error(format_error(self, err), 0)
end

-- A hook's error keeps a nested module's tagged error (its path wins); any other error
-- is named by the hook's kind, and the module calling it is tagged by call_finish.
local function hook_failed(kind, err)
  if getmetatable(err) == ModError then error(err, 0) end
  error(kind .. ": " .. tostring(err), 0)
end

local function pack_ok(kind, ok, ...)
  if not ok then hook_failed(kind, (...)) end
  return table.pack(...)
end

-- The call of a module with hooks (PyTorch 1.13's _call_impl): pre-hooks in order, each
-- seeing the arguments the previous one left; forward; forward hooks in order, each
-- seeing the result the previous one left. The lists are replaced, never edited, on
-- registration and removal, so a hook that adds or removes hooks does not change the
-- lists this call walks (PyTorch walks a tuple of them).
local bw_wrap_inputs, bw_wrap_outputs -- full backward hooks, defined with the hooks below

local function hooked_call(self, fwd, ...)
  local args = table.pack(...)
  local pre = self._hooks.pre
  for i = 1, #pre do
    local ok, r = pcall(pre[i].fn, self, args)
    if not ok then hook_failed("forward pre-hook", r) end
    if r ~= nil then
      if type(r) == "table" and getmetatable(r) == nil then
        args = table.move(r, 1, r.n or #r, 1, { n = r.n or #r })
      else
        args = { r, n = 1 }
      end
    end
  end
  local bw = self._hooks and self._hooks.bwd
  local call
  if bw and #bw > 0 and graft.is_grad_enabled() then call, args = bw_wrap_inputs(self, bw, args) end
  local out = table.pack(fwd(self, table.unpack(args, 1, args.n)))
  local h = self._hooks
  local post = h and h.fwd or {}
  for i = 1, #post do
    local r = pack_ok("forward hook", pcall(post[i].fn, self, args, table.unpack(out, 1, out.n)))
    if r[1] ~= nil then out = r end
  end
  if call then out = bw_wrap_outputs(call, out) end
  return table.unpack(out, 1, out.n)
end

-- net(...): forward under the error path. Without hooks this is one field check more
-- than calling forward (the field is always present on an instance: false or the hooks).
local function instance_call(self, ...)
  local fwd = self.forward
  depth = depth + 1
  if self._hooks then return call_finish(self, pcall(hooked_call, self, fwd, ...)) end
  return call_finish(self, pcall(fwd, self, ...))
end

local function instance_tostring(self) return self:__repr() end

local function instance_len(self)
  local cls = getmetatable(self).__class
  if cls.__len then return cls.__len(self) end
  error(("attempt to get the length of a %s"):format(cls.__name), 2)
end

local function instance_pairs(self)
  local cls = getmetatable(self).__class
  if cls.__pairs then return cls.__pairs(self) end
  -- default: the registered children, in order
  local keys, vals, i = self._modules.keys, self._modules.vals, 0
  return function()
    repeat
      i = i + 1
      local k = keys[i]
      if k == nil then return nil end
      local v = vals[k]
      if v then return k, v end
    until false
  end, self, nil
end

local function new_instance(cls, ...)
  local self = setmetatable({
    _parameters = reg_new(), _buffers = reg_new(), _modules = reg_new(),
    _non_persistent = {}, _attrs = { training = true }, _hooks = false,
  }, cls.__mt)
  local init = cls.__init
  if init then init(self, ...) end
  return self
end

local class_mt = {
  __call = new_instance,
  __tostring = function(cls) return "<class " .. rawget(cls, "__typename") .. ">" end,
}

-- Module:extend(name [, {typename = "nn.Name", version = n}]): a subclass. Methods
-- are defined on the returned table; `__init(self, ...)` is the constructor.
function Module.extend(parent, name, opts)
  if type(name) ~= "string" or name == "" then
    error("extend: a class needs a name (Module:extend(\"Net\"))", 2)
  end
  opts = opts or {}
  local cls = {
    __name = name,
    __typename = opts.typename or name,
    __parent = parent,
  }
  if opts.version then cls.__version = opts.version end
  cls.__mt = {
    __graft_module = true, __class = cls, __name = cls.__typename,
    __index = instance_index, __newindex = instance_newindex, __call = instance_call,
    __tostring = instance_tostring, __len = instance_len, __pairs = instance_pairs,
  }
  return setmetatable(cls, {
    __index = parent, __call = new_instance, __tostring = class_mt.__tostring,
  })
end

Module.__name = "Module"
Module.__typename = "nn.Module"
Module.__version = 1
Module.__mt = {
  __graft_module = true, __class = Module, __name = "nn.Module",
  __index = instance_index, __newindex = instance_newindex, __call = instance_call,
  __tostring = instance_tostring, __len = instance_len, __pairs = instance_pairs,
}
setmetatable(Module, class_mt)

-- Whether module m is an instance of cls (or of a subclass of it).
function M.isinstance(m, cls)
  if not is_module(m) then return false end
  local c = class_of(m)
  while c do
    if c == cls then return true end
    c = rawget(c, "__parent")
  end
  return false
end
Module.isinstance = M.isinstance

function Module:_get_name() return class_of(self).__name end

-- How a layer names itself in errors ("Conv2d(3, 64)"); layers override it.
function Module:_label() return self:_get_name() end

function Module:forward()
  error(('Module [%s] is missing the required "forward" function'):format(class_of(self).__name), 0)
end

---------------------------------------------------------------------------------------
-- Registration

function Module:register_parameter(name, param)
  if type(name) ~= "string" then
    error(("parameter name should be a string. Got %s"):format(typename(name)), 2)
  elseif name:find(".", 1, true) then
    error('parameter name can\'t contain "."', 2)
  elseif name == "" then
    error('parameter name can\'t be empty string ""', 2)
  elseif has_attr(self, name) and self._parameters.vals[name] == nil then
    error(("attribute '%s' already exists"):format(name), 2)
  end
  if param == nil then
    reg_set(self._parameters, name, false)
  elseif not PARAM[param] then
    error(("cannot assign '%s' object to parameter '%s' (torch.nn.Parameter or None required)"):format(
      typename(param), name), 2)
  elseif not param.is_leaf then
    error(("Cannot assign non-leaf Tensor to parameter '%s'. Model parameters must be created explicitly. " ..
      "To express '%s' as a function of another Tensor, compute the value in the forward() method."):format(name, name), 2)
  else
    reg_set(self._parameters, name, param)
  end
end

-- register_buffer(name, tensor_or_nil [, {persistent = false}]) (also a boolean).
function Module:register_buffer(name, tensor, persistent)
  if type(persistent) == "table" then persistent = persistent.persistent end
  if type(name) ~= "string" then
    error(("buffer name should be a string. Got %s"):format(typename(name)), 2)
  elseif name:find(".", 1, true) then
    error('buffer name can\'t contain "."', 2)
  elseif name == "" then
    error('buffer name can\'t be empty string ""', 2)
  elseif has_attr(self, name) and self._buffers.vals[name] == nil then
    error(("attribute '%s' already exists"):format(name), 2)
  elseif tensor ~= nil and not is_tensor(tensor) then
    error(("cannot assign '%s' object to buffer '%s' (torch Tensor or None required)"):format(
      typename(tensor), name), 2)
  end
  reg_set(self._buffers, name, tensor or false)
  if persistent == false then self._non_persistent[name] = true else self._non_persistent[name] = nil end
end

function Module:add_module(name, module)
  if module ~= nil and not is_module(module) then
    error(("%s is not a Module subclass"):format(typename(module)), 2)
  elseif type(name) ~= "string" then
    error(("module name should be a string. Got %s"):format(typename(name)), 2)
  elseif has_attr(self, name) and self._modules.vals[name] == nil then
    error(("attribute '%s' already exists"):format(name), 2)
  elseif name:find(".", 1, true) then
    error(('module name can\'t contain ".", got: %s'):format(name), 2)
  elseif name == "" then
    error('module name can\'t be empty string ""', 2)
  end
  reg_set(self._modules, name, module or false)
end
Module.register_module = Module.add_module

-- Deletes a member or attribute (Python's `del m.name`); the name loses its place.
function Module:delattr(name)
  drop(self, name, nil)
end

---------------------------------------------------------------------------------------
-- Hooks (PyTorch 1.13's forward pre-hooks and forward hooks, per module)
--
--   local feats = {}
--   local h = net.layer3:register_forward_hook(function(m, input, output) feats.layer3 = output end)
--   net(x)          -- feats.layer3 is layer3's output
--   h:remove()      -- idempotent; or `local h <close> = ...` removes it at the end of a block
--
-- A pre-hook is hook(module, args): args is the table of forward's arguments
-- ({x, n = 1}); a non-nil return replaces them: a plain table (no metatable) is the new
-- argument list, anything else (a tensor) one argument, as PyTorch wraps a non-tuple.
-- A forward hook is hook(module, args, output, ...): args as forward received them,
-- output forward's result (a module with several results, such as MultiheadAttention,
-- passes the others after it); a non-nil first return replaces the results by the
-- hook's. Hooks run in registration order, are not state, and stay across to(), train()
-- and load_state_dict(); clone() copies them, as copy.deepcopy does. An error in a hook
-- is reported with the module's path, like an error in its forward.

local RemovableHandle = { __name = "graft.nn.RemovableHandle" }
RemovableHandle.__index = RemovableHandle
local WEAK_VALUES = { __mode = "v" }
local next_hook_id = 0

-- handle:remove(): the hook is not called any more; a second remove does nothing. The
-- handle holds its module weakly (PyTorch's weakref to the hooks dict).
function RemovableHandle:remove()
  local m = self._module[1]
  local h = m and rawget(m, "_hooks")
  if not h then return end
  local list, kept = h[self._kind], {}
  for _, e in ipairs(list) do
    if e.id ~= self.id then kept[#kept + 1] = e end
  end
  if #kept == #list then return end
  h[self._kind] = kept
  if #h.pre == 0 and #h.fwd == 0 and #h.bwd == 0 then rawset(m, "_hooks", false) end
end
RemovableHandle.__close = RemovableHandle.remove
RemovableHandle.__tostring = function(self) return ("RemovableHandle(id=%d)"):format(self.id) end

local function add_hook(self, kind, hook, op)
  local callable = type(hook) == "function"
    or (type(hook) == "table" and getmetatable(hook) and getmetatable(hook).__call ~= nil)
  if not callable then
    error(("%s: expected a function, got %s"):format(op, typename(hook)), 3)
  end
  next_hook_id = next_hook_id + 1
  local h = rawget(self, "_hooks")
  if not h then
    h = { pre = {}, fwd = {}, bwd = {} }
    rawset(self, "_hooks", h)
  end
  local list = table.move(h[kind], 1, #h[kind], 1, {})
  list[#list + 1] = { id = next_hook_id, fn = hook }
  h[kind] = list
  return setmetatable({ id = next_hook_id, _kind = kind,
    _module = setmetatable({ self }, WEAK_VALUES) }, RemovableHandle)
end

-- register_forward_pre_hook(hook) -> handle: hook(module, args) before forward.
function Module:register_forward_pre_hook(hook)
  return add_hook(self, "pre", hook, "register_forward_pre_hook")
end

-- register_forward_hook(hook) -> handle: hook(module, args, output) after forward.
function Module:register_forward_hook(hook)
  return add_hook(self, "fwd", hook, "register_forward_hook")
end

-- Full backward hooks (PyTorch 1.13's register_full_backward_hook):
--
--   local h = net.fc:register_full_backward_hook(function(m, grad_input, grad_output)
--     return { grad_input[1] * 0.5 }     -- optional: replaces the gradient w.r.t. the input
--   end)
--
-- hook(module, grad_input, grad_output) runs in backward once the gradients w.r.t. the
-- module's inputs are known. grad_output has an entry per value forward returned: the
-- gradient w.r.t. each tensor output (nil for the others and for outputs no gradient
-- reached); grad_input an entry per argument: the gradient w.r.t. each tensor argument
-- that requires grad (nil for the others). Both carry their length in `n`. A returned
-- table replaces grad_input (its nil entries become zeros); several hooks run in
-- registration order, each seeing the previous one's grad_input. When no input requires
-- grad, the hook is called with an all-nil grad_input once every tensor output has its
-- gradient, and must return nil.
--
-- As PyTorch's BackwardHook, a call made with grad mode on passes forward identity views
-- of its inputs and returns identity views of its outputs (after the forward hooks ran),
-- with tensor hooks on them (Tensor:register_hook); several inputs that require grad are
-- viewed out of one concatenated tensor, so that one hook sees all their gradients
-- together (they must then share a dtype and device). Only top-level tensor arguments
-- and results count, as PyTorch. Each call's hooks live as long as its graph.

-- Runs the module's backward hooks of one call on grad_input gin (nil entries allowed);
-- returns the replacement or nil.
local function bw_call(rec, gin)
  local replaced
  for _, h in ipairs(rec.hooks) do
    local ok, r = pcall(h.fn, rec.module, gin, rec.grad_output)
    if not ok then
      error(("full backward hook of (%s): %s"):format(typename(rec.module), tostring(r)), 0)
    end
    if r ~= nil then
      if type(r) ~= "table" or is_tensor(r) then
        error(("full backward hook of (%s): expected the hook to return a table of gradients or nil, got %s")
          :format(typename(rec.module), typename(r)), 0)
      end
      local n = r.n or #r
      for k in pairs(r) do
        if math.type(k) == "integer" and k > n then n = k end
      end
      if n ~= rec.n_in then
        error(("full backward hook of (%s): the hook returned an invalid number of grad_input, got %d, but " ..
          "expected %d"):format(typename(rec.module), n, rec.n_in), 0)
      end
      gin = table.move(r, 1, rec.n_in, 1, { n = rec.n_in })
      replaced = gin
    end
  end
  return replaced
end

-- The tensor hook on the (concatenated) inputs: g is the gradient w.r.t. them all.
local function bw_fire(rec, g)
  local gin = { n = rec.n_in }
  if #rec.idx == 1 then
    gin[rec.idx[1]] = g
  else
    local off = 1
    for k, i in ipairs(rec.idx) do
      gin[i] = g:narrow(1, off, rec.numel[k]):view(rec.shape[k])
      off = off + rec.numel[k]
    end
  end
  local res = bw_call(rec, gin)
  rec.grad_output, rec.got = { n = rec.n_out }, 0
  if res == nil then return nil end
  local parts = {}
  for k, i in ipairs(rec.idx) do
    local t = res[i]
    if t == nil then
      t = graft.zeros_like(gin[i])
    elseif not is_tensor(t) then
      error(("full backward hook of (%s): grad_input[%d] is a %s (expected a tensor or nil)")
        :format(typename(rec.module), i, typename(t)), 0)
    end
    parts[k] = t
  end
  if #parts == 1 then return parts[1] end
  for k, t in ipairs(parts) do
    if t:numel() ~= rec.numel[k] then
      error(("full backward hook of (%s): grad_input[%d] has shape %s for an input of shape %s")
        :format(typename(rec.module), rec.idx[k], shape_str(t), shape_str(gin[rec.idx[k]])), 0)
    end
    parts[k] = t:reshape(-1)
  end
  return graft.cat(parts)
end

-- Before forward: the call's record, and args with the tensors that require grad
-- replaced by identity views carrying the input hook. The hooks' closures hold the
-- record, never the tensors they are registered on (that would be a reference cycle
-- through the registry, which Lua's collector cannot see).
function bw_wrap_inputs(self, hooks, args)
  local rec = { module = self, hooks = hooks, n_in = args.n, idx = {}, shape = {}, numel = {},
    n_out = 0, got = 0, grad_output = { n = 0 } }
  for i = 1, args.n do
    if is_tensor(args[i]) and args[i].requires_grad then rec.idx[#rec.idx + 1] = i end
  end
  if #rec.idx == 0 then return rec, args end
  local new = table.move(args, 1, args.n, 1, { n = args.n })
  local z
  if #rec.idx == 1 then
    local x = args[rec.idx[1]]
    z = x:view_as(x)
    new[rec.idx[1]] = z
  else
    local first, flat = args[rec.idx[1]], {}
    for k, i in ipairs(rec.idx) do
      local x = args[i]
      if x:dtype() ~= first:dtype() or tostring(x:device()) ~= tostring(first:device()) then
        error(("register_full_backward_hook: the inputs that require grad must share a dtype and device " ..
          "(input %d is %s on %s, input %d is %s on %s)"):format(rec.idx[1], first:dtype(),
          tostring(first:device()), i, x:dtype(), tostring(x:device())), 0)
      end
      rec.shape[k], rec.numel[k] = x:shape(), x:numel()
      flat[k] = x:reshape(-1)
    end
    z = graft.cat(flat)
    local off = 1
    for k, i in ipairs(rec.idx) do
      new[i] = z:narrow(1, off, rec.numel[k]):view(rec.shape[k])
      off = off + rec.numel[k]
    end
  end
  z:register_hook(function(g) return bw_fire(rec, g) end)
  return rec, new
end

-- After the forward hooks: the results with each tensor that requires grad replaced by
-- an identity view whose hook records its gradient in grad_output.
function bw_wrap_outputs(rec, out)
  rec.n_out = out.n
  rec.grad_output = { n = out.n }
  local new = table.move(out, 1, out.n, 1, { n = out.n })
  local count = 0
  for j = 1, out.n do
    local o = out[j]
    if is_tensor(o) and o.requires_grad then
      count = count + 1
      new[j] = o:view_as(o)
      new[j]:register_hook(function(g)
        rec.grad_output[j] = g
        rec.got = rec.got + 1
        if #rec.idx == 0 and rec.got == count then
          local gin = bw_call(rec, { n = rec.n_in })
          rec.grad_output, rec.got = { n = rec.n_out }, 0
          for i = 1, rec.n_in do
            if gin and gin[i] ~= nil then
              error(("full backward hook of (%s): Backward hook for Modules where no input requires gradient " ..
                "should always return None or None for all gradients."):format(typename(rec.module)), 0)
            end
          end
        end
      end)
    end
  end
  return new
end

-- register_full_backward_hook(hook) -> handle: hook(module, grad_input, grad_output) in
-- backward; a returned table replaces grad_input.
function Module:register_full_backward_hook(hook)
  return add_hook(self, "bwd", hook, "register_full_backward_hook")
end
function Module:register_backward_hook()
  error("register_backward_hook: not supported (deprecated in PyTorch, its results depend on the module's " ..
    "last operation); use register_full_backward_hook", 2)
end

---------------------------------------------------------------------------------------
-- Iteration

local function list_iter(names, vals)
  local i = 0
  return function()
    i = i + 1
    if names[i] ~= nil then return names[i], vals[i] end
  end
end

-- The (name, module) pairs in pre-order, each module once (name "" for self).
local function collect_modules(self, prefix, remove_duplicate)
  local names, mods, memo = {}, {}, {}
  local function walk(m, p)
    if remove_duplicate ~= false then
      if memo[m] then return end
      memo[m] = true
    end
    names[#names + 1], mods[#mods + 1] = p, m
    local r = m._modules
    for _, k in ipairs(r.keys) do
      local c = r.vals[k]
      if c then walk(c, p == "" and k or (p .. "." .. k)) end
    end
  end
  walk(self, prefix or "")
  return names, mods
end

-- for name, m in net:named_modules() do ... end  ({prefix =, remove_duplicate =})
function Module:named_modules(opts)
  opts = opts or {}
  return list_iter(collect_modules(self, opts.prefix, opts.remove_duplicate))
end

function Module:modules()
  local _, mods = collect_modules(self)
  return mods
end

function Module:named_children()
  local names, vals, memo = {}, {}, {}
  local r = self._modules
  for _, k in ipairs(r.keys) do
    local c = r.vals[k]
    if c and not memo[c] then
      memo[c] = true
      names[#names + 1], vals[#vals + 1] = k, c
    end
  end
  return list_iter(names, vals)
end

function Module:children()
  local out = {}
  for _, c in self:named_children() do out[#out + 1] = c end
  return out
end

local function collect_members(self, field, opts)
  opts = opts or {}
  local prefix = opts.prefix or ""
  local mnames, mods
  if opts.recurse == false then
    mnames, mods = { prefix }, { self }
  else
    mnames, mods = collect_modules(self, prefix, opts.remove_duplicate)
  end
  local names, vals, memo = {}, {}, {}
  local dedup = opts.remove_duplicate ~= false
  for i, m in ipairs(mods) do
    local r, mp = m[field], mnames[i]
    for _, k in ipairs(r.keys) do
      local v = r.vals[k]
      if v and not (dedup and memo[v]) then
        memo[v] = true
        names[#names + 1] = mp == "" and k or (mp .. "." .. k)
        vals[#vals + 1] = v
      end
    end
  end
  return names, vals
end

-- for name, p in net:named_parameters() do ... end ({prefix =, recurse =, remove_duplicate =})
function Module:named_parameters(opts)
  return list_iter(collect_members(self, "_parameters", opts))
end

-- The parameters as a list, in the order an optimizer sees them.
function Module:parameters(opts)
  local _, vals = collect_members(self, "_parameters", opts)
  return vals
end

function Module:named_buffers(opts)
  return list_iter(collect_members(self, "_buffers", opts))
end

function Module:buffers(opts)
  local _, vals = collect_members(self, "_buffers", opts)
  return vals
end

-- Number of parameter elements ({trainable = true}: only those requiring grad).
function Module:num_parameters(opts)
  local n = 0
  for _, p in ipairs(self:parameters()) do
    if not (opts and opts.trainable) or p.requires_grad then n = n + p:numel() end
  end
  return n
end

-- get_submodule("layer1.0.conv1"), get_parameter("fc.weight"), get_buffer(...)
function Module:get_submodule(target)
  if target == "" then return self end
  local mod = self
  for item in target:gmatch("[^.]+") do
    if not has_attr(mod, item) then
      error(("%s has no attribute `%s`"):format(mod:_get_name(), item), 2)
    end
    local nxt = mod[item]
    if not is_module(nxt) then error(("`%s` is not an nn.Module"):format(item), 2) end
    mod = nxt
  end
  return mod
end

local function split_target(target)
  local mod, name = target:match("^(.*)%.([^.]*)$")
  if not mod then return "", target end
  return mod, name
end

function Module:get_parameter(target)
  local mp, name = split_target(target)
  local mod = self:get_submodule(mp)
  if not has_attr(mod, name) then
    error(("%s has no attribute `%s`"):format(mod:_get_name(), name), 2)
  end
  local p = mod._parameters.vals[name]
  if not p then error(("`%s` is not an nn.Parameter"):format(name), 2) end
  return p
end

function Module:get_buffer(target)
  local mp, name = split_target(target)
  local mod = self:get_submodule(mp)
  if not has_attr(mod, name) then
    error(("%s has no attribute `%s`"):format(mod:_get_name(), name), 2)
  end
  local b = mod._buffers.vals[name]
  if not b then error(("`%s` is not a buffer"):format(name), 2) end
  return b
end

---------------------------------------------------------------------------------------
-- State dicts

-- state_dict([{prefix =, keep_vars =}]): an OrderedDict of the parameters and
-- persistent buffers with PyTorch's keys and order (each module's parameters, then its
-- buffers, then extra state, then its children, depth first), values detached aliases
-- of the live tensors (keep_vars: the tensors themselves), and sd:metadata() =
-- {[module path] = {version = n}}.
function Module:state_dict(opts)
  opts = opts or {}
  local sd = OrderedDict()
  local meta = {}
  local keep = opts.keep_vars
  local function walk(m, p)
    meta[p:sub(1, -2)] = { version = class_of(m).__version or 1 }
    local r = m._parameters
    for _, k in ipairs(r.keys) do
      local v = r.vals[k]
      if v then sd[p .. k] = keep and v or v:detach() end
    end
    r = m._buffers
    local np = m._non_persistent
    for _, k in ipairs(r.keys) do
      local v = r.vals[k]
      if v and not np[k] then sd[p .. k] = keep and v or v:detach() end
    end
    local get_extra = m.get_extra_state
    if get_extra ~= Module.get_extra_state then sd[p .. "_extra_state"] = get_extra(m) end
    r = m._modules
    for _, k in ipairs(r.keys) do
      local c = r.vals[k]
      if c then walk(c, p .. k .. ".") end
    end
  end
  walk(self, opts.prefix or "")
  sd:set_metadata(meta)
  return sd
end

-- Extra (non-tensor) state: a class that overrides both gets key `_extra_state`.
function Module:get_extra_state()
  error("Reached a code path in Module.get_extra_state() that should never be called.", 2)
end
function Module:set_extra_state()
  error("Reached a code path in Module.set_extra_state() that should never be called.", 2)
end

local function quoted_list(keys)
  local q = {}
  for i, k in ipairs(keys) do q[i] = '"' .. k .. '"' end
  return table.concat(q, ", ")
end

local Incompatible = {
  __name = "graft.nn.IncompatibleKeys",
  __tostring = function(r)
    if #r.missing_keys == 0 and #r.unexpected_keys == 0 then return "<All keys matched successfully>" end
    local function pylist(l)
      local q = {}
      for i, k in ipairs(l) do q[i] = "'" .. k .. "'" end
      return "[" .. table.concat(q, ", ") .. "]"
    end
    return ("_IncompatibleKeys(missing_keys=%s, unexpected_keys=%s)"):format(pylist(r.missing_keys), pylist(r.unexpected_keys))
  end,
}

-- Copies one module's entries from the state (keys/vals) and records missing keys,
-- unexpected keys (always: PyTorch's per-module loader runs in strict bookkeeping
-- mode) and errors. The norm classes run their version fix-up first (_load_fixup).
local function load_module(m, state, prefix, local_meta, missing, unexpected, errors)
  local fix = m._load_fixup
  if fix then fix(m, state, prefix, local_meta) end
  local vals = state.vals
  local local_state = {}
  local names = {}
  local r = m._parameters
  for _, k in ipairs(r.keys) do
    if r.vals[k] then names[#names + 1] = k; local_state[k] = r.vals[k] end
  end
  r = m._buffers
  for _, k in ipairs(r.keys) do
    if r.vals[k] and not m._non_persistent[k] then names[#names + 1] = k; local_state[k] = r.vals[k] end
  end
  for _, name in ipairs(names) do
    local param, key = local_state[name], prefix .. name
    local input = vals[key]
    if input ~= nil then
      if not is_tensor(input) then
        errors[#errors + 1] = ('While copying the parameter named "%s", expected torch.Tensor or Tensor-like ' ..
          "object from checkpoint but received <class '%s'>"):format(key, type(input))
      else
        if param:dim() == 0 and input:dim() == 1 and input:numel() >= 1 then input = input[1] end
        if shape_str(input) ~= shape_str(param) then
          errors[#errors + 1] = ("size mismatch for %s: copying a param with shape %s from checkpoint, " ..
            "the shape in current model is %s."):format(key, shape_str(input), shape_str(param))
        else
          local ok, err = pcall(graft.no_grad, function() param:copy_(input) end)
          if not ok then
            errors[#errors + 1] = ('While copying the parameter named "%s", whose dimensions in the model are %s ' ..
              "and whose dimensions in the checkpoint are %s, an exception occurred : ('%s',)."):format(
              key, shape_str(param), shape_str(input), tostring(err))
          end
        end
      end
    else
      missing[#missing + 1] = key
    end
  end
  local extra_key = prefix .. "_extra_state"
  if m.set_extra_state ~= Module.set_extra_state then
    if vals[extra_key] ~= nil then m:set_extra_state(vals[extra_key]) else missing[#missing + 1] = extra_key end
  elseif vals[extra_key] ~= nil then
    unexpected[#unexpected + 1] = extra_key
  end
  local np = #prefix
  local mods = m._modules.vals
  for _, key in ipairs(state.keys) do
    if vals[key] ~= nil and key:sub(1, np) == prefix and key ~= extra_key then
      local rest = key:sub(np + 1)
      local dot = rest:find(".", 1, true)
      if dot then
        if mods[rest:sub(1, dot - 1)] == nil then unexpected[#unexpected + 1] = key end
      elseif local_state[rest] == nil then
        unexpected[#unexpected + 1] = key
      end
    end
  end
end

-- load_state_dict(sd [, {strict = true}]) -> {missing_keys = {...}, unexpected_keys = {...}}
-- PyTorch's rules: values are copied (under no_grad, converted to each tensor's dtype)
-- into the existing tensors, which keep their identity and requires_grad; missing and
-- unexpected keys raise when strict; a size mismatch raises in both modes; every
-- problem is gathered in one message.
function Module:load_state_dict(sd, opts)
  if type(opts) == "boolean" then opts = { strict = opts } end
  opts = opts or {}
  local strict = opts.strict ~= false
  local dict_like = OrderedDict.is(sd) or (type(sd) == "table" and getmetatable(sd) == nil)
  if not dict_like then
    error(("Expected state_dict to be dict-like, got %s."):format(
      is_module(sd) and "a module (pass net:state_dict())" or typename(sd)), 2)
  end
  -- a working copy: keys in the mapping's order (a plain table's keys sorted)
  local state = { keys = {}, vals = {} }
  local src = OrderedDict.is(sd) and sd or OrderedDict.from_table(sd)
  for k, v in pairs(src) do
    if type(k) == "string" then
      state.keys[#state.keys + 1] = k
      state.vals[k] = v
    end
  end
  local meta = OrderedDict.is(sd) and sd:metadata() or nil
  local missing, unexpected, errors = {}, {}, {}
  local function load(m, prefix)
    local local_meta = meta and meta[prefix:sub(1, -2)] or {}
    load_module(m, state, prefix, local_meta, missing, unexpected, errors)
    local r = m._modules
    for _, k in ipairs(r.keys) do
      local c = r.vals[k]
      if c then load(c, prefix .. k .. ".") end
    end
  end
  load(self, "")
  if strict then
    if #unexpected > 0 then
      table.insert(errors, 1, ("Unexpected key(s) in state_dict: %s. "):format(quoted_list(unexpected)))
    end
    if #missing > 0 then
      table.insert(errors, 1, ("Missing key(s) in state_dict: %s. "):format(quoted_list(missing)))
    end
  end
  if #errors > 0 then
    error(("Error(s) in loading state_dict for %s:\n\t%s"):format(self:_get_name(), table.concat(errors, "\n\t")), 2)
  end
  return setmetatable({ missing_keys = missing, unexpected_keys = unexpected }, Incompatible)
end

-- load_pretrained(path_or_ckpt [, opts]) -> report: weights into a model that differs
-- (key transforms, per-key policies, adapters, a report); see lua/graft/pretrained.lua.
function Module:load_pretrained(src, opts) return require("graft.pretrained").load(self, src, opts) end

---------------------------------------------------------------------------------------
-- Modes, gradients, conversion

-- train([mode = true]): sets training on the whole subtree, except BatchNorm layers
-- frozen with {bn_eval = true}, which stay in eval mode until unfrozen.
function Module:train(mode)
  if mode == nil then mode = true end
  if type(mode) ~= "boolean" then error("training mode is expected to be boolean", 2) end
  for _, m in ipairs(self:modules()) do
    m._attrs.training = mode and not m._attrs._bn_eval
  end
  return self
end

function Module:eval() return self:train(false) end

function Module:requires_grad_(requires_grad)
  if requires_grad == nil then requires_grad = true end
  for _, p in ipairs(self:parameters()) do p.requires_grad = requires_grad end
  return self
end

-- zero_grad([{set_to_none = true}]): grads to nil (the default, as PyTorch 2.x), or
-- filled with zeros in place.
function Module:zero_grad(opts)
  local to_none = not (opts and opts.set_to_none == false)
  for _, p in ipairs(self:parameters()) do
    if to_none then
      p.grad = nil
    else
      local g = p.grad
      if g then graft.no_grad(function() g:zero_() end) end
    end
  end
  return self
end

-- apply(fn): fn(m) on every child subtree, then on self (PyTorch's order).
function Module:apply(fn)
  for _, c in ipairs(self:children()) do c:apply(fn) end
  fn(self)
  return self
end

local FLOATING = { float32 = true, float64 = true, float16 = true, bfloat16 = true }

-- Replaces every parameter and buffer by fn(t) (nil: unchanged); parameters stay
-- parameters with their requires_grad and grad (converted alike); a tensor shared
-- under two names is converted once.
function Module:_apply(fn)
  local memo = {}
  local function conv(t)
    if memo[t] ~= nil then return memo[t] end
    local n = fn(t)
    if n == nil or n == t then memo[t] = t return t end
    memo[t] = n
    return n
  end
  for _, m in ipairs(self:modules()) do
    local r = m._parameters
    for _, k in ipairs(r.keys) do
      local p = r.vals[k]
      if p then
        local q = conv(p)
        if q ~= p and not PARAM[q] then
          local rg, g = p.requires_grad, p.grad
          q = graft.no_grad(function() return q:detach() end)
          PARAM[q] = true
          if rg then q.requires_grad = true end
          if g then q.grad = fn(g) or g end
          memo[p] = q
        end
        r.vals[k] = q
      end
    end
    r = m._buffers
    for _, k in ipairs(r.keys) do
      local b = r.vals[k]
      if b then r.vals[k] = conv(b) end
    end
  end
  return self
end

local function canonical_dtype(d)
  local ok, t = pcall(graft.empty, 0, { dtype = d })
  if ok then return t:dtype() end
  return nil
end

-- to(dtype_or_device): floating-point parameters and buffers to a dtype (integer
-- buffers such as num_batches_tracked keep theirs), or everything to a device ("cpu",
-- "cuda", "cuda:N"; grads move along). Converted tensors are new objects (PyTorch keeps
-- the Parameter objects and swaps their data): build optimizers after converting.
function Module:to(x, opts)
  if type(x) == "table" and not is_tensor(x) then opts, x = x, nil end
  opts = opts or {}
  local dtype, device = opts.dtype, opts.device
  if x ~= nil then
    if is_tensor(x) then
      dtype = x:dtype()
      device = x:device()
    elseif type(x) == "string" then
      local d = canonical_dtype(x)
      if d then dtype = d else device = x end
    else
      error(("to: expected a dtype or device name, got %s"):format(type(x)), 2)
    end
  end
  if dtype and not FLOATING[canonical_dtype(dtype) or ""] then
    error(("nn.Module.to only accepts floating point dtypes, but got desired dtype=%s"):format(tostring(dtype)), 2)
  end
  return self:_apply(function(t)
    local target = t
    if dtype and t:is_floating_point() and t:dtype() ~= dtype then
      target = graft.no_grad(function() return target:to(dtype) end)
    end
    if device and target:device() ~= device then
      target = graft.no_grad(function() return target:to(device) end)
    end
    if target == t then return nil end
    return target
  end)
end

function Module:float() return self:to("float32") end
function Module:double() return self:to("float64") end
function Module:half() return self:to("float16") end
function Module:bfloat16() return self:to("bfloat16") end
function Module:cpu() return self:to("cpu") end
-- cuda([index]): everything to cuda:index (the current device by default).
function Module:cuda(index)
  if index ~= nil and math.type(index) ~= "integer" then
    error(("cuda: device index must be an integer, got %s"):format(type(index)), 2)
  end
  return self:to(index and ("cuda:" .. index) or "cuda")
end

-- A deep copy: new tensors (parameters keep requires_grad), new modules; sharing
-- inside the copied tree (tied weights, a child used twice) is preserved.
function Module:clone()
  local memo = {}
  local function copy_value(v)
    if type(v) == "table" and getmetatable(v) == nil then
      if memo[v] then return memo[v] end
      local t = {}
      memo[v] = t
      for k, x in pairs(v) do t[k] = copy_value(x) end
      return t
    end
    if is_tensor(v) then
      if memo[v] then return memo[v] end
      local c = graft.no_grad(function() return v:detach():clone() end)
      if PARAM[v] then
        PARAM[c] = true
        if v.requires_grad then c.requires_grad = true end
      end
      memo[v] = c
      return c
    end
    return v
  end
  local function copy(m)
    if memo[m] then return memo[m] end
    local c = setmetatable({
      _parameters = reg_new(), _buffers = reg_new(), _modules = reg_new(),
      _non_persistent = {}, _attrs = {}, _hooks = false,
    }, getmetatable(m))
    memo[m] = c
    -- hooks come along, as copy.deepcopy copies _forward_hooks (the same functions)
    local hk = rawget(m, "_hooks")
    if hk then rawset(c, "_hooks", { pre = hk.pre, fwd = hk.fwd, bwd = hk.bwd }) end
    for _, k in ipairs(m._parameters.keys) do
      local v = m._parameters.vals[k]
      reg_set(c._parameters, k, v and copy_value(v) or false)
    end
    for _, k in ipairs(m._buffers.keys) do
      local v = m._buffers.vals[k]
      reg_set(c._buffers, k, v and copy_value(v) or false)
    end
    for k in pairs(m._non_persistent) do c._non_persistent[k] = true end
    for _, k in ipairs(m._modules.keys) do
      local v = m._modules.vals[k]
      reg_set(c._modules, k, v and copy(v) or false)
    end
    for k, v in pairs(m._attrs) do
      if is_module(v) then c._attrs[k] = copy(v) else c._attrs[k] = copy_value(v) end
    end
    return c
  end
  return copy(self)
end

---------------------------------------------------------------------------------------
-- Freezing

local function selector_fn(sel, op)
  if sel == nil then return function() return true end end
  if type(sel) == "string" then
    return function(name) return name:find(sel) ~= nil end
  end
  if type(sel) == "function" then return sel end
  if type(sel) == "table" and not is_module(sel) then
    if sel.type ~= nil then
      local cls = sel.type
      return function(_, _, owner) return M.isinstance(owner, cls) end, cls
    end
    for i, s in ipairs(sel) do
      if type(s) ~= "string" then
        error(("%s: selector list entry %d is a %s, not a pattern string"):format(op, i, type(s)), 3)
      end
    end
    return function(name)
      for _, s in ipairs(sel) do
        if name:find(s) then return true end
      end
      return false
    end
  end
  error(("%s: a selector is a Lua pattern, a list of patterns, {type = nn.Class} or a function, got %s"):format(
    op, typename(sel)), 3)
end

-- Every (full name, parameter, owning module, owner path) once, in parameter order.
local function param_owners(self)
  local out, memo = {}, {}
  for mname, m in self:named_modules() do
    local r = m._parameters
    for _, k in ipairs(r.keys) do
      local p = r.vals[k]
      if p and not memo[p] then
        memo[p] = true
        out[#out + 1] = { name = mname == "" and k or (mname .. "." .. k), p = p, owner = m }
      end
    end
  end
  return out
end

local function is_batchnorm(m)
  local cls = class_of(m)
  while cls do
    if rawget(cls, "__batchnorm") then return true end
    cls = rawget(cls, "__parent")
  end
  return false
end

-- freeze(selector [, {bn_eval = true}]) / unfreeze(selector): requires_grad off / on
-- for the selected parameters; returns the list of their names. A selector is a Lua
-- pattern on parameter names ("^layer[1-3]%."), a list of patterns, {type = nn.Class}
-- (every parameter of modules of that class), a function(name, param, module) -> bool,
-- or nil for every parameter. With bn_eval, selected BatchNorm layers whose parameters
-- are all frozen (or, by type, those of the class) go to eval mode and stay there across
-- train() calls until unfrozen.
local function set_frozen(self, sel, opts, freeze, op)
  local fn, cls = selector_fn(sel, op)
  opts = opts or {}
  local names, touched = {}, {}
  for _, e in ipairs(param_owners(self)) do
    if fn(e.name, e.p, e.owner) then
      e.p.requires_grad = not freeze
      names[#names + 1] = e.name
      touched[e.owner] = true
    end
  end
  if cls then
    for _, m in ipairs(self:modules()) do
      if M.isinstance(m, cls) then touched[m] = true end
    end
  end
  if #names == 0 and next(touched) == nil then
    error(("%s: no parameter matches the selector%s"):format(op,
      type(sel) == "string" and (' "' .. sel .. '"') or ""), 3)
  end
  for _, m in ipairs(self:modules()) do
    if touched[m] and is_batchnorm(m) then
      if freeze and opts.bn_eval then
        local all = true
        for _, p in ipairs(m:parameters({ recurse = false })) do
          if p.requires_grad then all = false end
        end
        if all then
          m._attrs._bn_eval = true
          m._attrs.training = false
        end
      elseif not freeze and m._attrs._bn_eval then
        m._attrs._bn_eval = nil
        m._attrs.training = self._attrs.training
      end
    end
  end
  return names
end

function Module:freeze(sel, opts) return set_frozen(self, sel, opts, true, "freeze") end
function Module:unfreeze(sel, opts) return set_frozen(self, sel, opts, false, "unfreeze") end

---------------------------------------------------------------------------------------
-- Printing

function Module:extra_repr() return "" end

local function addindent(s, n)
  if not s:find("\n", 1, true) then return s end
  local pad = string.rep(" ", n)
  return (s:gsub("\n", "\n" .. pad))
end

-- PyTorch's Module.__repr__, line for line.
function Module:__repr()
  local extra_lines = {}
  local extra = self:extra_repr()
  if extra and extra ~= "" then
    for line in (extra .. "\n"):gmatch("(.-)\n") do extra_lines[#extra_lines + 1] = line end
  end
  local child_lines = {}
  local r = self._modules
  for _, k in ipairs(r.keys) do
    local c = r.vals[k]
    local s = c and tostring(c) or "None"
    child_lines[#child_lines + 1] = "(" .. k .. "): " .. addindent(s, 2)
  end
  local lines = {}
  for _, l in ipairs(extra_lines) do lines[#lines + 1] = l end
  for _, l in ipairs(child_lines) do lines[#lines + 1] = l end
  local s = self:_get_name() .. "("
  if #lines > 0 then
    if #extra_lines == 1 and #child_lines == 0 then
      s = s .. extra_lines[1]
    else
      s = s .. "\n  " .. table.concat(lines, "\n  ") .. "\n"
    end
  end
  return s .. ")"
end

-- Python's repr of a float: the shortest digits that read back to the same double,
-- fixed notation for exponents -4..15, else d.ddde-XX.
local function float_repr(x)
  if x ~= x then return "nan" end
  if x == math.huge then return "inf" elseif x == -math.huge then return "-inf" end
  local s
  for p = 1, 17 do
    s = ("%." .. (p - 1) .. "e"):format(x)
    if tonumber(s) == x then break end
  end
  local sign, int, frac, exp = s:match("^(-?)(%d)%.?(%d*)e([-+]%d+)$")
  local digits = (int .. frac):gsub("0+$", "")
  if digits == "" then digits = "0" end
  local e = tonumber(exp)
  if e < -4 or e >= 16 then
    local m = digits:sub(1, 1)
    if #digits > 1 then m = m .. "." .. digits:sub(2) end
    return ("%s%se%s%02d"):format(sign, m, e < 0 and "-" or "+", math.abs(e))
  end
  if e < 0 then return sign .. "0." .. string.rep("0", -e - 1) .. digits end
  if #digits <= e + 1 then return sign .. digits .. string.rep("0", e + 1 - #digits) .. ".0" end
  return sign .. digits:sub(1, e + 1) .. "." .. digits:sub(e + 2)
end

-- str(v) as Python's format() would write v in an extra_repr: True/False/None,
-- floats as repr, Lua lists as tuples ("(3, 3)", "(5,)"), strings bare.
local function pystr(v)
  local tv = type(v)
  if v == nil then return "None" end
  if tv == "boolean" then return v and "True" or "False" end
  if tv == "number" then
    if math.type(v) == "integer" then return tostring(v) end
    return float_repr(v)
  end
  if tv == "table" and not is_tensor(v) then
    local parts = {}
    for i, x in ipairs(v) do parts[i] = pystr(x) end
    if #parts == 1 then return "(" .. parts[1] .. ",)" end
    return "(" .. table.concat(parts, ", ") .. ")"
  end
  return tostring(v)
end
M.pystr = pystr
M.float_repr = float_repr

local function commas(n)
  local s = tostring(math.floor(n))
  local out = s:reverse():gsub("(%d%d%d)", "%1,"):reverse()
  return (out:gsub("^,", ""))
end
M.commas = commas

-- summary([{print = false}]): one row per module (pre-order) with its type, its
-- parameter count (its subtree, shared tensors once), how many are trainable, and
-- its mode when it differs from the root's; then the totals. Prints the table, or
-- returns it as a string with {print = false}.
function Module:summary(opts)
  opts = opts or {}
  local rows = { { "Module", "Type", "Params", "Trainable", "" } }
  for name, m in self:named_modules() do
    local total, train = 0, 0
    for _, p in ipairs(m:parameters()) do
      total = total + p:numel()
      if p.requires_grad then train = train + p:numel() end
    end
    local depth_ = 0
    if name ~= "" then depth_ = select(2, name:gsub("%.", "")) + 1 end
    local label = name == "" and ("(" .. m:_get_name() .. ")") or name
    local status = ""
    if total > 0 then
      if train == total then status = "" elseif train == 0 then status = "frozen" else status = "partly frozen" end
    end
    if m.training ~= self.training then
      status = status .. (status ~= "" and ", " or "") .. (m.training and "train" or "eval")
    end
    rows[#rows + 1] = { string.rep("  ", depth_ > 0 and depth_ - 1 or 0) .. label, m:_get_name(),
      commas(total), commas(train), status }
  end
  local widths = {}
  for _, r in ipairs(rows) do
    for i, c in ipairs(r) do widths[i] = math.max(widths[i] or 0, #c) end
  end
  local lines = {}
  for ri, r in ipairs(rows) do
    local s = ("%-" .. widths[1] .. "s  %-" .. widths[2] .. "s  %" .. widths[3] .. "s  %" .. widths[4] .. "s  %s")
      :format(r[1], r[2], r[3], r[4], r[5])
    lines[#lines + 1] = (s:gsub("%s+$", ""))
    if ri == 1 then lines[#lines + 1] = string.rep("-", #lines[1] + 8) end
  end
  local total, train = 0, 0
  for _, p in ipairs(self:parameters()) do
    total = total + p:numel()
    if p.requires_grad then train = train + p:numel() end
  end
  local nbuf, nbufel = 0, 0
  for _, b in ipairs(self:buffers()) do nbuf, nbufel = nbuf + 1, nbufel + b:numel() end
  lines[#lines + 1] = string.rep("-", #lines[2])
  lines[#lines + 1] = "Total params: " .. commas(total)
  lines[#lines + 1] = "Trainable params: " .. commas(train)
  lines[#lines + 1] = "Frozen params: " .. commas(total - train)
  lines[#lines + 1] = ("Buffers: %s elements in %d tensors"):format(commas(nbufel), nbuf)
  local text = table.concat(lines, "\n")
  if opts.print == false then return text end
  print(text)
end

return M
