-- scripts/pretrain.lua: trains graft.models.small_cnn on Fashion-MNIST classes 0-4
-- (T-shirt/top, Trouser, Pullover, Dress, Coat) and saves the checkpoint that
-- scripts/finetune.lua starts from: the "pretrained" model.
--
--   build/graft scripts/pretrain.lua [--epochs 5 --lr 0.05 --train-size 0 --out runs/pretrain]
--
-- Writes OUT/small_cnn.pth ({model = state dict, epoch, classes, test_acc}) and
-- OUT/metrics.csv (draw it with `build/graft plot OUT/metrics.csv`).
local R = dofile((arg[0]:match("^(.*)/") or ".") .. "/common.lua")
local optim = graft.optim
local data = require("graft.data")
local metrics = require("graft.metrics")

local args = R.options({ ... }, {
  usage = "graft scripts/pretrain.lua [options]",
  { "epochs", 5, "passes over the training images", quick = 2 },
  { "lr", 0.05, "SGD learning rate (cosine-annealed to 0 over the run)" },
  { "batch_size", 64, "images per step" },
  { "train_size", 0, "training images (0: all 30,000 of classes 0-4)", quick = 640 },
  { "test_size", 0, "test images to evaluate on (0: all 5,000)", quick = 500 },
  { "seed", 0, "random seed" },
  { "out", "runs/pretrain", "output folder" },
})
local watch = R.stopwatch()
graft.manual_seed(args.seed)
R.makedirs(args.out)
require("graft.pause").install()

local CLASSES = { 0, 1, 2, 3, 4 }
local train, _, test = R.fashion({ classes = CLASSES, train = args.train_size, test = args.test_size, seed = args.seed })
local loader = data.DataLoader(train, { batch_size = args.batch_size, shuffle = true, seed = args.seed })

local net = graft.models.small_cnn({ num_classes = #CLASSES })
local opt = optim.SGD(net, { lr = args.lr, momentum = 0.9, weight_decay = 5e-4 })
local sched = optim.lr_scheduler.CosineAnnealingLR(opt, { T_max = args.epochs * #loader })
print(("pretrain: small_cnn on classes 0-4, %d training images, %d epochs"):format(#train, args.epochs))

local log = metrics.open(args.out .. "/metrics.csv")
local acc, done
for epoch = 1, args.epochs do
  local loss, train_acc, stopped = R.train_epoch(net, loader, opt, {
    scheduler = sched, -- stepped after every optimizer step
    desc = ("pretrain %d/%d"):format(epoch, args.epochs), scope = { model = net, opt = opt, sched = sched } })
  acc = R.evaluate(net, test)
  log:log({ epoch = epoch, train_loss = loss, train_acc = train_acc, test_acc = acc, lr = opt.param_groups[1].lr })
  print(("epoch %d: train loss %.4f, train acc %.4f, test acc %.4f"):format(epoch, loss, train_acc, acc))
  done = epoch
  if stopped then break end                                 -- stop() in a pause: save what we have
end
log:close()

local path = args.out .. "/small_cnn.pth"
graft.save({ model = net:state_dict(), arch = "small_cnn", classes = CLASSES, epoch = done, test_acc = acc }, path)
print(("saved %s (test accuracy %.4f on classes 0-4) in %.1f s"):format(path, acc, watch()))
return { path = path, test_acc = acc, seconds = watch() }
