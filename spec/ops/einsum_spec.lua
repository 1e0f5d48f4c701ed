-- graft.einsum against PyTorch 1.13 (spec/fixtures/einsum/gen.py): explicit and
-- implicit outputs, batch matmul, outer products, traces and diagonals, ellipsis with
-- broadcasting, size-1 broadcasting, three operands, the bilinear form, 0-dim and
-- empty operands, integers; gradients against finite differences; errors.
local graft = require("graft")
local H = require("spec.helpers")

local fx = H.fixture("einsum/cases")
local TOL = { rtol = 1e-12, atol = 1e-12 }

local function operands(c)
  local ops = {}
  for i, n in ipairs(c.ops) do ops[i] = H.T(fx.inputs[n]) end
  return ops
end

describe("einsum matches PyTorch", function()
  for n, c in ipairs(fx.cases) do
    it(("%d: %q on %s"):format(n, c.eq, table.concat(c.ops, ", ")), function()
      local ops = operands(c)
      assert.tensor_near(graft.einsum(c.eq, table.unpack(ops)), c.out, TOL)
      -- the same with the operands in a table
      assert.tensor_near(graft.einsum(c.eq, ops), c.out, TOL)
    end)
  end
end)

describe("einsum", function()
  it("contracts a pair with one bmm on permuted, reshaped operands", function()
    -- "bn,anm,bm->ba" through the same steps by hand
    local l = graft.randn(2, 3, { dtype = "float64" })
    local W = graft.randn(4, 3, 5, { dtype = "float64" })
    local r = graft.randn(2, 5, { dtype = "float64" })
    local want = graft.zeros({ 2, 4 }, { dtype = "float64" })
    for b = 1, 2 do
      for a = 1, 4 do
        want[b][a] = l[b]:reshape({ 1, 3 }):matmul(W[a]):matmul(r[b]:reshape({ 5, 1 })):item()
      end
    end
    assert.tensor_near(graft.einsum("bn,anm,bm->ba", l, W, r), want, { rtol = 1e-12, atol = 1e-12 })
  end)

  it("works on non-contiguous operands and float32", function()
    local a = graft.randn(4, 3):t()
    local b = graft.randn(5, 4):t()
    assert.tensor_near(graft.einsum("ij,jk->ik", a, b), a:matmul(b), { rtol = 1e-5, atol = 1e-6 })
    assert.are.equal("float32", graft.einsum("ij,jk", a, b):dtype())
    local x = graft.randn(2, 3, 4):transpose(1, 3)
    assert.tensor_near(graft.einsum("...ij->...ji", x), x:transpose(2, 3), { rtol = 0, atol = 0 })
  end)

  describe("gradients match finite differences (float64)", function()
    local function leaf(...) return graft.randn({ ... }, { dtype = "float64", requires_grad = true }) end
    local eqs = {
      { "ij,jk->ik", { 2, 3 }, { 3, 4 } },
      { "bij,bjk->bik", { 2, 2, 3 }, { 2, 3, 2 } },
      { "bn,anm,bm->ba", { 2, 3 }, { 2, 3, 2 }, { 2, 2 } },
      { "ii", { 3, 3 } },
      { "ii->i", { 3, 3 } },
      { "iij->ji", { 2, 2, 3 } },
      { "i,j->ij", { 3 }, { 2 } },
      { "...ij,...jk->...ik", { 2, 1, 2, 3 }, { 3, 3, 2 } },
      { "ij,jk,kl->il", { 2, 3 }, { 3, 2 }, { 2, 2 } },
      { "ij,jk->ik", { 2, 1 }, { 3, 2 } },
      { "ij,ij->ij", { 2, 1 }, { 1, 3 } },
      { "bij,bjk->bik", { 1, 2, 3 }, { 2, 3, 2 } },
      { "ij->", { 2, 3 } },
      { "i,i->", { 4 }, { 4 } },
    }
    for _, e in ipairs(eqs) do
      local eq = e[1]
      it(eq, function()
        local xs = {}
        for i = 2, #e do xs[#xs + 1] = leaf(table.unpack(e[i])) end
        assert.gradcheck(function(...) return graft.einsum(eq, ...) end, xs)
      end)
    end
  end)

  describe("errors name einsum and the problem", function()
    local a, b = graft.randn(2, 3), graft.randn(3, 4)
    it("dims against subscripts", function()
      H.raises("einsum: operand 2 has 3 dims but the equation gives it 2 subscripts", graft.einsum, "ij,jk",
        a, graft.randn(3, 4, 5))
      H.raises("einsum: operand 1 has 1 dims but the equation gives it at least 2 subscripts", graft.einsum,
        "ij...->", graft.randn(3))
    end)
    it("sizes that do not broadcast", function()
      H.raises("einsum: subscript j has size 3 in operand 1 and 4 in operand 2", graft.einsum, "ij,jk", a,
        graft.randn(4, 4))
      H.raises("einsum: the dims covered by the ellipsis do not broadcast: size 2 in operand 1 and 3 in operand 2",
        graft.einsum, "...i,...i", graft.randn(2, 4), graft.randn(3, 4))
      H.raises("einsum: subscript i is repeated in operand 1 with sizes 2 and 3", graft.einsum, "ii", a)
    end)
    it("operand count, types and dtypes", function()
      H.raises("einsum: the equation has 2 operands but 1 tensor was given", graft.einsum, "ij,jk", a)
      H.raises("einsum: the equation has 1 operand but 2 tensors were given", graft.einsum, "ij", a, b)
      H.raises("einsum: operand 2 must be a tensor, got a number", graft.einsum, "ij,jk", a, 3)
      H.raises("einsum: the equation must be a string", graft.einsum, a, b)
      H.raises("einsum: expected all operands to have one dtype, got float32 (operand 1) and float64 (operand 2)",
        graft.einsum, "ij,jk", a, b:double())
    end)
    it("bad subscripts and outputs", function()
      H.raises("einsum: invalid subscript '1' at position 2 of the equation", graft.einsum, "i1,jk", a, b)
      H.raises("einsum: invalid '.' at position 1", graft.einsum, "..ij", a)
      H.raises("einsum: more than one ellipsis in operand 1", graft.einsum, "...i...", a)
      H.raises("einsum: output subscript i appears more than once", graft.einsum, "ij,jk->ii", a, b)
      H.raises("einsum: output subscript z does not appear in any operand", graft.einsum, "ij,jk->iz", a, b)
    end)
  end)
end)
