-- graft.models ResNets (torchvision 0.14's architecture, module names and state-dict
-- keys): resnet18/34 (BasicBlock) and resnet50/101 (Bottleneck). A torchvision state
-- dict loads with strict = true.
local graft = require("graft")
local nn = require("graft.nn")
local util = require("graft.models.util")

local R = {}

-- Convolutions are built without their default initialisation: ResNet draws their
-- weights again (kaiming_normal, fan_out), as torchvision does after building them.
local function conv3x3(cin, cout, stride, o)
  return nn.Conv2d(cin, cout, 3, { stride = stride or 1, padding = 1, bias = false, dtype = o.dtype, init = false })
end

local function conv1x1(cin, cout, stride, o)
  return nn.Conv2d(cin, cout, 1, { stride = stride or 1, bias = false, dtype = o.dtype, init = false })
end

local BasicBlock = nn.Module:extend("BasicBlock", { typename = "models.BasicBlock" })
BasicBlock.expansion = 1
R.BasicBlock = BasicBlock

function BasicBlock:__init(inplanes, planes, stride, downsample, o)
  self.conv1 = conv3x3(inplanes, planes, stride, o)
  self.bn1 = nn.BatchNorm2d(planes, { dtype = o.dtype })
  self.relu = nn.ReLU(true)
  self.conv2 = conv3x3(planes, planes, 1, o)
  self.bn2 = nn.BatchNorm2d(planes, { dtype = o.dtype })
  self.downsample = downsample
  self.stride = stride
end

function BasicBlock:forward(x)
  local out = self.relu(self.bn1(self.conv1(x)))
  out = self.bn2(self.conv2(out))
  local identity = x
  if self.downsample then identity = self.downsample(x) end
  return self.relu(out:add_(identity)) -- in place, as torchvision's `out += identity`
end

local Bottleneck = nn.Module:extend("Bottleneck", { typename = "models.Bottleneck" })
Bottleneck.expansion = 4
R.Bottleneck = Bottleneck

function Bottleneck:__init(inplanes, planes, stride, downsample, o)
  local width = planes -- base_width 64, groups 1
  self.conv1 = conv1x1(inplanes, width, 1, o)
  self.bn1 = nn.BatchNorm2d(width, { dtype = o.dtype })
  self.conv2 = conv3x3(width, width, stride, o)
  self.bn2 = nn.BatchNorm2d(width, { dtype = o.dtype })
  self.conv3 = conv1x1(width, planes * 4, 1, o)
  self.bn3 = nn.BatchNorm2d(planes * 4, { dtype = o.dtype })
  self.relu = nn.ReLU(true)
  self.downsample = downsample
  self.stride = stride
end

function Bottleneck:forward(x)
  local out = self.relu(self.bn1(self.conv1(x)))
  out = self.relu(self.bn2(self.conv2(out)))
  out = self.bn3(self.conv3(out))
  local identity = x
  if self.downsample then identity = self.downsample(x) end
  return self.relu(out:add_(identity)) -- in place, as torchvision's `out += identity`
end

local ResNet = nn.Module:extend("ResNet", { typename = "models.ResNet" })
R.ResNet = ResNet

-- ResNet(block, {n1, n2, n3, n4}, opts): opts.num_classes (1000), opts.dtype,
-- opts.zero_init_residual.
function ResNet:__init(block, counts, o)
  self.inplanes = 64
  self.conv1 = nn.Conv2d(3, 64, 7, { stride = 2, padding = 3, bias = false, dtype = o.dtype, init = false })
  self.bn1 = nn.BatchNorm2d(64, { dtype = o.dtype })
  self.relu = nn.ReLU(true)
  self.maxpool = nn.MaxPool2d(3, { stride = 2, padding = 1 })
  self.layer1 = self:_make_layer(block, 64, counts[1], 1, o)
  self.layer2 = self:_make_layer(block, 128, counts[2], 2, o)
  self.layer3 = self:_make_layer(block, 256, counts[3], 2, o)
  self.layer4 = self:_make_layer(block, 512, counts[4], 2, o)
  self.avgpool = nn.AdaptiveAvgPool2d({ 1, 1 })
  self.fc = nn.Linear(512 * block.expansion, o.num_classes or 1000, { dtype = o.dtype })
  if nn.should_init(o) then
    for _, m in ipairs(self:modules()) do
      if nn.isinstance(m, nn.Conv2d) then
        nn.init.kaiming_normal_(m.weight, { mode = "fan_out", nonlinearity = "relu" })
      elseif nn.isinstance(m, nn.BatchNorm2d) or nn.isinstance(m, nn.GroupNorm) then
        nn.init.constant_(m.weight, 1)
        nn.init.constant_(m.bias, 0)
      end
    end
    if o.zero_init_residual then
      for _, m in ipairs(self:modules()) do
        if nn.isinstance(m, Bottleneck) then nn.init.constant_(m.bn3.weight, 0) end
        if nn.isinstance(m, BasicBlock) then nn.init.constant_(m.bn2.weight, 0) end
      end
    end
  end
end

function ResNet:_make_layer(block, planes, blocks, stride, o)
  local downsample
  if stride ~= 1 or self.inplanes ~= planes * block.expansion then
    downsample = nn.Sequential(conv1x1(self.inplanes, planes * block.expansion, stride, o),
      nn.BatchNorm2d(planes * block.expansion, { dtype = o.dtype }))
  end
  local list = { block(self.inplanes, planes, stride, downsample, o) }
  self.inplanes = planes * block.expansion
  for _ = 2, blocks do list[#list + 1] = block(self.inplanes, planes, 1, nil, o) end
  return nn.Sequential(list)
end

function ResNet:forward(x)
  -- the channel count is conv1's to check: a replaced stem takes what it takes
  if not graft.is_tensor(x) or x:dim() ~= 4 then
    error(("ResNet: expected images [N, C, H, W], got %s"):format(
      graft.is_tensor(x) and nn.shape_str(x) or type(x)), 0)
  end
  x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
  x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
  x = self.avgpool(x):flatten(2)
  return self.fc(x)
end

local OPTIONS = { "num_classes", "zero_init_residual" }

local function make(name, block, counts)
  return function(o)
    return util.build(function(oo) return ResNet(block, counts, oo) end, o, name, OPTIONS)
  end
end

R.resnet18 = make("resnet18", BasicBlock, { 2, 2, 2, 2 })
R.resnet34 = make("resnet34", BasicBlock, { 3, 4, 6, 3 })
R.resnet50 = make("resnet50", Bottleneck, { 3, 4, 6, 3 })
R.resnet101 = make("resnet101", Bottleneck, { 3, 4, 23, 3 })

return R
