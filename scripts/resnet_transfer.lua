-- scripts/resnet_transfer.lua: transfer learning with a torchvision-layout ResNet-18 on
-- a folder of images: a new head, the backbone frozen first (BatchNorm kept in eval
-- throughout), then unfrozen with layer-wise learning rates (deeper layers learn faster).
--
-- The images: the recipe writes a small ImageFolder tree of 64x64 RGB PNGs from
-- Fashion-MNIST (OUT/images/{pretrain,train,val}/<class>/<n>.png). The "pretrained"
-- backbone: a ResNet-18 the recipe trains briefly on classes 0-4 (OUT/resnet18_0-4.pth),
-- or real weights: --ckpt resnet18-f37072fd.pth (torchvision's ImageNet file) loads as is.
--
--   build/graft scripts/resnet_transfer.lua [--epochs 3 --freeze-epochs 1 --lr 0.02 --layer-decay 0.5]
local R = dofile((arg[0]:match("^(.*)/") or ".") .. "/common.lua")
local nn, optim = graft.nn, graft.optim
local data = require("graft.data")
local metrics = require("graft.metrics")
local T = data.transforms

local args = R.options({ ... }, {
  usage = "graft scripts/resnet_transfer.lua [options]",
  { "out", "runs/resnet_transfer", "output folder: images/, checkpoints, metrics.csv" },
  { "ckpt", "", "pretrained ResNet-18 weights (default: train one briefly on classes 0-4)" },
  { "size", 64, "image side in pixels", quick = 32 },
  { "pretrain_per_class", 60, "images per class to pretrain on (classes 0-4)", quick = 20 },
  { "pretrain_epochs", 3, "epochs of the brief pretraining", quick = 3 },
  { "pretrain_lr", 0.01, "learning rate of the brief pretraining" },
  { "train_per_class", 40, "training images per class (classes 5-9)", quick = 20 },
  { "val_per_class", 20, "validation images per class", quick = 10 },
  { "epochs", 3, "epochs of transfer", quick = 3 },
  { "freeze_epochs", 1, "first epochs with only the head learning" },
  { "lr", 0.01, "learning rate of the new head" },
  { "layer_decay", 0.5, "each block nearer the input learns at this fraction of the next one's rate" },
  { "batch_size", 32, "images per step" },
  { "seed", 0, "random seed" },
})
local watch = R.stopwatch()
graft.manual_seed(args.seed)
R.makedirs(args.out)
require("graft.pause").install()

-- 1. The image folders, written once: Fashion-MNIST resized to SIZE x SIZE, grey as RGB.
local NAMES = { "tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot" }
local root = ("%s/images%d"):format(args.out, args.size)
local function write_split(split, classes, per_class, skip)
  local ds = data.FashionMNIST({ train = true, classes = classes })
  local resize = T.Resize({ args.size, args.size })
  for _, c in ipairs(classes) do
    local dir = ("%s/%s/%s"):format(root, split, NAMES[c + 1])
    R.makedirs(dir)
    for _, old in ipairs(data.listdir(dir)) do os.remove(dir .. "/" .. old) end -- an earlier run's
    local idx = ds.targets:eq(c):nonzero():reshape({ -1 }):narrow(1, skip + 1, per_class)
    local X = resize:apply_batch(ds:get_batch(idx)):clamp(0, 1):expand(per_class, 3, args.size, args.size)
    for i = 1, per_class do data.save_png(X[i], ("%s/%04d.png"):format(dir, i)) end
  end
end
local stamp = ("%s/done-%d-%d-%d"):format(root, args.pretrain_per_class, args.train_per_class, args.val_per_class)
local cached = ("%s/resnet18_0-4_%d.pth"):format(args.out, args.size) -- the brief pretraining's result
if not R.exists(stamp) then
  os.remove(cached)
  write_split("pretrain", { 0, 1, 2, 3, 4 }, args.pretrain_per_class, 0)
  write_split("train", { 5, 6, 7, 8, 9 }, args.train_per_class, 0)
  write_split("val", { 5, 6, 7, 8, 9 }, args.val_per_class, args.train_per_class)
  io.open(stamp, "w"):close()
end

-- 2. ImageFolder datasets: one folder per class, labels from the sorted folder names.
local normalize = T.Normalize({ 0.485, 0.456, 0.406 }, { 0.229, 0.224, 0.225 }) -- ImageNet's, as torchvision
local function folder(split) return data.ImageFolder(root .. "/" .. split, { transform = normalize }) end
local pre, train, val = folder("pretrain"), folder("train"), folder("val")
print(("%s; %s; classes %s"):format(tostring(train), tostring(val), table.concat(train.classes, ", ")))
local flip = T.RandomHorizontalFlip()
local function loader(ds) return data.DataLoader(ds, { batch_size = args.batch_size, shuffle = true, seed = args.seed }) end

-- 3. The pretrained backbone: given, or a ResNet-18 trained briefly on classes 0-4.
local ckpt = args.ckpt
if ckpt == "" then
  ckpt = cached
  if not R.exists(ckpt) then
    local net = graft.models.resnet18({ num_classes = 5 })
    local opt = optim.SGD(net, { lr = args.pretrain_lr, momentum = 0.9, weight_decay = 1e-4 })
    local pl = loader(pre)
    for epoch = 1, args.pretrain_epochs do
      local loss, acc = R.train_epoch(net, pl, opt, { augment = flip,
        desc = ("pretrain resnet18 %d/%d"):format(epoch, args.pretrain_epochs) })
      print(("pretraining epoch %d: loss %.4f, train acc %.4f"):format(epoch, loss, acc))
    end
    -- BatchNorm's running averages lag far behind weights that moved this fast: measure
    -- them again with the final weights (a cumulative average over the images, "precise
    -- BN"), since the transfer below runs BatchNorm in eval mode on these statistics.
    local bns = {}
    for _, m in ipairs(net:modules()) do
      if nn.isinstance(m, nn.BatchNorm2d) then
        m:reset_running_stats()
        m.momentum = nil                                     -- PyTorch's None: cumulative
        bns[#bns + 1] = m
      end
    end
    graft.no_grad(function()
      for x in data.DataLoader(pre, { batch_size = 100 }):iter() do net(x) end
    end)
    for _, m in ipairs(bns) do m.momentum = 0.1 end
    print(("pretrained: accuracy %.4f on its own images (eval mode)"):format(R.evaluate(net, pre, { batch_size = 100 })))
    graft.save({ model = net:state_dict() }, ckpt)
  end
end

-- 4. The model for the new task: torchvision's resnet18 layout, a 5-way head. Every
-- pretrained tensor but the old head loads (a torchvision file's 1000-way fc too).
local net = graft.models.resnet18({ num_classes = 5 })
print(net:load_pretrained(ckpt, { exclude = "^fc%." }))

-- 5. Layer-wise learning rates: blocks from input to output, each at layer_decay times
-- the rate of the next (fc at lr, layer4 at lr/2, ...). Built before freezing
-- so that the frozen parameters are in the optimizer when they thaw.
local groups = optim.layer_decay(net, {
  { "^conv1%.", "^bn1%." }, "^layer1%.", "^layer2%.", "^layer3%.", "^layer4%.", "^fc%.",
}, { base_lr = args.lr, decay = args.layer_decay, momentum = 0.9, weight_decay = 1e-4, no_decay = "bias_and_norm" })
local opt = optim.SGD(groups)
local sched = optim.lr_scheduler.CosineAnnealingLR(opt, { T_max = args.epochs })

-- 6. Freezing: BatchNorm for the whole run (parameters and running statistics, in eval
-- mode: a few hundred images would only add noise to them), the rest of the backbone
-- for the first epochs.
net:freeze({ type = nn.BatchNorm2d }, { bn_eval = true })
local function backbone_conv(name, _, m) return not name:find("^fc%.") and not nn.isinstance(m, nn.BatchNorm2d) end
if args.freeze_epochs > 0 then net:freeze(backbone_conv) end
opt:describe()

local log = metrics.open(args.out .. "/metrics.csv")
local tl = loader(train)
local val_acc
for epoch = 1, args.epochs do
  if epoch == args.freeze_epochs + 1 and epoch > 1 then
    net:unfreeze(backbone_conv)                              -- BatchNorm stays frozen, in eval
    print(("epoch %d: the backbone's convolutions are unfrozen"):format(epoch))
  end
  local loss, acc, stopped = R.train_epoch(net, tl, opt, { augment = flip,
    desc = ("transfer %d/%d"):format(epoch, args.epochs), scope = { model = net, opt = opt, sched = sched } })
  local lrs = R.lrs(opt)
  sched:step()
  val_acc = R.evaluate(net, val, { batch_size = 100 })
  lrs.epoch, lrs.train_loss, lrs.train_acc, lrs.val_acc = epoch, loss, acc, val_acc
  log:log(lrs)
  print(("epoch %d: train loss %.4f, train acc %.4f, val acc %.4f"):format(epoch, loss, acc, val_acc))
  if stopped then break end
end
log:close()
graft.save(net:state_dict(), args.out .. "/resnet18_transfer.pth")
print(("validation accuracy %.4f on %d images of classes 5-9 in %.1f s"):format(val_acc, #val, watch()))
return { val_acc = val_acc, seconds = watch() }
