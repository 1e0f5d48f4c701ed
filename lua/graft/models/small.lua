-- graft.models for the demos: small_cnn (the Fashion-MNIST CNN), mlp, and a small
-- transformer encoder classifier over token ids.
local graft = require("graft")
local nn = require("graft.nn")
local util = require("graft.models.util")

local S = {}

-- small_cnn([{num_classes = 10, in_channels = 1}]): for 28x28 images:
-- conv 1->32 3x3, relu, maxpool 2, conv 32->64 3x3, relu, maxpool 2, flatten,
-- linear 1600->128, relu, linear 128->10. A Sequential: keys 0.weight, 3.weight,
-- 7.weight, 9.weight, as PyTorch's nn.Sequential of the same layers.
function S.small_cnn(o)
  return util.build(function(oo)
    local d = { dtype = oo.dtype }
    return nn.Sequential(
      nn.Conv2d(oo.in_channels or 1, 32, 3, d), nn.ReLU(), nn.MaxPool2d(2),
      nn.Conv2d(32, 64, 3, d), nn.ReLU(), nn.MaxPool2d(2),
      nn.Flatten(),
      nn.Linear(1600, 128, d), nn.ReLU(),
      nn.Linear(128, oo.num_classes or 10, d))
  end, o, "small_cnn", { "in_channels", "num_classes" })
end

-- mlp(sizes [, {activation = nn.ReLU, dropout = 0, dtype}]): Linear layers between
-- consecutive sizes with the activation (and dropout when > 0) between them:
-- mlp({784, 256, 10}) = Sequential(Linear(784, 256), ReLU(), Linear(256, 10)).
function S.mlp(sizes, o)
  if type(sizes) ~= "table" or #sizes < 2 then
    error("mlp: expected a list of at least two layer sizes, e.g. {784, 256, 10}", 2)
  end
  return util.build(function(oo)
    local list = {}
    local act = oo.activation or nn.ReLU
    for i = 1, #sizes - 1 do
      list[#list + 1] = nn.Linear(sizes[i], sizes[i + 1], { dtype = oo.dtype })
      if i < #sizes - 1 then
        list[#list + 1] = act()
        if (oo.dropout or 0) > 0 then list[#list + 1] = nn.Dropout(oo.dropout) end
      end
    end
    return nn.Sequential(list)
  end, o, "mlp", { "activation", "dropout" })
end

local TransformerClassifier = nn.Module:extend("TransformerClassifier", { typename = "models.TransformerClassifier" })
S.TransformerClassifier = TransformerClassifier

-- opts: vocab_size (required), num_classes (2), d_model (64), nhead (4), num_layers (2),
-- dim_feedforward (4 d_model), max_len (256), dropout (0.1), padding_idx (nil: none;
-- 0-based token id), norm_first (true), dtype.
function TransformerClassifier:__init(o)
  if math.type(o.vocab_size) ~= "integer" then
    error("transformer_classifier: vocab_size (an integer) is required", 0)
  end
  local d = o.d_model or 64
  local dropout = o.dropout
  if dropout == nil then dropout = 0.1 end
  self.d_model = d
  self.max_len = o.max_len or 256
  self.padding_idx = o.padding_idx
  self.embed = nn.Embedding(o.vocab_size, d, { padding_idx = o.padding_idx, dtype = o.dtype })
  self.pos = nn.Parameter(graft.zeros(self.max_len, d, { dtype = o.dtype or "float32" }))
  if nn.should_init(o) then nn.init.trunc_normal_(self.pos, { std = 0.02 }) end
  local layer = nn.TransformerEncoderLayer(d, o.nhead or 4, {
    dim_feedforward = o.dim_feedforward or 4 * d, dropout = dropout, batch_first = true,
    norm_first = o.norm_first ~= false, dtype = o.dtype, activation = o.activation or "gelu",
  })
  self.encoder = nn.TransformerEncoder(layer, o.num_layers or 2)
  self.norm = nn.LayerNorm(d, { dtype = o.dtype })
  self.head = nn.Linear(d, o.num_classes or 2, { dtype = o.dtype })
end

-- forward(tokens [N, L] integer ids) -> logits [N, num_classes]: the mean of the
-- encoded tokens, padding excluded when padding_idx is set.
function TransformerClassifier:forward(tokens)
  if not graft.is_tensor(tokens) or tokens:dim() ~= 2 then
    error(("TransformerClassifier: expected token ids [N, L], got %s"):format(
      graft.is_tensor(tokens) and nn.shape_str(tokens) or type(tokens)), 0)
  end
  local n, len = tokens:size(1), tokens:size(2)
  if len > self.max_len then
    error(("TransformerClassifier: sequence length %d exceeds max_len %d"):format(len, self.max_len), 0)
  end
  local x = self.embed(tokens) + self.pos:narrow(1, 1, len)
  local pad
  if self.padding_idx ~= nil then pad = tokens:eq(self.padding_idx) end
  x = self.norm(self.encoder(x, { src_key_padding_mask = pad }))
  if pad then
    local keep = pad:logical_not():to(x:dtype()):unsqueeze(3)           -- [N, L, 1]
    local count = keep:sum(2):clamp(1, math.huge)                         -- [N, 1]
    x = (x * keep):sum(2) / count
  else
    x = x:mean(2)
  end
  return self.head(x:reshape(n, self.d_model))
end

function S.transformer_classifier(o)
  return util.build(function(oo) return TransformerClassifier(oo) end, o, "transformer_classifier", { "vocab_size",
    "num_classes", "d_model", "nhead", "num_layers", "dim_feedforward", "max_len", "dropout", "padding_idx",
    "norm_first", "activation" })
end

return S
