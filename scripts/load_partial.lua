-- scripts/load_partial.lua: the ways of loading part of a checkpoint, side by side, on
-- one whose keys partly differ from the model's. The checkpoint is what a PyTorch
-- training run often leaves: nn.DataParallel's "module." in front of every key, the
-- weights under "state_dict" beside the epoch, an auxiliary head our model lacks, and a
-- 10-class classifier where our model has 5 classes (Fashion-MNIST classes 5-9).
--
--   build/graft scripts/load_partial.lua [--out runs/load_partial]
--
-- Each section shows the PyTorch idiom it replaces (the seed note's techniques), then
-- what graft does with it.
local R = dofile((arg[0]:match("^(.*)/") or ".") .. "/common.lua")
local nn, state = graft.nn, graft.state

local args = R.options({ ... }, {
  usage = "graft scripts/load_partial.lua [options]",
  { "out", "runs/load_partial", "output folder (the checkpoint it makes)" },
  { "seed", 0, "random seed" },
})
graft.manual_seed(args.seed)
R.makedirs(args.out)

-- The checkpoint: a small CNN for 10 classes with an auxiliary head, saved the way a
-- DataParallel training run saves it.
local Old = nn.Module:extend("Old")
function Old:__init()
  self.module = graft.models.small_cnn({ num_classes = 10 })   -- keys "module.0.weight", ...
  self.module.aux = nn.Linear(128, 2)                            -- "module.aux.weight", ...
end
local path = args.out .. "/dataparallel.pth"
graft.save({ epoch = 30, best_acc = 0.91, state_dict = Old():state_dict() }, path)

local function section(title, pytorch)
  print(("\n== %s\n   PyTorch: %s"):format(title, pytorch))
end
-- Runs fn; prints its error (without the position) instead of stopping.
local function try(fn)
  local ok, err = pcall(fn)
  if not ok then
    local msg = tostring(err):gsub("^[^\n:]*:%d+: ", ""):gsub("\n%s*", "\n      ")
    print("   -> error: " .. msg)
  end
  return ok
end
-- How many of the model's tensors now equal the checkpoint's (after "module." is removed).
local ckpt = graft.load(path)
local plain = state.strip_prefix(ckpt.state_dict, "module.")
local function loaded(net)
  local n, total = 0, 0
  for k, v in pairs(net:state_dict()) do
    total = total + 1
    local c = plain[k]
    if c and c:shape()[1] == v:shape()[1] and c:eq(v):all():item() then n = n + 1 end
  end
  return ("%d of %d model tensors hold the checkpoint's values"):format(n, total)
end
local function model() return graft.models.small_cnn({ num_classes = 5 }) end

print(("checkpoint %s: %s, %d tensors under state_dict, e.g. %s"):format(path,
  "{epoch, best_acc, state_dict}", #ckpt.state_dict, ckpt.state_dict:keys()[1]))
print("model: graft.models.small_cnn({num_classes = 5}), e.g. 0.weight; head 9.weight [5, 128]")

section("1. load_state_dict(sd, {strict = false})",
  "net.load_state_dict(ckpt['state_dict'], strict=False)")
do
  local net = model()
  local r = net:load_state_dict(ckpt.state_dict, { strict = false })
  print(("   -> no error, but %d missing and %d unexpected keys: %s"):format(#r.missing_keys, #r.unexpected_keys,
    loaded(net)))
  print("   strict = false skips keys that differ by name, so a prefix makes it load nothing, silently.")
end

section('2. removing the "module." prefix, then strict = false',
  "sd = remove_prefix(ckpt['state_dict'], 'module.'); net.load_state_dict(sd, strict=False)")
do
  local net = model()
  local sd, n = state.strip_prefix(ckpt.state_dict, "module.")
  print(("   graft.state.strip_prefix changed %d keys"):format(n))
  try(function() net:load_state_dict(sd, { strict = false }) end)
  print("   a size mismatch is an error even with strict = false (PyTorch's rule).")
end

section("3. keeping the keys the model has",
  "sd = {k: v for k, v in sd.items() if k in net.state_dict()}; net.load_state_dict(sd)")
do
  local net = model()
  local target = net:state_dict()
  local sd, dropped = state.filter(plain, function(k) return target[k] ~= nil end)
  print(("   graft.state.filter kept %d keys, dropped %d: %s"):format(#sd, #dropped, table.concat(dropped, ", ")))
  try(function() net:load_state_dict(sd) end)
  local matching, rest = state.select_matching(target, plain)
  local why = {}
  for i, d in ipairs(rest) do why[i] = d.key .. " (" .. d.reason .. ")" end
  print(("   graft.state.select_matching also compares shapes: kept %d, dropped %d: %s"):format(#matching, #rest,
    table.concat(why, ", ")))
  net:load_state_dict(matching, { strict = false })
  print("   -> " .. loaded(net))
end

section("4. check_keys: what would load, before loading",
  "check_keys(net, sd)  # logs missing / unused / used, asserts used > 0")
do
  local net = model()
  try(function() state.check_keys(net:state_dict(), ckpt.state_dict) end)
  state.check_keys(net:state_dict(), plain)
end

section("5. load_pretrained: the pipeline, with a policy per problem",
  "load_pretrain(net, path): torch.load, unwrap, remove_prefix, check_keys, strict=False, by hand")
do
  local net = model()
  local report = net:load_pretrained(path, {
    strip_prefix = "auto",     -- finds "module." by itself
    on_mismatch = "skip",      -- the 10-class head: keep the model's fresh one
    unexpected = "ignore",     -- the auxiliary head: not ours
  })
  print(report)
  print("   -> " .. loaded(net))
end

section("6. load_pretrained with an adapter: keep the head rows of classes 5-9",
  "w = sd['fc.weight'][5:10]; b = sd['fc.bias'][5:10]  # then load, by hand")
do
  local net = model()
  local report = net:load_pretrained(path, {
    strip_prefix = "auto",
    on_mismatch = { { "^9%.", graft.adapt.head(5, { keep = { 5, 6, 7, 8, 9 } }) }, default = "error" },
    unexpected = "ignore",
  })
  print(report)
  local same = net[-1].weight:eq(plain["9.weight"]:narrow(1, 6, 5)):all():item()
  print(("   -> the head's 5 rows are the checkpoint's rows 5-9: %s"):format(tostring(same)))
end

section("7. a dry run: the report, nothing copied",
  "(none: PyTorch loads, then you look)")
do
  local net = model()
  local before = net[1].weight:clone()
  net:load_pretrained(path, { strip_prefix = "auto", on_mismatch = "skip", unexpected = "ignore", dry_run = true })
  print(("   -> the model is unchanged: %s"):format(tostring(net[1].weight:eq(before):all():item())))
end
