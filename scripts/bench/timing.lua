-- Shared by the graft sides of the benchmarks:
--   local timing = dofile((arg[0]:match("^(.*)/") or ".") .. "/timing.lua")
--   timing.best_of(reps, fn [, {warm = true}])  the fastest of reps timed calls (seconds);
--                                           warm: one untimed call first
--   timing.report(name, value)                   "name<TAB>value" on stdout
local graft = require("graft")

local T = {}

function T.best_of(reps, fn, opts)
  if opts and opts.warm then fn() end
  local best = math.huge
  for _ = 1, reps do
    local t0 = graft.clock()
    fn()
    local dt = graft.clock() - t0
    if dt < best then best = dt end
  end
  return best
end

function T.report(name, value) io.write(("%s\t%.9g\n"):format(name, value)) end

return T
