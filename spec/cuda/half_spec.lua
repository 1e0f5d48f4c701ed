-- 16-bit inputs of the float32 kernels on the device: softmax, norms and losses run in
-- float32 and round back once on both devices, so the device matches the CPU.
local graft = require("graft")
local F = graft.F
local C = require("spec.helpers.cuda")

C.describe("float16 / bfloat16 softmax, norms and losses on cuda", function()
  for _, dt in ipairs({ "float16", "bfloat16" }) do
    local function leaf(...)
      local t = graft.randn(...):to(dt)
      t.requires_grad = true
      return t
    end
    it("match the CPU with gradients (" .. dt .. ")", function()
      C.check(function(x) return F.softmax(x, 2), F.log_softmax(x, 1) end, { leaf(3, 7) }, { grad = true })
      C.check(function(x, w, b) return F.layer_norm(x, { 6 }, w, b) end, { leaf(4, 6), leaf(6), leaf(6) }, { grad = true })
      C.check(function(x, w, b) return F.group_norm(x, 3, w, b) end, { leaf(2, 6, 2), leaf(6), leaf(6) }, { grad = true })
      C.check(function(x) return F.batch_norm(x, nil, nil, { training = true }) end, { leaf(4, 3, 5) }, { grad = true })
      local y = graft.tensor({ 0, 3, 1, 2, 3 })
      C.check(function(x, t) return F.cross_entropy(x, t, { label_smoothing = 0.1 }) end, { leaf(5, 4), y },
        { grad = true })
      C.check(function(a, b) return F.mse_loss(a, b) end, { leaf(5, 4), graft.randn(5, 4):to(dt) }, { grad = true })
    end)
  end
end)
