-- batch_norm, layer_norm and group_norm on CUDA against the CPU: batch statistics and
-- the running-stat update (momentum, cumulative with num_batches_tracked on either
-- device), eval mode, [N, C] and [N, C, *] inputs, short and long rows, optional
-- affine parameters, every gradient, non-contiguous inputs and device errors.
local graft = require("graft")
local H = require("spec.helpers")
local C = require("spec.helpers.cuda")
local F = graft.F

C.describe("F.batch_norm on cuda", function()
  local shapes = { { 6, 40 }, { 4, 3, 7 }, { 3, 5, 4, 6 }, { 2, 3, 300 } }

  it("normalises with batch statistics and updates the running stats as the CPU", function()
    for _, dt in ipairs({ "float32", "float64" }) do
      for _, shape in ipairs(shapes) do
        local c = shape[2]
        local x = (graft.randn(shape) * 2 + 3):to(dt)
        local w, b = graft.randn(c):to(dt), graft.randn(c):to(dt)
        local rm, rv = graft.randn(c):to(dt), (graft.rand(c) + 0.5):to(dt)
        local drm, drv = rm:cuda(), rv:cuda()
        local y = F.batch_norm(x, rm, rv, w, b, { training = true, momentum = 0.3 })
        local dy = F.batch_norm(x:cuda(), drm, drv, w:cuda(), b:cuda(), { training = true, momentum = 0.3 })
        C.assert_match(dy, y, {}, "output " .. dt)
        C.assert_match(drm, rm, {}, "running_mean " .. dt)
        C.assert_match(drv, rv, {}, "running_var " .. dt)
      end
    end
  end)

  it("keeps a cumulative average with num_batches_tracked on the device or the host", function()
    for _, nbt_dev in ipairs({ "cuda", "cpu" }) do
      local rm, rv, nbt = graft.zeros(3), graft.ones(3), graft.tensor(0, { dtype = "int64" })
      local drm, drv = rm:cuda(), rv:cuda()
      local dnbt = graft.tensor(0, { dtype = "int64" }):to(nbt_dev)
      for _ = 1, 3 do
        local x = graft.randn(4, 3, 5)
        F.batch_norm(x, rm, rv, { training = true, momentum = graft.None, num_batches_tracked = nbt })
        F.batch_norm(x:cuda(), drm, drv, { training = true, momentum = graft.None, num_batches_tracked = dnbt })
        C.assert_match(drm, rm)
        C.assert_match(drv, rv)
      end
      assert.are.equal(3, dnbt:item())
      assert.are.equal(nbt_dev == "cuda" and "cuda:0" or "cpu", dnbt:device())
    end
  end)

  it("uses the running statistics in eval mode and leaves them alone", function()
    for _, shape in ipairs(shapes) do
      local c = shape[2]
      local x = graft.randn(shape)
      local rm, rv, w = graft.randn(c), graft.rand(c) + 0.5, graft.randn(c)
      local drm, drv = rm:cuda(), rv:cuda()
      local y = F.batch_norm(x, rm, rv, { weight = w })
      C.assert_match(F.batch_norm(x:cuda(), drm, drv, { weight = w:cuda() }), y)
      C.assert_match(drm, rm, C.EXACT)
      C.assert_match(drv, rv, C.EXACT)
    end
  end)

  it("reads weights and statistics of another float dtype and any stride", function()
    local x = graft.randn(5, 4, 3, { dtype = "float64" })
    local w = graft.randn(8):narrow(1, 2, 4)               -- float32 weight, offset view
    local rm, rv = graft.zeros(8)[{ { 1, 8, 2 } }], graft.ones(4) -- strided running mean
    local drm_full = graft.zeros(8):cuda()
    local drm, drv = drm_full[{ { 1, 8, 2 } }], graft.ones(4):cuda()
    local y = F.batch_norm(x, rm, rv, { weight = w, training = true })
    local dy = F.batch_norm(x:cuda(), drm, drv, { weight = w:cuda(), training = true })
    C.assert_match(dy, y, { rtol = 1e-6, atol = 1e-6 })
    C.assert_match(drm, rm, { rtol = 1e-6, atol = 1e-7 })
    C.assert_match(drv, rv, { rtol = 1e-6, atol = 1e-7 })
    assert.are.equal(0, drm_full[2]:item()) -- only the strided elements were written
  end)

  it("gives the gradients of the CPU in training and eval mode", function()
    for _, dt in ipairs({ "float64", "float32" }) do
      for _, shape in ipairs(shapes) do
        local c = shape[2]
        local x = C.leaf(graft.randn(shape):to(dt))
        local w, b = C.leaf(graft.randn(c):to(dt)), C.leaf(graft.randn(c):to(dt))
        C.check(function(xx, ww, bb)
          return F.batch_norm(xx, nil, nil, ww, bb, { training = true })
        end, { x, w, b }, { grad = true })
        local rm, rv = graft.randn(c):to(dt), (graft.rand(c) + 0.5):to(dt)
        C.check(function(xx, ww, bb, m, v)
          return F.batch_norm(xx, m, v, ww, bb)
        end, { x, w, b, rm, rv }, { grad = true })
      end
    end
  end)

  it("differentiates without affine parameters and through non-contiguous inputs", function()
    local x = C.leaf(5, 6, 3, 4, { dtype = "float64" })
    C.check(function(xx) return F.batch_norm(xx:transpose(3, 4), nil, nil, { training = true }) end, { x },
      { grad = true })
    C.check(function(xx) return F.batch_norm(xx:narrow(2, 2, 3), nil, nil, { training = true }) end, { x },
      { grad = true })
    local w = C.leaf(6, { dtype = "float64" })
    C.check(function(xx, ww) return F.batch_norm(xx:transpose(1, 2):reshape(6, 60):t(), nil, nil, ww,
        { training = true }) end, { x, w }, { grad = true })
  end)

  it("names the op when tensors live on different devices and leaks nothing", function()
    local x = graft.randn(4, 3, { device = "cuda" })
    H.raises("batch_norm: expected all tensors to be on the same device, but found cuda:0 and cpu", function()
      return F.batch_norm(x, graft.zeros(3), graft.ones(3), { training = true })
    end)
    H.raises("batch_norm: expected all tensors to be on the same device, but found cuda:0 and cpu", function()
      return F.batch_norm(x, nil, nil, graft.ones(3), nil, { training = true })
    end)
    H.raises("batch_norm: expected all tensors to be on the same device, but found cpu and cuda:0", function()
      return F.batch_norm(graft.randn(4, 3), nil, nil, graft.ones(3):cuda(), nil, { training = true })
    end)
    H.raises("batch_norm: expected a float32 or float64 input, got int64", function()
      return F.batch_norm(x:long(), nil, nil, { training = true })
    end)
    H.raises("batch_norm: expected more than 1 value per channel", function()
      return F.batch_norm(graft.randn(1, 3, { device = "cuda" }), nil, nil, { training = true })
    end)
  end)
end)

C.describe("F.layer_norm on cuda", function()
  -- short rows take a warp each, rows over 1024 elements a block
  local cases = { { { 200, 8 }, { 8 } }, { { 3, 4, 5 }, { 4, 5 } }, { { 3, 1500 }, { 1500 } }, { { 7, 33 }, { 33 } } }

  it("matches the CPU forward and every gradient", function()
    for _, dt in ipairs({ "float64", "float32" }) do
      for _, case in ipairs(cases) do
        local shape, ns = case[1], case[2]
        local x = C.leaf((graft.randn(shape) * 3 + 1):to(dt))
        local w, b = C.leaf(graft.randn(ns):to(dt)), C.leaf(graft.randn(ns):to(dt))
        C.check(function(xx, ww, bb) return F.layer_norm(xx, ns, ww, bb) end, { x, w, b }, { grad = true })
        C.check(function(xx) return F.layer_norm(xx, ns, { eps = 1e-3 }) end, { x }, { grad = true })
        C.check(function(xx, ww) return F.layer_norm(xx, ns, ww) end, { x, w }, { grad = true })
      end
    end
  end)

  it("normalises non-contiguous inputs and converts the parameters' dtype", function()
    local x = C.leaf(6, 5, { dtype = "float64" })
    local w = C.leaf(6, { dtype = "float64" })
    C.check(function(xx, ww) return F.layer_norm(xx:t(), 6, ww) end, { x, w }, { grad = true })
    local xf, wd = graft.randn(4, 6), graft.randn(6, { dtype = "float64" })
    C.check(function(xx, ww) return F.layer_norm(xx, 6, ww) end, { xf, wd })
  end)

  it("names the op on a device mismatch", function()
    local x = graft.randn(4, 3, { device = "cuda" })
    H.raises("layer_norm: expected all tensors to be on the same device, but found cuda:0 and cpu", function()
      return F.layer_norm(x, 3, graft.ones(3))
    end)
    H.raises("layer_norm: expected all tensors to be on the same device, but found cuda:0 and cpu", function()
      return F.layer_norm(x, 3, nil, graft.ones(3))
    end)
  end)
end)

C.describe("F.group_norm on cuda", function()
  -- groups longer than a block (300 elements) walk their channels with counters
  local cases = { { { 3, 6, 5, 4 }, 3 }, { { 2, 8 }, 4 }, { { 4, 6, 9 }, 1 }, { { 2, 6, 3 }, 6 }, { { 2, 4, 150 }, 2 },
    { { 2, 600 }, 2 } }

  it("matches the CPU forward and every gradient", function()
    for _, dt in ipairs({ "float64", "float32" }) do
      for _, case in ipairs(cases) do
        local shape, g = case[1], case[2]
        local c = shape[2]
        local x = C.leaf((graft.randn(shape) * 2 - 1):to(dt))
        local w, b = C.leaf(graft.randn(c):to(dt)), C.leaf(graft.randn(c):to(dt))
        C.check(function(xx, ww, bb) return F.group_norm(xx, g, ww, bb) end, { x, w, b }, { grad = true })
        C.check(function(xx) return F.group_norm(xx, g) end, { x }, { grad = true })
      end
    end
  end)

  it("normalises non-contiguous inputs", function()
    local x = C.leaf(4, 5, 6, { dtype = "float64" })
    local w = C.leaf(6, { dtype = "float64" })
    C.check(function(xx, ww) return F.group_norm(xx:transpose(2, 3), 2, ww) end, { x, w }, { grad = true })
    C.check(function(xx) return F.group_norm(xx:transpose(2, 3):narrow(3, 2, 3), 2) end, { x }, { grad = true })
  end)

  it("names the op on a device mismatch", function()
    H.raises("group_norm: expected all tensors to be on the same device, but found cuda:0 and cpu", function()
      return F.group_norm(graft.randn(2, 4, { device = "cuda" }), 2, graft.ones(4))
    end)
  end)
end)
