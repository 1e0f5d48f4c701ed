-- graft.optim.lr_scheduler: PyTorch 1.13's learning-rate schedulers in pure Lua, to the
-- last bit: the same lr for the same sequence of calls, chainable (recursive) rules
-- evaluated in PyTorch's floating-point order, closed forms for step(epoch).
--
--   local S = require("graft.optim.lr_scheduler")
--   local sched = S.MultiStepLR(opt, {milestones = {30, 80}, gamma = 0.1})
--   for epoch = 1, 100 do train(); opt:step(); sched:step() end
--   print(sched:get_last_lr()[1], sched.last_epoch)
--   S.preview(function(o) return S.OneCycleLR(o, {max_lr = 1, total_steps = 100}) end, 100)
--
-- A scheduler needs only `opt.param_groups` (a list of tables with a numeric `lr`), so it
-- runs on graft.optim's optimizers and on stand-ins alike. Beyond PyTorch: a param group
-- added after construction is adopted at the next step (see adopt_groups), unknown
-- option names are errors, and S.preview draws the curve without training.
local S = {}

local SRC = debug.getinfo(1, "S").source
local pi, cos, floor, log = math.pi, math.cos, math.floor, math.log

-- Raises msg at the first caller outside this file, so messages point at user code.
local function raise(msg)
  local level = 2
  while true do
    local info = debug.getinfo(level, "S")
    if info == nil then return error(msg, 0) end
    if info.source ~= SRC then return error(msg, level) end
    level = level + 1
  end
end

local function fail(name, fmt, ...) raise(name .. ": " .. fmt:format(...)) end

-- PyTorch's None inside state dicts (graft.None once the graft module is loaded).
local NONE_FALLBACK = setmetatable({}, { __tostring = function() return "None" end })
local function none()
  local g = package.loaded.graft
  return type(g) == "table" and g.None or NONE_FALLBACK
end
local function is_none(v) return v == nil or v == NONE_FALLBACK or v == none() end

local function show(v)
  if type(v) == "string" then return string.format("%q", v) end
  if math.type(v) == "float" and v == floor(v) and v > -1e15 and v < 1e15 then
    return string.format("%.1f", v)
  end
  return tostring(v)
end

---------------------------------------------------------------------------------------
-- Warnings: PyTorch's UserWarnings go to Lua's warn() (shown with `graft -W` or after
-- warn("@on")), each text once per process as Python's default filter does. S.warn
-- can be replaced (specs capture them); S._warned records what was shown.
S._warned = {}
function S.warn(msg) warn(msg) end
local function warn_once(msg)
  if S._warned[msg] then return end
  S._warned[msg] = true
  S.warn(msg)
end

local W1 = "Seems like `optimizer:step()` has been overridden after learning rate scheduler "
  .. "initialization. Please, make sure to call `optimizer:step()` before `lr_scheduler:step()`. "
  .. "See more details at https://pytorch.org/docs/stable/optim.html#how-to-adjust-learning-rate"
local W2 = "Detected call of `lr_scheduler:step()` before `optimizer:step()`. In PyTorch 1.1.0 and "
  .. "later, you should call them in the opposite order: `optimizer:step()` before "
  .. "`lr_scheduler:step()`.  Failure to do this will result in PyTorch skipping the first value "
  .. "of the learning rate schedule. See more details at "
  .. "https://pytorch.org/docs/stable/optim.html#how-to-adjust-learning-rate"
local W3 = "The epoch parameter in `scheduler:step()` was not necessary and is being deprecated "
  .. "where possible. Please use `scheduler:step()` to step the scheduler. During the "
  .. "deprecation, if epoch is different from nil, the closed form is used instead of the new "
  .. "chainable form, where available."
local W4 = "To get the last learning rate computed by the scheduler, please use `get_last_lr()`."
S.WARNINGS = { W1 = W1, W2 = W2, W3 = W3, W4 = W4 }

-- Counting optimizer steps (for W1/W2), as PyTorch wraps optimizer.step: the instance
-- gets a wrapper that counts into a weak table; nothing else is written to it.
local opt_steps = setmetatable({}, { __mode = "k" })
local wrappers = setmetatable({}, { __mode = "k" })
local function wrap_step(opt)
  if type(opt) ~= "table" or type(opt.step) ~= "function" then return end
  opt_steps[opt] = opt_steps[opt] or 0
  if wrappers[opt.step] then return end
  local orig = opt.step
  local w = function(...)
    opt_steps[opt] = (opt_steps[opt] or 0) + 1
    return orig(...)
  end
  wrappers[w] = true
  rawset(opt, "step", w)
end

---------------------------------------------------------------------------------------
-- Argument checking: one options table per constructor, PyTorch's names.

local function is_list(t) return type(t) == "table" and getmetatable(t) == nil end

local function check_opt_table(name, opts, allowed)
  if opts == nil then return {} end
  if type(opts) ~= "table" then fail(name, "options must be a table, got a %s", type(opts)) end
  for k in pairs(opts) do
    if not allowed[k] then
      local names = {}
      for n in pairs(allowed) do names[#names + 1] = n end
      table.sort(names)
      fail(name, "unknown option '%s' (options: %s)", tostring(k), table.concat(names, ", "))
    end
  end
  return opts
end

local function set(list)
  local s = {}
  for _, k in ipairs(list) do s[k] = true end
  return s
end

local function required(name, opts, key)
  if opts[key] == nil then fail(name, "%s is required", key) end
  return opts[key]
end

local function check_number(name, key, v)
  if type(v) ~= "number" then fail(name, "%s must be a number, got %s", key, show(v)) end
  if v ~= v then fail(name, "%s must be a number, got nan", key) end
  return v
end

local function check_int(name, key, v, min, what)
  if math.type(v) ~= "integer" then
    if math.type(v) == "float" and v == floor(v) and v >= -2^53 and v <= 2^53 then
      v = math.tointeger(v)
    else
      fail(name, "%s must be %s, got %s", key, what, show(v))
    end
  end
  if min and v < min then fail(name, "%s must be %s, got %s", key, what, show(v)) end
  return v
end

local function check_bool(name, key, v)
  if type(v) ~= "boolean" then fail(name, "%s must be true or false, got %s", key, show(v)) end
  return v
end

local function check_choice(name, key, v, choices, msg)
  for _, c in ipairs(choices) do if v == c then return v end end
  fail(name, "%s", msg or (key .. " must be one of " .. table.concat(choices, ", ") .. ", got " .. show(v)))
end

local function check_optimizer(name, opt)
  if type(opt) ~= "table" and type(opt) ~= "userdata" then
    fail(name, "expected an optimizer (a table with param_groups), got a %s", type(opt))
  end
  local groups = opt.param_groups
  if type(groups) ~= "table" then fail(name, "expected an optimizer with param_groups, got none") end
  if #groups == 0 then fail(name, "the optimizer has no param groups") end
  for i, g in ipairs(groups) do
    if type(g) ~= "table" or type(g.lr) ~= "number" then
      fail(name, "param_groups[%d] has no numeric lr", i)
    end
  end
  return groups
end

local function check_last_epoch(name, v)
  if v == nil then return -1 end
  return check_int(name, "last_epoch", v, -1, "an integer >= -1")
end

-- A scalar, or a list with one value per group (PyTorch's _format_param).
local function per_group(name, key, v, n, check)
  if is_list(v) then
    if #v ~= n then fail(name, "expected %d values for %s, got %d", n, key, #v) end
    local out = {}
    for i = 1, n do out[i] = check(name, key .. "[" .. i .. "]", v[i]) end
    return out, true
  end
  v = check(name, key, v)
  local out = {}
  for i = 1, n do out[i] = v end
  return out, false
end

local function copy_list(t)
  local out = {}
  for i = 1, #t do out[i] = t[i] end
  return out
end

-- A plain deep copy (OrderedDicts from graft.load become plain tables; None stays).
local function deepcopy(v)
  if type(v) ~= "table" or v == NONE_FALLBACK or v == none() then return v end
  local out = {}
  for k, x in pairs(v) do out[k] = deepcopy(x) end
  return out
end

local function group_lrs(groups)
  local out = {}
  for i, g in ipairs(groups) do out[i] = g.lr end
  return out
end

local function ipow(b, n) -- integer power, as Python's int ** int
  local r = 1
  for _ = 1, n do r = r * b end
  return r
end

---------------------------------------------------------------------------------------
-- The base class (PyTorch's _LRScheduler). A class supplies:
--   _rule(self)         the chainable rule: the new lr of every group
--   _closed(self)       optional closed form (from base_lrs), used by step(epoch)
--   _adopt(self, i, g)  optional: extend per-group state for a group added late
-- Instance fields carry PyTorch's attribute names (they are the state dict); graft's
-- own bookkeeping lives in self._graft, which is never saved.

local Base = {}
Base.__index = Base
S.LRScheduler = Base

local function class(name, parent)
  local c = setmetatable({}, { __index = parent or Base })
  c.__index = c
  c.__name = "graft.optim.lr_scheduler." .. name
  c._name = name
  c.__tostring = function(self) return name .. "(last_epoch = " .. tostring(self.last_epoch) .. ")" end
  return c
end

local function is_scheduler(x)
  if type(x) ~= "table" then return false end
  local mt = getmetatable(x)
  return type(mt) == "table" and type(mt._name) == "string" and type(mt.step) == "function"
end
S.is_scheduler = is_scheduler

-- PyTorch's _LRScheduler.__init__: initial_lr (set if absent, required when resuming),
-- base_lrs, then the initial step (which changes the lr for several schedulers).
function Base._init(self, opt, last_epoch, verbose)
  local name = self._name
  local groups = opt.param_groups
  if last_epoch == -1 then
    for _, g in ipairs(groups) do
      if g.initial_lr == nil then g.initial_lr = g.lr end
    end
  else
    for i, g in ipairs(groups) do
      if g.initial_lr == nil then
        fail(name, "param 'initial_lr' is not specified in param_groups[%d] when resuming an optimizer", i)
      end
    end
  end
  local base = {}
  for i, g in ipairs(groups) do base[i] = g.initial_lr end
  self.base_lrs = base
  self.last_epoch = last_epoch
  wrap_step(opt)
  self.verbose = verbose and true or false
  self:_initial_step()
end

function Base._initial_step(self)
  if opt_steps[self.optimizer] ~= nil then opt_steps[self.optimizer] = 0 end
  self._step_count = 0
  self:step()
end

-- Groups added to the optimizer after construction: each takes its current lr as its
-- base lr (initial_lr, set only if absent, as at construction), then the class extends
-- its per-group state. Groups removed are an error.
function Base._adopt_groups(self)
  local groups = self.optimizer.param_groups
  local n, have = #groups, #self.base_lrs
  if n == have then return end
  if n < have then
    fail(self._name, "the optimizer has %d param groups, but the scheduler was built for %d "
      .. "(param groups cannot be removed)", n, have)
  end
  for i = have + 1, n do
    local g = groups[i]
    if type(g) ~= "table" or type(g.lr) ~= "number" then fail(self._name, "param_groups[%d] has no numeric lr", i) end
    if g.initial_lr == nil then g.initial_lr = g.lr end
    if self._adopt then self:_adopt(i, g) end
    self.base_lrs[i] = g.initial_lr
  end
end

function Base._warn_order(self)
  if self._step_count == 1 then
    local opt = self.optimizer
    if type(opt) == "table" and opt_steps[opt] ~= nil then
      if not wrappers[opt.step] then
        warn_once(W1)
      elseif opt_steps[opt] < 1 then
        warn_once(W2)
      end
    end
  end
end

function Base._print_lr(self, i, lr, epoch)
  if not self.verbose then return end
  if epoch == nil then
    print(("Adjusting learning rate of group %d to %.4e."):format(i, lr))
  else
    local e = math.type(epoch) == "float" and ("%.2f"):format(epoch) or ("%05d"):format(epoch)
    print(("Epoch %s: adjusting learning rate of group %d to %.4e."):format(e, i, lr))
  end
end

-- step() applies the chainable rule; step(epoch) (deprecated, warns) sets last_epoch and
-- uses the closed form where the class has one.
function Base.step(self, epoch, quiet)
  if epoch ~= nil and type(epoch) ~= "number" then
    fail(self._name, "step: epoch must be a number or nil, got %s", show(epoch))
  end
  self:_adopt_groups()
  self:_warn_order()
  self._step_count = self._step_count + 1
  local values
  if epoch == nil then
    self.last_epoch = self.last_epoch + 1
    values = self:_rule()
  else
    if not quiet then warn_once(W3) end
    self.last_epoch = epoch
    values = self._closed and self:_closed() or self:_rule()
  end
  local groups = self.optimizer.param_groups
  for i, g in ipairs(groups) do
    g.lr = values[i]
    self:_print_lr(i, values[i], epoch)
  end
  self._last_lr = group_lrs(groups)
end

function Base.get_last_lr(self) return copy_list(self._last_lr) end

-- The rule itself, as PyTorch's get_lr(): warns (it is not the current lr for recursive
-- schedulers) and may change momentum (OneCycleLR, CyclicLR).
function Base.get_lr(self)
  warn_once(W4)
  return self:_rule()
end

-- Every attribute but the optimizer and graft's bookkeeping (PyTorch's __dict__).
function Base.state_dict(self)
  local sd = {}
  for k, v in pairs(self) do
    if k ~= "optimizer" and k ~= "_graft" and type(v) ~= "function" then sd[k] = deepcopy(v) end
  end
  if self._save then self:_save(sd) end
  return sd
end

-- Keys PyTorch 1.13 writes that graft keeps in another form (or not at all).
local IGNORED_KEYS = set { "optimizer", "_graft", "anneal_func", "_scale_fn_ref" }

-- PyTorch's __dict__.update: sets the saved attributes; the optimizer's lr is not
-- touched (the optimizer's own load_state_dict restores it).
function Base.load_state_dict(self, sd)
  if type(sd) ~= "table" then fail(self._name, "load_state_dict: expected a table, got a %s", type(sd)) end
  local cls = getmetatable(self)
  for k, v in pairs(sd) do
    if type(k) == "string" and not IGNORED_KEYS[k] and not (self._load_keys and self._load_keys[k])
        and type(cls[k]) ~= "function" then
      self[k] = deepcopy(v)
    end
  end
  if self._load then self:_load(sd) end
end

local function current(self)
  return group_lrs(self.optimizer.param_groups)
end

---------------------------------------------------------------------------------------
-- LambdaLR and MultiplicativeLR: one function for every group, or a list of one per
-- group. Functions are not saved (None in the state dict, as PyTorch); a callable
-- table saves its plain fields, as PyTorch saves a callable object's __dict__.

local function callable(f)
  if type(f) == "function" then return true end
  local mt = getmetatable(f)
  return type(mt) == "table" and type(mt.__call) == "function"
end

local function lambdas_init(self, name, opt, opts)
  local f = required(name, opts, "lr_lambda")
  local n = #opt.param_groups
  local list = {}
  if is_list(f) and not callable(f) then
    if #f ~= n then fail(name, "Expected %d lr_lambdas, but got %d", n, #f) end
    for i = 1, n do
      if not callable(f[i]) then fail(name, "lr_lambda[%d] must be a function, got %s", i, show(f[i])) end
      list[i] = f[i]
    end
    self._graft.per_group = true
  else
    if not callable(f) then fail(name, "lr_lambda must be a function, got %s", show(f)) end
    for i = 1, n do list[i] = f end
  end
  self.lr_lambdas = list
end

local function lambdas_adopt(self, i)
  if self._graft.per_group then
    fail(self._name, "param group %d was added after the scheduler was built, but lr_lambda is "
      .. "a list with one function per group (%d): pass one function, or build a new scheduler",
      i, #self.lr_lambdas)
  end
  self.lr_lambdas[i] = self.lr_lambdas[1]
end

local function lambdas_save(self, sd)
  local out = {}
  for i, f in ipairs(self.lr_lambdas) do
    if type(f) == "table" then
      local fields = {}
      for k, v in pairs(f) do
        if type(v) ~= "function" then fields[k] = deepcopy(v) end
      end
      out[i] = fields
    else
      out[i] = none()
    end
  end
  sd.lr_lambdas = out
end

local function lambdas_load(self, sd)
  local saved = sd.lr_lambdas
  if type(saved) ~= "table" then return end
  for i, fields in pairs(saved) do
    local f = self.lr_lambdas[i]
    if not is_none(fields) and type(fields) == "table" and type(f) == "table" then
      for k, v in pairs(fields) do f[k] = deepcopy(v) end
    end
  end
end

local function call_lambda(self, i, f, e)
  local v = f(e)
  if type(v) ~= "number" then
    fail(self._name, "lr_lambda for group %d returned %s at epoch %s, expected a number", i, show(v), show(e))
  end
  return v
end

local LambdaLR = class("LambdaLR")
-- LambdaLR and MultiplicativeLR: the same construction and state, different rules.
local function lambda_scheduler(cls, name)
  S[name] = function(opt, opts)
    check_optimizer(name, opt)
    opts = check_opt_table(name, opts, set { "lr_lambda", "last_epoch", "verbose" })
    local self = setmetatable({ optimizer = opt, _graft = {} }, cls)
    lambdas_init(self, name, opt, opts)
    self._get_lr_called_within_step = false
    Base._init(self, opt, check_last_epoch(name, opts.last_epoch), opts.verbose)
    return self
  end
  cls._adopt, cls._save, cls._load = lambdas_adopt, lambdas_save, lambdas_load
  cls._load_keys = set { "lr_lambdas" }
end
lambda_scheduler(LambdaLR, "LambdaLR")
function LambdaLR._rule(self)
  local out = {}
  for i, base in ipairs(self.base_lrs) do
    out[i] = base * call_lambda(self, i, self.lr_lambdas[i], self.last_epoch)
  end
  return out
end

local MultiplicativeLR = class("MultiplicativeLR")
lambda_scheduler(MultiplicativeLR, "MultiplicativeLR")
function MultiplicativeLR._rule(self)
  local groups, e = self.optimizer.param_groups, self.last_epoch
  if e > 0 then
    local out = {}
    for i, g in ipairs(groups) do out[i] = g.lr * call_lambda(self, i, self.lr_lambdas[i], e) end
    return out
  end
  return current(self)
end

---------------------------------------------------------------------------------------
-- StepLR, MultiStepLR, ExponentialLR

local StepLR = class("StepLR")
S.StepLR = function(opt, opts)
  local name = "StepLR"
  check_optimizer(name, opt)
  opts = check_opt_table(name, opts, set { "step_size", "gamma", "last_epoch", "verbose" })
  local self = setmetatable({ optimizer = opt, _graft = {} }, StepLR)
  self.step_size = check_int(name, "step_size", required(name, opts, "step_size"), 1, "a positive integer")
  self.gamma = check_number(name, "gamma", opts.gamma == nil and 0.1 or opts.gamma)
  self._get_lr_called_within_step = false
  Base._init(self, opt, check_last_epoch(name, opts.last_epoch), opts.verbose)
  return self
end
function StepLR._rule(self)
  local e = self.last_epoch
  if e == 0 or e % self.step_size ~= 0 then return current(self) end
  local out = {}
  for i, g in ipairs(self.optimizer.param_groups) do out[i] = g.lr * self.gamma end
  return out
end
function StepLR._closed(self)
  local out = {}
  for i, base in ipairs(self.base_lrs) do
    out[i] = base * self.gamma ^ (self.last_epoch // self.step_size)
  end
  return out
end

local MultiStepLR = class("MultiStepLR")
S.MultiStepLR = function(opt, opts)
  local name = "MultiStepLR"
  check_optimizer(name, opt)
  opts = check_opt_table(name, opts, set { "milestones", "gamma", "last_epoch", "verbose" })
  local self = setmetatable({ optimizer = opt, _graft = {} }, MultiStepLR)
  local ms = required(name, opts, "milestones")
  if not is_list(ms) then fail(name, "milestones must be a list of integers, got %s", show(ms)) end
  -- a multiset, as PyTorch's Counter: a repeated milestone decays twice
  local counts = {}
  for i = 1, #ms do
    local m = check_int(name, "milestones[" .. i .. "]", ms[i], 0, "a non-negative integer")
    if i > 1 and m < ms[i - 1] then
      fail(name, "milestones must be increasing, got %s after %s", show(ms[i]), show(ms[i - 1]))
    end
    counts[m] = (counts[m] or 0) + 1
  end
  self.milestones = counts
  self.gamma = check_number(name, "gamma", opts.gamma == nil and 0.1 or opts.gamma)
  self._get_lr_called_within_step = false
  Base._init(self, opt, check_last_epoch(name, opts.last_epoch), opts.verbose)
  return self
end
function MultiStepLR._rule(self)
  local n = self.milestones[self.last_epoch]
  if n == nil then return current(self) end
  local out = {}
  for i, g in ipairs(self.optimizer.param_groups) do out[i] = g.lr * self.gamma ^ n end
  return out
end
function MultiStepLR._closed(self)
  local n = 0 -- bisect_right over the sorted multiset
  for m, c in pairs(self.milestones) do
    if m <= self.last_epoch then n = n + c end
  end
  local out = {}
  for i, base in ipairs(self.base_lrs) do out[i] = base * self.gamma ^ n end
  return out
end

local ExponentialLR = class("ExponentialLR")
S.ExponentialLR = function(opt, opts)
  local name = "ExponentialLR"
  check_optimizer(name, opt)
  opts = check_opt_table(name, opts, set { "gamma", "last_epoch", "verbose" })
  local self = setmetatable({ optimizer = opt, _graft = {} }, ExponentialLR)
  self.gamma = check_number(name, "gamma", required(name, opts, "gamma"))
  self._get_lr_called_within_step = false
  Base._init(self, opt, check_last_epoch(name, opts.last_epoch), opts.verbose)
  return self
end
function ExponentialLR._rule(self)
  if self.last_epoch == 0 then return current(self) end
  local out = {}
  for i, g in ipairs(self.optimizer.param_groups) do out[i] = g.lr * self.gamma end
  return out
end
function ExponentialLR._closed(self)
  local out = {}
  for i, base in ipairs(self.base_lrs) do out[i] = base * self.gamma ^ self.last_epoch end
  return out
end

---------------------------------------------------------------------------------------
-- ConstantLR, LinearLR, PolynomialLR

local ConstantLR = class("ConstantLR")
S.ConstantLR = function(opt, opts)
  local name = "ConstantLR"
  check_optimizer(name, opt)
  opts = check_opt_table(name, opts, set { "factor", "total_iters", "last_epoch", "verbose" })
  local self = setmetatable({ optimizer = opt, _graft = {} }, ConstantLR)
  local factor = check_number(name, "factor", opts.factor == nil and 1.0 / 3 or opts.factor)
  if factor > 1.0 or factor < 0 then
    fail(name, "factor: Constant multiplicative factor expected to be between 0 and 1, got %s", show(factor))
  end
  self.factor = factor
  self.total_iters = check_int(name, "total_iters", opts.total_iters == nil and 5 or opts.total_iters, 0,
    "a non-negative integer")
  self._get_lr_called_within_step = false
  Base._init(self, opt, check_last_epoch(name, opts.last_epoch), opts.verbose)
  return self
end
function ConstantLR._rule(self)
  local e, out = self.last_epoch, {}
  local groups = self.optimizer.param_groups
  if e == 0 then
    for i, g in ipairs(groups) do out[i] = g.lr * self.factor end
    return out
  end
  if e > self.total_iters or e ~= self.total_iters then return current(self) end
  if self.factor == 0 then
    fail(self._name, "factor 0 cannot be undone at total_iters (division by zero)")
  end
  for i, g in ipairs(groups) do out[i] = g.lr * (1.0 / self.factor) end
  return out
end
function ConstantLR._closed(self)
  local out = {}
  local after = self.last_epoch >= self.total_iters and 1 or 0
  for i, base in ipairs(self.base_lrs) do
    out[i] = base * (self.factor + after * (1 - self.factor))
  end
  return out
end

local LinearLR = class("LinearLR")
S.LinearLR = function(opt, opts)
  local name = "LinearLR"
  check_optimizer(name, opt)
  opts = check_opt_table(name, opts, set { "start_factor", "end_factor", "total_iters", "last_epoch", "verbose" })
  local self = setmetatable({ optimizer = opt, _graft = {} }, LinearLR)
  local s = check_number(name, "start_factor", opts.start_factor == nil and 1.0 / 3 or opts.start_factor)
  if s > 1.0 or s <= 0 then
    fail(name, "start_factor: Starting multiplicative factor expected to be greater than 0 and less "
      .. "or equal to 1, got %s", show(s))
  end
  local e = check_number(name, "end_factor", opts.end_factor == nil and 1.0 or opts.end_factor)
  if e > 1.0 or e < 0 then
    fail(name, "end_factor: Ending multiplicative factor expected to be between 0 and 1, got %s", show(e))
  end
  self.start_factor, self.end_factor = s, e
  self.total_iters = check_int(name, "total_iters", opts.total_iters == nil and 5 or opts.total_iters, 1,
    "a positive integer")
  self._get_lr_called_within_step = false
  Base._init(self, opt, check_last_epoch(name, opts.last_epoch), opts.verbose)
  return self
end
function LinearLR._rule(self)
  local e, out = self.last_epoch, {}
  local groups = self.optimizer.param_groups
  local s, f, T = self.start_factor, self.end_factor, self.total_iters
  if e == 0 then
    for i, g in ipairs(groups) do out[i] = g.lr * s end
    return out
  end
  if e > T then return current(self) end
  for i, g in ipairs(groups) do
    out[i] = g.lr * (1. + (f - s) / (T * s + (e - 1) * (f - s)))
  end
  return out
end
function LinearLR._closed(self)
  local out = {}
  local s, f, T = self.start_factor, self.end_factor, self.total_iters
  for i, base in ipairs(self.base_lrs) do
    out[i] = base * (s + (f - s) * math.min(T, self.last_epoch) / T)
  end
  return out
end

local PolynomialLR = class("PolynomialLR")
S.PolynomialLR = function(opt, opts)
  local name = "PolynomialLR"
  check_optimizer(name, opt)
  opts = check_opt_table(name, opts, set { "total_iters", "power", "last_epoch", "verbose" })
  local self = setmetatable({ optimizer = opt, _graft = {} }, PolynomialLR)
  self.total_iters = check_int(name, "total_iters", opts.total_iters == nil and 5 or opts.total_iters, 1,
    "a positive integer")
  self.power = check_number(name, "power", opts.power == nil and 1.0 or opts.power)
  self._get_lr_called_within_step = false
  Base._init(self, opt, check_last_epoch(name, opts.last_epoch), opts.verbose)
  return self
end
function PolynomialLR._rule(self)
  local e, T = self.last_epoch, self.total_iters
  if e == 0 or e > T then return current(self) end
  local decay = ((1.0 - e / T) / (1.0 - (e - 1) / T)) ^ self.power
  local out = {}
  for i, g in ipairs(self.optimizer.param_groups) do out[i] = g.lr * decay end
  return out
end
function PolynomialLR._closed(self)
  local T, out = self.total_iters, {}
  for i, base in ipairs(self.base_lrs) do
    out[i] = base * (1.0 - math.min(T, self.last_epoch) / T) ^ self.power
  end
  return out
end

---------------------------------------------------------------------------------------
-- CosineAnnealingLR (recursive; it keeps following the cosine after T_max) and
-- CosineAnnealingWarmRestarts (always the closed form; fractional epochs allowed).

local CosineAnnealingLR = class("CosineAnnealingLR")
S.CosineAnnealingLR = function(opt, opts)
  local name = "CosineAnnealingLR"
  check_optimizer(name, opt)
  opts = check_opt_table(name, opts, set { "T_max", "eta_min", "last_epoch", "verbose" })
  local self = setmetatable({ optimizer = opt, _graft = {} }, CosineAnnealingLR)
  local T = check_number(name, "T_max", required(name, opts, "T_max"))
  if T <= 0 then fail(name, "T_max must be positive, got %s", show(T)) end
  self.T_max = T
  self.eta_min = check_number(name, "eta_min", opts.eta_min == nil and 0 or opts.eta_min)
  self._get_lr_called_within_step = false
  Base._init(self, opt, check_last_epoch(name, opts.last_epoch), opts.verbose)
  return self
end
function CosineAnnealingLR._rule(self)
  local e, T, eta = self.last_epoch, self.T_max, self.eta_min
  local groups, out = self.optimizer.param_groups, {}
  if e == 0 then return current(self) end
  if self._step_count == 1 and e > 0 then
    for i, base in ipairs(self.base_lrs) do
      out[i] = eta + (base - eta) * (1 + cos((e) * pi / T)) / 2
    end
  elseif (e - 1 - T) % (2 * T) == 0 then
    for i, g in ipairs(groups) do
      out[i] = g.lr + (self.base_lrs[i] - eta) * (1 - cos(pi / T)) / 2
    end
  else
    for i, g in ipairs(groups) do
      out[i] = (1 + cos(pi * e / T)) / (1 + cos(pi * (e - 1) / T)) * (g.lr - eta) + eta
    end
  end
  return out
end
function CosineAnnealingLR._closed(self)
  local e, T, eta, out = self.last_epoch, self.T_max, self.eta_min, {}
  for i, base in ipairs(self.base_lrs) do
    out[i] = eta + (base - eta) * (1 + cos(pi * e / T)) / 2
  end
  return out
end

local CosineAnnealingWarmRestarts = class("CosineAnnealingWarmRestarts")
S.CosineAnnealingWarmRestarts = function(opt, opts)
  local name = "CosineAnnealingWarmRestarts"
  check_optimizer(name, opt)
  opts = check_opt_table(name, opts, set { "T_0", "T_mult", "eta_min", "last_epoch", "verbose" })
  local self = setmetatable({ optimizer = opt, _graft = {} }, CosineAnnealingWarmRestarts)
  local T0 = required(name, opts, "T_0")
  if math.type(T0) ~= "integer" or T0 <= 0 then fail(name, "Expected positive integer T_0, but got %s", show(T0)) end
  local Tm = opts.T_mult == nil and 1 or opts.T_mult
  if math.type(Tm) ~= "integer" or Tm < 1 then fail(name, "Expected integer T_mult >= 1, but got %s", show(Tm)) end
  self.T_0, self.T_i, self.T_mult = T0, T0, Tm
  self.eta_min = check_number(name, "eta_min", opts.eta_min == nil and 0 or opts.eta_min)
  local last_epoch = check_last_epoch(name, opts.last_epoch)
  self.T_cur = last_epoch
  self._get_lr_called_within_step = false
  Base._init(self, opt, last_epoch, opts.verbose)
  return self
end
function CosineAnnealingWarmRestarts._rule(self)
  local eta, out = self.eta_min, {}
  for i, base in ipairs(self.base_lrs) do
    out[i] = eta + (base - eta) * (1 + cos(pi * self.T_cur / self.T_i)) / 2
  end
  return out
end
-- PyTorch's own step(): no deprecation warning for step(epoch), no _step_count update.
function CosineAnnealingWarmRestarts.step(self, epoch)
  if epoch ~= nil and type(epoch) ~= "number" then
    fail(self._name, "step: epoch must be a number or nil, got %s", show(epoch))
  end
  self:_adopt_groups()
  if epoch == nil and self.last_epoch < 0 then epoch = 0 end
  if epoch == nil then
    epoch = self.last_epoch + 1
    self.T_cur = self.T_cur + 1
    if self.T_cur >= self.T_i then
      self.T_cur = self.T_cur - self.T_i
      self.T_i = self.T_i * self.T_mult
    end
  else
    if epoch < 0 then fail(self._name, "Expected non-negative epoch, but got %s", show(epoch)) end
    if epoch >= self.T_0 then
      if self.T_mult == 1 then
        self.T_cur = epoch % self.T_0
      else
        -- Python's math.log(x, base) is log(x) / log(base) (Lua's log(x, 2) is log2)
        local n = floor(log(epoch / self.T_0 * (self.T_mult - 1) + 1) / log(self.T_mult))
        self.T_cur = epoch - self.T_0 * (ipow(self.T_mult, n) - 1) / (self.T_mult - 1)
        self.T_i = self.T_0 * ipow(self.T_mult, n)
      end
    else
      self.T_i = self.T_0
      self.T_cur = epoch
    end
  end
  self.last_epoch = floor(epoch)
  local groups = self.optimizer.param_groups
  local values = self:_rule()
  for i, g in ipairs(groups) do
    g.lr = values[i]
    self:_print_lr(i, values[i], epoch)
  end
  self._last_lr = group_lrs(groups)
end

---------------------------------------------------------------------------------------
-- OneCycleLR and CyclicLR: lr (and momentum, or betas[1] for Adam-like groups) from
-- phases; not chainable.

-- Does the optimizer cycle momentum, and through betas? PyTorch reads its defaults;
-- a stand-in without defaults is judged by its first group.
local function momentum_kind(opt)
  local d = type(opt.defaults) == "table" and opt.defaults or opt.param_groups[1]
  if d.betas ~= nil then return true, true end
  if d.momentum ~= nil then return true, false end
  return false, false
end

local function get_momentum(g, use_beta1)
  if use_beta1 then return g.betas[1] end
  return g.momentum
end

local function set_momentum(g, m, use_beta1)
  if use_beta1 then
    local b = { m }
    for k = 2, #g.betas do b[k] = g.betas[k] end
    g.betas = b
  else
    g.momentum = m
  end
end

local ONECYCLE_OPTS = set { "max_lr", "total_steps", "epochs", "steps_per_epoch", "pct_start",
  "anneal_strategy", "cycle_momentum", "base_momentum", "max_momentum", "div_factor",
  "final_div_factor", "three_phase", "last_epoch", "verbose" }

local OneCycleLR = class("OneCycleLR")
S.OneCycleLR = function(opt, opts)
  local name = "OneCycleLR"
  local groups = check_optimizer(name, opt)
  opts = check_opt_table(name, opts, ONECYCLE_OPTS)
  local self = setmetatable({ optimizer = opt, _graft = {} }, OneCycleLR)
  local total
  if opts.total_steps == nil and opts.epochs == nil and opts.steps_per_epoch == nil then
    fail(name, "You must define either total_steps OR (epochs AND steps_per_epoch)")
  elseif opts.total_steps ~= nil then
    total = check_int(name, "total_steps", opts.total_steps, 1, "a positive integer")
  else
    local ep = check_int(name, "epochs", opts.epochs, 1, "a positive integer")
    local spe = check_int(name, "steps_per_epoch", opts.steps_per_epoch, 1, "a positive integer")
    total = ep * spe
  end
  self.total_steps = total
  local pct = check_number(name, "pct_start", opts.pct_start == nil and 0.3 or opts.pct_start)
  if pct < 0 or pct > 1 then fail(name, "pct_start must be a number between 0 and 1, got %s", show(pct)) end
  if opts.three_phase ~= nil then check_bool(name, "three_phase", opts.three_phase) end
  if opts.three_phase then
    self._schedule_phases = {
      { end_step = (pct * total) - 1, start_lr = "initial_lr", end_lr = "max_lr",
        start_momentum = "max_momentum", end_momentum = "base_momentum" },
      { end_step = (2 * pct * total) - 2, start_lr = "max_lr", end_lr = "initial_lr",
        start_momentum = "base_momentum", end_momentum = "max_momentum" },
      { end_step = total - 1, start_lr = "initial_lr", end_lr = "min_lr",
        start_momentum = "max_momentum", end_momentum = "max_momentum" },
    }
  else
    self._schedule_phases = {
      { end_step = (pct * total) - 1, start_lr = "initial_lr", end_lr = "max_lr",
        start_momentum = "max_momentum", end_momentum = "base_momentum" },
      { end_step = total - 1, start_lr = "max_lr", end_lr = "min_lr",
        start_momentum = "base_momentum", end_momentum = "max_momentum" },
    }
  end
  local strategy = opts.anneal_strategy == nil and "cos" or opts.anneal_strategy
  check_choice(name, "anneal_strategy", strategy, { "cos", "linear" },
    "anneal_strategy must be one of 'cos' or 'linear', instead got " .. show(strategy))
  self._anneal_func_type = strategy

  local n = #groups
  local div = check_number(name, "div_factor", opts.div_factor == nil and 25. or opts.div_factor)
  local fdiv = check_number(name, "final_div_factor", opts.final_div_factor == nil and 1e4 or opts.final_div_factor)
  if div <= 0 then fail(name, "div_factor must be positive, got %s", show(div)) end
  if fdiv <= 0 then fail(name, "final_div_factor must be positive, got %s", show(fdiv)) end
  local max_lrs, max_list = per_group(name, "max_lr", required(name, opts, "max_lr"), n, check_number)
  local last_epoch = check_last_epoch(name, opts.last_epoch)
  self._graft = { max_lr = not max_list and max_lrs[1] or nil, div = div, fdiv = fdiv }
  if last_epoch == -1 then
    for i, g in ipairs(groups) do
      g.initial_lr = max_lrs[i] / div
      g.max_lr = max_lrs[i]
      g.min_lr = g.initial_lr / fdiv
    end
  end

  local cm = opts.cycle_momentum == nil and true or check_bool(name, "cycle_momentum", opts.cycle_momentum)
  self.cycle_momentum = cm
  if cm then
    local ok, beta = momentum_kind(opt)
    if not ok then fail(name, "optimizer must support momentum with `cycle_momentum` option enabled") end
    self.use_beta1 = beta
    local maxm, maxm_list = per_group(name, "max_momentum", opts.max_momentum == nil and 0.95 or opts.max_momentum,
      n, check_number)
    local basem, basem_list = per_group(name, "base_momentum",
      opts.base_momentum == nil and 0.85 or opts.base_momentum, n, check_number)
    self._graft.max_momentum = not maxm_list and maxm[1] or nil
    self._graft.base_momentum = not basem_list and basem[1] or nil
    if last_epoch == -1 then
      for i, g in ipairs(groups) do
        if beta and type(g.betas) ~= "table" then fail(name, "param_groups[%d] has no betas", i) end
        set_momentum(g, maxm[i], beta)
        g.max_momentum = maxm[i]
        g.base_momentum = basem[i]
      end
    end
  end
  self._get_lr_called_within_step = false
  Base._init(self, opt, last_epoch, opts.verbose)
  return self
end
function OneCycleLR._adopt(self, i, g)
  local gr = self._graft
  if gr.max_lr == nil then
    fail(self._name, "param group %d was added after the scheduler was built, but max_lr was given "
      .. "per group: pass one max_lr, or build a new scheduler", i)
  end
  g.initial_lr = gr.max_lr / gr.div
  g.max_lr = gr.max_lr
  g.min_lr = g.initial_lr / gr.fdiv
  if self.cycle_momentum then
    if gr.max_momentum == nil or gr.base_momentum == nil then
      fail(self._name, "param group %d was added after the scheduler was built, but the momentum "
        .. "bounds were given per group: pass one value, or build a new scheduler", i)
    end
    g.max_momentum, g.base_momentum = gr.max_momentum, gr.base_momentum
  end
end
local function anneal(kind, start, stop, pct)
  if kind == "linear" then return (stop - start) * pct + start end
  local cos_out = cos(pi * pct) + 1
  return stop + (start - stop) / 2.0 * cos_out
end
function OneCycleLR._rule(self)
  local step_num = self.last_epoch
  if step_num > self.total_steps then
    fail(self._name, "Tried to step %d times. The specified number of total steps is %d",
      step_num + 1, self.total_steps)
  end
  local kind, phases, out = self._anneal_func_type, self._schedule_phases, {}
  for gi, g in ipairs(self.optimizer.param_groups) do
    local start_step, lr, mom = 0, nil, nil
    for i, phase in ipairs(phases) do
      local end_step = phase.end_step
      if step_num <= end_step or i == #phases then
        local pct = (step_num - start_step) / (end_step - start_step)
        lr = anneal(kind, g[phase.start_lr], g[phase.end_lr], pct)
        if self.cycle_momentum then
          mom = anneal(kind, g[phase.start_momentum], g[phase.end_momentum], pct)
        end
        break
      end
      start_step = phase.end_step
    end
    out[gi] = lr
    if self.cycle_momentum then set_momentum(g, mom, self.use_beta1) end
  end
  return out
end

local CYCLIC_OPTS = set { "base_lr", "max_lr", "step_size_up", "step_size_down", "mode", "gamma",
  "scale_fn", "scale_mode", "cycle_momentum", "base_momentum", "max_momentum", "last_epoch", "verbose" }

local CyclicLR = class("CyclicLR")
S.CyclicLR = function(opt, opts)
  local name = "CyclicLR"
  local groups = check_optimizer(name, opt)
  opts = check_opt_table(name, opts, CYCLIC_OPTS)
  local self = setmetatable({ optimizer = opt, _graft = {} }, CyclicLR)
  local n = #groups
  local last_epoch = check_last_epoch(name, opts.last_epoch)
  local base_lrs, base_list = per_group(name, "base_lr", required(name, opts, "base_lr"), n, check_number)
  local max_lrs, max_list = per_group(name, "max_lr", required(name, opts, "max_lr"), n, check_number)
  self._graft = { base_lr = not base_list and base_lrs[1] or nil, max_lr = not max_list and max_lrs[1] or nil }
  if last_epoch == -1 then
    for i, g in ipairs(groups) do g.lr = base_lrs[i] end
  end
  self.max_lrs = max_lrs
  local up = check_number(name, "step_size_up", opts.step_size_up == nil and 2000 or opts.step_size_up)
  if up <= 0 then fail(name, "step_size_up must be positive, got %s", show(up)) end
  up = up + 0.0
  local down = up
  if opts.step_size_down ~= nil then
    down = check_number(name, "step_size_down", opts.step_size_down) + 0.0
    if down <= 0 then fail(name, "step_size_down must be positive, got %s", show(opts.step_size_down)) end
  end
  self.total_size = up + down
  self.step_ratio = up / self.total_size
  local mode = opts.mode == nil and "triangular" or opts.mode
  local scale_fn = opts.scale_fn
  if scale_fn ~= nil and not callable(scale_fn) then fail(name, "scale_fn must be a function, got %s", show(scale_fn)) end
  if scale_fn == nil then
    check_choice(name, "mode", mode, { "triangular", "triangular2", "exp_range" },
      "mode is invalid and scale_fn is nil (mode must be triangular, triangular2 or exp_range, got "
      .. show(mode) .. ")")
  end
  self.mode = mode
  self.gamma = check_number(name, "gamma", opts.gamma == nil and 1. or opts.gamma)
  if scale_fn == nil then
    self._scale_fn_custom = nil
    self.scale_mode = mode == "exp_range" and "iterations" or "cycle"
  else
    self._graft.scale_fn = scale_fn
    local sm = opts.scale_mode == nil and "cycle" or opts.scale_mode
    check_choice(name, "scale_mode", sm, { "cycle", "iterations" })
    self.scale_mode = sm
  end
  local cm = opts.cycle_momentum == nil and true or check_bool(name, "cycle_momentum", opts.cycle_momentum)
  self.cycle_momentum = cm
  if cm then
    local ok, beta = momentum_kind(opt)
    if not ok then fail(name, "optimizer must support momentum with `cycle_momentum` option enabled") end
    self.use_beta1 = beta
    local basem, basem_list = per_group(name, "base_momentum",
      opts.base_momentum == nil and 0.8 or opts.base_momentum, n, check_number)
    if last_epoch == -1 then
      for i, g in ipairs(groups) do
        if beta and type(g.betas) ~= "table" then fail(name, "param_groups[%d] has no betas", i) end
        set_momentum(g, basem[i], beta)
      end
    end
    -- as 1.13: the groups' momentum now (base_momentum, unless resuming)
    local bm = {}
    for i, g in ipairs(groups) do
      bm[i] = get_momentum(g, beta)
      if type(bm[i]) ~= "number" then fail(name, "param_groups[%d] has no momentum", i) end
    end
    self.base_momentums = bm
    local maxm, maxm_list = per_group(name, "max_momentum", opts.max_momentum == nil and 0.9 or opts.max_momentum,
      n, check_number)
    self.max_momentums = maxm
    self._graft.base_momentum = not basem_list and basem[1] or nil
    self._graft.max_momentum = not maxm_list and maxm[1] or nil
  end
  self._get_lr_called_within_step = false
  Base._init(self, opt, last_epoch, opts.verbose)
  self.base_lrs = base_lrs
  return self
end
function CyclicLR._adopt(self, i, g)
  local gr = self._graft
  if gr.base_lr == nil or gr.max_lr == nil then
    fail(self._name, "param group %d was added after the scheduler was built, but base_lr or max_lr "
      .. "was given per group: pass one value, or build a new scheduler", i)
  end
  self.max_lrs[i] = gr.max_lr
  g.initial_lr = g.initial_lr or g.lr
  if self.cycle_momentum then
    if gr.base_momentum == nil or gr.max_momentum == nil then
      fail(self._name, "param group %d was added after the scheduler was built, but the momentum "
        .. "bounds were given per group: pass one value, or build a new scheduler", i)
    end
    self.base_momentums[i], self.max_momentums[i] = gr.base_momentum, gr.max_momentum
  end
end
-- the base lr of an adopted group is base_lr, not the group's lr
function CyclicLR._adopt_groups(self)
  local have = #self.base_lrs
  Base._adopt_groups(self)
  for i = have + 1, #self.base_lrs do self.base_lrs[i] = self._graft.base_lr end
end
function CyclicLR._scale(self, x)
  local f = self._graft.scale_fn
  if f ~= nil then
    local v = f(x)
    if type(v) ~= "number" then fail(self._name, "scale_fn returned %s for %s, expected a number", show(v), show(x)) end
    return v
  end
  if self.mode == "triangular" then return 1. end
  if self.mode == "triangular2" then return 1 / (2. ^ (x - 1)) end
  return self.gamma ^ (x)
end
function CyclicLR._rule(self)
  local e = self.last_epoch
  local cycle = floor(1 + e / self.total_size)
  local x = 1. + e / self.total_size - cycle
  local scale_factor
  if x <= self.step_ratio then
    scale_factor = x / self.step_ratio
  else
    scale_factor = (x - 1) / (self.step_ratio - 1)
  end
  local arg = self.scale_mode == "cycle" and cycle or e
  local lrs = {}
  for i, base in ipairs(self.base_lrs) do
    local base_height = (self.max_lrs[i] - base) * scale_factor
    lrs[i] = base + base_height * self:_scale(arg)
  end
  if self.cycle_momentum then
    local groups = self.optimizer.param_groups
    for i, bm in ipairs(self.base_momentums) do
      local maxm = self.max_momentums[i]
      local base_height = (maxm - bm) * scale_factor
      set_momentum(groups[i], maxm - base_height * self:_scale(arg), self.use_beta1)
    end
  end
  return lrs
end
function CyclicLR._save(self, sd)
  local f = self._graft.scale_fn
  if type(f) == "table" then
    local fields = {}
    for k, v in pairs(f) do if type(v) ~= "function" then fields[k] = deepcopy(v) end end
    sd._scale_fn_custom = fields
  else
    sd._scale_fn_custom = none()
  end
end
CyclicLR._load_keys = set { "_scale_fn_custom" }
function CyclicLR._load(self, sd)
  local fields, f = sd._scale_fn_custom, self._graft.scale_fn
  if type(f) == "table" and type(fields) == "table" and not is_none(fields) then
    for k, v in pairs(fields) do f[k] = deepcopy(v) end
  end
end

---------------------------------------------------------------------------------------
-- ReduceLROnPlateau: reduces on a metric, not on epochs. Construction leaves the lr
-- and initial_lr alone; get_last_lr() works from the start (as PyTorch 2.x).

local ReduceLROnPlateau = class("ReduceLROnPlateau")
S.ReduceLROnPlateau = function(opt, opts)
  local name = "ReduceLROnPlateau"
  local groups = check_optimizer(name, opt)
  opts = check_opt_table(name, opts, set { "mode", "factor", "patience", "threshold", "threshold_mode",
    "cooldown", "min_lr", "eps", "verbose" })
  local self = setmetatable({ optimizer = opt, _graft = {} }, ReduceLROnPlateau)
  local factor = check_number(name, "factor", opts.factor == nil and 0.1 or opts.factor)
  if factor >= 1.0 then fail(name, "Factor should be < 1.0, got %s", show(factor)) end
  if factor < 0 then fail(name, "factor must be >= 0, got %s", show(factor)) end
  self.factor = factor
  local min_lr = opts.min_lr == nil and 0 or opts.min_lr
  if is_list(min_lr) then
    if #min_lr ~= #groups then fail(name, "expected %d min_lrs, got %d", #groups, #min_lr) end
    self.min_lrs = {}
    for i = 1, #min_lr do self.min_lrs[i] = check_number(name, "min_lr[" .. i .. "]", min_lr[i]) end
  else
    check_number(name, "min_lr", min_lr)
    self._graft.min_lr = min_lr
    self.min_lrs = {}
    for i = 1, #groups do self.min_lrs[i] = min_lr end
  end
  self.patience = check_int(name, "patience", opts.patience == nil and 10 or opts.patience, 0,
    "a non-negative integer")
  self.verbose = opts.verbose and true or false
  self.cooldown = check_int(name, "cooldown", opts.cooldown == nil and 0 or opts.cooldown, 0,
    "a non-negative integer")
  self.cooldown_counter = 0
  self.mode = opts.mode == nil and "min" or opts.mode
  self.threshold = check_number(name, "threshold", opts.threshold == nil and 1e-4 or opts.threshold)
  self.threshold_mode = opts.threshold_mode == nil and "rel" or opts.threshold_mode
  self.eps = check_number(name, "eps", opts.eps == nil and 1e-8 or opts.eps)
  self.last_epoch = 0
  self:_init_is_better()
  self.best = self.mode_worse
  self.num_bad_epochs = 0
  self._last_lr = group_lrs(groups)
  return self
end
function ReduceLROnPlateau._init_is_better(self)
  if self.mode ~= "min" and self.mode ~= "max" then
    fail(self._name, "mode %s is unknown! (expected \"min\" or \"max\")", show(self.mode))
  end
  if self.threshold_mode ~= "rel" and self.threshold_mode ~= "abs" then
    fail(self._name, "threshold mode %s is unknown! (expected \"rel\" or \"abs\")", show(self.threshold_mode))
  end
  self.mode_worse = self.mode == "min" and math.huge or -math.huge
end
function ReduceLROnPlateau._adopt_groups(self)
  local groups = self.optimizer.param_groups
  local n, have = #groups, #self.min_lrs
  if n < have then
    fail(self._name, "the optimizer has %d param groups, but the scheduler was built for %d "
      .. "(param groups cannot be removed)", n, have)
  end
  for i = have + 1, n do
    if self._graft.min_lr == nil then
      fail(self._name, "param group %d was added after the scheduler was built, but min_lr was given "
        .. "per group (%d values): pass one min_lr, or build a new scheduler", i, have)
    end
    self.min_lrs[i] = self._graft.min_lr
  end
end
function ReduceLROnPlateau.is_better(self, a, best)
  if self.mode == "min" and self.threshold_mode == "rel" then
    local rel_epsilon = 1. - self.threshold
    return a < best * rel_epsilon
  elseif self.mode == "min" and self.threshold_mode == "abs" then
    return a < best - self.threshold
  elseif self.mode == "max" and self.threshold_mode == "rel" then
    local rel_epsilon = self.threshold + 1.
    return a > best * rel_epsilon
  end
  return a > best + self.threshold
end
-- step(metrics [, epoch]): metrics is a number (or a one-element tensor).
function ReduceLROnPlateau.step(self, metrics, epoch)
  local current_v = metrics
  if type(metrics) ~= "number" then
    local ok, v = pcall(function() return metrics:item() end)
    if not ok or type(v) ~= "number" then
      fail(self._name, "step: expected the metric (a number), got %s", metrics == nil and "nothing" or show(metrics))
    end
    current_v = v
  end
  current_v = current_v + 0.0
  if epoch == nil then
    epoch = self.last_epoch + 1
  else
    if type(epoch) ~= "number" then fail(self._name, "step: epoch must be a number or nil, got %s", show(epoch)) end
    warn_once(W3)
  end
  self:_adopt_groups()
  self.last_epoch = epoch
  if self:is_better(current_v, self.best) then
    self.best = current_v
    self.num_bad_epochs = 0
  else
    self.num_bad_epochs = self.num_bad_epochs + 1
  end
  if self.cooldown_counter > 0 then
    self.cooldown_counter = self.cooldown_counter - 1
    self.num_bad_epochs = 0
  end
  if self.num_bad_epochs > self.patience then
    self:_reduce_lr(epoch)
    self.cooldown_counter = self.cooldown
    self.num_bad_epochs = 0
  end
  self._last_lr = group_lrs(self.optimizer.param_groups)
end
function ReduceLROnPlateau._reduce_lr(self, epoch)
  for i, g in ipairs(self.optimizer.param_groups) do
    local old_lr = g.lr + 0.0
    local new_lr = math.max(old_lr * self.factor, self.min_lrs[i])
    if old_lr - new_lr > self.eps then
      g.lr = new_lr
      if self.verbose then
        local e = math.type(epoch) == "float" and ("%.2f"):format(epoch) or ("%05d"):format(epoch)
        print(("Epoch %s: reducing learning rate of group %d to %.4e."):format(e, i, new_lr))
      end
    end
  end
end
function ReduceLROnPlateau.in_cooldown(self) return self.cooldown_counter > 0 end
function ReduceLROnPlateau.get_lr() fail("ReduceLROnPlateau", "get_lr: there is no rule to evaluate; use get_last_lr()") end
function ReduceLROnPlateau.load_state_dict(self, sd)
  Base.load_state_dict(self, sd)
  self:_init_is_better()
end

---------------------------------------------------------------------------------------
-- SequentialLR and ChainedScheduler: sub-schedulers built on the same optimizer.

local function check_schedulers(name, opt, list, allow_composite)
  if not is_list(list) or #list == 0 then fail(name, "schedulers must be a non-empty list of schedulers") end
  for i, s in ipairs(list) do
    if not is_scheduler(s) then fail(name, "schedulers[%d] is not a scheduler (got %s)", i, show(s)) end
    if getmetatable(s) == ReduceLROnPlateau then
      fail(name, "schedulers[%d] is a ReduceLROnPlateau, which steps on a metric and cannot be composed", i)
    end
    if not allow_composite and s._schedulers ~= nil then
      fail(name, "schedulers[%d] is a %s; nesting composite schedulers here is not supported", i, s._name)
    end
    if opt ~= nil and s.optimizer ~= opt then
      fail(name, "expects all schedulers to belong to the same optimizer, but got schedulers at index "
        .. "%d to be different than the optimizer passed in", i)
    end
    if s.optimizer ~= list[1].optimizer then
      fail(name, "expects all schedulers to belong to the same optimizer, but got schedulers at index "
        .. "1 and %d to be different", i)
    end
  end
end

local function composite_state(self)
  local sd = {}
  for k, v in pairs(self) do
    if k ~= "optimizer" and k ~= "_schedulers" and k ~= "_graft" and type(v) ~= "function" then
      sd[k] = deepcopy(v)
    end
  end
  local subs = {}
  for i, s in ipairs(self._schedulers) do subs[i] = s:state_dict() end
  sd._schedulers = subs
  return sd
end

local function composite_load(self, sd)
  if type(sd) ~= "table" then fail(self._name, "load_state_dict: expected a table, got a %s", type(sd)) end
  for k, v in pairs(sd) do
    if type(k) == "string" and k ~= "_schedulers" and not IGNORED_KEYS[k] and type(getmetatable(self)[k]) ~= "function" then
      self[k] = deepcopy(v)
    end
  end
  local subs = sd._schedulers
  if subs ~= nil then
    local n = 0
    for _ in pairs(subs) do n = n + 1 end
    if n ~= #self._schedulers then
      fail(self._name, "load_state_dict: the state has %d schedulers, this one %d", n, #self._schedulers)
    end
    for i, s in ipairs(self._schedulers) do s:load_state_dict(subs[i]) end
  end
end

local SequentialLR = class("SequentialLR")
S.SequentialLR = function(opt, opts)
  local name = "SequentialLR"
  local groups = check_optimizer(name, opt)
  opts = check_opt_table(name, opts, set { "schedulers", "milestones", "last_epoch", "verbose" })
  local list = required(name, opts, "schedulers")
  check_schedulers(name, opt, list, false)
  local ms = required(name, opts, "milestones")
  if not is_list(ms) then fail(name, "milestones must be a list of integers, got %s", show(ms)) end
  if #ms ~= #list - 1 then
    fail(name, "Sequential Schedulers expects number of schedulers provided to be one more than the "
      .. "number of milestone points, but got number of schedulers %d and the number of milestones to "
      .. "be equal to %d", #list, #ms)
  end
  local milestones = {}
  for i = 1, #ms do
    milestones[i] = check_int(name, "milestones[" .. i .. "]", ms[i], nil, "an integer")
    if i > 1 and milestones[i] <= milestones[i - 1] then
      fail(name, "milestones must be increasing, got %s after %s", show(ms[i]), show(ms[i - 1]))
    end
  end
  local last_epoch = check_last_epoch(name, opts.last_epoch)
  local self = setmetatable({ optimizer = opt, _graft = {} }, SequentialLR)
  self._schedulers = copy_list(list)
  self._milestones = milestones
  self.last_epoch = last_epoch + 1
  -- back to the initial lrs, undo the sub-schedulers' construction steps, and run the
  -- first one's initial step again
  for i, g in ipairs(groups) do
    if g.initial_lr == nil then fail(name, "param_groups[%d] has no initial_lr", i) end
    g.lr = g.initial_lr
  end
  for _, s in ipairs(self._schedulers) do s.last_epoch = s.last_epoch - 1 end
  self._schedulers[1]:_initial_step()
  self._last_lr = self._schedulers[1]:get_last_lr()
  return self
end
function SequentialLR.step(self, epoch)
  if epoch ~= nil then fail(self._name, "step takes no epoch (got %s)", show(epoch)) end
  self.last_epoch = self.last_epoch + 1
  local ms = self._milestones
  local idx = 0 -- bisect_right
  while idx < #ms and ms[idx + 1] <= self.last_epoch do idx = idx + 1 end
  local sched = self._schedulers[idx + 1]
  if idx > 0 and ms[idx] == self.last_epoch then
    sched:step(0, true) -- the closed form at 0 (PyTorch 1.13 also warns; 2.x does not)
  else
    sched:step()
  end
  self._last_lr = sched:get_last_lr()
end
SequentialLR.state_dict = composite_state
SequentialLR.load_state_dict = composite_load

local ChainedScheduler = class("ChainedScheduler")
S.ChainedScheduler = function(opt, opts)
  local name = "ChainedScheduler"
  if opts == nil and type(opt) == "table" and opt.param_groups == nil and opt.schedulers ~= nil then
    opt, opts = nil, opt -- ChainedScheduler({schedulers = ...}), as PyTorch 1.13 takes no optimizer
  end
  if opt ~= nil then check_optimizer(name, opt) end
  opts = check_opt_table(name, opts, set { "schedulers" })
  local list = required(name, opts, "schedulers")
  check_schedulers(name, opt, list, true)
  local self = setmetatable({ optimizer = list[1].optimizer, _graft = {} }, ChainedScheduler)
  self._schedulers = copy_list(list)
  self._last_lr = group_lrs(self.optimizer.param_groups)
  return self
end
function ChainedScheduler.step(self, epoch)
  if epoch ~= nil then fail(self._name, "step takes no epoch (got %s)", show(epoch)) end
  for _, s in ipairs(self._schedulers) do s:step() end
  self._last_lr = group_lrs(self.optimizer.param_groups)
end
ChainedScheduler.state_dict = composite_state
ChainedScheduler.load_state_dict = composite_load

---------------------------------------------------------------------------------------
-- S.preview(make_sched, steps [, opts]) -> curve, momenta
-- The lr of every training step without training: make_sched(opt) builds the scheduler
-- on a fresh stand-in optimizer; curve[k] is the lr used by step k (after construction
-- for k = 1, then after k - 1 scheduler steps), so a OneCycleLR over total_steps = N
-- previews with N. One group gives a flat list, several a list per group; momenta is the
-- same for momentum (or betas[1]). opts: lrs = {0.1, ...} (or lr = 0.1), momentum = 0.9,
-- betas = {0.9, 0.999} (Adam-like groups instead of momentum), metrics = a list or a
-- function(k) giving the metric after step k (ReduceLROnPlateau).
function S.preview(make_sched, steps, opts)
  local name = "preview"
  if not callable(make_sched) then fail(name, "make_sched must be a function(opt) returning a scheduler") end
  steps = check_int(name, "steps", steps, 0, "a non-negative integer")
  opts = check_opt_table(name, opts, set { "lrs", "lr", "momentum", "betas", "metrics" })
  local lrs = opts.lrs or { opts.lr or 0.1 }
  if not is_list(lrs) or #lrs == 0 then fail(name, "lrs must be a non-empty list of numbers") end
  local groups = {}
  for i, lr in ipairs(lrs) do
    check_number(name, "lrs[" .. i .. "]", lr)
    if opts.betas ~= nil then
      groups[i] = { lr = lr, betas = copy_list(opts.betas) }
    else
      groups[i] = { lr = lr, momentum = opts.momentum or 0.9 }
    end
  end
  local defaults = { lr = lrs[1] }
  if opts.betas ~= nil then defaults.betas = copy_list(opts.betas) else defaults.momentum = opts.momentum or 0.9 end
  local opt = { param_groups = groups, defaults = defaults }
  local sched = make_sched(opt)
  if not is_scheduler(sched) then fail(name, "make_sched must return a scheduler, got %s", show(sched)) end
  if sched.optimizer ~= opt then fail(name, "the scheduler must be built on the optimizer passed to make_sched") end
  local plateau = getmetatable(sched) == ReduceLROnPlateau
  local metrics = opts.metrics
  if plateau and metrics == nil then
    fail(name, "ReduceLROnPlateau needs opts.metrics (a list, or a function of the step)")
  end
  local curve, moms = {}, {}
  for i = 1, #groups do curve[i], moms[i] = {}, {} end
  for k = 1, steps do
    for i, g in ipairs(opt.param_groups) do
      curve[i][k] = g.lr
      moms[i][k] = g.betas and g.betas[1] or g.momentum
    end
    if k < steps then
      if plateau then
        local m = callable(metrics) and metrics(k) or metrics[k]
        if type(m) ~= "number" then fail(name, "metrics[%d] is %s, expected a number", k, show(m)) end
        sched:step(m)
      else
        sched:step()
      end
    end
  end
  if #curve == 1 then return curve[1], moms[1] end
  return curve, moms
end

return S
