-- graft.data.DataLoader: batches of a dataset, in order or shuffled by graft's seeded
-- generator.
--
--   local loader = data.DataLoader(ds, {batch_size = 64, shuffle = true, seed = 1})
--   for x, y in loader:iter() do ... end      -- or: for x, y in loader do ... end
--
-- Each batch is ds:get_batch(positions): one index_select per tensor for datasets backed
-- by one big tensor, items stacked otherwise.
local graft = require("graft")
local D = require("graft.data.dataset")

local DataLoader = {}
DataLoader.__name = "graft.data.DataLoader"
DataLoader.__index = DataLoader

-- DataLoader(ds [, {batch_size = 1, shuffle = false, drop_last = false, seed = nil}]):
-- with a seed the loader shuffles from its own generator (the same orders whatever else the
-- script draws); without one, from graft's global generator (graft.manual_seed).
local function new(ds, opts)
  if type(ds) ~= "table" or not ds.get_batch then error("DataLoader: expected a dataset", 3) end
  opts = opts or {}
  if type(opts) ~= "table" then error("DataLoader: expected an options table", 3) end
  local bs = opts.batch_size or 1
  if math.type(bs) ~= "integer" or bs < 1 then
    error(("DataLoader: batch_size must be a positive integer, got %s"):format(tostring(bs)), 3)
  end
  local self = setmetatable({ dataset = ds, batch_size = bs, shuffle = opts.shuffle == true,
    drop_last = opts.drop_last == true, epoch = 0 }, DataLoader)
  if opts.seed ~= nil then
    if math.type(opts.seed) ~= "integer" then error("DataLoader: seed must be an integer", 3) end
    self.generator = D.Generator(opts.seed)
  elseif opts.generator ~= nil then
    self.generator = opts.generator
  end
  return self
end

-- The number of batches: ceil(N / batch_size), or floor with drop_last.
function DataLoader:__len()
  local n = #self.dataset
  if self.drop_last then return n // self.batch_size end
  return (n + self.batch_size - 1) // self.batch_size
end

-- The 0-based order of one epoch: int64 [N].
function DataLoader:_order()
  local n = #self.dataset
  if not self.shuffle then return graft.arange(n) end
  return D.with_generator(self.generator, graft.randperm, n)
end

-- An iterator over one epoch: each call returns the next batch (X, Y, ...), nil at the end.
function DataLoader:iter()
  local n = #self.dataset
  local order = self:_order()
  local nb, bs, ds = #self, self.batch_size, self.dataset
  self.epoch = self.epoch + 1
  local b = 0
  return function()
    if b >= nb then return nil end
    local start = b * bs
    b = b + 1
    local len = math.min(bs, n - start)
    return ds:get_batch(order:narrow(1, start + 1, len))
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

-- The state that makes the next epochs' orders reproducible (the generator and epoch).
function DataLoader:state_dict()
  return { epoch = self.epoch, generator = self.generator and self.generator:get_state() or nil }
end

function DataLoader:load_state_dict(sd)
  self.epoch = sd.epoch or 0
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
