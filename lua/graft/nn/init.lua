-- graft.nn: modules with PyTorch's contract (state-dict keys, load_state_dict rules,
-- printing, freezing), layers, containers, losses, graft.nn.init and
-- graft.nn.functional (= graft.F).
--
--   local nn = require("graft.nn")
--   local net = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
--   local loss = nn.CrossEntropyLoss()(net(x), labels)
--   net:load_state_dict(graft.load("mlp.pth"))
local graft = require("graft")
local base = require("graft.nn.module")

local nn = {}

nn.Module = base.Module
nn.Parameter = base.Parameter
nn.is_parameter = base.is_parameter
nn.is_module = base.is_module
nn.isinstance = base.isinstance
nn.skip_init = base.skip_init
nn.should_init = base.should_init
nn.shape_str = base.shape_str
nn.init = require("graft.nn.init_fns")
nn.functional = graft.F
nn.utils = require("graft.nn.utils")

for _, part in ipairs({ "graft.nn.layers", "graft.nn.containers", "graft.nn.loss", "graft.nn.attention" }) do
  for k, v in pairs(require(part)) do
    if type(v) == "table" and rawget(v, "__typename") and not k:find("^_") then nn[k] = v end
  end
end
nn._BatchNorm = require("graft.nn.layers")._BatchNorm
nn._ConvNd = require("graft.nn.layers")._ConvNd

return nn
