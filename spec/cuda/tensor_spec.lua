-- The CUDA backend's foundation: device queries, transfers in every layout and dtype,
-- fills, the caching allocator's counters and out-of-memory errors.
local graft = require("graft")
local H = require("spec.helpers")
local C = require("spec.helpers.cuda")

describe("graft.cuda without a device", function()
  it("answers every query without raising", function()
    assert.is_boolean(graft.cuda.is_available())
    assert.is_number(graft.cuda.device_count())
    assert.is_string(graft.cuda.backend())
    assert.is_number(graft.cuda.memory_allocated())
  end)
  if not graft.cuda.is_available() then
    it("refuses cuda tensors with the reason", function()
      H.raises("CUDA is not available", function() return graft.zeros(2, { device = "cuda" }) end)
      H.raises("CUDA is not available", function() return graft.ones(2):cuda() end)
      H.raises("CUDA is not available", function() return graft.ones(2):to("cuda") end)
    end)
  end
end)

C.describe("cuda tensors", function()
  it("round-trip every dtype exactly", function()
    for _, dt in ipairs(C.DTYPES) do
      local x = (graft.arange(24):reshape(2, 3, 4) - 7):to(dt)
      local d = x:cuda()
      assert.are.equal("cuda:0", d:device())
      assert.are.equal(dt, d:dtype())
      assert.is_true(d:is_cuda())
      assert.tensor_near(d:cpu(), x, C.EXACT)
    end
  end)

  it("stream large host-to-device copies through the pinned staging buffers", function()
    local x = graft.arange(5e6):float()                  -- 20 MB: three 8 MiB chunks
    local d = x:cuda()
    assert.are.equal(4999999, d[5e6]:item())
    assert.are.equal(4194304, d[4194305]:item())         -- first element of the second chunk
    assert.tensor_near(d:cpu():narrow(1, 4194300, 10), x:narrow(1, 4194300, 10), C.EXACT)
  end)

  it("copy strided, transposed and broadcast views in both directions", function()
    local x = graft.randn(4, 5, 6)
    local v = x:transpose(1, 3):narrow(2, 2, 3)           -- non-contiguous host view
    assert.tensor_near(v:cuda():cpu(), v, C.EXACT)
    local d = x:cuda()
    local dv = d:transpose(1, 3):narrow(2, 2, 3)          -- non-contiguous device view
    assert.tensor_near(dv:cpu(), v, C.EXACT)
    assert.tensor_near(dv:contiguous():cpu(), v, C.EXACT)
    local dst = graft.zeros(3, 4, 5, { device = "cuda" })
    dst:copy_(graft.arange(5):float())                    -- host row broadcast into device
    assert.tensor_near(dst:cpu(), graft.arange(5):float():expand(3, 4, 5), C.EXACT)
    local host = graft.zeros(2, 5)
    host:copy_(graft.arange(5):float():cuda())            -- device row broadcast into host
    assert.tensor_near(host, graft.arange(5):float():expand(2, 5), C.EXACT)
  end)

  it("convert dtypes on the device as the CPU does", function()
    local x = graft.tensor({ -2.7, -0.5, 0, 0.5, 1.5, 2.5, 300.25, 65504, 1e-8, -0.0 })
    for _, dt in ipairs({ "float64", "float16", "bfloat16", "int64", "int32", "int8", "uint8", "bool" }) do
      assert.tensor_near(x:cuda():to(dt):cpu(), x:to(dt), C.EXACT)
      assert.tensor_near(x:to(dt):cuda():to("float32"):cpu(), x:to(dt):to("float32"), C.EXACT)
    end
  end)

  it("fill and zero in place, strided too", function()
    local d = graft.empty(3, 4, { device = "cuda" })
    d:fill_(1.25)
    d:t():narrow(1, 2, 2):fill_(-3)
    local e = graft.full({ 3, 4 }, 1.25)
    e:t():narrow(1, 2, 2):fill_(-3)
    assert.tensor_near(d:cpu(), e, C.EXACT)
    d:zero_()
    assert.tensor_near(d:cpu(), graft.zeros(3, 4), C.EXACT)
    local i = graft.zeros(5, { dtype = "int64", device = "cuda" })
    i:fill_(2 ^ 40 + 3)
    assert.are.equal(2 ^ 40 + 3, i[3]:item())
  end)

  it("item, tolist and printing read through the host", function()
    local d = graft.tensor({ { 1.5, 2 }, { 3, 4 } }):cuda()
    assert.are.equal(2, d[1][2]:item())
    assert.are.same({ { 1.5, 2 }, { 3, 4 } }, d:tolist())
    assert.is_truthy(tostring(d):find("device='cuda:0'", 1, true))
  end)

  it("count allocated and reserved bytes and reuse freed blocks", function()
    collectgarbage(); collectgarbage()
    graft.cuda.empty_cache()
    local base = graft.cuda.memory_allocated()
    local t = graft.empty(1000, 1000, { device = "cuda" })   -- 4 MB, bin-rounded
    local a = graft.cuda.memory_allocated() - base
    assert.is_true(a >= 4e6 and a < 4e6 * 1.2, "allocated " .. a)
    assert.is_true(graft.cuda.memory_reserved() >= graft.cuda.memory_allocated())
    assert.is_true(graft.cuda.max_memory_allocated() >= graft.cuda.memory_allocated())
    t = nil
    collectgarbage(); collectgarbage()
    assert.are.equal(base, graft.cuda.memory_allocated())
    local reserved = graft.cuda.memory_reserved()
    local hits = graft.cuda.memory_stats().num_cache_hits
    local u = graft.empty(1000, 1000, { device = "cuda" })  -- same bin: served from the cache
    assert.are.equal(reserved, graft.cuda.memory_reserved())
    assert.are.equal(hits + 1, graft.cuda.memory_stats().num_cache_hits)
    u = nil
    collectgarbage(); collectgarbage()
    graft.cuda.empty_cache()
    assert.is_true(graft.cuda.memory_reserved() < reserved)
    graft.cuda.reset_peak_memory_stats()
    assert.are.equal(graft.cuda.memory_allocated(), graft.cuda.max_memory_allocated())
  end)

  it("raises a Lua error naming the size when memory runs out", function()
    H.raises("CUDA out of memory: tried to allocate 4.00 TiB", function()
      return graft.empty(2 ^ 40, { dtype = "float32", device = "cuda" })
    end)
    -- and the allocator still works afterwards
    assert.tensor_near(graft.ones(3, { device = "cuda" }):cpu(), graft.ones(3))
  end)

  it("collects Lua garbage once before giving up", function()
    local before = graft.cuda.memory_stats().num_oom_retries
    pcall(graft.empty, 2 ^ 40, { device = "cuda" })
    assert.are.equal(before + 1, graft.cuda.memory_stats().num_oom_retries)
  end)

  it("moves gradients back across devices", function()
    local x = graft.randn(3, 4, { requires_grad = true })
    local y = x:cuda()
    assert.are.equal("ToCopyBackward0", tostring(y.grad_fn))
    y:cpu():mul(2):sum():backward()
    assert.are.equal("cpu", x.grad:device())
    assert.tensor_near(x.grad, graft.full({ 3, 4 }, 2.0))
  end)

  it("synchronizes and names the device", function()
    graft.cuda.synchronize()
    assert.is_string(graft.cuda.get_device_name())
    local major = graft.cuda.get_device_capability()
    assert.is_true(major >= 7)
    H.raises("does not exist", function() return graft.zeros(2, { device = "cuda:7" }) end)
  end)
end)

-- Out of memory on a small emulated device (40 MiB, in a child process): the Lua
-- collection runs first, and the block of a dead tensor serves the request.
if graft.cuda.backend() == "emulator" then
  describe("cuda out of memory on a 40 MiB emulated device", function()
    it("collects dead tensors and reuses their block before failing", function()
      local script = [[
        local graft = require("graft")
        collectgarbage("stop")                                          -- only the hook collects
        local keep = graft.empty(5 * 2 ^ 20, { device = "cuda" })       -- 20 MiB
        do local dead = graft.empty(3 * 2 ^ 20, { device = "cuda" }) end -- 12 MiB, garbage
        local reserved = graft.cuda.memory_reserved()
        local t = graft.empty(3 * 2 ^ 20, { device = "cuda" })          -- 12 MiB more: 44 > 40
        local st = graft.cuda.memory_stats()
        print(st.num_oom_retries, graft.cuda.memory_reserved() == reserved, t:numel(), keep:numel())
        local ok, err = pcall(graft.empty, 6 * 2 ^ 20, { device = "cuda" })
        print(ok, err)
      ]]
      local path = os.tmpname()
      local f = assert(io.open(path, "w"))
      f:write(script)
      f:close()
      local cmd = ("GRAFT_EMU_MEMORY=41943040 lua5.4 -e 'package.cpath=%q' %s 2>&1"):format(package.cpath, path)
      local out = io.popen(cmd):read("a")
      os.remove(path)
      assert.is_truthy(out:find("1\ttrue\t3145728\t5242880", 1, true), out)
      assert.is_truthy(out:find("false\t", 1, true) and out:find("CUDA out of memory: tried to allocate 24.00 MiB", 1, true), out)
    end)
  end)
end
