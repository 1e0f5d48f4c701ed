-- Checkpoints and the device: graft.load(path, {map_location = "cuda" | "cuda:N"}) for
-- .pth and safetensors (tensors land on the device, views keep sharing one storage),
-- graft.save of CUDA tensors (written from host copies, location "cpu", readable by
-- torch.load on a machine without a GPU), and the errors when no device is there.
local graft = require("graft")
local H = require("spec.helpers")
local C = require("spec.helpers.cuda")

C.describe_no_device("graft.load map_location without a device", function()
  it("says why a CUDA map_location cannot be used", function()
    local dir = C.tmpdir()
    local p = dir .. "/a.pth"
    graft.save({ w = graft.ones(2) }, p)
    graft.save({ w = graft.ones(2) }, dir .. "/a.safetensors")
    H.raises('load: map_location "cuda": CUDA is not available', graft.load, p, { map_location = "cuda" })
    H.raises('load: map_location "cuda:0": CUDA is not available', graft.load, dir .. "/a.safetensors",
      { map_location = "cuda:0" })
    H.raises('map_location "gpu" is not a device ("cpu", "cuda" or "cuda:N")', graft.load, p, { map_location = "gpu" })
    H.raises('map_location "cuda": graft has no CUDA device', graft._pth_load, p, { map_location = "cuda" })
    H.raises('map_location "cuda": graft has no CUDA device', graft._st_load, dir .. "/a.safetensors", "cuda")
  end)
end)

C.describe("graft.load onto cuda", function()
  local dir
  setup(function() dir = C.tmpdir() end)

  local function sample()
    graft.manual_seed(1)
    local base = graft.randn(4, 6)
    return {
      w = graft.randn(3, 5), h = graft.randn(7):half(), bf = graft.randn(2, 2):bfloat16(), d = graft.randn(3):double(),
      i = graft.arange(6), b = graft.tensor({ true, false, true }), base = base, view = base:narrow(2, 2, 3),
      s = graft.tensor(2.5),
    }
  end

  for _, loc in ipairs({ "cuda", "cuda:0" }) do
    it(".pth: every tensor on " .. loc .. ", values, dtypes and views as saved", function()
      local src = sample()
      local p = dir .. "/s.pth"
      graft.save(src, p)
      local back = graft.load(p, { map_location = loc })
      for k, v in pairs(src) do
        assert.are.equal("cuda:0", back[k]:device(), k)
        assert.are.equal(v:dtype(), back[k]:dtype(), k)
        C.assert_exact(back[k], v)
      end
      -- the view shares the base's device storage: a write through one shows in the other
      assert.are.same(src.view:stride(), back.view:stride())
      back.base:fill_(7)
      C.assert_exact(back.view, graft.full({ 4, 3 }, 7.0))
    end)
  end

  it(".pth written by PyTorch (a training checkpoint) loads onto the device", function()
    local cpu = graft.load("spec/fixtures/ckpt/train_ckpt.pth")
    local dev = graft.load("spec/fixtures/ckpt/train_ckpt.pth", { map_location = "cuda" })
    local n = 0
    local function walk(a, b)
      if graft.is_tensor(a) then
        n = n + 1
        assert.are.equal("cuda:0", b:device())
        C.assert_exact(b, a)
      elseif type(a) == "table" and a ~= graft.None then
        for k, v in pairs(a) do walk(v, b[k]) end
      end
    end
    walk(cpu, dev)
    assert.is_true(n > 0)
  end)

  it("safetensors: every tensor on the device, none left mapped", function()
    local src = sample()
    src.view = nil -- safetensors holds no views
    local p = dir .. "/s.safetensors"
    graft.save(src, p)
    local back, info = graft.load(p, { map_location = "cuda" })
    assert.are.equal(0, info.mapped)
    for k, v in pairs(src) do
      assert.are.equal("cuda:0", back[k]:device(), k)
      C.assert_exact(back[k], v)
    end
    local big = { x = graft.randn(600, 700) } -- above 1 MiB: the pinned staging path
    graft.save(big, dir .. "/big.safetensors")
    C.assert_exact(graft.load(dir .. "/big.safetensors", { map_location = "cuda" }).x, big.x)
  end)

  it("dtype casts on the device", function()
    local src = { w = graft.randn(3, 4), i = graft.arange(3) }
    graft.save(src, dir .. "/c.pth")
    local back, info = graft.load(dir .. "/c.pth", { map_location = "cuda", dtype = "bfloat16" })
    assert.are.equal("bfloat16", back.w:dtype())
    assert.are.equal("cuda:0", back.w:device())
    assert.are.equal("int64", back.i:dtype())
    C.assert_exact(back.w, src.w:bfloat16())
    assert.are.same({ from = "float32", to = "bfloat16" }, info.cast.w)
  end)

  it("refuses a device that does not exist, naming it", function()
    graft.save({ w = graft.ones(2) }, dir .. "/e.pth")
    graft.save({ w = graft.ones(2) }, dir .. "/e.safetensors")
    H.raises("cuda:7 does not exist", graft.load, dir .. "/e.pth", { map_location = "cuda:7" })
    H.raises("cuda:7 does not exist", graft.load, dir .. "/e.safetensors", { map_location = "cuda:7" })
    H.raises('map_location "cuda7" is not a device', graft.load, dir .. "/e.pth", { map_location = "cuda7" })
  end)
end)

C.describe("graft.save of cuda tensors", function()
  local dir
  setup(function() dir = C.tmpdir() end)

  it(".pth: values, views (one storage record) and a CPU location", function()
    graft.manual_seed(2)
    local base = graft.randn(5, 4)
    local d = base:cuda()
    local obj = { base = d, col = d:select(2, 3), t = d:t(), host = graft.ones(3), h = graft.randn(4):half():cuda() }
    graft.save(obj, dir .. "/d.pth")
    local back = graft.load(dir .. "/d.pth")
    assert.are.equal("cpu", back.base:device())
    C.assert_exact(back.base:cuda(), base)
    assert.tensor_near(back.col, base:select(2, 3), C.EXACT)
    assert.tensor_near(back.t, base:t(), C.EXACT)
    assert.are.same(d:t():stride(), back.t:stride())
    back.base:fill_(3)
    assert.tensor_near(back.col, graft.full({ 5 }, 3.0), C.EXACT) -- one storage in the file
    assert.tensor_near(back.h, obj.h:cpu(), C.EXACT)
    -- the archive records "cpu" as the location of every storage
    local f = assert(io.popen("unzip -p " .. dir .. "/d.pth 'd/data.pkl' 2>/dev/null | strings"))
    local pkl = f:read("a")
    f:close()
    if #pkl > 0 then assert.is_nil(pkl:find("cuda", 1, true)) end
  end)

  it("safetensors: values of device tensors, views included", function()
    local base = graft.randn(3, 4)
    local d = base:cuda()
    graft.save({ a = d, b = d:t():contiguous(), c = graft.ones(2) }, dir .. "/d.safetensors")
    local back = graft.load(dir .. "/d.safetensors")
    assert.tensor_near(back.a, base, C.EXACT)
    assert.tensor_near(back.b, base:t(), C.EXACT)
  end)

  it("a CUDA model's state dict, optimizer state included, round-trips through a file", function()
    local sd = { ["fc.weight"] = graft.randn(4, 3):cuda(), ["fc.bias"] = graft.zeros(4):cuda() }
    local opt = { state = { [0] = { step = graft.tensor(3.0), exp_avg = graft.randn(4, 3):cuda() } } }
    graft.save({ model = sd, optimizer = opt }, dir .. "/m.pth")
    local back = graft.load(dir .. "/m.pth", { map_location = "cuda" })
    C.assert_exact(back.model["fc.weight"], sd["fc.weight"]:cpu())
    C.assert_exact(back.optimizer.state[0].exp_avg, opt.state[0].exp_avg:cpu())
    assert.are.equal(3, back.optimizer.state[0].step:item())
  end)

  local PY = "/usr/bin/python3"
  local has_torch = os.execute(PY .. " -c 'import torch' >/dev/null 2>&1")
  it("is read by torch.load (map_location cpu, and with no map_location on a CPU-only torch)", function()
    if not has_torch then
      print("checkpoint_spec: " .. PY .. " cannot import torch here: skipping the PyTorch read")
      return
    end
    local base = graft.arange(12):float():reshape(3, 4)
    local d = base:cuda()
    graft.save({ w = d, v = d:narrow(2, 2, 2) }, dir .. "/py.pth")
    local cmd = PY .. [[ -c "
import torch, sys
for kw in ({'map_location': 'cpu'}, {}):
    sd = torch.load(sys.argv[1], **kw)
    assert sd['w'].device.type == 'cpu'
    assert torch.equal(sd['w'], torch.arange(12.).reshape(3, 4))
    assert torch.equal(sd['v'], sd['w'][:, 1:3])
    assert sd['v'].untyped_storage().data_ptr() == sd['w'].untyped_storage().data_ptr() if hasattr(sd['v'], 'untyped_storage') else True
print('ok')
" ]] .. dir .. "/py.pth 2>&1"
    local f = assert(io.popen(cmd))
    local out = f:read("a")
    f:close()
    assert.is_truthy(out:find("ok", 1, true), out)
  end)
end)
