-- Shared by the recipe specs (spec/recipes/*_spec.lua): runs a recipe under the graft
-- executable ($GRAFT_BIN or build/graft) in --quick mode, in a temporary folder, and
-- reads back what it wrote (metrics CSV, checkpoints).
local graft = require("graft")
local metrics = require("graft.metrics")

local H = {}

H.BIN = os.getenv("GRAFT_BIN") or "build/graft"

function H.q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end
H.read = read

function H.exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

-- A fresh temporary folder (removed by H.cleanup).
local dirs = {}
function H.tmpdir()
  local p = io.popen("mktemp -d /tmp/graft_recipe.XXXXXX")
  local d = p:read("l")
  p:close()
  dirs[#dirs + 1] = d
  return d
end

function H.cleanup()
  for _, d in ipairs(dirs) do os.execute("rm -rf " .. H.q(d)) end
  dirs = {}
end

-- Runs `graft scripts/NAME.lua args...` (progress bars in their plain, one-line form);
-- returns stdout, stderr, the exit status and the seconds it took.
function H.run(name, ...)
  local parts = {}
  for i, a in ipairs({ ... }) do parts[i] = H.q(a) end
  local out, err = os.tmpname(), os.tmpname()
  local t0 = graft.clock()
  local cmd = ("GRAFT_PROGRESS=plain %s scripts/%s.lua %s > %s 2> %s"):format(H.q(H.BIN), name,
    table.concat(parts, " "), H.q(out), H.q(err))
  local _, _, code = os.execute(cmd)
  local dt = graft.clock() - t0
  local o, e = read(out), read(err)
  os.remove(out)
  os.remove(err)
  return o, e, code, dt
end

-- The rows of a metrics CSV, and one column as a list.
function H.metrics(path) return metrics.read(path).rows end
function H.column(rows, name)
  local out = {}
  for i, r in ipairs(rows) do out[i] = r[name] end
  return out
end

-- Whether two state dicts (OrderedDicts of tensors) are equal bit for bit; the first
-- difference otherwise.
function H.same_tensors(a, b)
  if #a ~= #b then return false, ("%d and %d entries"):format(#a, #b) end
  for k, v in pairs(a) do
    local w = b[k]
    if graft.is_tensor(v) then
      if not graft.is_tensor(w) then return false, k .. " is not a tensor in both" end
      if v:dtype() ~= w:dtype() or #v:shape() ~= #w:shape() then return false, k .. " differs in dtype or shape" end
      if v:tobytes() ~= w:tobytes() then return false, k .. " differs" end
    end
  end
  return true
end

H.have_bin = function() return H.exists(H.BIN) end

return H
