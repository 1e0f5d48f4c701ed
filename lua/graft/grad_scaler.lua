-- graft GradScaler: dynamic loss scaling for mixed-precision training, as
-- torch.cuda.amp.GradScaler (PyTorch 1.13): the loss is multiplied by a scale before
-- backward so small float16 gradients do not flush to zero; before the optimizer step
-- the gradients are unscaled and checked for inf/NaN; a step with a non-finite gradient
-- is skipped and the scale backs off, and after growth_interval clean steps it grows.
--
--   local GradScaler = require("graft.grad_scaler")   -- also graft.amp.GradScaler
--   local scaler = GradScaler()            -- init_scale 2^16, growth 2, backoff 0.5, interval 2000
--   scaler:scale(loss):backward()
--   scaler:unscale_(opt)                   -- optional: before clipping the true gradients
--   scaler:step(opt)                       -- skipped when a gradient is inf/NaN
--   scaler:update()
--
-- Pure Lua over graft ops, so it works on CPU and CUDA tensors alike. The scale and the
-- growth tracker live on the host (as float32 and integer values, with the rounding of
-- PyTorch's update kernel); the inf/NaN checks run where the gradients are (device
-- reductions) and are read once per step and device, in step().
local graft = require("graft")

local READY, UNSCALED, STEPPED = "ready", "unscaled", "stepped"

-- x rounded to float32 (PyTorch keeps the scale in a float32 tensor).
local function f32(x) return (string.unpack("<f", string.pack("<f", x))) end

local function fail(fmt, ...) error(fmt:format(...), 3) end

local GradScaler = {}
GradScaler.__index = GradScaler
GradScaler.__name = "graft.GradScaler"

local OPTIONS = { init_scale = true, growth_factor = true, backoff_factor = true, growth_interval = true, enabled = true }

-- GradScaler([{init_scale = 2^16, growth_factor = 2, backoff_factor = 0.5,
-- growth_interval = 2000, enabled = true}])
function GradScaler.new(opts)
  if opts ~= nil and type(opts) ~= "table" then fail("GradScaler: options must be a table, got %s", type(opts)) end
  opts = opts or {}
  for k in pairs(opts) do
    if not OPTIONS[k] then
      fail("GradScaler: unknown option '%s' (options: backoff_factor, enabled, growth_factor, growth_interval, init_scale)",
        tostring(k))
    end
  end
  local function num(k, default)
    local v = opts[k]
    if v == nil then return default end
    if type(v) ~= "number" then fail("GradScaler: %s must be a number, got %s", k, type(v)) end
    return v
  end
  local enabled = opts.enabled
  if enabled == nil then enabled = true end
  if type(enabled) ~= "boolean" then fail("GradScaler: enabled must be a boolean, got %s", type(enabled)) end
  local self = setmetatable({ _enabled = enabled }, GradScaler)
  if enabled then
    self._init_scale = num("init_scale", 2.0 ^ 16) + 0.0
    self._growth_factor = num("growth_factor", 2.0) + 0.0
    self._backoff_factor = num("backoff_factor", 0.5) + 0.0
    local gi = num("growth_interval", 2000)
    if math.type(gi) ~= "integer" then
      if gi ~= math.floor(gi) then fail("GradScaler: growth_interval must be an integer, got %s", tostring(gi)) end
      gi = math.tointeger(gi)
    end
    self._growth_interval = gi
    if not (self._growth_factor > 1.0) then fail("GradScaler: The growth factor must be > 1.0.") end
    if not (self._backoff_factor < 1.0) then fail("GradScaler: The backoff factor must be < 1.0.") end
    self._scale = nil -- created by the first scale(), as PyTorch's lazily made tensor
    self._growth_tracker = nil
    self._per_optimizer = setmetatable({}, { __mode = "k" })
  end
  return self
end

setmetatable(GradScaler, { __call = function(_, opts) return GradScaler.new(opts) end })

function GradScaler:is_enabled() return self._enabled end

local function lazy_init(self)
  if self._scale == nil then
    self._scale = f32(self._init_scale)
    self._growth_tracker = self._growth_tracker or 0
  end
end

local function check_scale(self, funcname)
  if self._scale == nil then
    error(("GradScaler: Attempted %s but _scale is None.  This may indicate your script did not use "
      .. "scaler.scale(loss or outputs) earlier in the iteration."):format(funcname), 3)
  end
end

local function opt_state(self, optimizer)
  local st = self._per_optimizer[optimizer]
  if st == nil then
    st = { stage = READY, found_inf = nil }
    self._per_optimizer[optimizer] = st
  end
  return st
end

-- scale(outputs): outputs (a tensor, or a table of them, nested) multiplied by the scale;
-- unchanged when disabled.
function GradScaler:scale(outputs)
  if not self._enabled then return outputs end
  lazy_init(self)
  local s = self._scale
  local function apply(x)
    if graft.is_tensor(x) then return x * s end
    if type(x) == "table" and getmetatable(x) == nil then
      local out = {}
      for k, v in pairs(x) do out[k] = apply(v) end
      return out
    end
    error("GradScaler: scale: outputs must be a tensor or a table of tensors, got " .. type(x), 3)
  end
  return apply(outputs)
end

-- The gradients of an optimizer's parameters multiplied by inv in place; returns
-- {[device] = a bool tensor on that device, true when a gradient was inf or NaN}. The
-- check reads each gradient before it is scaled, as PyTorch's kernel does.
local function unscale_grads(optimizer, inv, allow_fp16)
  local found = {}
  graft.no_grad(function()
    for _, group in ipairs(optimizer.param_groups) do
      for _, p in ipairs(group.params) do
        local g = p.grad
        if g ~= nil then
          if not allow_fp16 and g:dtype() == "float16" then
            error("GradScaler: Attempting to unscale FP16 gradients.", 0)
          end
          local dev = g:device()
          local ok = g:isfinite():all()
          found[dev] = found[dev] and found[dev]:logical_and(ok) or ok
          if inv ~= 1.0 then g:mul_(inv) end
        end
      end
    end
  end)
  local out = {}
  for dev, ok in pairs(found) do out[dev] = ok:logical_not() end
  return out
end

-- unscale_(optimizer): the optimizer's gradients divided by the scale in place, inf/NaN
-- recorded for step() (call before gradient clipping). Once per update().
function GradScaler:unscale_(optimizer)
  if not self._enabled then return end
  check_scale(self, "unscale_")
  local st = opt_state(self, optimizer)
  if st.stage == UNSCALED then
    error("GradScaler: unscale_() has already been called on this optimizer since the last update().", 2)
  elseif st.stage == STEPPED then
    error("GradScaler: unscale_() is being called after step().", 2)
  end
  local inv = f32(1.0 / self._scale)
  local ok, res = pcall(unscale_grads, optimizer, inv, false)
  if not ok then error(res, 2) end
  st.found_inf = res
  st.stage = UNSCALED
end

-- Whether any device recorded an inf/NaN: one host read per device, cached.
local function any_inf(st)
  if st.found_any == nil then
    local any = false
    for _, t in pairs(st.found_inf) do
      if t:item() then any = true end
    end
    st.found_any = any
  end
  return st.found_any
end

-- step(optimizer [, ...]): unscales first if unscale_ was not called, then
-- optimizer:step(...) unless a gradient was inf/NaN. Returns what optimizer:step returned
-- (nil when skipped).
function GradScaler:step(optimizer, ...)
  if not self._enabled then return optimizer:step(...) end
  if select("#", ...) > 0 then
    error("GradScaler: Closure use is not currently supported if GradScaler is enabled.", 2)
  end
  check_scale(self, "step")
  local st = opt_state(self, optimizer)
  if st.stage == STEPPED then
    error("GradScaler: step() has already been called since the last update().", 2)
  end
  if st.stage == READY then
    local ok, err = pcall(self.unscale_, self, optimizer)
    if not ok then error(err, 2) end
  end
  if next(st.found_inf) == nil then
    -- PyTorch: "No inf checks were recorded for this optimizer." (no parameter had a grad)
    error("GradScaler: No inf checks were recorded for this optimizer.", 2)
  end
  local ret
  if not any_inf(st) then ret = optimizer:step() end
  st.stage = STEPPED
  return ret
end

-- update([new_scale]): backs the scale off (×backoff_factor) if any optimizer saw an
-- inf/NaN since the last update, else counts a clean step and grows it (×growth_factor)
-- after growth_interval of them; new_scale (a number or a one-element tensor) sets it.
function GradScaler:update(new_scale)
  if not self._enabled then return end
  check_scale(self, "update")
  if new_scale ~= nil then
    if graft.is_tensor(new_scale) then
      if new_scale:numel() ~= 1 or new_scale.requires_grad then
        error("GradScaler: new_scale should be a float or a 1-element torch.cuda.FloatTensor with requires_grad=False.", 2)
      end
      new_scale = new_scale:item()
    elseif type(new_scale) ~= "number" then
      error("GradScaler: new_scale should be a float or a 1-element torch.cuda.FloatTensor with requires_grad=False.", 2)
    end
    self._scale = f32(new_scale)
  else
    local any, seen = false, false
    for _, st in pairs(self._per_optimizer) do
      if st.found_inf and next(st.found_inf) ~= nil then
        seen = true
        if any_inf(st) then any = true end
      end
    end
    if not seen then error("GradScaler: No inf checks were recorded prior to update.", 2) end
    -- PyTorch's _amp_update_scale_: float scale times double factor, stored as float;
    -- a growth that would overflow is not taken.
    if any then
      self._scale = f32(self._scale * self._backoff_factor)
      self._growth_tracker = 0
    else
      local successful = self._growth_tracker + 1
      if successful == self._growth_interval then
        local grown = f32(self._scale * self._growth_factor)
        if grown == grown and grown ~= math.huge and grown ~= -math.huge then self._scale = grown end
        self._growth_tracker = 0
      else
        self._growth_tracker = successful
      end
    end
  end
  self._per_optimizer = setmetatable({}, { __mode = "k" })
end

-- get_scale() -> the current scale (init_scale before the first scale()), 1.0 when disabled.
function GradScaler:get_scale()
  if not self._enabled then return 1.0 end
  if self._scale == nil then return self._init_scale end
  return self._scale
end

function GradScaler:get_growth_factor() return self._growth_factor end
function GradScaler:set_growth_factor(v) self._growth_factor = v end
function GradScaler:get_backoff_factor() return self._backoff_factor end
function GradScaler:set_backoff_factor(v) self._backoff_factor = v end
function GradScaler:get_growth_interval() return self._growth_interval end
function GradScaler:set_growth_interval(v) self._growth_interval = v end
function GradScaler:_get_growth_tracker()
  if not self._enabled then return 0 end
  return self._growth_tracker or 0
end

-- state_dict() -> {scale, growth_factor, backoff_factor, growth_interval,
-- _growth_tracker} (PyTorch's keys), or {} when disabled.
function GradScaler:state_dict()
  if not self._enabled then return {} end
  return {
    scale = self:get_scale(), growth_factor = self._growth_factor, backoff_factor = self._backoff_factor,
    growth_interval = self._growth_interval, _growth_tracker = self:_get_growth_tracker(),
  }
end

function GradScaler:load_state_dict(sd)
  if not self._enabled then return end
  if type(sd) ~= "table" then error("GradScaler: load_state_dict: expected a table, got " .. type(sd), 2) end
  if next(sd) == nil then
    error("GradScaler: The source state dict is empty, possibly because it was saved from a disabled instance of GradScaler.", 2)
  end
  local function get(k, kind)
    local v = sd[k]
    if type(v) ~= "number" then error(("GradScaler: load_state_dict: '%s' must be a number, got %s"):format(k, type(v)), 3) end
    if kind == "integer" then
      if v ~= math.floor(v) then error(("GradScaler: load_state_dict: '%s' must be an integer, got %s"):format(k, tostring(v)), 3) end
      return math.tointeger(v)
    end
    return v + 0.0
  end
  local scale, gf, bf = get("scale"), get("growth_factor"), get("backoff_factor")
  local gi, tracker = get("growth_interval", "integer"), get("_growth_tracker", "integer")
  self._init_scale = scale
  if self._scale ~= nil then self._scale = f32(scale) end
  self._growth_factor, self._backoff_factor, self._growth_interval = gf, bf, gi
  self._growth_tracker = tracker
end

function GradScaler:__tostring()
  if not self._enabled then return "GradScaler(enabled=False)" end
  return ("GradScaler(scale=%s, growth_factor=%s, backoff_factor=%s, growth_interval=%d, growth_tracker=%d)"):format(
    tostring(self:get_scale()), tostring(self._growth_factor), tostring(self._backoff_factor), self._growth_interval,
    self:_get_growth_tracker())
end

-- The module is the class (callable); .GradScaler names it too.
GradScaler.GradScaler = GradScaler
return GradScaler
