-- scripts/finetune.lua: fine-tuning a pretrained network on a new task, the whole
-- recipe: load part of a checkpoint (with a report), replace the classifier, freeze the
-- feature extractor for the first epochs, learning rates per parameter group, SGD with
-- momentum and weight decay, a schedule, unfreezing without rebuilding the optimizer,
-- an evaluation every epoch, the best checkpoint kept, and --resume.
--
-- The task: the small CNN that scripts/pretrain.lua trained on Fashion-MNIST classes 0-4
-- (tops, trousers, pullovers, dresses, coats) learns classes 5-9 (sandals, shirts,
-- sneakers, bags, ankle boots) from 500 images.
--
--   build/graft scripts/finetune.lua [--epochs 10 --freeze-epochs 1 --lr 0.1 --backbone-lr 0.05]
--   build/graft scripts/finetune.lua --schedule cosine --warmup 1    # warmup, then cosine
--   build/graft scripts/finetune.lua --resume                          # continue OUT/last.pth
--   build/graft plot runs/finetune/metrics.csv                         # the curves, as a PNG
--
-- On a terminal, Ctrl-C pauses at the next step with `model`, `opt`, `sched` in scope:
-- change opt.param_groups[2].lr, freeze or unfreeze, save; continue() or stop().
local R = dofile((arg[0]:match("^(.*)/") or ".") .. "/common.lua")
local nn, optim = graft.nn, graft.optim
local S = optim.lr_scheduler
local F = nn.functional
local data = require("graft.data")
local metrics = require("graft.metrics")
local progress = require("graft.progress")
local pause = require("graft.pause")

local args = R.options({ ... }, {
  usage = "graft scripts/finetune.lua [options]",
  { "ckpt", "runs/pretrain/small_cnn.pth", "the pretrained checkpoint (from scripts/pretrain.lua)" },
  { "out", "runs/finetune", "output folder: best.pth, last.pth (for --resume), metrics.csv" },
  { "epochs", 10, "epochs in all", quick = 3 },
  { "freeze_epochs", 1, "first epochs with the feature extractor frozen (only the new head learns)" },
  { "lr", 0.1, "learning rate of the new head (with --scratch: of everything)" },
  { "backbone_lr", 0.05, "learning rate of the pretrained layers once unfrozen" },
  { "momentum", 0.9, "SGD momentum" },
  { "weight_decay", 5e-4, "SGD weight decay" },
  { "schedule", "multistep", "multistep (x0.1 at the milestones) or cosine (linear warmup, then cosine)" },
  { "milestones", "", "epochs after which multistep divides the rates by 10 (default: 2/3 and 5/6 of the run)" },
  { "warmup", 1, "warmup epochs of the cosine schedule" },
  { "batch_size", 32, "images per step" },
  { "train_size", 500, "training images of classes 5-9", quick = 300 },
  { "val_size", 500, "validation images (from the training set) that pick the best epoch", quick = 300 },
  { "test_size", 0, "test images (0: all 5,000 of classes 5-9)", quick = 1000 },
  { "augment", true, "random crops (2 pixels of padding) and horizontal flips" },
  { "scratch", false, "the baseline: the same network from random weights, nothing frozen, one rate" },
  { "resume", false, "continue from OUT/last.pth where an earlier run stopped" },
  { "stop_after", 0, "stop after this epoch, as an interruption would (0: run to the end)" },
  { "seed", 0, "random seed" },
})
local watch = R.stopwatch()
graft.manual_seed(args.seed)
R.makedirs(args.out)
local LAST, BEST = args.out .. "/last.pth", args.out .. "/best.pth"
if args.scratch then args.backbone_lr, args.freeze_epochs = args.lr, 0 end

-- Data: classes 5-9 with their labels renumbered 0..4, a random 500 images to learn
-- from and another 500 to choose the best epoch; the test set only for the last word.
local train, val, test = R.fashion({ classes = { 5, 6, 7, 8, 9 }, train = args.train_size,
  val = args.val_size, test = args.test_size, seed = args.seed })
local loader = data.DataLoader(train, { batch_size = args.batch_size, shuffle = true, seed = args.seed })
local T = data.transforms
local augment = args.augment and T.Compose({ T.RandomCrop(28, { padding = 2 }), T.RandomHorizontalFlip() }) or nil

-- The model: the checkpoint's architecture and weights, then a new head.
local net = graft.models.small_cnn({ num_classes = 5 })    -- as pretrained: 5 classes (0-4)
if not args.scratch then
  if not R.exists(args.ckpt) then
    io.stderr:write(("finetune: no checkpoint at %s: run `build/graft scripts/pretrain.lua` first (make demo does),"
      .. " pass --ckpt PATH, or --scratch to train from random weights\n"):format(args.ckpt))
    os.exit(2)
  end
  local report = net:load_pretrained(args.ckpt, {         -- finds the weights (ckpt.model) itself
    strip_prefix = "auto",                                  -- and DataParallel's "module.", if any
  })                                                        -- nothing loaded is an error, not a warning
  print(report)
end
net[-1] = nn.Linear(128, 5)                                 -- the new classifier: classes 5-9
local HEAD = "^9%."                                         -- its parameters: 9.weight, 9.bias
local function backbone(name) return not name:find(HEAD) end

-- Two parameter groups: the new head learns fast, the pretrained layers slowly. The
-- optimizer is built before freezing, so it holds the backbone already and unfreezing
-- later needs no new optimizer (a parameter without a gradient is skipped by step()).
local groups = optim.param_groups(net, {
  { HEAD, lr = args.lr },
  { backbone, lr = args.backbone_lr },
})
local opt = optim.SGD(groups, { momentum = args.momentum, weight_decay = args.weight_decay })

-- The schedule, stepped once per epoch.
local sched
if args.schedule == "cosine" then
  sched = S.SequentialLR(opt, {
    schedulers = {
      S.LinearLR(opt, { start_factor = 0.1, total_iters = args.warmup }),
      S.CosineAnnealingLR(opt, { T_max = args.epochs - args.warmup }),
    },
    milestones = { args.warmup },
  })
elseif args.schedule == "multistep" then
  local ms = {}
  for m in args.milestones:gmatch("%d+") do ms[#ms + 1] = math.tointeger(m) end
  if #ms == 0 then ms = { math.ceil(args.epochs * 2 / 3), math.ceil(args.epochs * 5 / 6) } end
  sched = S.MultiStepLR(opt, { milestones = ms, gamma = 0.1 })
else
  error(("--schedule must be multistep or cosine, got %q"):format(args.schedule), 0)
end

-- Resuming: weights, freeze state, optimizer (momentum buffers, rates), scheduler, the
-- random generator (augmentation), the loader's shuffling, the epoch and the best score.
local start, best = 1, { acc = -1, epoch = 0 }
if args.resume then
  if not R.exists(LAST) then error(("--resume: %s does not exist (run without --resume first)"):format(LAST), 0) end
  local state = graft.load(LAST)
  optim.load_training_state(state, { model = net, optimizer = opt, scheduler = sched })
  loader:load_state_dict(state.loader)
  start, best = state.epoch + 1, { acc = state.best.acc, epoch = state.best.epoch }
  print(("resuming after epoch %d (best validation accuracy so far %.4f, epoch %d)"):format(state.epoch, best.acc, best.epoch))
end
if start <= args.freeze_epochs then
  net:freeze(backbone, { bn_eval = true })                  -- BatchNorm layers (if any) stay in eval
end
print(opt:describe({ print = false }))

local log = metrics.open(args.out .. "/metrics.csv", { append = args.resume })
pause.install()
local stopped = false
for epoch = start, args.epochs do
  if epoch == args.freeze_epochs + 1 and epoch > 1 then
    net:unfreeze(backbone)                                  -- same optimizer: its group 2 starts moving
    print(("epoch %d: the feature extractor is unfrozen (lr %g)"):format(epoch, opt.param_groups[2].lr))
  end
  net:train()
  local loss_sum, correct, seen = 0, 0, 0
  local bar = progress(#loader, { desc = ("epoch %d/%d"):format(epoch, args.epochs), unit = "batch" })
  for _, x, y in bar:wrap(loader) do
    if augment then x = augment:apply_batch(x) end
    local out = net(x)
    local loss = F.cross_entropy(out, y)
    opt:zero_grad()
    loss:backward()
    opt:step()
    local n, l, acc = y:size(1), loss:item(), R.accuracy(out, y)
    loss_sum, correct, seen = loss_sum + l * n, correct + acc * n, seen + n
    bar:log({ loss = l, acc = acc })
    if pause.check({ model = net, opt = opt, sched = sched, epoch = epoch }) == "stop" then
      stopped = true
      break
    end
  end
  if stopped then
    graft.save({ model = net:state_dict(), epoch = epoch }, args.out .. "/stopped.pth")
    print(("stopped in epoch %d: weights in %s/stopped.pth; --resume continues from the end of epoch %d")
      :format(epoch, args.out, epoch - 1))
    break
  end
  local lr_head, lr_backbone = opt.param_groups[1].lr, opt.param_groups[2].lr
  sched:step()
  local val_acc, val_loss = R.evaluate(net, val)
  log:log({ epoch = epoch, train_loss = loss_sum / seen, train_acc = correct / seen, val_loss = val_loss,
    val_acc = val_acc, lr_head = lr_head, lr_backbone = lr_backbone })
  local mark = ""
  if val_acc > best.acc then
    best = { acc = val_acc, epoch = epoch }
    graft.save({ model = net:state_dict(), epoch = epoch, val_acc = val_acc }, BEST)
    mark = " (best so far: saved)"
  end
  print(("epoch %d: train loss %.4f, train acc %.4f, val acc %.4f%s"):format(epoch, loss_sum / seen,
    correct / seen, val_acc, mark))
  graft.save(optim.training_state({ model = net, optimizer = opt, scheduler = sched, epoch = epoch, best = best,
    loader = loader:state_dict() }), LAST)
  if epoch == args.stop_after then
    print(("stopping after epoch %d as asked; --resume continues"):format(epoch))
    stopped = true
    break
  end
end
log:close()

if stopped then return { stopped = true } end
-- The last word: the best epoch's weights on the test set.
net:load_state_dict(graft.load(BEST).model)
local test_acc = R.evaluate(net, test)
print(("test accuracy %.4f (epoch %d, chosen on validation; %s) in %.1f s"):format(test_acc, best.epoch,
  args.scratch and "from scratch" or "fine-tuned", watch()))
return { test_acc = test_acc, best_epoch = best.epoch, val_acc = best.acc, seconds = watch() }
