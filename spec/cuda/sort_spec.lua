-- sort, argsort and topk on CUDA against the CPU: values, indices and gradients, in the
-- dtypes they sort, with NaN and ties, on non-contiguous inputs. (CUDA tensors sort
-- through the host for now: core/ops/sort.c; results come back on the tensor's device.)
local graft = require("graft")
local C = require("spec.helpers.cuda")

C.describe("sort, argsort and topk on cuda", function()
  before_each(function() graft.manual_seed(7) end)

  it("match the CPU in values and indices, on the device", function()
    local x = graft.randn(6, 50)
    x[{ 2, 3 }] = 0 / 0
    x[{ 4, 10 }] = x[{ 4, 11 }]:item()
    for _, dt in ipairs({ "float32", "float64", "float16", "int64", "int32", "uint8" }) do
      local xd = C.as(x, dt)
      C.check_exact(function(t) return t:sort() end, { xd })
      C.check_exact(function(t) return t:sort(1, true) end, { xd })
      C.check_exact(function(t) return t:argsort(-1, true) end, { xd })
      C.check_exact(function(t) return t:topk(5) end, { xd })
      C.check_exact(function(t) return t:topk(40, 2, false) end, { xd })
    end
    C.check_exact(function(t) return t:t():sort(2, { stable = true }) end, { x })
    C.check_exact(function(t) return t:sort() end, { graft.tensor({ true, false, true }) })
  end)

  it("send the gradient of the values back to the input positions", function()
    local x = C.leaf({ 4, 9 }, { dtype = "float64" })
    C.check(function(t) return (t:sort(2, true)) end, { x }, { grad = true })
    C.check(function(t) return (t:topk(3, 1)) end, { x }, { grad = true })
  end)

  it("raise the CPU's errors", function()
    local x = graft.randn(3, 5):cuda()
    local ok, err = pcall(x.topk, x, 7)
    assert.is_false(ok)
    assert.is_truthy(tostring(err):find("topk: k (7) is larger than the size of dim 2 (5)", 1, true))
  end)
end)

-- erf and erfc (core/cuda/elementwise.cu) ride along here: the CPU is the reference.
C.describe("erf and erfc on cuda", function()
  it("match the CPU in values and gradients", function()
    graft.manual_seed(9)
    local x = graft.randn(5, 7) * 2
    for _, dt in ipairs({ "float32", "float64", "float16", "int64" }) do
      C.check(function(t) return t:erf(), t:erfc(), t:t():erf() end, { C.as(x, dt) })
    end
    local leaf = C.leaf({ 3, 4 }, { dtype = "float64" })
    C.check(function(t) return t:erf(), graft.erfc(t) end, { leaf }, { grad = true })
  end)
end)
