-- graft.models.mobilenet_v2: torchvision 0.14's MobileNetV2 (Conv2dNormActivation and
-- InvertedResidual blocks, the same module names and state-dict keys).
local graft = require("graft")
local nn = require("graft.nn")
local util = require("graft.models.util")

local Mb = {}

-- Conv2dNormActivation: a Sequential of Conv2d (bias only without a norm), BatchNorm2d
-- and an activation (ReLU6 here), printed under its own name as in torchvision.
local ConvNormAct = nn.Sequential:extend("Conv2dNormActivation", { typename = "models.Conv2dNormActivation" })
Mb.Conv2dNormActivation = ConvNormAct

function ConvNormAct:__init(cin, cout, o)
  local k = o.kernel_size or 3
  local dilation = o.dilation or 1
  local padding = (k - 1) // 2 * dilation
  nn.Sequential.__init(self,
    nn.Conv2d(cin, cout, k, { stride = o.stride or 1, padding = padding, dilation = dilation,
      groups = o.groups or 1, bias = false, dtype = o.dtype, init = false }),
    nn.BatchNorm2d(cout, { dtype = o.dtype }),
    (o.activation or nn.ReLU6)(true))
  self.out_channels = cout
end

local InvertedResidual = nn.Module:extend("InvertedResidual", { typename = "models.InvertedResidual" })
Mb.InvertedResidual = InvertedResidual

function InvertedResidual:__init(inp, oup, stride, expand_ratio, o)
  self.stride = stride
  local hidden = math.floor(inp * expand_ratio + 0.5)
  self.use_res_connect = stride == 1 and inp == oup
  local list = {}
  if expand_ratio ~= 1 then
    list[#list + 1] = ConvNormAct(inp, hidden, { kernel_size = 1, dtype = o.dtype })
  end
  list[#list + 1] = ConvNormAct(hidden, hidden, { stride = stride, groups = hidden, dtype = o.dtype })
  list[#list + 1] = nn.Conv2d(hidden, oup, 1, { bias = false, dtype = o.dtype, init = false })
  list[#list + 1] = nn.BatchNorm2d(oup, { dtype = o.dtype })
  self.conv = nn.Sequential(list)
  self.out_channels = oup
  self._is_cn = stride > 1
end

function InvertedResidual:forward(x)
  if self.use_res_connect then return x + self.conv(x) end
  return self.conv(x)
end

local MobileNetV2 = nn.Module:extend("MobileNetV2", { typename = "models.MobileNetV2" })
Mb.MobileNetV2 = MobileNetV2

local SETTING = {
  { 1, 16, 1, 1 }, { 6, 24, 2, 2 }, { 6, 32, 3, 2 }, { 6, 64, 4, 2 },
  { 6, 96, 3, 1 }, { 6, 160, 3, 2 }, { 6, 320, 1, 1 },
}

-- opts: num_classes (1000), width_mult (1.0), round_nearest (8), dropout (0.2), dtype
function MobileNetV2:__init(o)
  local width_mult = o.width_mult or 1.0
  local round = o.round_nearest or 8
  local input_channel = util.make_divisible(32 * width_mult, round)
  self.last_channel = util.make_divisible(1280 * math.max(1.0, width_mult), round)
  local features = { ConvNormAct(3, input_channel, { stride = 2, dtype = o.dtype }) }
  for _, s in ipairs(o.inverted_residual_setting or SETTING) do
    local t, c, n, st = s[1], s[2], s[3], s[4]
    local out = util.make_divisible(c * width_mult, round)
    for i = 1, n do
      features[#features + 1] = InvertedResidual(input_channel, out, i == 1 and st or 1, t, o)
      input_channel = out
    end
  end
  features[#features + 1] = ConvNormAct(input_channel, self.last_channel, { kernel_size = 1, dtype = o.dtype })
  self.features = nn.Sequential(features)
  local dropout = o.dropout
  if dropout == nil then dropout = 0.2 end
  self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.last_channel, o.num_classes or 1000,
    { dtype = o.dtype, init = false }))
  -- convolutions and the classifier were built uninitialised: drawn here, as torchvision
  if nn.should_init(o) then
    for _, m in ipairs(self:modules()) do
      if nn.isinstance(m, nn.Conv2d) then
        nn.init.kaiming_normal_(m.weight, { mode = "fan_out" })
        if m.bias then nn.init.zeros_(m.bias) end
      elseif nn.isinstance(m, nn.BatchNorm2d) or nn.isinstance(m, nn.GroupNorm) then
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
      elseif nn.isinstance(m, nn.Linear) then
        nn.init.normal_(m.weight, 0, 0.01)
        nn.init.zeros_(m.bias)
      end
    end
  end
end

function MobileNetV2:forward(x)
  if not graft.is_tensor(x) or x:dim() ~= 4 then -- channels: the first conv checks them
    error(("MobileNetV2: expected images [N, C, H, W], got %s"):format(
      graft.is_tensor(x) and nn.shape_str(x) or type(x)), 0)
  end
  x = self.features(x)
  x = nn.functional.adaptive_avg_pool2d(x, { 1, 1 }):flatten(2)
  return self.classifier(x)
end

function Mb.mobilenet_v2(o)
  return util.build(function(oo) return MobileNetV2(oo) end, o, "mobilenet_v2",
    { "num_classes", "width_mult", "round_nearest", "inverted_residual_setting", "dropout" })
end

return Mb
