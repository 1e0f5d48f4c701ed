-- graft.nn.utils: gradient clipping, as torch.nn.utils.
--
--   local total = nn.utils.clip_grad_norm_(net, 1.0)            -- a 0-dim tensor
--   nn.utils.clip_grad_norm_(params, 5.0, {norm_type = math.huge})
--   nn.utils.clip_grad_value_(net:parameters(), 0.5)
--
-- `parameters` is a tensor, a list of tensors, a model (anything with a parameters or
-- named_parameters method) or an iterator such as net:named_parameters(); parameters
-- without a grad are ignored.
local graft = require("graft")

local M = {}

-- The tensors of whatever `parameters` is (see above).
local function tensors(parameters, op)
  if graft.is_tensor(parameters) then return { parameters } end
  local out = {}
  if type(parameters) == "function" then
    for _ = 1, math.maxinteger do
      local a, b = parameters()
      if a == nil then break end
      out[#out + 1] = graft.is_tensor(a) and a or b
    end
  elseif type(parameters) == "table" then
    local ok, np = pcall(function() return parameters.named_parameters end)
    if ok and type(np) == "function" then
      for _, p in parameters:named_parameters() do out[#out + 1] = p end
    else
      for i, p in ipairs(parameters) do
        if not graft.is_tensor(p) then
          error(("%s: parameters[%d] is a %s, not a tensor"):format(op, i, type(p)), 3)
        end
        out[#out + 1] = p
      end
    end
  else
    error(("%s: parameters must be a tensor, a list of tensors, a model or an iterator, got %s")
      :format(op, type(parameters)), 3)
  end
  return out
end

local function with_grads(parameters, op)
  local grads = {}
  for _, p in ipairs(tensors(parameters, op)) do
    local g = p.grad
    if g ~= nil then grads[#grads + 1] = g end
  end
  return grads
end

-- clip_grad_norm_(parameters, max_norm [, {norm_type = 2, error_if_nonfinite = false}])
-- -> the total norm of all the gradients (viewed as one vector), a 0-dim tensor. When it
-- exceeds max_norm, every gradient is scaled in place by max_norm / (total + 1e-6).
-- PyTorch's arithmetic: the norm of the per-tensor norms; coefficient 1/(total + 1e-6)
-- times max_norm, clamped at 1.
function M.clip_grad_norm_(parameters, max_norm, opts)
  local op = "clip_grad_norm_"
  if type(max_norm) ~= "number" then error(op .. ": max_norm must be a number, got " .. type(max_norm), 2) end
  if opts ~= nil and type(opts) ~= "table" then error(op .. ": options must be a table, got " .. type(opts), 2) end
  opts = opts or {}
  local norm_type = opts.norm_type or 2
  if norm_type == "inf" then norm_type = math.huge end
  if type(norm_type) ~= "number" then
    error(op .. ": norm_type must be a number (math.huge for the max norm), got " .. type(norm_type), 2)
  end
  local grads = with_grads(parameters, op)
  if #grads == 0 then return graft.tensor(0.0) end
  return graft.no_grad(function()
    local total
    if norm_type == math.huge then
      local norms = {}
      for i, g in ipairs(grads) do norms[i] = g:abs():max() end
      total = #norms == 1 and norms[1] or graft.stack(norms):max()
    else
      local norms = {}
      for i, g in ipairs(grads) do norms[i] = g:norm(norm_type) end
      total = graft.stack(norms):norm(norm_type)
    end
    if opts.error_if_nonfinite and not total:isfinite():item() then
      error(("%s: The total norm of order %s for gradients from `parameters` is non-finite, so it cannot be clipped. To disable this error and scale the gradients by the non-finite norm anyway, set `error_if_nonfinite=False`")
        :format(op, tostring(norm_type == math.huge and "inf" or norm_type + 0.0)), 3)
    end
    local coef = ((total + 1e-6):reciprocal() * max_norm):clamp(nil, 1.0)
    for _, g in ipairs(grads) do g:mul_(coef) end
    return total
  end)
end

-- clip_grad_value_(parameters, clip_value): every gradient clamped in place to
-- [-clip_value, clip_value].
function M.clip_grad_value_(parameters, clip_value)
  local op = "clip_grad_value_"
  if type(clip_value) ~= "number" then error(op .. ": clip_value must be a number, got " .. type(clip_value), 2) end
  local grads = with_grads(parameters, op)
  graft.no_grad(function()
    for _, g in ipairs(grads) do g:clamp_(-clip_value, clip_value) end
  end)
end

return M
