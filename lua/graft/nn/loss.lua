-- graft.nn losses: CrossEntropyLoss, NLLLoss, MSELoss, L1Loss, SmoothL1Loss,
-- BCEWithLogitsLoss, BCELoss, as modules over graft.F. As in PyTorch, a class weight
-- (and BCEWithLogitsLoss's pos_weight) is a buffer, so it is in the state dict.
--
--   local criterion = nn.CrossEntropyLoss({label_smoothing = 0.1})
--   local loss = criterion(logits, labels)     -- labels: 0-based class indices
local graft = require("graft")
local base = require("graft.nn.module")
local layers = require("graft.nn.layers")

local Module = base.Module
local need, fail = layers.need, layers.fail

local Loss = {}

local REDUCTIONS = { none = true, mean = true, sum = true }

local function loss_class(name, weighted, defaults)
  local cls = Module:extend(name, { typename = "nn." .. name })
  cls.__init = function(self, o)
    o = o or {}
    if type(o) ~= "table" or graft.is_tensor(o) then
      error(("%s: options must be a table, got %s"):format(name, type(o)), 3)
    end
    local reduction = o.reduction or "mean"
    if not REDUCTIONS[reduction] then
      error(("%s: %s is not a valid value for reduction"):format(name, tostring(reduction)), 3)
    end
    self.reduction = reduction
    if weighted then
      if o.weight ~= nil and not graft.is_tensor(o.weight) then
        error(("%s: weight must be a tensor"):format(name), 3)
      end
      self:register_buffer("weight", o.weight)
    end
    for k, v in pairs(defaults or {}) do
      if o[k] ~= nil then self[k] = o[k] else self[k] = v end
    end
  end
  Loss[name] = cls
  return cls
end

local function two_tensors(self, input, target)
  if not graft.is_tensor(input) or not graft.is_tensor(target) then
    fail(self, "expected tensors (input, target), got %s and %s", base.typename(input), base.typename(target))
  end
end

local CrossEntropyLoss = loss_class("CrossEntropyLoss", true, { ignore_index = -100, label_smoothing = 0.0 })
-- nn.CrossEntropyLoss([{weight, ignore_index = -100, reduction = "mean", label_smoothing = 0}])
function CrossEntropyLoss:forward(input, target)
  two_tensors(self, input, target)
  return need("cross_entropy")(input, target, {
    weight = self.weight, ignore_index = self.ignore_index, reduction = self.reduction,
    label_smoothing = self.label_smoothing,
  })
end

local NLLLoss = loss_class("NLLLoss", true, { ignore_index = -100 })
function NLLLoss:forward(input, target)
  two_tensors(self, input, target)
  return need("nll_loss")(input, target, {
    weight = self.weight, ignore_index = self.ignore_index, reduction = self.reduction,
  })
end

local MSELoss = loss_class("MSELoss", false)
function MSELoss:forward(input, target)
  two_tensors(self, input, target)
  local f = graft.F.mse_loss
  if f then return f(input, target, { reduction = self.reduction }) end
  local d = (input - target):square()
  if self.reduction == "mean" then return d:mean() elseif self.reduction == "sum" then return d:sum() end
  return d
end

local L1Loss = loss_class("L1Loss", false)
function L1Loss:forward(input, target)
  two_tensors(self, input, target)
  return need("l1_loss")(input, target, { reduction = self.reduction })
end

local SmoothL1Loss = loss_class("SmoothL1Loss", false, { beta = 1.0 })
function SmoothL1Loss:forward(input, target)
  two_tensors(self, input, target)
  return need("smooth_l1_loss")(input, target, { reduction = self.reduction, beta = self.beta })
end

local BCEWithLogitsLoss = loss_class("BCEWithLogitsLoss", true)
-- nn.BCEWithLogitsLoss([{weight, reduction, pos_weight}]): pos_weight is a buffer too.
local bce_init = BCEWithLogitsLoss.__init
function BCEWithLogitsLoss:__init(o)
  bce_init(self, o)
  local pw = o and o.pos_weight
  if pw ~= nil and not graft.is_tensor(pw) then error("BCEWithLogitsLoss: pos_weight must be a tensor", 3) end
  self:register_buffer("pos_weight", pw)
end
function BCEWithLogitsLoss:forward(input, target)
  two_tensors(self, input, target)
  return need("binary_cross_entropy_with_logits")(input, target, {
    weight = self.weight, pos_weight = self.pos_weight, reduction = self.reduction,
  })
end

local BCELoss = loss_class("BCELoss", true)
function BCELoss:forward(input, target)
  two_tensors(self, input, target)
  return need("binary_cross_entropy")(input, target, { weight = self.weight, reduction = self.reduction })
end

return Loss
