-- graft.amp: automatic mixed precision, as PyTorch's torch.amp / torch.cuda.amp.
--
--   local scaler = graft.amp.GradScaler()
--   local loss = graft.amp.autocast(function()            -- also graft.autocast
--     return F.cross_entropy(model(x), y)
--   end, { dtype = "float16" })
--   scaler:scale(loss):backward()
--   scaler:step(opt); scaler:update()
--
-- autocast(fn [, {dtype, enabled, device_type}]) runs fn with the products (matmul, mm,
-- bmm, mv, addmm, baddbmm, linear, conv, scaled_dot_product_attention) casting their
-- float32 inputs to dtype (float16 or bfloat16; float16 by default for device_type
-- "cuda", bfloat16 otherwise) and returning results in it; gradients reach float32
-- leaves in float32. The mode is restored when fn returns or raises. It lives in C
-- (core/ops/autocast.c, bound in lua/bind/linalg.c); GradScaler comes from
-- graft.grad_scaler, loaded on first use.
local graft = require("graft")

local amp = {
  autocast = graft.autocast,
  is_autocast_enabled = graft.is_autocast_enabled,
  get_autocast_dtype = graft.get_autocast_dtype,
}

return graft._lazy(amp, { GradScaler = "graft.grad_scaler" })
