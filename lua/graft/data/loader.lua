-- graft.data.DataLoader: batches of a dataset, in order, shuffled by graft's seeded
-- generator, or in a sampler's order (torch.utils.data.DataLoader).
--
--   local loader = data.DataLoader(ds, {batch_size = 64, shuffle = true, seed = 1})
--   for x, y in loader:iter() do ... end      -- or: for x, y in loader do ... end
--
-- Each batch is ds:get_batch(positions): one index_select per tensor for datasets backed
-- by one big tensor, items collated otherwise. With collate_fn the loader fetches the items
-- one by one (ds:get) and the function makes the batch.
--
-- graft loads in the calling thread: num_workers, pin_memory, persistent_workers and
-- prefetch_factor are accepted (so PyTorch code ports as is) and ignored.
local graft = require("graft")
local D = require("graft.data.dataset")

local DataLoader = {}
DataLoader.__name = "graft.data.DataLoader"
DataLoader.__index = DataLoader

local OPTIONS = { "batch_size", "shuffle", "drop_last", "seed", "generator", "sampler", "collate_fn",
  "num_workers", "pin_memory", "persistent_workers", "prefetch_factor" }
local KNOWN = {}
for _, k in ipairs(OPTIONS) do KNOWN[k] = true end

local function check_bool(opts, k)
  local v = opts[k]
  if v ~= nil and type(v) ~= "boolean" then
    error(("DataLoader: %s must be a boolean, got %s"):format(k, tostring(v)), 3)
  end
  return v == true
end

local function is_callable(v)
  if type(v) == "function" then return true end
  local mt = type(v) == "table" and getmetatable(v)
  return mt and mt.__call ~= nil or false
end

-- DataLoader(ds [, opts]), opts (PyTorch's names):
--   batch_size = 1, shuffle = false, drop_last = false;
--   seed = n: the loader shuffles (and calls a sampler function) on its own generator, the
--     same orders whatever else the script draws; without one, on graft's global generator
--     (graft.manual_seed); generator = data.Generator(n) does the same with a given one;
--   sampler: the positions of an epoch, in order: a Lua list of 1-based positions, an
--     int64 tensor of 0-based indices, or a function(epoch) returning either, called once
--     per epoch (epoch = 1 for the first, as loader.epoch); exclusive with shuffle; the
--     epoch's length is the sampler's (#sampler for an object that has one, such as
--     data.WeightedRandomSampler; for a plain function, #loader calls it for the next
--     epoch ahead and keeps the result for that epoch);
--   collate_fn = fn(samples): samples a Lua list of the items, each the table {x, y, ...}
--     of what ds:get(i) returns; its return values are the batch;
--   num_workers, pin_memory, persistent_workers, prefetch_factor: accepted, ignored.
local function new(ds, opts)
  if type(ds) ~= "table" or not ds.get_batch then error("DataLoader: expected a dataset", 2) end
  opts = opts or {}
  if type(opts) ~= "table" or getmetatable(opts) ~= nil then error("DataLoader: expected an options table", 2) end
  for k in pairs(opts) do
    if not KNOWN[k] then
      error(("DataLoader: unknown option '%s' (options: %s)"):format(tostring(k), table.concat(OPTIONS, ", ")), 2)
    end
  end
  local bs = opts.batch_size or 1
  if math.type(bs) ~= "integer" or bs < 1 then
    error(("DataLoader: batch_size must be a positive integer, got %s"):format(tostring(bs)), 2)
  end
  local shuffle, drop_last = check_bool(opts, "shuffle"), check_bool(opts, "drop_last")
  check_bool(opts, "pin_memory")
  check_bool(opts, "persistent_workers")
  local nw = opts.num_workers
  if nw ~= nil and (math.type(nw) ~= "integer" or nw < 0) then
    error("DataLoader: num_workers option should be non-negative; use num_workers=0 to disable multiprocessing.", 2)
  end
  local pf = opts.prefetch_factor
  if pf ~= nil and (math.type(pf) ~= "integer" or pf < 1) then
    error(("DataLoader: prefetch_factor must be a positive integer, got %s"):format(tostring(pf)), 2)
  end
  local sampler = opts.sampler
  if sampler ~= nil then
    if shuffle then error("DataLoader: sampler option is mutually exclusive with shuffle", 2) end
    if is_callable(sampler) then
      -- called per epoch
    elseif type(sampler) == "table" or graft.is_tensor(sampler) then
      sampler = D.indices(sampler, #ds, "DataLoader: sampler")
    else
      error(("DataLoader: sampler must be a list of positions, an int64 tensor or a function, got %s")
        :format(type(sampler)), 2)
    end
  end
  local collate_fn = opts.collate_fn
  if collate_fn ~= nil and not is_callable(collate_fn) then
    error(("DataLoader: collate_fn must be a function, got %s"):format(type(collate_fn)), 2)
  end
  local self = setmetatable({ dataset = ds, batch_size = bs, shuffle = shuffle, drop_last = drop_last, epoch = 0,
    sampler = sampler, collate_fn = collate_fn }, DataLoader)
  if opts.seed ~= nil then
    if math.type(opts.seed) ~= "integer" then error("DataLoader: seed must be an integer", 2) end
    self.generator = D.Generator(opts.seed)
  elseif opts.generator ~= nil then
    local mt = getmetatable(opts.generator)
    if not mt or mt.__name ~= "graft.data.Generator" then
      error("DataLoader: generator must be a data.Generator", 2)
    end
    self.generator = opts.generator
  end
  return self
end

-- The 0-based order of the next epoch: int64 [N]. A sampler function's result is kept
-- (self._next) until that epoch starts, so #loader and the epoch agree.
function DataLoader:_order()
  if self._next then return self._next end
  local n = #self.dataset
  local s = self.sampler
  if s == nil then
    if not self.shuffle then return graft.arange(n) end
    return D.with_generator(self.generator, graft.randperm, n)
  end
  if graft.is_tensor(s) then return s end
  self._pre_state = self.generator and self.generator:get_state()
  local r = D.with_generator(self.generator, s, self.epoch + 1)
  local ok, idx = pcall(D.indices, r, n, "DataLoader: sampler")
  if not ok then error((tostring(idx):gsub("^[^\n]-:%d+: ", "", 1)), 0) end
  self._next = idx
  return idx
end

-- The number of batches: ceil(N / batch_size), or floor with drop_last; N the dataset's
-- length, or the sampler's.
function DataLoader:__len()
  local s, n = self.sampler, #self.dataset
  if type(s) == "table" and getmetatable(s).__len then n = #s
  elseif s ~= nil then n = self:_order():size(1) end
  if self.drop_last then return n // self.batch_size end
  return (n + self.batch_size - 1) // self.batch_size
end

-- One batch through collate_fn: the items fetched one by one.
function DataLoader:_collate(pos)
  local samples = {}
  for k, p in ipairs(pos:tolist()) do samples[k] = table.pack(self.dataset:get(p + 1)) end
  return self.collate_fn(samples)
end

-- An iterator over one epoch: each call returns the next batch (X, Y, ...), nil at the end.
function DataLoader:iter()
  local order = self:_order()
  self._next = nil
  local n = order:size(1)
  local bs, ds = self.batch_size, self.dataset
  local nb = self.drop_last and n // bs or (n + bs - 1) // bs
  self.epoch = self.epoch + 1
  local b = 0
  return function()
    if b >= nb then return nil end
    local start = b * bs
    b = b + 1
    local pos = order:narrow(1, start + 1, math.min(bs, n - start))
    if self.collate_fn then return self:_collate(pos) end
    return ds:get_batch(pos)
  end
end

-- `for x, y in loader do`: the generic for calls loader(nil, control); control is nil only
-- on the first call of a loop, which starts a new epoch (so `break` leaves nothing behind).
function DataLoader:__call(_, control)
  if control == nil or not self._running then self._running = self:iter() end
  local r = table.pack(self._running())
  if r[1] == nil then self._running = nil end
  return table.unpack(r, 1, r.n)
end

-- The state that makes the next epochs' orders reproducible (the generator and epoch); the
-- generator as it was before #loader drew a sampler function's next order ahead.
function DataLoader:state_dict()
  local g = self.generator
  local state = g and (self._next and self._pre_state or g:get_state()) or nil
  return { epoch = self.epoch, generator = state and state:clone() or nil }
end

function DataLoader:load_state_dict(sd)
  self.epoch = sd.epoch or 0
  self._next = nil
  if sd.generator then
    if not self.generator then error("load_state_dict: this loader has no seed (no generator to restore)", 2) end
    self.generator:set_state(sd.generator)
  end
end

function DataLoader:__tostring()
  return ("DataLoader(%s, batch_size=%d, shuffle=%s, drop_last=%s, %d batches)"):format(tostring(self.dataset),
    self.batch_size, tostring(self.shuffle), tostring(self.drop_last), #self)
end

return new
