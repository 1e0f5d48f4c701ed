-- graft.nn layers: Linear, Bilinear, convolutions, norms, Embedding, Dropout,
-- activations, pooling, Flatten, Identity. Each is a Module subclass over graft.F with
-- PyTorch's parameters (names, shapes, registration order), default initialisation,
-- extra_repr and state-dict version; errors name the layer and the input's shape.
-- Constructors take PyTorch's positional arguments, then an options table for the
-- keyword ones, plus {dtype = ...} and {init = false} (parameters left uninitialised).
local graft = require("graft")
local base = require("graft.nn.module")
local init = require("graft.nn.init_fns")

local Module, Parameter = base.Module, base.Parameter
local pystr, shape_str = base.pystr, base.shape_str
local F = graft.F

local L = {}

---------------------------------------------------------------------------------------
-- Helpers

-- graft.F.name, or an error saying the op is missing from this build.
local function need(name)
  local f = F[name]
  if f == nil then error(("graft.F.%s is not available in this build"):format(name), 0) end
  return f
end
L.need = need

-- A layer's error: "<label>: <message>", raised without a position (the module call
-- adds the path).
local function fail(self, fmt, ...)
  error(self:_label() .. ": " .. fmt:format(...), 0)
end
L.fail = fail

local function opts_of(o, name)
  if o == nil then return {} end
  if type(o) ~= "table" or graft.is_tensor(o) or base.is_module(o) then
    error(("%s: options must be a table, got %s"):format(name, type(o)), 3)
  end
  return o
end

local function new_param(shape, o)
  return Parameter(graft.empty(shape, { dtype = o.dtype or "float32" }))
end

local function tuple(v, n, what, name)
  if type(v) == "number" then
    local t = {}
    for i = 1, n do t[i] = v end
    return t
  end
  if type(v) == "table" and #v == n then
    local t = {}
    for i = 1, n do t[i] = v[i] end
    return t
  end
  error(("%s: %s must be a number or a list of %d numbers"):format(name, what, n), 3)
end

-- Whether to initialise (not with {init = false}, nor inside nn.skip_init).
local should_init = base.should_init

local function with_nograd(fn) graft.no_grad(fn) end

-- Default init of Linear / Conv: kaiming_uniform(a = sqrt(5)) and bias in
-- U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
local function reset_linear_like(weight, bias)
  init.kaiming_uniform_(weight, { a = math.sqrt(5) })
  if bias then
    local fan_in = init.calculate_fan_in_and_fan_out(weight)
    local bound = fan_in > 0 and 1 / math.sqrt(fan_in) or 0
    init.uniform_(bias, -bound, bound)
  end
end

---------------------------------------------------------------------------------------
-- Identity, Linear, Bilinear

local Identity = Module:extend("Identity", { typename = "nn.Identity" })
L.Identity = Identity
function Identity:__init() end
function Identity:forward(x) return x end

local Linear = Module:extend("Linear", { typename = "nn.Linear" })
L.Linear = Linear

-- nn.Linear(in_features, out_features [, {bias = true, dtype =, init =}])
function Linear:__init(in_features, out_features, o)
  o = opts_of(o, "Linear")
  if math.type(in_features) ~= "integer" or math.type(out_features) ~= "integer" then
    error(("Linear: in_features and out_features must be integers, got %s and %s"):format(
      tostring(in_features), tostring(out_features)), 3)
  end
  self.in_features, self.out_features = in_features, out_features
  self.weight = new_param({ out_features, in_features }, o)
  if o.bias ~= false then
    self.bias = new_param({ out_features }, o)
  else
    self:register_parameter("bias", nil)
  end
  if should_init(o) then self:reset_parameters() end
end

function Linear:reset_parameters() reset_linear_like(self.weight, self.bias) end

function Linear:_label() return ("%s(%d, %d)"):format(self:_get_name(), self.in_features, self.out_features) end

function Linear:extra_repr()
  return ("in_features=%d, out_features=%d, bias=%s"):format(self.in_features, self.out_features,
    pystr(self.bias ~= nil))
end

function Linear:forward(x)
  if not graft.is_tensor(x) then fail(self, "expected a tensor input, got %s", type(x)) end
  if x:dim() == 0 or x:size(-1) ~= self.in_features then
    fail(self, "expected input with %d features in the last dim, got %s", self.in_features, shape_str(x))
  end
  local f = F.linear
  if f then return f(x, self.weight, self.bias) end
  local y = x:matmul(self.weight:t())
  if self.bias then y = y + self.bias end
  return y
end

-- PyTorch's MultiheadAttention.out_proj class (a Linear under another name).
local NDQLinear = Linear:extend("NonDynamicallyQuantizableLinear", { typename = "nn.NonDynamicallyQuantizableLinear" })
L.NonDynamicallyQuantizableLinear = NDQLinear

local Bilinear = Module:extend("Bilinear", { typename = "nn.Bilinear" })
L.Bilinear = Bilinear

-- nn.Bilinear(in1_features, in2_features, out_features [, {bias = true}])
function Bilinear:__init(in1, in2, out, o)
  o = opts_of(o, "Bilinear")
  self.in1_features, self.in2_features, self.out_features = in1, in2, out
  self.weight = new_param({ out, in1, in2 }, o)
  if o.bias ~= false then self.bias = new_param({ out }, o) else self:register_parameter("bias", nil) end
  if should_init(o) then self:reset_parameters() end
end

function Bilinear:reset_parameters()
  local bound = 1 / math.sqrt(self.weight:size(2))
  init.uniform_(self.weight, -bound, bound)
  if self.bias then init.uniform_(self.bias, -bound, bound) end
end

function Bilinear:_label()
  return ("Bilinear(%d, %d, %d)"):format(self.in1_features, self.in2_features, self.out_features)
end

function Bilinear:extra_repr()
  return ("in1_features=%d, in2_features=%d, out_features=%d, bias=%s"):format(self.in1_features,
    self.in2_features, self.out_features, pystr(self.bias ~= nil))
end

function Bilinear:forward(x1, x2)
  if not graft.is_tensor(x1) or not graft.is_tensor(x2) then fail(self, "expected two tensor inputs") end
  if x1:dim() == 0 or x1:size(-1) ~= self.in1_features then
    fail(self, "expected input1 with %d features in the last dim, got %s", self.in1_features, shape_str(x1))
  end
  if x2:dim() == 0 or x2:size(-1) ~= self.in2_features then
    fail(self, "expected input2 with %d features in the last dim, got %s", self.in2_features, shape_str(x2))
  end
  return need("bilinear")(x1, x2, self.weight, self.bias)
end

---------------------------------------------------------------------------------------
-- Convolutions

local ConvNd = Module:extend("_ConvNd", { typename = "nn._ConvNd" })
L._ConvNd = ConvNd

local PAD_MODES = { zeros = true, reflect = true, replicate = true, circular = true }

-- Shared constructor: n spatial dims; transposed weights are [in, out/groups, k...].
local function conv_init(self, name, n, transposed, in_ch, out_ch, kernel_size, o)
  o = opts_of(o, name)
  if math.type(in_ch) ~= "integer" or math.type(out_ch) ~= "integer" then
    error(("%s: in_channels and out_channels must be integers"):format(name), 4)
  end
  local groups = o.groups or 1
  if groups <= 0 then error(("%s: groups must be a positive integer"):format(name), 4) end
  if in_ch % groups ~= 0 then error(("%s: in_channels must be divisible by groups"):format(name), 4) end
  if out_ch % groups ~= 0 then error(("%s: out_channels must be divisible by groups"):format(name), 4) end
  local padding = o.padding or 0
  local padding_mode = o.padding_mode or "zeros"
  if not PAD_MODES[padding_mode] then
    error(("%s: padding_mode must be one of zeros, reflect, replicate, circular, but got padding_mode='%s'")
      :format(name, tostring(padding_mode)), 4)
  end
  local stride = tuple(o.stride or 1, n, "stride", name)
  if type(padding) == "string" then
    if padding ~= "same" and padding ~= "valid" then
      error(("%s: Invalid padding string '%s', should be one of {'valid', 'same'}"):format(name, padding), 4)
    end
    if padding == "same" then
      for i = 1, n do
        if stride[i] ~= 1 then
          error(("%s: padding='same' is not supported for strided convolutions"):format(name), 4)
        end
      end
    end
  else
    padding = tuple(padding, n, "padding", name)
  end
  self.in_channels, self.out_channels = in_ch, out_ch
  self.kernel_size = tuple(kernel_size, n, "kernel_size", name)
  self.stride = stride
  self.padding = padding
  self.dilation = tuple(o.dilation or 1, n, "dilation", name)
  self.transposed = transposed
  self.output_padding = tuple(o.output_padding or 0, n, "output_padding", name)
  self.groups = groups
  self.padding_mode = padding_mode
  local shape = transposed and { in_ch, out_ch // groups } or { out_ch, in_ch // groups }
  for i = 1, n do shape[#shape + 1] = self.kernel_size[i] end
  self.weight = new_param(shape, o)
  if o.bias ~= false then self.bias = new_param({ out_ch }, o) else self:register_parameter("bias", nil) end
  self._n = n
  if should_init(o) then self:reset_parameters() end
end

function ConvNd:reset_parameters() reset_linear_like(self.weight, self.bias) end

function ConvNd:_label()
  return ("%s(%d, %d)"):format(self:_get_name(), self.in_channels, self.out_channels)
end

local function all_eq(t, v)
  if type(t) ~= "table" then return false end
  for _, x in ipairs(t) do
    if x ~= v then return false end
  end
  return true
end

function ConvNd:extra_repr()
  local s = ("%d, %d, kernel_size=%s, stride=%s"):format(self.in_channels, self.out_channels,
    pystr(self.kernel_size), pystr(self.stride))
  if not all_eq(self.padding, 0) then s = s .. ", padding=" .. pystr(self.padding) end
  if not all_eq(self.dilation, 1) then s = s .. ", dilation=" .. pystr(self.dilation) end
  if not all_eq(self.output_padding, 0) then s = s .. ", output_padding=" .. pystr(self.output_padding) end
  if self.groups ~= 1 then s = s .. ", groups=" .. self.groups end
  if self.bias == nil then s = s .. ", bias=False" end
  if self.padding_mode ~= "zeros" then s = s .. ", padding_mode=" .. self.padding_mode end
  return s
end

-- Checks x is [N, C, *spatial] or unbatched [C, *spatial] with C = in_channels.
function ConvNd:_check_input(x)
  local n = self._n
  if not graft.is_tensor(x) then fail(self, "expected a tensor input, got %s", type(x)) end
  local d = x:dim()
  if d ~= n + 1 and d ~= n + 2 then
    fail(self, "expected %dD (unbatched) or %dD (batched) input, got %s", n + 1, n + 2, shape_str(x))
  end
  local c = x:size(d - n)
  if c ~= self.in_channels then
    fail(self, "expected input with %d channels, got %s", self.in_channels, shape_str(x))
  end
end

-- Non-zero padding modes pad explicitly, then convolve without padding.
function ConvNd:_pad_input(x)
  if self.padding_mode == "zeros" then return x, self.padding end
  local pad = {}
  local p = self.padding
  if type(p) == "string" then fail(self, "padding='%s' needs padding_mode='zeros'", p) end
  for i = #p, 1, -1 do pad[#pad + 1] = p[i]; pad[#pad + 1] = p[i] end
  return need("pad")(x, pad, { mode = self.padding_mode }), 0
end

-- The forward of Conv1d and Conv2d: check, pad (non-zero padding modes), convolve.
local function conv_forward(self, x, fname)
  self:_check_input(x)
  local xin, padding = self:_pad_input(x)
  return need(fname)(xin, self.weight, self.bias,
    { stride = self.stride, padding = padding, dilation = self.dilation, groups = self.groups })
end

local Conv1d = ConvNd:extend("Conv1d", { typename = "nn.Conv1d" })
L.Conv1d = Conv1d
-- nn.Conv1d(in, out, kernel_size [, {stride, padding, dilation, groups, bias, padding_mode}])
function Conv1d:__init(i, o_, k, o) conv_init(self, "Conv1d", 1, false, i, o_, k, o) end
function Conv1d:forward(x) return conv_forward(self, x, "conv1d") end

local Conv2d = ConvNd:extend("Conv2d", { typename = "nn.Conv2d" })
L.Conv2d = Conv2d
-- nn.Conv2d(in, out, kernel_size [, {stride, padding, dilation, groups, bias, padding_mode}])
function Conv2d:__init(i, o_, k, o) conv_init(self, "Conv2d", 2, false, i, o_, k, o) end
function Conv2d:forward(x) return conv_forward(self, x, "conv2d") end

local ConvTranspose2d = ConvNd:extend("ConvTranspose2d", { typename = "nn.ConvTranspose2d" })
L.ConvTranspose2d = ConvTranspose2d
-- nn.ConvTranspose2d(in, out, kernel_size [, {stride, padding, output_padding, groups,
-- bias, dilation}])
function ConvTranspose2d:__init(i, o_, k, o)
  o = opts_of(o, "ConvTranspose2d")
  if o.padding_mode and o.padding_mode ~= "zeros" then
    error('ConvTranspose2d: Only "zeros" padding mode is supported for ConvTranspose2d', 3)
  end
  if type(o.padding) == "string" then
    error("ConvTranspose2d: padding must be a number or a list of 2 numbers", 3)
  end
  conv_init(self, "ConvTranspose2d", 2, true, i, o_, k, o)
end
function ConvTranspose2d:forward(x)
  self:_check_input(x)
  return need("conv_transpose2d")(x, self.weight, self.bias, {
    stride = self.stride, padding = self.padding, output_padding = self.output_padding,
    groups = self.groups, dilation = self.dilation,
  })
end

---------------------------------------------------------------------------------------
-- Normalisation

-- BatchNorm base (PyTorch's _NormBase/_BatchNorm): state-dict version 2.
-- The affine weight (ones) and bias (zeros) of BatchNorm, LayerNorm and GroupNorm, or
-- both registered as nil when the layer has none.
local function norm_affine(self, on, shape, o)
  if on then
    self.weight = new_param(shape, o)
    self.bias = new_param(shape, o)
  else
    self:register_parameter("weight", nil)
    self:register_parameter("bias", nil)
  end
end

local function norm_affine_reset(self)
  if self.weight then
    init.ones_(self.weight)
    init.zeros_(self.bias)
  end
end

local BatchNorm = Module:extend("_BatchNorm", { typename = "nn._BatchNorm", version = 2 })
BatchNorm.__batchnorm = true
L._BatchNorm = BatchNorm

-- nn.BatchNorm2d(num_features [, {eps = 1e-5, momentum = 0.1 (false or graft.None: a
-- cumulative average, PyTorch's None), affine = true, track_running_stats = true}])
function BatchNorm:__init(num_features, o)
  o = opts_of(o, self:_get_name())
  if math.type(num_features) ~= "integer" then
    error(("%s: num_features must be an integer, got %s"):format(self:_get_name(), tostring(num_features)), 3)
  end
  self.num_features = num_features
  self.eps = o.eps or 1e-5
  if o.momentum == false or o.momentum == graft.None then
    self.momentum = nil
  else
    self.momentum = o.momentum or 0.1
  end
  self.affine = o.affine ~= false
  self.track_running_stats = o.track_running_stats ~= false
  local dtype = o.dtype or "float32"
  norm_affine(self, self.affine, { num_features }, o)
  if self.track_running_stats then
    self:register_buffer("running_mean", graft.zeros(num_features, { dtype = dtype }))
    self:register_buffer("running_var", graft.ones(num_features, { dtype = dtype }))
    self:register_buffer("num_batches_tracked", graft.zeros({}, { dtype = "int64" }))
  else
    self:register_buffer("running_mean", nil)
    self:register_buffer("running_var", nil)
    self:register_buffer("num_batches_tracked", nil)
  end
  if should_init(o) then self:reset_parameters() end
end

function BatchNorm:reset_running_stats()
  if self.track_running_stats then
    with_nograd(function()
      self.running_mean:zero_()
      self.running_var:fill_(1)
      self.num_batches_tracked:zero_()
    end)
  end
end

function BatchNorm:reset_parameters()
  self:reset_running_stats()
  norm_affine_reset(self)
end

function BatchNorm:_label() return ("%s(%d)"):format(self:_get_name(), self.num_features) end

function BatchNorm:extra_repr()
  return ("%d, eps=%s, momentum=%s, affine=%s, track_running_stats=%s"):format(self.num_features,
    pystr(self.eps), pystr(self.momentum), pystr(self.affine), pystr(self.track_running_stats))
end

-- Checkpoints without num_batches_tracked (metadata version missing or < 2) load
-- without reporting it missing; the counter keeps its value (PyTorch 2.x).
function BatchNorm:_load_fixup(state, prefix, local_meta)
  local version = local_meta and local_meta.version
  if (version == nil or version < 2) and self.track_running_stats then
    local key = prefix .. "num_batches_tracked"
    if state.vals[key] == nil and self.num_batches_tracked then
      state.keys[#state.keys + 1] = key
      state.vals[key] = self.num_batches_tracked
    end
  end
end

function BatchNorm:forward(x)
  if not graft.is_tensor(x) then fail(self, "expected a tensor input, got %s", type(x)) end
  self:_check_input_dim(x)
  if x:size(2) ~= self.num_features then
    fail(self, "expected input with %d channels, got %s", self.num_features, shape_str(x))
  end
  local training = self.training
  if training then
    local per_channel = x:numel() // self.num_features
    if per_channel <= 1 then
      fail(self, "Expected more than 1 value per channel when training, got input size %s", shape_str(x))
    end
  end
  local bn_training = training or (self.running_mean == nil and self.running_var == nil)
  local track = not training or self.track_running_stats
  return need("batch_norm")(x, track and self.running_mean or nil, track and self.running_var or nil, {
    weight = self.weight, bias = self.bias, training = bn_training,
    momentum = self.momentum, cumulative = self.momentum == nil, eps = self.eps,
    num_batches_tracked = (training and self.track_running_stats) and self.num_batches_tracked or nil,
  })
end

local BatchNorm1d = BatchNorm:extend("BatchNorm1d", { typename = "nn.BatchNorm1d" })
L.BatchNorm1d = BatchNorm1d
function BatchNorm1d:_check_input_dim(x)
  if x:dim() ~= 2 and x:dim() ~= 3 then fail(self, "expected 2D or 3D input (got %dD input)", x:dim()) end
end

local BatchNorm2d = BatchNorm:extend("BatchNorm2d", { typename = "nn.BatchNorm2d" })
L.BatchNorm2d = BatchNorm2d
function BatchNorm2d:_check_input_dim(x)
  if x:dim() ~= 4 then fail(self, "expected 4D input (got %dD input)", x:dim()) end
end

local LayerNorm = Module:extend("LayerNorm", { typename = "nn.LayerNorm" })
L.LayerNorm = LayerNorm

-- nn.LayerNorm(normalized_shape [, {eps = 1e-5, elementwise_affine = true}]):
-- normalized_shape a number or a list (the trailing dims).
function LayerNorm:__init(normalized_shape, o)
  o = opts_of(o, "LayerNorm")
  if type(normalized_shape) == "number" then normalized_shape = { normalized_shape } end
  if type(normalized_shape) ~= "table" then
    error("LayerNorm: normalized_shape must be a number or a list of numbers", 3)
  end
  local ns = {}
  for i, v in ipairs(normalized_shape) do ns[i] = v end
  self.normalized_shape = ns
  self.eps = o.eps or 1e-5
  self.elementwise_affine = o.elementwise_affine ~= false
  norm_affine(self, self.elementwise_affine, ns, o)
  if should_init(o) then self:reset_parameters() end
end

function LayerNorm:reset_parameters()
  norm_affine_reset(self)
end

function LayerNorm:_label() return ("LayerNorm(%s)"):format(pystr(self.normalized_shape)) end

function LayerNorm:extra_repr()
  return ("%s, eps=%s, elementwise_affine=%s"):format(pystr(self.normalized_shape), pystr(self.eps),
    pystr(self.elementwise_affine))
end

function LayerNorm:forward(x)
  if not graft.is_tensor(x) then fail(self, "expected a tensor input, got %s", type(x)) end
  local ns, d = self.normalized_shape, x:dim()
  local ok = d >= #ns
  for i = 1, #ns do
    if ok and x:size(d - #ns + i) ~= ns[i] then ok = false end
  end
  if not ok then
    fail(self, "expected input with shape [*, %s], got %s", table.concat(ns, ", "), shape_str(x))
  end
  return need("layer_norm")(x, ns, { weight = self.weight, bias = self.bias, eps = self.eps })
end

local GroupNorm = Module:extend("GroupNorm", { typename = "nn.GroupNorm" })
L.GroupNorm = GroupNorm

-- nn.GroupNorm(num_groups, num_channels [, {eps = 1e-5, affine = true}])
function GroupNorm:__init(num_groups, num_channels, o)
  o = opts_of(o, "GroupNorm")
  if num_channels % num_groups ~= 0 then error("GroupNorm: num_channels must be divisible by num_groups", 3) end
  self.num_groups, self.num_channels = num_groups, num_channels
  self.eps = o.eps or 1e-5
  self.affine = o.affine ~= false
  norm_affine(self, self.affine, { num_channels }, o)
  if should_init(o) then self:reset_parameters() end
end

function GroupNorm:reset_parameters()
  norm_affine_reset(self)
end

function GroupNorm:_label() return ("GroupNorm(%d, %d)"):format(self.num_groups, self.num_channels) end

function GroupNorm:extra_repr()
  return ("%d, %d, eps=%s, affine=%s"):format(self.num_groups, self.num_channels, pystr(self.eps), pystr(self.affine))
end

function GroupNorm:forward(x)
  if not graft.is_tensor(x) then fail(self, "expected a tensor input, got %s", type(x)) end
  if x:dim() < 2 or x:size(2) ~= self.num_channels then
    fail(self, "expected input with %d channels, got %s", self.num_channels, shape_str(x))
  end
  return need("group_norm")(x, self.num_groups, { weight = self.weight, bias = self.bias, eps = self.eps })
end

---------------------------------------------------------------------------------------
-- Embedding, Dropout

local Embedding = Module:extend("Embedding", { typename = "nn.Embedding" })
L.Embedding = Embedding

-- nn.Embedding(num_embeddings, embedding_dim [, {padding_idx (0-based, as the index
-- values), max_norm, norm_type, scale_grad_by_freq, sparse, _weight}])
function Embedding:__init(num, dim, o)
  o = opts_of(o, "Embedding")
  self.num_embeddings, self.embedding_dim = num, dim
  local pi = o.padding_idx
  if pi ~= nil then
    if pi > 0 then
      if pi >= num then error("Embedding: Padding_idx must be within num_embeddings", 3) end
    elseif pi < 0 then
      if pi < -num then error("Embedding: Padding_idx must be within num_embeddings", 3) end
      pi = num + pi
    end
  end
  self.padding_idx = pi
  self.max_norm = o.max_norm
  self.norm_type = o.norm_type or 2.0
  self.scale_grad_by_freq = o.scale_grad_by_freq or false
  self.sparse = o.sparse or false
  if o._weight then
    local w = o._weight
    if w:dim() ~= 2 or w:size(1) ~= num or w:size(2) ~= dim then
      error("Embedding: Shape of weight does not match num_embeddings and embedding_dim", 3)
    end
    self.weight = Parameter(w)
  else
    self.weight = new_param({ num, dim }, o)
    if should_init(o) then self:reset_parameters() end
  end
end

function Embedding:reset_parameters()
  init.normal_(self.weight)
  if self.padding_idx ~= nil then
    with_nograd(function() self.weight[self.padding_idx + 1]:fill_(0) end)
  end
end

-- nn.Embedding.from_pretrained(weight [, {freeze = true, padding_idx, ...}])
function Embedding.from_pretrained(w, o)
  o = o or {}
  if not graft.is_tensor(w) or w:dim() ~= 2 then
    error("Embeddings parameter is expected to be 2-dimensional", 2)
  end
  local oo = {}
  for k, v in pairs(o) do oo[k] = v end
  oo._weight = w
  oo.freeze = nil
  local e = Embedding(w:size(1), w:size(2), oo)
  e.weight.requires_grad = not (o.freeze ~= false)
  return e
end

function Embedding:_label() return ("Embedding(%d, %d)"):format(self.num_embeddings, self.embedding_dim) end

function Embedding:extra_repr()
  local s = ("%d, %d"):format(self.num_embeddings, self.embedding_dim)
  if self.padding_idx ~= nil then s = s .. ", padding_idx=" .. pystr(self.padding_idx) end
  if self.max_norm ~= nil then s = s .. ", max_norm=" .. pystr(self.max_norm) end
  if self.norm_type ~= 2 then s = s .. ", norm_type=" .. pystr(self.norm_type) end
  if self.scale_grad_by_freq then s = s .. ", scale_grad_by_freq=True" end
  if self.sparse then s = s .. ", sparse=True" end
  return s
end

function Embedding:forward(idx)
  if not graft.is_tensor(idx) then fail(self, "expected an index tensor, got %s", type(idx)) end
  if idx:is_floating_point() then
    fail(self, "expected an integer index tensor, got %s %s", idx:dtype(), shape_str(idx))
  end
  if self.max_norm ~= nil then fail(self, "max_norm is not supported") end
  return need("embedding")(idx, self.weight, { padding_idx = self.padding_idx })
end

local Dropout = Module:extend("Dropout", { typename = "nn.Dropout" })
L.Dropout = Dropout

-- nn.Dropout([p = 0.5] [, {inplace = false}]); off in eval mode.
function Dropout:__init(p, o)
  if type(p) == "table" then o, p = p, p.p end
  o = opts_of(o, "Dropout")
  if p == nil then p = 0.5 end
  if type(p) ~= "number" or p < 0 or p > 1 then
    error(("dropout probability has to be between 0 and 1, but got %s"):format(tostring(p)), 3)
  end
  self.p = p
  self.inplace = o.inplace or false
end

function Dropout:extra_repr() return ("p=%s, inplace=%s"):format(pystr(self.p), pystr(self.inplace)) end

function Dropout:forward(x)
  if not self.training or self.p == 0 then return x end
  return need("dropout")(x, { p = self.p, training = true })
end

---------------------------------------------------------------------------------------
-- Activations. `inplace` is accepted and printed; ReLU(true) works in place as
-- PyTorch's does (x:relu_(), so ResNet's BatchNorm outputs are not kept twice, and the
-- same errors: a leaf that requires grad, or a tensor a backward rule saved), the
-- others return a new tensor.

local function activation(name, fwd, extra, ctor)
  local cls = Module:extend(name, { typename = "nn." .. name })
  cls.__init = ctor or function(self, o)
    if type(o) == "boolean" then o = { inplace = o } end
    self.inplace = (o and o.inplace) or false
  end
  cls.forward = fwd
  cls.extra_repr = extra or function(self) return self.inplace and "inplace=True" or "" end
  L[name] = cls
  return cls
end

local function tensor_in(self, x)
  if not graft.is_tensor(x) then fail(self, "expected a tensor input, got %s", type(x)) end
end

activation("ReLU", function(self, x)
  tensor_in(self, x)
  if self.inplace then return x:relu_() end
  local f = F.relu
  if f then return f(x) end
  return x:relu()
end)

activation("ReLU6", function(self, x)
  tensor_in(self, x)
  local f = F.relu6
  if f then return f(x) end
  return x:clamp(0, 6)
end)

activation("LeakyReLU", function(self, x)
  tensor_in(self, x)
  return need("leaky_relu")(x, self.negative_slope)
end, function(self)
  local s = "negative_slope=" .. pystr(self.negative_slope)
  if self.inplace then s = s .. ", inplace=True" end
  return s
end, function(self, slope, o)
  if type(slope) == "table" then o, slope = slope, slope.negative_slope end
  self.negative_slope = slope or 1e-2
  self.inplace = (o and o.inplace) or false
end)

activation("ELU", function(self, x)
  tensor_in(self, x)
  return need("elu")(x, self.alpha)
end, function(self)
  local s = "alpha=" .. pystr(self.alpha)
  if self.inplace then s = s .. ", inplace=True" end
  return s
end, function(self, alpha, o)
  if type(alpha) == "table" then o, alpha = alpha, alpha.alpha end
  self.alpha = alpha or 1.0
  self.inplace = (o and o.inplace) or false
end)

activation("GELU", function(self, x)
  tensor_in(self, x)
  return need("gelu")(x, { approximate = self.approximate })
end, function(self)
  return ("approximate='%s'"):format(self.approximate)
end, function(self, approximate)
  if type(approximate) == "table" then approximate = approximate.approximate end
  approximate = approximate or "none"
  if approximate ~= "none" and approximate ~= "tanh" then
    error(("GELU: approximate must be 'none' or 'tanh', got '%s'"):format(tostring(approximate)), 3)
  end
  self.approximate = approximate
end)

activation("SiLU", function(self, x)
  tensor_in(self, x)
  local f = F.silu
  if f then return f(x) end
  return x * x:sigmoid()
end)

activation("Sigmoid", function(self, x)
  tensor_in(self, x)
  local f = F.sigmoid
  if f then return f(x) end
  return x:sigmoid()
end, function() return "" end, function() end)

activation("Tanh", function(self, x)
  tensor_in(self, x)
  local f = F.tanh
  if f then return f(x) end
  return x:tanh()
end, function() return "" end, function() end)

-- Softmax(dim) / LogSoftmax(dim): dim is 1-based as every graft dim (-1 the last);
-- nil picks PyTorch's legacy choice (the first dim for 0-, 1- and 3-D inputs, else
-- the second).
local function softmax_dim(self, x)
  if self.dim ~= nil then return self.dim end
  local d = x:dim()
  if d == 0 or d == 1 or d == 3 then return 1 end
  return 2
end

local function softmax_ctor(self, dim)
  if type(dim) == "table" then dim = dim.dim end
  if dim == 0 then error("Softmax: dims are 1-based (-1 is the last); 0 is not a dim", 3) end
  self.dim = dim
end

activation("Softmax", function(self, x)
  tensor_in(self, x)
  return need("softmax")(x, softmax_dim(self, x))
end, function(self) return "dim=" .. pystr(self.dim) end, softmax_ctor)

activation("LogSoftmax", function(self, x)
  tensor_in(self, x)
  return need("log_softmax")(x, softmax_dim(self, x))
end, function(self) return "dim=" .. pystr(self.dim) end, softmax_ctor)

---------------------------------------------------------------------------------------
-- Pooling, Flatten

local MaxPool2d = Module:extend("MaxPool2d", { typename = "nn.MaxPool2d" })
L.MaxPool2d = MaxPool2d

-- nn.MaxPool2d(kernel_size [, {stride = kernel_size, padding = 0, dilation = 1,
-- return_indices = false, ceil_mode = false}])
function MaxPool2d:__init(kernel_size, o)
  if type(o) == "number" then o = { stride = o } end
  o = opts_of(o, "MaxPool2d")
  self.kernel_size = kernel_size
  self.stride = o.stride or kernel_size
  self.padding = o.padding or 0
  self.dilation = o.dilation or 1
  self.return_indices = o.return_indices or false
  self.ceil_mode = o.ceil_mode or false
end

function MaxPool2d:extra_repr()
  return ("kernel_size=%s, stride=%s, padding=%s, dilation=%s, ceil_mode=%s"):format(pystr(self.kernel_size),
    pystr(self.stride), pystr(self.padding), pystr(self.dilation), pystr(self.ceil_mode))
end

function MaxPool2d:forward(x)
  tensor_in(self, x)
  if x:dim() ~= 3 and x:dim() ~= 4 then fail(self, "expected 3D or 4D input, got %s", shape_str(x)) end
  return need("max_pool2d")(x, self.kernel_size, {
    stride = self.stride, padding = self.padding, dilation = self.dilation,
    ceil_mode = self.ceil_mode, return_indices = self.return_indices,
  })
end

local AvgPool2d = Module:extend("AvgPool2d", { typename = "nn.AvgPool2d" })
L.AvgPool2d = AvgPool2d

-- nn.AvgPool2d(kernel_size [, {stride = kernel_size, padding = 0, ceil_mode = false,
-- count_include_pad = true, divisor_override}])
function AvgPool2d:__init(kernel_size, o)
  if type(o) == "number" then o = { stride = o } end
  o = opts_of(o, "AvgPool2d")
  self.kernel_size = kernel_size
  self.stride = o.stride or kernel_size
  self.padding = o.padding or 0
  self.ceil_mode = o.ceil_mode or false
  self.count_include_pad = o.count_include_pad ~= false
  self.divisor_override = o.divisor_override
end

function AvgPool2d:extra_repr()
  return ("kernel_size=%s, stride=%s, padding=%s"):format(pystr(self.kernel_size), pystr(self.stride),
    pystr(self.padding))
end

function AvgPool2d:forward(x)
  tensor_in(self, x)
  if x:dim() ~= 3 and x:dim() ~= 4 then fail(self, "expected 3D or 4D input, got %s", shape_str(x)) end
  return need("avg_pool2d")(x, self.kernel_size, {
    stride = self.stride, padding = self.padding, ceil_mode = self.ceil_mode,
    count_include_pad = self.count_include_pad, divisor_override = self.divisor_override,
  })
end

local AdaptiveAvgPool2d = Module:extend("AdaptiveAvgPool2d", { typename = "nn.AdaptiveAvgPool2d" })
L.AdaptiveAvgPool2d = AdaptiveAvgPool2d

-- nn.AdaptiveAvgPool2d(output_size): a number or {h, w}.
function AdaptiveAvgPool2d:__init(output_size)
  self.output_size = output_size
end

function AdaptiveAvgPool2d:extra_repr() return "output_size=" .. pystr(self.output_size) end

function AdaptiveAvgPool2d:forward(x)
  tensor_in(self, x)
  if x:dim() ~= 3 and x:dim() ~= 4 then fail(self, "expected 3D or 4D input, got %s", shape_str(x)) end
  return need("adaptive_avg_pool2d")(x, self.output_size)
end

local Flatten = Module:extend("Flatten", { typename = "nn.Flatten" })
L.Flatten = Flatten

-- nn.Flatten([start_dim = 2, end_dim = -1]): 1-based dims (PyTorch's default
-- start_dim=1 is graft's 2: the batch dim is kept).
function Flatten:__init(start_dim, end_dim)
  if type(start_dim) == "table" then start_dim, end_dim = start_dim.start_dim, start_dim.end_dim end
  self.start_dim = start_dim or 2
  self.end_dim = end_dim or -1
end

function Flatten:extra_repr() return ("start_dim=%d, end_dim=%d"):format(self.start_dim, self.end_dim) end

function Flatten:forward(x)
  tensor_in(self, x)
  return x:flatten(self.start_dim, self.end_dim)
end

return L
