-- graft.models: ready-made architectures. The torchvision ones (resnet18/34/50/101,
-- mobilenet_v2, vgg11_bn) have torchvision 0.14's module names and state-dict keys, so
-- torchvision checkpoints load with strict = true; small_cnn, mlp and
-- transformer_classifier are for the demos. Every constructor takes an options table:
-- num_classes, dtype, init = false (parameters left uninitialised), weights = a path
-- or a state dict to load (strict unless strict = false).
--
--   local models = require("graft.models")
--   local net = models.resnet18({weights = "resnet18.pth"})
--   net.fc = nn.Linear(512, 10)
local M = {}

for _, part in ipairs({ "graft.models.resnet", "graft.models.mobilenet", "graft.models.vgg", "graft.models.small" }) do
  for k, v in pairs(require(part)) do M[k] = v end
end

return M
