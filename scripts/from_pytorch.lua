-- scripts/from_pytorch.lua: fine-tuning from a checkpoint PyTorch trained, and handing
-- the result back to PyTorch.
--
-- The checkpoint, scripts/fixtures/small_cnn_torch.pth, is what a PyTorch training
-- script leaves (scripts/fixtures/gen_pretrained_torch.py made it: the small CNN trained
-- on Fashion-MNIST classes 0-4 under nn.DataParallel, saved in float16 with its epoch and
-- best accuracy). scripts/finetune.lua fine-tunes it on classes 5-9 unchanged: the
-- report shows the weights found under "state_dict", "module." stripped, float16 cast
-- to float32. The fine-tuned weights are then saved as a .pth that torch.load reads
-- (weights_only=True), and PyTorch evaluates them: the same accuracy, image for image.
--
--   build/graft scripts/from_pytorch.lua [--epochs 10 --out runs/from_pytorch]
local here = arg[0]:match("^(.*)/") or "."
local R = dofile(here .. "/common.lua")

local args = R.options({ ... }, {
  usage = "graft scripts/from_pytorch.lua [options]",
  { "ckpt", here .. "/fixtures/small_cnn_torch.pth", "the checkpoint PyTorch saved" },
  { "out", "runs/from_pytorch", "output folder" },
  { "epochs", 10, "epochs of fine-tuning", quick = 3 },
  { "test_size", 0, "test images of classes 5-9 to compare on (0: all 5,000)", quick = 1000 },
  { "seed", 0, "random seed" },
})

-- 1. What PyTorch saved: graft reads the pickle without running it.
local ckpt = graft.load(args.ckpt)
local sd = ckpt.state_dict
print(("%s: arch %s, epoch %d, best_acc1 %.4f; %d tensors such as %s (%s)"):format(args.ckpt, ckpt.arch, ckpt.epoch,
  ckpt.best_acc1, #sd, sd:keys()[1], sd[sd:keys()[1]]:dtype()))

-- 2. The fine-tuning recipe, as is, on PyTorch's checkpoint.
local finetune = assert(loadfile(here .. "/finetune.lua"))
local result = finetune("--ckpt", args.ckpt, "--out", args.out, "--epochs", tostring(args.epochs),
  "--test-size", tostring(args.test_size), "--seed", tostring(args.seed), args.quick and "--quick" or nil)
if result.stopped then return result end

-- 3. Back to PyTorch: the best weights as a plain state dict in PyTorch's zip format.
local net = graft.models.small_cnn({ num_classes = 5 })
net:load_state_dict(graft.load(args.out .. "/best.pth").model)
local export = args.out .. "/small_cnn_5-9.pth"
graft.save(net:state_dict(), export)
local _, _, test = R.fashion({ classes = { 5, 6, 7, 8, 9 }, test = args.test_size })
local acc = R.evaluate(net, test)
local correct = math.floor(acc * #test + 0.5)
print(("graft:   accuracy %.4f (%d of %d) from %s"):format(acc, correct, #test, export))

-- 4. PyTorch loads the file and evaluates the same images.
local ok, why = R.have_torch()
if not ok then
  print("pytorch: not checked: " .. why)
  return { test_acc = acc, path = export }
end
local out, ran = R.run(("/usr/bin/python3 %s %s %d"):format(R.quote(here .. "/fixtures/eval_torch.py"),
  R.quote(export), args.test_size))
io.write(out)
local torch_acc, torch_correct = out:match("pytorch: accuracy ([%d.]+) %((%d+) of")
if not ran or not torch_acc then error("from_pytorch: PyTorch could not evaluate " .. export, 0) end
torch_acc, torch_correct = tonumber(torch_acc), math.tointeger(tonumber(torch_correct))
print(torch_correct == correct and "same accuracy in graft and PyTorch"
  or ("the accuracies differ: graft %d, PyTorch %d of %d"):format(correct, torch_correct, #test))
return { test_acc = acc, torch_acc = torch_acc, path = export }
