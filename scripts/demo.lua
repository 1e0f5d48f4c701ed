-- graft's demo (`make demo`): fine-tuning beats training from scratch, on real data.
--
-- 1. scripts/pretrain.lua trains the small CNN on Fashion-MNIST classes 0-4 (30,000
--    images of tops, trousers, pullovers, dresses, coats): the "pretrained" model.
-- 2. scripts/finetune.lua fine-tunes it on classes 5-9 (sandals, shirts, sneakers, bags,
--    ankle boots) from 500 labelled images: the seed recipe in full.
-- 3. The baseline: the same network and recipe from random weights, same images, same
--    epochs (--scratch; its rate, 0.05, is the best of 0.02, 0.05 and 0.1).
-- Both are measured on the 5,000 test images of classes 5-9. The last line says:
--   fine-tuned accuracy: A (from scratch, same budget: B)
--
--   build/graft scripts/demo.lua [--out runs/demo] [--seed 0]
local here = arg[0]:match("^(.*)/") or "."
local R = dofile(here .. "/common.lua")

local args = R.options({ ... }, {
  usage = "graft scripts/demo.lua [options]",
  { "out", "runs/demo", "output folder (pretrain/, finetune/, scratch/)" },
  { "seed", 0, "random seed" },
})
local quick = args.quick and "--quick" or nil

-- Runs a recipe in this process, with its command-line arguments; returns its result.
-- stop() in a pause (Ctrl-C on a terminal) ends the demo after that recipe.
local function recipe(name, ...)
  local chunk = assert(loadfile(here .. "/" .. name .. ".lua"))
  local watch = R.stopwatch()
  local result = chunk(...)
  if require("graft.pause").stopped() then
    print("demo: stopped")
    os.exit(0)
  end
  return result, watch()
end
local function step(title) print(("\n== %s"):format(title)) end

local total = R.stopwatch()
local seed = tostring(args.seed)
step("1/3 pretraining the small CNN on Fashion-MNIST classes 0-4")
local pre, t_pre = recipe("pretrain", "--out", args.out .. "/pretrain", "--seed", seed, quick)

step("2/3 fine-tuning it on classes 5-9 (scripts/finetune.lua)")
local ft, t_ft = recipe("finetune", "--ckpt", pre.path, "--out", args.out .. "/finetune", "--seed", seed, quick)

step("3/3 the same network from scratch, same images and epochs (finetune.lua --scratch)")
local sc, t_sc = recipe("finetune", "--scratch", "--lr", "0.05", "--out", args.out .. "/scratch", "--seed", seed, quick)

print(("\ntimings: pretrain %.1f s, fine-tune %.1f s, from scratch %.1f s; total %.1f s on %d threads")
  :format(t_pre, t_ft, t_sc, total(), graft.get_num_threads()))
print(("fine-tuned accuracy: %.4f (from scratch, same budget: %.4f)"):format(ft.test_acc, sc.test_acc))
