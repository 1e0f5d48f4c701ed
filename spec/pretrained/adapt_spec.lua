-- graft.adapt: input_channels, head and resize against what PyTorch computes
-- (spec/fixtures/pretrained/gen_pretrained.py: timm's adapt_input_conv, F.interpolate
-- bilinear), and end to end through load_pretrained on a checkpoint PyTorch saved
-- (vit_tiny.pth: {epoch, model = DataParallel state dict, optimizer}).
local graft = require("graft")
local nn = require("graft.nn")
local adapt = require("graft.adapt")
local H = require("spec.helpers")

local fx = H.fixture("pretrained/vit_tiny")
local VIT = "spec/fixtures/pretrained/vit_tiny.pth"

local function same(a, b)
  assert.are.same(a:shape(), b:shape())
  assert.is_true(a:to("float64"):contiguous():tobytes() == b:to("float64"):contiguous():tobytes(), "tensors differ")
end

local ckpt = graft.load(VIT).model

describe("adapt.input_channels", function()
  local w = ckpt["module.patch_embed.proj.weight"] -- [8, 3, 4, 4]

  it("sums over the channels for 1 (as timm's adapt_input_conv)", function()
    local out = adapt.input_channels(1)("proj.weight", graft.zeros(8, 1, 4, 4), w)
    assert.tensor_near(out, fx.proj_1, { rtol = 1e-6, atol = 1e-7 })
  end)

  it("repeats and rescales by 3/n for more, or fewer than 3", function()
    local out = adapt.input_channels(4)("proj.weight", graft.zeros(8, 4, 4, 4), w)
    assert.tensor_near(out, fx.proj_4, { rtol = 1e-6, atol = 1e-7 })
    out = adapt.input_channels(2)("proj.weight", graft.zeros(8, 2, 4, 4), w)
    assert.tensor_near(out, w:narrow(2, 1, 2) * 1.5, { rtol = 1e-6 })
    out = adapt.input_channels(7)("proj.weight", graft.zeros(8, 7, 4, 4), w)
    assert.tensor_near(out:narrow(2, 4, 3), w * (3 / 7), { rtol = 1e-6 })
    assert.tensor_near(out:narrow(2, 7, 1), w:narrow(2, 1, 1) * (3 / 7), { rtol = 1e-6 })
  end)

  it("takes the count from the model, returns the tensor itself for equal counts, computes in float32", function()
    local out = adapt.input_channels()("proj.weight", graft.zeros(8, 1, 4, 4), w)
    assert.tensor_near(out, fx.proj_1, { rtol = 1e-6, atol = 1e-7 })
    assert.is_true(rawequal(w, adapt.input_channels(3)("x", graft.zeros(8, 3, 4, 4), w)))
    out = adapt.input_channels(1)("x", graft.zeros(8, 1, 4, 4), w:half())
    assert.are.equal("float32", out:dtype())
    assert.tensor_near(out, w:half():float():sum(2, { keepdim = true }), { rtol = 1e-6 })
    -- a 1-D conv weight
    out = adapt.input_channels(1)("x", graft.zeros(2, 1, 5), graft.ones(2, 3, 5))
    assert.tensor_near(out, graft.full({ 2, 1, 5 }, 3.0))
  end)

  it("rejects what is not a conv weight for the model", function()
    H.raises("input_channels: the channel count must be a positive integer, got 0", function() adapt.input_channels(0) end)
    local f = adapt.input_channels(2)
    H.raises('input_channels (for "proj.weight"): asked for 2 input channels, but the model\'s weight [8, 1, 4, 4] has 1',
      function() f("proj.weight", graft.zeros(8, 1, 4, 4), w) end)
    H.raises("input_channels (for \"x\"): model [4, 1, 4, 4] and checkpoint [8, 3, 4, 4] differ in more than the input channels",
      function() adapt.input_channels(1)("x", graft.zeros(4, 1, 4, 4), w) end)
    H.raises("input_channels (for \"x\"): expected convolution weights [out, in, kernel...], got model [8, 1] and checkpoint [8, 3]",
      function() adapt.input_channels(1)("x", graft.zeros(8, 1), graft.zeros(8, 3)) end)
    H.raises("input_channels (for \"x\"): the checkpoint's value is a number, not a tensor",
      function() adapt.input_channels(1)("x", graft.zeros(8, 1), 3) end)
  end)
end)

describe("adapt.head", function()
  local cw, cb = ckpt["module.head.weight"], ckpt["module.head.bias"] -- [10, 8], [10]

  it("keeps the rows of overlapping classes in the new order, the rest as the model has them", function()
    local mw = graft.randn(5, 8)
    local out = adapt.head(5, { keep = { 7, 2, -1, 0, 9 } })("head.weight", mw, cw)
    same(out[1], cw[8]); same(out[2], cw[3]); same(out[3], mw[3]); same(out[4], cw[1]); same(out[5], cw[10])
    local mb = graft.randn(5)
    out = adapt.head(5, { keep = { 7, 2 } })("head.bias", mb, cb) -- shorter: the rest are new
    same(out:narrow(1, 1, 2), cb:index_select(1, graft.tensor({ 7, 2 })))
    same(out:narrow(1, 3, 3), mb:narrow(1, 3, 3))
    out = adapt.head({ keep = graft.tensor({ 1, 1, 1 }) })("head.bias", graft.zeros(3), cb) -- n from the model
    same(out, graft.full({ 3 }, cb[2]:item()))
  end)

  it("grows a head: more classes than the checkpoint", function()
    local mw = graft.randn(12, 8)
    local keep = {}
    for i = 1, 10 do keep[i] = i - 1 end
    local out = adapt.head(12, { keep = keep })("w", mw, cw)
    same(out:narrow(1, 1, 10), cw)
    same(out:narrow(1, 11, 2), mw:narrow(1, 11, 2))
    out = adapt.head(12)("w", mw, cw) -- nothing kept: the model's head
    same(out, mw)
  end)

  it("takes the model's dtype and checks its arguments", function()
    local out = adapt.head(2, { keep = { 0, 1 } })("w", graft.zeros(2, 8, { dtype = "float64" }), cw)
    assert.are.equal("float64", out:dtype())
    H.raises("head: keep lists 3 classes for a head of 2", function() adapt.head(2, { keep = { 0, 1, 2 } }) end)
    H.raises("head: keep[2] = 1.5 is not a 0-based class index (or -1 for a new class)",
      function() adapt.head(2, { keep = { 0, 1.5 } }) end)
    H.raises("head: keep must be a 1-D integer tensor", function() adapt.head(2, { keep = graft.ones(2) }) end)
    H.raises('head: unknown option "rows" (options: keep)', function() adapt.head(2, { rows = {} }) end)
    H.raises("head: the class count must be a positive integer, got -1", function() adapt.head(-1) end)
    H.raises('head (for "w"): keep[1] = 10 is out of range for the checkpoint\'s 10 classes',
      function() adapt.head(2, { keep = { 10 } })("w", graft.zeros(2, 8), cw) end)
    H.raises('head (for "w"): asked for 3 classes, but the model\'s tensor [2, 8] has 2',
      function() adapt.head(3)("w", graft.zeros(2, 8), cw) end)
    H.raises('head (for "w"): model [2, 4] and checkpoint [10, 8] differ in more than the class count',
      function() adapt.head(2)("w", graft.zeros(2, 4), cw) end)
  end)
end)

describe("adapt.resize", function()
  local pos = ckpt["module.pos_embed"] -- [1, 17, 8]: a class token and a 4x4 grid

  it("interpolates a position table to the model's grid, the class token kept (PyTorch's bilinear)", function()
    local out = adapt.resize()("pos_embed", graft.zeros(1, 37, 8), pos)
    assert.tensor_near(out, fx.pos_embed_6x6, { rtol = 1e-5, atol = 1e-6 })
    same(out:narrow(2, 1, 1), pos:narrow(2, 1, 1))
    out = adapt.resize({ 1, 37, 8 })("pos_embed", graft.zeros(1, 37, 8), pos)
    assert.tensor_near(out, fx.pos_embed_6x6, { rtol = 1e-5, atol = 1e-6 })
    -- [N, D] without the batch dim
    out = adapt.resize()("pos", graft.zeros(37, 8), pos[1])
    assert.tensor_near(out, H.T(fx.pos_embed_6x6)[1], { rtol = 1e-5, atol = 1e-6 })
  end)

  it("takes explicit grids, prefix tokens and align_corners", function()
    local out = adapt.resize({ from_grid = { 2, 2 }, grid = { 3, 5 }, align_corners = true })("t", graft.zeros(15, 3),
      H.T(fx.table_2x2))
    assert.tensor_near(out, fx.table_3x5_aligned, { rtol = 1e-5, atol = 1e-6 })
    local x = graft.randn(1, 2 + 16, 4)
    out = adapt.resize({ prefix_tokens = 2 })("t", graft.zeros(1, 2 + 9, 4), x)
    same(out:narrow(2, 1, 2), x:narrow(2, 1, 2))
    assert.are.same({ 1, 11, 4 }, out:shape())
    -- a square table shrinks too, with no prefix
    out = adapt.resize()("t", graft.zeros(1, 4, 2), graft.ones(1, 16, 2))
    assert.tensor_near(out, graft.ones(1, 4, 2))
  end)

  it("resizes a 4-D grid's last two dims; the matrix fallback equals F.interpolate", function()
    local x = graft.randn(2, 3, 4, 5)
    for _, align in ipairs({ false, true }) do
      for _, size in ipairs({ { 7, 3 }, { 2, 9 }, { 4, 5 } }) do
        local f = adapt.resize({ align_corners = align })
        local target = graft.zeros(2, 3, size[1], size[2])
        local out = f("g", target, x)
        local want = graft.F.interpolate(x, { size = size, mode = "bilinear", align_corners = align or nil })
        assert.tensor_near(out, want, { rtol = 1e-6, atol = 1e-6 })
        local F = graft.F
        graft.F = nil
        local ok, fb = pcall(f, "g", target, x)
        graft.F = F
        assert.is_true(ok, tostring(fb))
        assert.tensor_near(fb, want, { rtol = 1e-5, atol = 1e-5 })
      end
    end
  end)

  it("says what it cannot tell or do", function()
    H.raises('resize (for "p"): cannot tell the grid of [1, 20, 8] -> [1, 37, 8]', function()
      adapt.resize()("p", graft.zeros(1, 37, 8), graft.zeros(1, 20, 8))
    end)
    H.raises('resize (for "p"): asked for [1, 50, 8], but the model\'s tensor is [1, 37, 8]', function()
      adapt.resize({ 1, 50, 8 })("p", graft.zeros(1, 37, 8), pos)
    end)
    H.raises('resize (for "p"): model [1, 37, 4] and checkpoint [1, 17, 8] differ in more than the token count', function()
      adapt.resize()("p", graft.zeros(1, 37, 4), pos)
    end)
    H.raises('resize (for "p"): expected a token table [N, D] or [B, N, D], or a 4-D grid', function()
      adapt.resize()("p", graft.zeros(9), graft.zeros(4))
    end)
    H.raises('resize (for "p"): from_grid {3, 3} does not hold the 16 grid tokens', function()
      adapt.resize({ from_grid = { 3, 3 }, prefix_tokens = 1 })("p", graft.zeros(1, 37, 8), pos)
    end)
    H.raises('resize: unknown option "mode"', function() adapt.resize({ mode = "bicubic" }) end)
    H.raises("resize: grid must be {h, w} (positive integers)", function() adapt.resize({ grid = { 0, 2 } }) end)
  end)
end)

-- gen_pretrained.py's TinyViT, for 1-channel images on a 6x6 grid with 5 classes.
local PatchEmbed = nn.Module:extend("PatchEmbed")
function PatchEmbed:__init(c) self.proj = nn.Conv2d(c, 8, 4, { stride = 4 }) end
local TinyViT = nn.Module:extend("TinyViT")
function TinyViT:__init(o)
  self.cls_token = nn.Parameter(graft.zeros(1, 1, 8))
  self.pos_embed = nn.Parameter(graft.randn(1, o.grid * o.grid + 1, 8))
  self.patch_embed = PatchEmbed(o.in_chans)
  self.norm = nn.LayerNorm(8)
  self.head = nn.Linear(8, o.classes)
end
function TinyViT:forward(x)
  x = self.patch_embed.proj(x):flatten(3):transpose(2, 3)
  x = graft.cat({ self.cls_token:expand(x:size(1), 1, 8), x }, 2) + self.pos_embed
  return self.head(self.norm(x)[{ {}, 1 }])
end

describe("adapters through load_pretrained, on a checkpoint PyTorch saved", function()
  it("loads vit_tiny.pth into a model for other inputs, grid and classes", function()
    local vit = TinyViT({ in_chans = 1, grid = 6, classes = 5 })
    local head_w = vit.head.weight:clone()
    local r = vit:load_pretrained(VIT, {
      strip_prefix = "auto", missing = "error", unexpected = "error",
      on_mismatch = {
        pos_embed = adapt.resize(),
        ["patch_embed.proj.weight"] = adapt.input_channels(1),
        { "^head%.", adapt.head(5, { keep = { 7, 2, -1, 0, 9 } }) },
      },
    })
    assert.are.equal("model", r.unwrapped)
    assert.are.same({ { prefix = "module.", count = 8, auto = true } }, r.prefixes)
    assert.are.same({ "pos_embed", "patch_embed.proj.weight", "head.weight", "head.bias" }, r.adapted)
    assert.are.equal(8, r.counts.loaded)
    assert.tensor_near(vit.pos_embed, fx.pos_embed_6x6, { rtol = 1e-5, atol = 1e-6 })
    assert.tensor_near(vit.patch_embed.proj.weight, fx.proj_1, { rtol = 1e-6, atol = 1e-7 })
    same(vit.head.weight[1], ckpt["module.head.weight"][8])
    same(vit.head.weight[3], head_w[3])
    same(vit.head.bias[5], ckpt["module.head.bias"][10])
    same(vit.norm.weight, ckpt["module.norm.weight"])
    same(vit.cls_token, ckpt["module.cls_token"])
    assert.is_true(vit.pos_embed.requires_grad)
    local y = vit(graft.randn(2, 1, 24, 24))
    assert.are.same({ 2, 5 }, y:shape())
    local s = tostring(r)
    assert.is_truthy(s:find("pos_embed (model [1, 37, 8], checkpoint [1, 17, 8]): adapted", 1, true), s)
    assert.is_truthy(s:find('checkpoint  8 tensors under "model", stripped "module." from 8 keys (auto)', 1, true), s)
  end)

  it("a dry run of the same load changes nothing", function()
    local vit = TinyViT({ in_chans = 1, grid = 6, classes = 5 })
    local before = {}
    for k, t in pairs(vit:state_dict()) do before[k] = t:tobytes() end
    local r = vit:load_pretrained(VIT, { dry_run = true, verbose = false, strip_prefix = "auto", on_mismatch = {
      pos_embed = adapt.resize(), ["patch_embed.proj.weight"] = adapt.input_channels(), default = adapt.head() } })
    assert.are.equal(8, r.counts.loaded)
    for k, t in pairs(vit:state_dict()) do assert.is_true(before[k] == t:tobytes(), k) end
  end)
end)
