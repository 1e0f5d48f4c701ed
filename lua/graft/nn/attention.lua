-- graft.nn attention: MultiheadAttention, TransformerEncoderLayer, TransformerEncoder,
-- with PyTorch 1.13's parameters (in_proj_weight, in_proj_bias, out_proj...), state-dict
-- keys, initialisation and forward arithmetic. Inputs are [L, N, E] (sequence first),
-- or [N, L, E] with {batch_first = true}; masks follow PyTorch: a bool mask marks the
-- positions NOT allowed to attend (true = masked), a float mask is added to the scores.
local graft = require("graft")
local base = require("graft.nn.module")
local layers = require("graft.nn.layers")
local containers = require("graft.nn.containers")
local init = require("graft.nn.init_fns")

local Module, Parameter = base.Module, base.Parameter
local need, fail, shape_str = layers.need, layers.fail, base.shape_str
local should_init = base.should_init
local F = graft.F

local A = {}

local function linear(x, w, b)
  local f = F.linear
  if f then return f(x, w, b) end
  local y = x:matmul(w:t())
  if b then y = y + b end
  return y
end

local function softmax_last(x)
  local f = F.softmax
  if f then return f(x, -1) end
  local e = (x - x:amax(-1, { keepdim = true })):exp()
  return e / e:sum(-1, { keepdim = true })
end

-- A mask as a float tensor to add to the scores (bool true -> -inf).
local function float_mask(mask, dtype)
  if mask:dtype() == "bool" then
    return graft.zeros(mask:shape(), { dtype = dtype }):masked_fill(mask, -math.huge)
  end
  return mask
end

---------------------------------------------------------------------------------------
-- MultiheadAttention

local MHA = Module:extend("MultiheadAttention", { typename = "nn.MultiheadAttention" })
A.MultiheadAttention = MHA

-- nn.MultiheadAttention(embed_dim, num_heads [, {dropout = 0, bias = true,
-- add_bias_kv = false, add_zero_attn = false, kdim, vdim, batch_first = false}])
function MHA:__init(embed_dim, num_heads, o)
  o = o or {}
  self.embed_dim = embed_dim
  self.kdim = o.kdim or embed_dim
  self.vdim = o.vdim or embed_dim
  self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
  self.num_heads = num_heads
  self.dropout = o.dropout or 0.0
  self.batch_first = o.batch_first or false
  self.head_dim = embed_dim // num_heads
  if self.head_dim * num_heads ~= embed_dim then
    error("MultiheadAttention: embed_dim must be divisible by num_heads", 3)
  end
  local dt = { dtype = o.dtype or "float32" }
  local function P(...) return Parameter(graft.empty({ ... }, dt)) end
  if not self._qkv_same_embed_dim then
    self.q_proj_weight = P(embed_dim, embed_dim)
    self.k_proj_weight = P(embed_dim, self.kdim)
    self.v_proj_weight = P(embed_dim, self.vdim)
    self:register_parameter("in_proj_weight", nil)
  else
    self.in_proj_weight = P(3 * embed_dim, embed_dim)
    self:register_parameter("q_proj_weight", nil)
    self:register_parameter("k_proj_weight", nil)
    self:register_parameter("v_proj_weight", nil)
  end
  if o.bias ~= false then
    self.in_proj_bias = P(3 * embed_dim)
  else
    self:register_parameter("in_proj_bias", nil)
  end
  self.out_proj = layers.NonDynamicallyQuantizableLinear(embed_dim, embed_dim,
    { bias = o.bias ~= false, dtype = dt.dtype, init = o.init })
  if o.add_bias_kv then
    self.bias_k = P(1, 1, embed_dim)
    self.bias_v = P(1, 1, embed_dim)
  end
  self.add_zero_attn = o.add_zero_attn or false
  if should_init(o) then self:_reset_parameters() end
end

function MHA:_reset_parameters()
  if self._qkv_same_embed_dim then
    init.xavier_uniform_(self.in_proj_weight)
  else
    init.xavier_uniform_(self.q_proj_weight)
    init.xavier_uniform_(self.k_proj_weight)
    init.xavier_uniform_(self.v_proj_weight)
  end
  if self.in_proj_bias then
    init.constant_(self.in_proj_bias, 0.0)
    init.constant_(self.out_proj.bias, 0.0)
  end
  if self.bias_k then init.xavier_normal_(self.bias_k) end
  if self.bias_v then init.xavier_normal_(self.bias_v) end
end

function MHA:_label() return ("MultiheadAttention(%d, %d)"):format(self.embed_dim, self.num_heads) end

-- forward(query, key, value [, {key_padding_mask, need_weights = true, attn_mask,
-- average_attn_weights = true}]) -> output, weights (nil unless need_weights).
-- key_padding_mask [N, S]; attn_mask [L, S] or [N * heads, L, S].
function MHA:forward(query, key, value, o)
  o = o or {}
  key, value = key or query, value or key or query
  for _, t in ipairs({ query, key, value }) do
    if not graft.is_tensor(t) then fail(self, "expected tensor query, key and value") end
  end
  if query:dim() ~= 3 then
    fail(self, "expected a batched 3D query (%s), got %s", self.batch_first and "[N, L, E]" or "[L, N, E]",
      shape_str(query))
  end
  local E, H, hd = self.embed_dim, self.num_heads, self.head_dim
  if query:size(3) ~= E then fail(self, "expected query with embed_dim %d, got %s", E, shape_str(query)) end
  if key:size(3) ~= self.kdim then fail(self, "expected key with %d features, got %s", self.kdim, shape_str(key)) end
  if value:size(3) ~= self.vdim then
    fail(self, "expected value with %d features, got %s", self.vdim, shape_str(value))
  end
  local same = query == key and key == value
  if self.batch_first then
    query = query:transpose(1, 2)
    if same then key, value = query, query else key, value = key:transpose(1, 2), value:transpose(1, 2) end
  end
  local tgt_len, bsz = query:size(1), query:size(2)
  local src_len = key:size(1)
  if key:size(2) ~= bsz or value:size(2) ~= bsz or value:size(1) ~= src_len then
    fail(self, "query %s, key %s and value %s do not match", shape_str(query), shape_str(key), shape_str(value))
  end

  -- input projections
  local q, k, v
  local b = self.in_proj_bias
  local bq, bk, bv
  if b then bq, bk, bv = b:narrow(1, 1, E), b:narrow(1, E + 1, E), b:narrow(1, 2 * E + 1, E) end
  if self._qkv_same_embed_dim then
    local w = self.in_proj_weight
    if same then
      local qkv = linear(query, w, b)
      q, k, v = qkv:narrow(3, 1, E), qkv:narrow(3, E + 1, E), qkv:narrow(3, 2 * E + 1, E)
    else
      q = linear(query, w:narrow(1, 1, E), bq)
      k = linear(key, w:narrow(1, E + 1, E), bk)
      v = linear(value, w:narrow(1, 2 * E + 1, E), bv)
    end
  else
    q = linear(query, self.q_proj_weight, bq)
    k = linear(key, self.k_proj_weight, bk)
    v = linear(value, self.v_proj_weight, bv)
  end

  local attn_mask = o.attn_mask
  local kpm = o.key_padding_mask
  if attn_mask ~= nil then
    if attn_mask:dim() == 2 then
      if attn_mask:size(1) ~= tgt_len or attn_mask:size(2) ~= src_len then
        fail(self, "The shape of the 2D attn_mask is %s, but should be [%d, %d].", shape_str(attn_mask), tgt_len,
          src_len)
      end
      attn_mask = attn_mask:unsqueeze(1)
    elseif attn_mask:dim() == 3 then
      if attn_mask:size(1) ~= bsz * H or attn_mask:size(2) ~= tgt_len or attn_mask:size(3) ~= src_len then
        fail(self, "The shape of the 3D attn_mask is %s, but should be [%d, %d, %d].", shape_str(attn_mask),
          bsz * H, tgt_len, src_len)
      end
    else
      fail(self, "attn_mask's dimension %d is not supported", attn_mask:dim())
    end
  end

  if self.bias_k then
    k = graft.cat({ k, self.bias_k:expand(1, bsz, E) }, 1)
    v = graft.cat({ v, self.bias_v:expand(1, bsz, E) }, 1)
    if attn_mask ~= nil then
      local s = attn_mask:shape(); s[#s] = 1
      attn_mask = graft.cat({ attn_mask, graft.zeros(s, { dtype = attn_mask:dtype() }) }, -1)
    end
    if kpm ~= nil then
      kpm = graft.cat({ kpm, graft.zeros(kpm:size(1), 1, { dtype = kpm:dtype() }) }, -1)
    end
  end

  -- [L, N, E] -> [N*H, L, hd]
  q = q:contiguous():view(tgt_len, bsz * H, hd):transpose(1, 2)
  k = k:contiguous():view(k:size(1), bsz * H, hd):transpose(1, 2)
  v = v:contiguous():view(v:size(1), bsz * H, hd):transpose(1, 2)

  if self.add_zero_attn then
    k = graft.cat({ k, graft.zeros(bsz * H, 1, hd, { dtype = k:dtype() }) }, 2)
    v = graft.cat({ v, graft.zeros(bsz * H, 1, hd, { dtype = v:dtype() }) }, 2)
    if attn_mask ~= nil then
      local s = attn_mask:shape(); s[#s] = 1
      attn_mask = graft.cat({ attn_mask, graft.zeros(s, { dtype = attn_mask:dtype() }) }, -1)
    end
    if kpm ~= nil then
      kpm = graft.cat({ kpm, graft.zeros(kpm:size(1), 1, { dtype = kpm:dtype() }) }, -1)
    end
  end
  local S = k:size(2)

  -- merge key padding and attention masks into one additive float mask
  if kpm ~= nil then
    if kpm:dim() ~= 2 or kpm:size(1) ~= bsz or kpm:size(2) ~= S then
      fail(self, "expected key_padding_mask of shape [%d, %d], got %s", bsz, S, shape_str(kpm))
    end
    local m = kpm:view(bsz, 1, 1, S):expand(bsz, H, 1, S):reshape(bsz * H, 1, S)
    if attn_mask == nil then
      attn_mask = m
    elseif attn_mask:dtype() == "bool" and m:dtype() == "bool" then
      attn_mask = attn_mask:logical_or(m)
    else
      attn_mask = float_mask(attn_mask, q:dtype()) + float_mask(m, q:dtype())
    end
  end
  if attn_mask ~= nil then attn_mask = float_mask(attn_mask, q:dtype()) end

  -- scaled dot product
  local dropout_p = self.training and self.dropout or 0.0
  q = q / math.sqrt(hd)
  local scores
  if attn_mask ~= nil then
    scores = graft.baddbmm(attn_mask, q, k:transpose(2, 3))
  else
    scores = q:bmm(k:transpose(2, 3))
  end
  local attn = softmax_last(scores)
  if dropout_p > 0 then attn = need("dropout")(attn, { p = dropout_p, training = true }) end
  local out = attn:bmm(v)                                     -- [N*H, L, hd]
  out = out:transpose(1, 2):contiguous():view(tgt_len * bsz, E)
  out = linear(out, self.out_proj.weight, self.out_proj.bias):view(tgt_len, bsz, E)
  if self.batch_first then out = out:transpose(1, 2) end
  if o.need_weights == false then return out, nil end
  local w = attn:view(bsz, H, tgt_len, S)
  if o.average_attn_weights ~= false then w = w:mean(2) end
  return out, w
end

---------------------------------------------------------------------------------------
-- TransformerEncoderLayer

local TEL = Module:extend("TransformerEncoderLayer", { typename = "nn.TransformerEncoderLayer" })
A.TransformerEncoderLayer = TEL

local ACTIVATIONS = {
  relu = function(x)
    local f = F.relu
    if f then return f(x) end
    return x:relu()
  end,
  gelu = function(x) return need("gelu")(x) end,
}

-- nn.TransformerEncoderLayer(d_model, nhead [, {dim_feedforward = 2048, dropout = 0.1,
-- activation = "relu" | "gelu" | function | module, layer_norm_eps = 1e-5,
-- batch_first = false, norm_first = false}])
function TEL:__init(d_model, nhead, o)
  o = o or {}
  local dff = o.dim_feedforward or 2048
  local dropout = o.dropout
  if dropout == nil then dropout = 0.1 end
  local common = { dtype = o.dtype, init = o.init }
  self.self_attn = MHA(d_model, nhead, { dropout = dropout, batch_first = o.batch_first, dtype = o.dtype,
    init = o.init })
  self.linear1 = layers.Linear(d_model, dff, common)
  self.dropout = layers.Dropout(dropout)
  self.linear2 = layers.Linear(dff, d_model, common)
  self.norm_first = o.norm_first or false
  local eps = o.layer_norm_eps or 1e-5
  self.norm1 = layers.LayerNorm(d_model, { eps = eps, dtype = o.dtype })
  self.norm2 = layers.LayerNorm(d_model, { eps = eps, dtype = o.dtype })
  self.dropout1 = layers.Dropout(dropout)
  self.dropout2 = layers.Dropout(dropout)
  local act = o.activation or "relu"
  if type(act) == "string" then
    local f = ACTIVATIONS[act]
    if not f then error(("activation should be relu/gelu, not %s"):format(act), 3) end
    self.activation = f
  else
    self.activation = act
  end
end

function TEL:_sa_block(x, attn_mask, kpm)
  local out = self.self_attn(x, x, x, { attn_mask = attn_mask, key_padding_mask = kpm, need_weights = false })
  return self.dropout1(out)
end

function TEL:_ff_block(x)
  x = self.linear2(self.dropout(self.activation(self.linear1(x))))
  return self.dropout2(x)
end

-- forward(src [, {src_mask, src_key_padding_mask}])
function TEL:forward(src, o)
  o = o or {}
  local x = src
  if self.norm_first then
    x = x + self:_sa_block(self.norm1(x), o.src_mask, o.src_key_padding_mask)
    x = x + self:_ff_block(self.norm2(x))
  else
    x = self.norm1(x + self:_sa_block(x, o.src_mask, o.src_key_padding_mask))
    x = self.norm2(x + self:_ff_block(x))
  end
  return x
end

---------------------------------------------------------------------------------------
-- TransformerEncoder

local TE = Module:extend("TransformerEncoder", { typename = "nn.TransformerEncoder" })
A.TransformerEncoder = TE

-- nn.TransformerEncoder(encoder_layer, num_layers [, {norm = module}]): num_layers
-- deep copies of encoder_layer under layers.0, layers.1, ...
function TE:__init(layer, num_layers, o)
  o = o or {}
  if not base.is_module(layer) then error("TransformerEncoder: encoder_layer must be a module", 3) end
  local list = {}
  for i = 1, num_layers do list[i] = layer:clone() end
  self.layers = containers.ModuleList(list)
  self.num_layers = num_layers
  self.norm = o.norm
end

-- forward(src [, {mask, src_key_padding_mask}])
function TE:forward(src, o)
  o = o or {}
  local out = src
  for _, layer in ipairs(self.layers) do
    out = layer(out, { src_mask = o.mask, src_key_padding_mask = o.src_key_padding_mask })
  end
  if self.norm then out = self.norm(out) end
  return out
end

return A
