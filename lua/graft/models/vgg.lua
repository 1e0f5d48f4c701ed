-- graft.models.vgg11_bn: torchvision 0.14's VGG-11 with batch norm (configuration "A"),
-- with its module names and state-dict keys.
local graft = require("graft")
local nn = require("graft.nn")
local util = require("graft.models.util")

local V = {}

local VGG = nn.Module:extend("VGG", { typename = "models.VGG" })
V.VGG = VGG

local CFG = {
  A = { 64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M" },
  B = { 64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M" },
  D = { 64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M" },
  E = { 64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M" },
}

local function make_layers(cfg, batch_norm, o)
  local list, cin = {}, 3
  for _, v in ipairs(cfg) do
    if v == "M" then
      list[#list + 1] = nn.MaxPool2d(2, { stride = 2 })
    else
      list[#list + 1] = nn.Conv2d(cin, v, 3, { padding = 1, dtype = o.dtype, init = false })
      if batch_norm then list[#list + 1] = nn.BatchNorm2d(v, { dtype = o.dtype }) end
      list[#list + 1] = nn.ReLU(true)
      cin = v
    end
  end
  return nn.Sequential(list)
end
V.make_layers = make_layers

-- VGG(features, opts): opts.num_classes (1000), opts.dropout (0.5), opts.dtype
function VGG:__init(features, o)
  self.features = features
  self.avgpool = nn.AdaptiveAvgPool2d({ 7, 7 })
  local dropout = o.dropout
  if dropout == nil then dropout = 0.5 end
  local d = { dtype = o.dtype, init = false } -- drawn below, as torchvision
  self.classifier = nn.Sequential(
    nn.Linear(512 * 7 * 7, 4096, d), nn.ReLU(true), nn.Dropout(dropout),
    nn.Linear(4096, 4096, d), nn.ReLU(true), nn.Dropout(dropout),
    nn.Linear(4096, o.num_classes or 1000, d))
  if nn.should_init(o) then
    for _, m in ipairs(self:modules()) do
      if nn.isinstance(m, nn.Conv2d) then
        nn.init.kaiming_normal_(m.weight, { mode = "fan_out", nonlinearity = "relu" })
        if m.bias then nn.init.constant_(m.bias, 0) end
      elseif nn.isinstance(m, nn.BatchNorm2d) then
        nn.init.constant_(m.weight, 1)
        nn.init.constant_(m.bias, 0)
      elseif nn.isinstance(m, nn.Linear) then
        nn.init.normal_(m.weight, 0, 0.01)
        nn.init.constant_(m.bias, 0)
      end
    end
  end
end

function VGG:forward(x)
  if not graft.is_tensor(x) or x:dim() ~= 4 then -- channels: the first conv checks them
    error(("VGG: expected images [N, C, H, W], got %s"):format(graft.is_tensor(x) and nn.shape_str(x) or type(x)), 0)
  end
  x = self.avgpool(self.features(x)):flatten(2)
  return self.classifier(x)
end

function V.vgg11_bn(o)
  return util.build(function(oo) return VGG(make_layers(CFG.A, true, oo), oo) end, o, "vgg11_bn", { "num_classes", "dropout" })
end

return V
