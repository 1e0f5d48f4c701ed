-- graft's GradScaler (lua/graft/grad_scaler.lua) on CPU tensors: torch.cuda.amp.GradScaler's
-- scaling, unscaling with inf/NaN detection, skipped steps, the backoff and growth rule
-- (float32 rounding included), state dicts, the disabled mode and every misuse message.
local graft = require("graft")
local optim = require("graft.optim")
local H = require("spec.helpers")
local GradScaler = require("graft.grad_scaler").GradScaler

local function param(values)
  local p = graft.tensor(values)
  p.requires_grad = true
  return p
end

local function f32(x) return (string.unpack("<f", string.pack("<f", x))) end

describe("GradScaler construction", function()
  it("has PyTorch's defaults", function()
    local s = GradScaler()
    assert.is_true(s:is_enabled())
    assert.are.equal(65536.0, s:get_scale())
    assert.are.equal(2.0, s:get_growth_factor())
    assert.are.equal(0.5, s:get_backoff_factor())
    assert.are.equal(2000, s:get_growth_interval())
    assert.are.equal(0, s:_get_growth_tracker())
    assert.are.same({ scale = 65536.0, growth_factor = 2.0, backoff_factor = 0.5, growth_interval = 2000,
      _growth_tracker = 0 }, s:state_dict())
  end)

  it("refuses bad options with PyTorch's messages", function()
    H.raises("The growth factor must be > 1.0.", function() GradScaler({ growth_factor = 1.0 }) end)
    H.raises("The backoff factor must be < 1.0.", function() GradScaler({ backoff_factor = 1.0 }) end)
    H.raises("unknown option 'scale'", function() GradScaler({ scale = 2 }) end)
    H.raises("init_scale must be a number", function() GradScaler({ init_scale = "big" }) end)
    H.raises("growth_interval must be an integer", function() GradScaler({ growth_interval = 2.5 }) end)
    H.raises("enabled must be a boolean", function() GradScaler({ enabled = 1 }) end)
  end)
end)

describe("GradScaler:scale", function()
  it("multiplies a loss, or every tensor of a nested table, by the scale", function()
    local s = GradScaler({ init_scale = 1024 })
    local loss = graft.tensor(0.75)
    assert.are.equal(768, s:scale(loss):item())
    local out = s:scale({ graft.tensor({ 1.0, 2.0 }), { x = graft.tensor(3.0) } })
    assert.tensor_near(out[1], graft.tensor({ 1024.0, 2048.0 }), { rtol = 0, atol = 0 })
    assert.are.equal(3072, out[2].x:item())
    assert.are.equal("float16", s:scale(graft.tensor(0.5):half()):dtype())
  end)

  it("keeps the graph: backward of the scaled loss gives scaled gradients", function()
    local s = GradScaler({ init_scale = 8 })
    local p = param({ 1.0, 2.0, 3.0 })
    s:scale((p * p):sum()):backward()
    assert.tensor_near(p.grad, graft.tensor({ 16.0, 32.0, 48.0 }), { rtol = 0, atol = 0 })
  end)
end)

describe("GradScaler unscale_, step, update", function()
  -- One training step of f(p) = sum((p - 1)^2 * 0.5) with the scaler; inject = a value
  -- written into the first gradient after backward (inf, NaN) or nil.
  local function train_step(scaler, opt, p, inject)
    opt:zero_grad()
    scaler:scale(((p - 1) ^ 2 * 0.5):sum()):backward()
    if inject then graft.no_grad(function() p.grad[1] = inject end) end
    scaler:step(opt)
    scaler:update()
  end

  it("steps with the true gradients: bit-identical to training without the scaler", function()
    local p, q = param({ 0.3, -1.2, 2.5 }), param({ 0.3, -1.2, 2.5 })
    local o1, o2 = optim.Adam({ p }, { lr = 0.1 }), optim.Adam({ q }, { lr = 0.1 })
    local scaler = GradScaler()
    for _ = 1, 5 do
      train_step(scaler, o1, p)
      o2:zero_grad();
      ((q - 1) ^ 2 * 0.5):sum():backward()
      o2:step()
    end
    assert.are.equal(q:detach():tobytes(), p:detach():tobytes())
    assert.are.equal(5, scaler:_get_growth_tracker())
  end)

  for _, bad in ipairs({ math.huge, -math.huge, 0 / 0 }) do
    it(("skips the step and backs off on a gradient of %s"):format(tostring(bad)), function()
      local p = param({ 0.3, -1.2, 2.5 })
      local opt = optim.SGD({ p }, { lr = 0.1, momentum = 0.9 })
      local scaler = GradScaler({ init_scale = 256 })
      train_step(scaler, opt, p)
      local before = p:detach():clone()
      train_step(scaler, opt, p, bad)
      assert.are.equal(before:tobytes(), p:detach():tobytes())
      assert.are.equal(128, scaler:get_scale())
      assert.are.equal(0, scaler:_get_growth_tracker())
      train_step(scaler, opt, p)
      assert.are_not.equal(before:tobytes(), p:detach():tobytes())
      assert.are.equal(1, scaler:_get_growth_tracker())
    end)
  end

  it("grows the scale after growth_interval clean steps", function()
    local p = param({ 1.5 })
    local opt = optim.SGD({ p }, { lr = 0.01 })
    local scaler = GradScaler({ init_scale = 4, growth_interval = 3 })
    local seen = {}
    for i = 1, 7 do
      train_step(scaler, opt, p)
      seen[i] = scaler:get_scale()
    end
    assert.are.same({ 4, 4, 8, 8, 8, 16, 16 }, seen)
  end)

  it("rounds the scale to float32 as PyTorch's update kernel does", function()
    local p = param({ 1.5 })
    local opt = optim.SGD({ p }, { lr = 0.01 })
    local scaler = GradScaler({ init_scale = 1 / 3, backoff_factor = 0.3, growth_factor = 1.7, growth_interval = 1 })
    assert.are.equal(1 / 3, scaler:get_scale()) -- init_scale as given until the first scale()
    train_step(scaler, opt, p, math.huge)
    assert.are.equal(f32(f32(1 / 3) * 0.3), scaler:get_scale())
    local s = scaler:get_scale()
    train_step(scaler, opt, p)
    assert.are.equal(f32(s * 1.7), scaler:get_scale())
  end)

  it("does not grow into inf", function()
    local p = param({ 1.5 })
    local opt = optim.SGD({ p }, { lr = 0 })
    local scaler = GradScaler({ init_scale = 2.0 ^ 127, growth_interval = 1 })
    train_step(scaler, opt, p)
    assert.are.equal(2.0 ^ 127, scaler:get_scale())
    assert.are.equal(0, scaler:_get_growth_tracker())
  end)

  it("unscale_ before clipping: the gradients are the true ones", function()
    local p = param({ 3.0, 4.0 })
    local opt = optim.SGD({ p }, { lr = 1 })
    local scaler = GradScaler({ init_scale = 1024 })
    scaler:scale((p * p):sum()):backward()
    scaler:unscale_(opt)
    assert.tensor_near(p.grad, graft.tensor({ 6.0, 8.0 }), { rtol = 0, atol = 0 })
    scaler:step(opt) -- does not unscale again
    scaler:update()
    assert.tensor_near(p:detach(), graft.tensor({ -3.0, -4.0 }), { rtol = 0, atol = 0 })
  end)

  it("update(new_scale) sets the scale from a number or a one-element tensor", function()
    local scaler = GradScaler()
    scaler:scale(graft.tensor(1.0))
    scaler:update(100.1)
    assert.are.equal(f32(100.1), scaler:get_scale())
    scaler:update(graft.tensor({ 8.0 }))
    assert.are.equal(8, scaler:get_scale())
    H.raises("new_scale should be a float or a 1-element", function() scaler:update(graft.ones(2)) end)
    H.raises("new_scale should be a float or a 1-element", function() scaler:update("x") end)
  end)

  it("handles several optimizers in one update", function()
    local a, b = param({ 1.0 }), param({ 2.0 })
    local oa, ob = optim.SGD({ a }, { lr = 0.1 }), optim.SGD({ b }, { lr = 0.1 })
    local scaler = GradScaler({ init_scale = 16 })
    scaler:scale((a * a + b * b):sum()):backward()
    graft.no_grad(function() b.grad:fill_(0 / 0) end)
    scaler:step(oa)
    scaler:step(ob)
    scaler:update()
    assert.are.equal(8, scaler:get_scale())
    assert.are.equal(f32(0.8), a:item()) -- a stepped, b did not
    assert.are.equal(2.0, b:item())
  end)
end)

describe("GradScaler misuse", function()
  local function setup()
    local p = param({ 1.0, 2.0 })
    local opt = optim.SGD({ p }, { lr = 0.1 })
    return p, opt, GradScaler()
  end

  it("unscale_ twice, or after step", function()
    local p, opt, scaler = setup()
    scaler:scale(p:sum()):backward()
    scaler:unscale_(opt)
    H.raises("unscale_() has already been called on this optimizer since the last update().",
      function() scaler:unscale_(opt) end)
    scaler:step(opt)
    H.raises("unscale_() is being called after step().", function() scaler:unscale_(opt) end)
    H.raises("step() has already been called since the last update().", function() scaler:step(opt) end)
  end)

  it("before any scale()", function()
    local _, opt, scaler = setup()
    H.raises("Attempted unscale_ but _scale is None.", function() scaler:unscale_(opt) end)
    H.raises("Attempted step but _scale is None.", function() scaler:step(opt) end)
    H.raises("Attempted update but _scale is None.", function() scaler:update() end)
  end)

  it("update without any inf check, step without gradients, closures, FP16 gradients", function()
    local p, opt, scaler = setup()
    scaler:scale(p:sum())
    H.raises("No inf checks were recorded prior to update.", function() scaler:update() end)
    H.raises("No inf checks were recorded for this optimizer.", function() scaler:step(opt) end)
    H.raises("Closure use is not currently supported if GradScaler is enabled.",
      function() scaler:step(opt, function() return 0 end) end)
    local h = graft.tensor({ 1.0 }):half()
    h.requires_grad = true
    local ho = { param_groups = { { params = { h } } }, step = function() end } -- any object with groups
    h.grad = graft.tensor({ 1.0 }):half()
    local s2 = GradScaler()
    s2:scale(graft.tensor(1.0))
    H.raises("Attempting to unscale FP16 gradients.", function() s2:unscale_(ho) end)
  end)
end)

describe("GradScaler state and the disabled mode", function()
  it("state_dict / load_state_dict round-trip", function()
    local s = GradScaler({ init_scale = 512, growth_interval = 10 })
    local p = param({ 1.0 })
    local opt = optim.SGD({ p }, { lr = 0.1 })
    for _ = 1, 3 do
      opt:zero_grad()
      s:scale(p:sum()):backward()
      s:step(opt)
      s:update()
    end
    local sd = s:state_dict()
    assert.are.same({ scale = 512.0, growth_factor = 2.0, backoff_factor = 0.5, growth_interval = 10,
      _growth_tracker = 3 }, sd)
    local t = GradScaler()
    t:load_state_dict(sd)
    assert.are.same(sd, t:state_dict())
    H.raises("The source state dict is empty, possibly because it was saved from a disabled instance of GradScaler.",
      function() t:load_state_dict({}) end)
    -- survives graft.save / graft.load
    local path = os.tmpname() .. ".pth"
    graft.save({ scaler = sd }, path)
    local back = graft.load(path)
    os.remove(path)
    local u = GradScaler()
    u:load_state_dict(back.scaler)
    assert.are.same(sd, u:state_dict())
  end)

  it("when disabled: scale passes through, step is the optimizer's, the rest does nothing", function()
    local s = GradScaler({ enabled = false })
    assert.is_false(s:is_enabled())
    local p = param({ 1.0 })
    local opt = optim.SGD({ p }, { lr = 0.5 })
    local loss = p:sum()
    assert.are.equal(loss, s:scale(loss))
    loss:backward()
    s:unscale_(opt)
    s:step(opt)
    s:update()
    assert.are.equal(0.5, p:item())
    assert.are.equal(1.0, s:get_scale())
    assert.are.same({}, s:state_dict())
    s:load_state_dict({})
    assert.are.equal("GradScaler(enabled=False)", tostring(s))
  end)
end)
