-- Joins the graft and PyTorch result files of one benchmark run and prints a table
-- with the ratio torch_time / graft_time (above 1: graft is faster).
-- usage: lua5.4 compare.lua GRAFT_FILE TORCH_FILE [TITLE]
local function read(path)
  local t, order = {}, {}
  for line in io.lines(path) do
    local name, v = line:match("^(%S+)\t(%S+)$")
    if name then
      t[name] = tonumber(v)
      order[#order + 1] = name
    end
  end
  return t, order
end
local g, order = read(arg[1])
local p = read(arg[2])
local function fmt(s)
  if not s then return "-" end
  if s < 1e-6 then return ("%.1f ns"):format(s * 1e9) end
  if s < 1e-3 then return ("%.2f us"):format(s * 1e6) end
  if s < 1 then return ("%.2f ms"):format(s * 1e3) end
  return ("%.3f s"):format(s)
end
print(arg[3] or "benchmark")
print(("%-20s %12s %12s %10s"):format("case", "graft", "pytorch", "speedup"))
for _, name in ipairs(order) do
  local ratio = (g[name] and p[name]) and ("%.2fx"):format(p[name] / g[name]) or "-"
  print(("%-20s %12s %12s %10s"):format(name, fmt(g[name]), fmt(p[name]), ratio))
end
