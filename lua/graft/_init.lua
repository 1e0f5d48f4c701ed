-- The pure-Lua half of the graft module: run once by luaopen_graft, with the module
-- table (built by the C bindings) already in package.loaded.graft.
local graft = require("graft")
local print_mod = require("graft.print")

graft._Tensor.__tostring = print_mod.tensor_tostring

graft.OrderedDict = require("graft.odict")

-- graft.None: the sentinel for "no value" where position matters (checkpoints).
graft.None = setmetatable({}, { __tostring = function() return "None" end, __name = "graft.None" })

-- Placeholders: objects of a checkpoint's pickle that are not tensors or containers
-- (loaded only with {allow_unknown = true}); inert tables, nothing is ever called:
-- {__class = "module.QualName", __args = {...}, __state = <BUILD state or nil>}.
graft._Placeholder = {
  __name = "graft.Placeholder",
  __tostring = function(p) return "<placeholder " .. tostring(rawget(p, "__class")) .. ">" end,
}
function graft.is_placeholder(x) return getmetatable(x) == graft._Placeholder end

require("graft.checkpoint") -- installs graft.load, graft.save and graft.state

-- graft._lazy(t, modules): t[k] requires modules[k] on first use and keeps it (for
-- graft itself and for namespaces such as graft.amp).
function graft._lazy(t, modules)
  return setmetatable(t, {
    __index = function(self, k)
      local name = modules[k]
      if name then
        local m = require(name)
        rawset(self, k, m)
        return m
      end
    end,
  })
end

-- graft.nn, graft.models and graft.optim load on first use: start-up stays fast for
-- scripts that only use tensors (graft.nn alone costs ~2.4 ms to load).
graft._lazy(graft, {
  nn = "graft.nn", models = "graft.models", optim = "graft.optim", adapt = "graft.adapt",
  progress = "graft.progress", metrics = "graft.metrics", pause = "graft.pause",
  data = "graft.data", amp = "graft.amp",
})


-- ---- tensor methods composed of core ops (PyTorch 1.13 names, arguments, defaults) ----
-- Each is a method (t:isclose(u)) and, where PyTorch has torch.<name>, graft.<name>.
do
  local M = graft._methods

  local function is_opts(v) return type(v) == "table" and not graft.is_tensor(v) and v[1] == nil end

  -- t:isclose(other [, rtol=1e-05 [, atol=1e-08 [, equal_nan=false]]] [, {rtol =, atol =, equal_nan =}]):
  -- |t - other| <= atol + rtol * |other| elementwise (bool), equal infinities close,
  -- NaN close to NaN only with equal_nan; both tensors of one dtype.
  local function isclose(self, other, rtol, atol, equal_nan)
    local op = "isclose"
    local opts = is_opts(rtol) and rtol or is_opts(atol) and atol or is_opts(equal_nan) and equal_nan or nil
    if opts == rtol then rtol = nil end
    if opts == atol then atol = nil end
    if opts == equal_nan then equal_nan = nil end
    opts = opts or {}
    rtol = opts.rtol or rtol or 1e-05
    atol = opts.atol or atol or 1e-08
    if opts.equal_nan ~= nil then equal_nan = opts.equal_nan end
    if not graft.is_tensor(other) then error(op .. ": other must be a tensor, got a " .. type(other), 2) end
    if self:dtype() ~= other:dtype() then
      error(("%s: expected both tensors to have the same dtype, got %s and %s"):format(op, self:dtype(),
        other:dtype()), 2)
    end
    if type(rtol) ~= "number" or rtol < 0 then
      error(op .. ": rtol must be greater than or equal to zero, but got " .. tostring(rtol), 2)
    end
    if type(atol) ~= "number" or atol < 0 then
      error(op .. ": atol must be greater than or equal to zero, but got " .. tostring(atol), 2)
    end
    local close = self:eq(other)
    if equal_nan and self:is_floating_point() then close = close:logical_or(self:isnan():logical_and(other:isnan())) end
    if rtol == 0 and atol == 0 then return close end
    local a, b = self, other
    if a:dtype() == "bool" then a, b = a:float(), b:float() end
    -- as PyTorch: the tolerance in the floating type of rtol * other, the error as is
    local allowed = b:mul(rtol):abs():add(atol)
    local actual = a:sub(b):abs()
    return close:logical_or(actual:isfinite():logical_and(actual:le(allowed)))
  end
  M.isclose, graft.isclose = isclose, isclose

  -- t:allclose(other, ...): isclose(...) everywhere, as a Lua boolean.
  local function allclose(self, other, rtol, atol, equal_nan)
    local ok, r = pcall(isclose, self, other, rtol, atol, equal_nan)
    if not ok then error((tostring(r):gsub("^isclose:", "allclose:")), 2) end
    return r:all():item()
  end
  M.allclose, graft.allclose = allclose, allclose

  -- t:equal(other): true when both have the same shape and equal values (NaN is never
  -- equal), as torch.equal.
  local function equal(self, other)
    if not graft.is_tensor(other) then error("equal: other must be a tensor, got a " .. type(other), 2) end
    local a, b = self:shape(), other:shape()
    if #a ~= #b then return false end
    for i = 1, #a do if a[i] ~= b[i] then return false end end
    return graft.no_grad(function() return self:eq(other):all():item() end)
  end
  M.equal, graft.equal = equal, equal

  -- The new_* constructors: self's dtype and device unless the options say otherwise.
  -- The size is a table ({2, 3}) or integers (2, 3), then an optional options table.
  local function size_and_opts(op, ...)
    local n = select("#", ...)
    local first = ...
    if type(first) == "table" and not graft.is_tensor(first) then
      local opts = select(2, ...)
      return first, opts
    end
    local size = {}
    for i = 1, n do
      local v = select(i, ...)
      if type(v) == "number" then
        size[#size + 1] = v
      elseif is_opts(v) and i == n then
        return size, v
      else
        error(("%s: size must be a table or integers, got a %s"):format(op, graft.is_tensor(v) and "tensor" or type(v)), 3)
      end
    end
    return size, nil
  end

  local function like_opts(self, opts)
    opts = opts or {}
    return { dtype = opts.dtype or self:dtype(), device = opts.device or self:device(),
      requires_grad = opts.requires_grad }
  end

  function M.new_zeros(self, ...)
    local size, opts = size_and_opts("new_zeros", ...)
    return graft.zeros(size, like_opts(self, opts))
  end
  function M.new_ones(self, ...)
    local size, opts = size_and_opts("new_ones", ...)
    return graft.ones(size, like_opts(self, opts))
  end
  function M.new_empty(self, ...)
    local size, opts = size_and_opts("new_empty", ...)
    return graft.empty(size, like_opts(self, opts))
  end
  -- t:new_full(size, fill_value [, opts]) (size a table or one integer)
  function M.new_full(self, size, value, opts)
    if type(size) == "number" then size = { size } end
    if type(size) ~= "table" or graft.is_tensor(size) then error("new_full: size must be a table of integers", 2) end
    if type(value) ~= "number" and type(value) ~= "boolean" then
      error("new_full: fill_value must be a number or boolean, got a " .. type(value), 2)
    end
    local o = like_opts(self, opts)
    local t = graft.full(size, value, { dtype = o.dtype, device = o.device })
    if o.requires_grad then t.requires_grad = true end
    return t
  end
  -- t:new_tensor(data [, opts]): a copy of data (nested tables, a number or a tensor,
  -- without history) in self's dtype and on self's device.
  function M.new_tensor(self, data, opts)
    local o = like_opts(self, opts)
    local t = graft.no_grad(function()
      local src = graft.is_tensor(data) and data:detach() or data
      local c = graft.tensor(src, { dtype = o.dtype })
      if c:device() ~= o.device then c = c:to(o.device) end
      return c
    end)
    if o.requires_grad then t.requires_grad = true end
    return t
  end
  -- t:type_as(other): t in other's dtype (and on its device), as PyTorch.
  function M.type_as(self, other)
    if not graft.is_tensor(other) then error("type_as: other must be a tensor, got a " .. type(other), 2) end
    return self:to(other)
  end

  -- softmax and log_softmax as methods and graft.<name>: graft.F's.
  local F = graft.F
  local function softmax(self, dim, opts) return F.softmax(self, dim, opts) end
  local function log_softmax(self, dim, opts) return F.log_softmax(self, dim, opts) end
  M.softmax, graft.softmax = softmax, softmax
  M.log_softmax, graft.log_softmax = log_softmax, log_softmax

  -- t:lerp(end, weight): t + weight * (end - t) with PyTorch's two-sided formula
  -- (end - (end - t) * (1 - weight) for |weight| >= 0.5), a number or a tensor weight.
  local function lerp(self, end_, weight)
    if not graft.is_tensor(end_) then error("lerp: end must be a tensor, got a " .. type(end_), 2) end
    local diff = end_ - self
    if type(weight) == "number" then
      if math.abs(weight) < 0.5 then return self + diff * weight end
      return end_ - diff * (1 - weight)
    end
    if not graft.is_tensor(weight) then error("lerp: weight must be a number or a tensor, got a " .. type(weight), 2) end
    return graft.where(weight:abs():lt(0.5), self + diff * weight, end_ - diff * (1 - weight))
  end
  M.lerp, graft.lerp = lerp, lerp
  function M.lerp_(self, end_, weight) return self:copy_(lerp(self, end_, weight)) end

  -- t:addcmul(t1, t2 [, value=1 | {value =}]): t + value * t1 * t2; addcdiv: t + value * t1 / t2.
  local function value_of(op, v)
    if is_opts(v) then v = v.value end
    if v == nil then return 1 end
    if type(v) ~= "number" then error(op .. ": value must be a number, got a " .. type(v), 3) end
    return v
  end
  local function addcmul(self, t1, t2, value)
    value = value_of("addcmul", value)
    local p = value == 1 and t1 or t1 * value
    return self + p * t2
  end
  local function addcdiv(self, t1, t2, value)
    value = value_of("addcdiv", value)
    if graft.is_tensor(t1) and graft.is_tensor(t2) and not t1:is_floating_point() and not t2:is_floating_point() then
      error("addcdiv: integer division with addcdiv is no longer supported; use (input + value * tensor1 / tensor2)",
        2)
    end
    local p = value == 1 and t1 or t1 * value
    return self + p / t2
  end
  M.addcmul, graft.addcmul = addcmul, addcmul
  M.addcdiv, graft.addcdiv = addcdiv, addcdiv
  function M.addcmul_(self, t1, t2, value) return self:copy_(addcmul(self, t1, t2, value)) end
  function M.addcdiv_(self, t1, t2, value) return self:copy_(addcdiv(self, t1, t2, value)) end
end

-- ---- einsum, median, unique, inference_mode, t.data (PyTorch 1.13 semantics) ----
do
  local M = graft._methods

  local function shape_str(shape) return "[" .. table.concat(shape, ", ") .. "]" end
  local function index_of(list, v)
    for i, x in ipairs(list) do if x == v then return i end end
    return nil
  end

  -- einsum's subscripts: letters are labels; the dims an ellipsis covers get the
  -- labels ".1" .. ".K" (K the most dims any operand's ellipsis covers, aligned to
  -- the right as in broadcasting), so the contraction below treats them like letters.
  local function is_letter(c) return c:match("^[a-zA-Z]$") ~= nil end

  -- Parses one side of the equation into a list of terms; each term is a list of
  -- letters with at most one "..." entry (offset: where text starts in the equation).
  local function parse_terms(text, offset, allow_comma)
    local terms, term, seen_ell = {}, {}, false
    local i, n = 1, #text
    while i <= n do
      local c = text:sub(i, i)
      if c == " " then
        i = i + 1
      elseif c == "." then
        if text:sub(i, i + 2) ~= "..." then
          error(("einsum: invalid '.' at position %d of the equation; an ellipsis is written '...'"):format(offset + i), 3)
        end
        if seen_ell then
          error(("einsum: more than one ellipsis in %s"):format(allow_comma and ("operand " .. (#terms + 1)) or "the output"), 3)
        end
        seen_ell = true
        term[#term + 1] = "..."
        i = i + 3
      elseif c == "," and allow_comma then
        terms[#terms + 1] = term
        term, seen_ell = {}, false
        i = i + 1
      elseif is_letter(c) then
        term[#term + 1] = c
        i = i + 1
      else
        error(("einsum: invalid subscript '%s' at position %d of the equation; subscripts must be letters a-z or A-Z"):format(
          c, offset + i), 3)
      end
    end
    terms[#terms + 1] = term
    return terms
  end

  -- Sums x over the labels of xl for which drop(label) is true; returns x, labels.
  local function sum_labels(x, xl, drop)
    local dims, kept = {}, {}
    for d, l in ipairs(xl) do
      if drop(l) then dims[#dims + 1] = d else kept[#kept + 1] = l end
    end
    if #dims == 0 then return x, xl end
    return x:sum(dims), kept
  end

  local function permute_to(x, xl, order)
    local perm, identity = {}, true
    for i, l in ipairs(order) do
      perm[i] = index_of(xl, l)
      if perm[i] ~= i then identity = false end
    end
    if identity or #perm < 2 then return x end
    return x:permute(perm)
  end

  -- One pairwise contraction as a single bmm: r (labels rl) and o (labels ol) become
  -- [B, L, C] and [B, C, R] by permute + reshape (batch labels: in both and still
  -- needed; contracted: in both and needed no more; free: one side only).
  local function contract(r, rl, o, ol, keep)
    local rsh, osh = r:shape(), o:shape()
    -- a common label of size 1 on one side broadcasts: a contracted one is summed on
    -- both sides (a sum over size 1 is a squeeze), a batch one is expanded
    local rsum, osum, rexp, oexp = {}, {}, false, false
    local rtarget, otarget = {}, {}
    for d = 1, #rl do rtarget[d] = rsh[d] end
    for d = 1, #ol do otarget[d] = osh[d] end
    for d, l in ipairs(rl) do
      local e = index_of(ol, l)
      if e and rsh[d] ~= osh[e] then
        if not keep(l) then
          rsum[l], osum[l] = true, true
        elseif rsh[d] == 1 then
          rtarget[d], rexp = osh[e], true
        else
          otarget[e], oexp = rsh[d], true
        end
      end
    end
    if rexp then r = r:expand(rtarget) end
    if oexp then o = o:expand(otarget) end
    r, rl = sum_labels(r, rl, function(l) return rsum[l] end)
    o, ol = sum_labels(o, ol, function(l) return osum[l] end)
    rsh, osh = r:shape(), o:shape()

    local batch, lfree, contr, rfree = {}, {}, {}, {}
    local size = {}
    for d, l in ipairs(rl) do
      size[l] = rsh[d]
      if index_of(ol, l) then
        if keep(l) then batch[#batch + 1] = l else contr[#contr + 1] = l end
      else
        lfree[#lfree + 1] = l
      end
    end
    for d, l in ipairs(ol) do
      if not index_of(rl, l) then rfree[#rfree + 1] = l; size[l] = osh[d] end
    end
    local function prod(ls)
      local n = 1
      for _, l in ipairs(ls) do n = n * size[l] end
      return n
    end
    local B, L, C, R = prod(batch), prod(lfree), prod(contr), prod(rfree)
    local lorder, rorder, out, oshape = {}, {}, {}, {}
    for _, l in ipairs(batch) do lorder[#lorder + 1] = l; rorder[#rorder + 1] = l; out[#out + 1] = l end
    for _, l in ipairs(lfree) do lorder[#lorder + 1] = l; out[#out + 1] = l end
    for _, l in ipairs(contr) do lorder[#lorder + 1] = l; rorder[#rorder + 1] = l end
    for _, l in ipairs(rfree) do rorder[#rorder + 1] = l; out[#out + 1] = l end
    for i, l in ipairs(out) do oshape[i] = size[l] end
    local a = permute_to(r, rl, lorder):reshape({ B, L, C })
    local b = permute_to(o, ol, rorder):reshape({ B, C, R })
    return graft.bmm(a, b):reshape(oshape), out
  end

  -- graft.einsum(equation, a, b, ...) or graft.einsum(equation, {a, b, ...}), as
  -- torch.einsum without opt_einsum: operands contracted left to right, pairwise.
  local function einsum(equation, ...)
    if type(equation) ~= "string" then error("einsum: the equation must be a string, got a " .. type(equation), 2) end
    local ops = table.pack(...)
    if ops.n == 1 and type(ops[1]) == "table" and not graft.is_tensor(ops[1]) then
      ops = table.pack(table.unpack(ops[1]))
    end
    for i = 1, ops.n do
      if not graft.is_tensor(ops[i]) then
        error(("einsum: operand %d must be a tensor, got a %s"):format(i, type(ops[i])), 2)
      end
    end
    local arrow = equation:find("->", 1, true)
    local lhs = arrow and equation:sub(1, arrow - 1) or equation
    local rhs = arrow and equation:sub(arrow + 2) or nil
    local terms = parse_terms(lhs, 0, true)
    local out_term = rhs and parse_terms(rhs, arrow + 1, false)[1] or nil
    if #terms ~= ops.n then
      error(("einsum: the equation has %d operand%s but %d tensor%s given"):format(#terms, #terms == 1 and "" or "s",
        ops.n, ops.n == 1 and " was" or "s were"), 2)
    end
    if ops.n == 0 then error("einsum: expected at least one operand", 2) end
    local dtype = ops[1]:dtype()
    for i = 2, ops.n do
      if ops[i]:dtype() ~= dtype then
        error(("einsum: expected all operands to have one dtype, got %s (operand 1) and %s (operand %d)"):format(dtype,
          ops[i]:dtype(), i), 2)
      end
    end

    -- the dims each ellipsis covers
    local K, ell = 0, {}
    for i, term in ipairs(terms) do
      local nd, has = ops[i]:dim(), index_of(term, "...")
      local nlab = #term - (has and 1 or 0)
      if has then
        if nd < nlab then
          error(("einsum: operand %d has %d dims but the equation gives it at least %d subscripts"):format(i, nd, nlab), 2)
        end
        ell[i] = nd - nlab
        if ell[i] > K then K = ell[i] end
      elseif nd ~= nlab then
        error(("einsum: operand %d has %d dims but the equation gives it %d subscripts"):format(i, nd, nlab), 2)
      end
    end

    -- each operand's labels, repeated labels reduced to their diagonal
    local xs, labels, count = {}, {}, {}
    for i, term in ipairs(terms) do
      local ls = {}
      for _, s in ipairs(term) do
        if s == "..." then
          for k = K - ell[i] + 1, K do ls[#ls + 1] = "." .. k end
        else
          ls[#ls + 1] = s
          count[s] = (count[s] or 0) + 1
        end
      end
      local x = ops[i]
      while true do
        local p, q
        for a = 1, #ls do
          for b = a + 1, #ls do
            if ls[a] == ls[b] then p, q = a, b; break end
          end
          if p then break end
        end
        if not p then break end
        local sa, sb = x:size(p), x:size(q)
        if sa ~= sb then
          error(("einsum: subscript %s is repeated in operand %d with sizes %d and %d"):format(ls[p], i, sa, sb), 2)
        end
        x = x:diagonal(0, p, q)
        local l = ls[p]
        table.remove(ls, q)
        table.remove(ls, p)
        ls[#ls + 1] = l
      end
      xs[i], labels[i] = x, ls
    end

    -- sizes agree up to broadcasting of size 1
    local seen = {}
    for i = 1, #xs do
      local sh = xs[i]:shape()
      for d, l in ipairs(labels[i]) do
        local s = seen[l]
        if sh[d] ~= 1 then
          if s and s.size ~= sh[d] then
            if l:sub(1, 1) == "." then
              error(("einsum: the dims covered by the ellipsis do not broadcast: size %d in operand %d and %d in operand %d"):format(
                s.size, s.op, sh[d], i), 2)
            end
            error(("einsum: subscript %s has size %d in operand %d and %d in operand %d"):format(l, s.size, s.op, sh[d], i), 2)
          end
          if not s then seen[l] = { size = sh[d], op = i } end
        end
      end
    end

    -- the output's labels: explicit, or the ellipsis then the letters seen once, sorted
    local out = {}
    if out_term then
      local seen_out = {}
      for _, s in ipairs(out_term) do
        if s == "..." then
          for k = 1, K do out[#out + 1] = "." .. k end
        else
          if seen_out[s] then error(("einsum: output subscript %s appears more than once"):format(s), 2) end
          if not count[s] then error(("einsum: output subscript %s does not appear in any operand"):format(s), 2) end
          seen_out[s] = true
          out[#out + 1] = s
        end
      end
    else
      for k = 1, K do out[#out + 1] = "." .. k end
      local once = {}
      for l, c in pairs(count) do if c == 1 then once[#once + 1] = l end end
      table.sort(once)
      for _, l in ipairs(once) do out[#out + 1] = l end
    end
    local in_out, last = {}, {}
    for _, l in ipairs(out) do in_out[l] = true end
    for i, ls in ipairs(labels) do for _, l in ipairs(ls) do last[l] = i end end

    local r, rl = sum_labels(xs[1], labels[1], function(l) return not in_out[l] and last[l] == 1 end)
    for i = 2, #xs do
      local function keep(l) return in_out[l] or last[l] > i end
      local o, ol = sum_labels(xs[i], labels[i], function(l) return not keep(l) and not index_of(rl, l) end)
      r, rl = contract(r, rl, o, ol, keep)
    end
    return permute_to(r, rl, out)
  end
  graft.einsum = einsum

  -- A dim in Lua's convention (1-based, negative from the end) as 1..max(ndim, 1).
  local function norm_dim(op, d, ndim)
    if math.type(d) ~= "integer" then error(("%s: dim must be an integer, got %s"):format(op, tostring(d)), 3) end
    local n = math.max(ndim, 1)
    local k = d < 0 and d + n + 1 or d
    if k < 1 or k > n then
      error(("%s: dim %d is out of range for a tensor with %d dims"):format(op, d, ndim), 3)
    end
    return k
  end

  -- t:median() -> the lower median of all elements (NaN if any is NaN);
  -- t:median(dim [, keepdim=false]) -> values, indices (0-based int64): along dim, the
  -- lower median, or the first NaN of the row where the row has one (PyTorch 1.13).
  local function median(self, dim, keepdim)
    if not graft.is_tensor(self) then error("median: expected a tensor, got a " .. type(self), 2) end
    if type(dim) == "table" then dim, keepdim = dim.dim, dim.keepdim end
    if dim == nil then
      local flat = self:reshape({ -1 })
      local n = flat:numel()
      if n == 0 then
        if not self:is_floating_point() then error("median: cannot take the median of an empty " .. self:dtype() .. " tensor", 2) end
        return graft.full({}, 0 / 0, { dtype = self:dtype(), device = self:device() })
      end
      -- the position in sorted order: (n - 1) // 2, or the first NaN's (no host sync)
      local pos = graft.no_grad(function()
        local _, idx = flat:sort(1)
        local k = graft.full({ 1 }, (n - 1) // 2, { dtype = "int64", device = self:device() })
        if self:is_floating_point() then
          local nans = flat:isnan():sum():reshape({ 1 })
          k = graft.where(nans:gt(0), nans:neg():add(n), k)
        end
        return idx:gather(1, k)
      end)
      return flat:gather(1, pos):reshape({})
    end
    local nd = self:dim()
    local d = norm_dim("median", dim, nd)
    local x = nd == 0 and self:reshape({ 1 }) or self
    local n = x:size(d)
    if n == 0 then error(("median: expected reduction dim %d to have non-zero size"):format(d), 2) end
    local pos = graft.no_grad(function()
      local _, idx = x:sort(d)
      local shape = x:shape()
      shape[d] = 1
      local k = graft.full(shape, (n - 1) // 2, { dtype = "int64", device = x:device() })
      if x:is_floating_point() then
        local nans = x:isnan():sum(d, true)
        k = graft.where(nans:gt(0), nans:neg():add(n), k)
      end
      return idx:gather(d, k)
    end)
    local values = x:gather(d, pos)
    if nd == 0 then return values:reshape({}), pos:reshape({}) end
    if not keepdim then values, pos = values:squeeze(d), pos:squeeze(d) end
    return values, pos
  end
  M.median, graft.median = median, median

  -- graft.unique(t [, {sorted = true, return_inverse = false, return_counts = false,
  -- dim = nil}]) -> values[, inverse][, counts]: the distinct values of the flattened
  -- tensor, always sorted (sorted = false allows any order in PyTorch; graft's is the
  -- sorted one). Each NaN is a value of its own, as in PyTorch's values; inverse (the
  -- input's shape) and counts stay consistent with them (PyTorch 1.13's are not for NaN).
  local function unique(self, opts, ...)
    if not graft.is_tensor(self) then error("unique: expected a tensor, got a " .. type(self), 2) end
    if type(opts) == "boolean" then
      local rest = table.pack(...)
      opts = { sorted = opts, return_inverse = rest[1], return_counts = rest[2], dim = rest[3] }
    end
    opts = opts or {}
    if type(opts) ~= "table" then error("unique: options must be a table, got a " .. type(opts), 2) end
    if opts.dim ~= nil then
      error("unique: dim is not supported; unique works on the flattened tensor (dim = nil)", 2)
    end
    return graft.no_grad(function()
      local flat = self:reshape({ -1 })
      local n = flat:numel()
      local values, perm = flat:sort(1)
      local new, gid
      if n > 0 then
        new = graft.ones({ n }, { dtype = "bool", device = self:device() })
        if n > 1 then new:narrow(1, 2, n - 1):copy_(values:narrow(1, 2, n - 1):ne(values:narrow(1, 1, n - 1))) end
        gid = new:cumsum(1):sub(1)
        values = values:masked_select(new)
      end
      local res = { values }
      if opts.return_inverse then
        local inv = graft.zeros({ n }, { dtype = "int64", device = self:device() })
        if n > 0 then inv = inv:scatter(1, perm, gid) end
        res[#res + 1] = inv:reshape(self:shape())
      end
      if opts.return_counts then
        local m = values:numel()
        local counts = graft.zeros({ m }, { dtype = "int64", device = self:device() })
        if n > 0 then counts = counts:scatter_add(1, gid, graft.ones({ n }, { dtype = "int64", device = self:device() })) end
        res[#res + 1] = counts
      end
      return table.unpack(res)
    end)
  end
  M.unique, graft.unique = unique, unique

  -- graft.inference_mode(fn, ...): fn(...) with grad mode off, as graft.no_grad (the
  -- mode is restored when fn errors). graft has no separate inference tensors: results
  -- are ordinary tensors that do not require grad, usable later in autograd.
  function graft.inference_mode(fn, ...)
    if type(fn) ~= "function" then error("inference_mode: expected a function, got a " .. type(fn), 2) end
    return graft.no_grad(fn, ...)
  end

  -- t.data: t:detach() (the same storage, requires_grad false). p.data = x copies x into
  -- p in place (no grad recorded) when shapes, dtypes and devices match: graft cannot
  -- make p share x's storage, so a different shape, dtype or device is an error.
  graft._getters.data = function(self) return self:detach() end
  graft._setters.data = function(self, x)
    if not graft.is_tensor(x) then error("data: expected a tensor, got a " .. type(x), 3) end
    local ps, xs = self:shape(), x:shape()
    local same = #ps == #xs
    for i = 1, #ps do if ps[i] ~= xs[i] then same = false end end
    local advice = "; use p:copy_(x) or replace the parameter"
    if not same then
      error(("data: assigning a tensor of shape %s to a tensor of shape %s is not supported%s"):format(shape_str(xs),
        shape_str(ps), advice), 3)
    end
    if self:dtype() ~= x:dtype() then
      error(("data: assigning a %s tensor to a %s tensor is not supported%s"):format(x:dtype(), self:dtype(), advice), 3)
    end
    if self:device() ~= x:device() then
      error(("data: assigning a tensor on %s to a tensor on %s is not supported%s"):format(x:device(), self:device(),
        advice), 3)
    end
    graft.no_grad(function() self:copy_(x) end)
  end
end


return graft
