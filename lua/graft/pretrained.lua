-- graft.pretrained: net:load_pretrained(path_or_ckpt [, opts]) -> report. Loading
-- weights into a model that differs from the one they were saved from, as a pipeline
-- whose every stage shows up in the report: open the file (graft.load) -> pick the
-- weights (graft.state.unwrap) -> transform keys (strip_prefix, rename, include /
-- exclude) -> match against the model's state dict -> per-key policy (on_mismatch,
-- missing, unexpected) -> copy (Module:load_state_dict, strict = false).
--
--   local r = net:load_pretrained("resnet18.pth", {strip_prefix = "auto", on_mismatch = "skip"})
--   print(r)                      -- counts, then up to 8 names per category
--
-- Options: load (graft.load's options); strip_prefix = "p." | {"a.", "b."} | "auto" (runs
-- of "module.", "_orig_mod.", "model." stripped only when more keys then match the
-- model); rename = {{pattern, repl}, ...} (graft.state.rename); include / exclude = a
-- Lua pattern, a list of them or a function(key, value), applied to checkpoint and model
-- keys alike (an excluded model key is not "missing"); on_mismatch = "error" (default) |
-- "skip" | adapter function(name, model_t, ckpt_t) -> tensor or "skip" | a table
-- {[name] = policy, {pattern, policy}, ..., default = policy}; missing, unexpected =
-- "error" | "warn" (default) | "ignore"; allow_empty; dry_run (report only; prints it
-- unless verbose = false); verbose (print the report).
local graft = require("graft")
local OrderedDict = require("graft.odict")
local state = require("graft.state")

local M = {}

local CAP = 8 -- names printed per category
local AUTO_PREFIXES = { "module.", "_orig_mod.", "model." }
local POLICIES = { error = true, warn = true, ignore = true }
local OPTIONS = {
  "allow_empty", "dry_run", "exclude", "include", "load", "missing", "on_mismatch", "rename",
  "strip_prefix", "unexpected", "verbose",
}
local OPTION_SET = {}
for _, k in ipairs(OPTIONS) do OPTION_SET[k] = true end

local function fail(msg) error("load_pretrained: " .. msg, 0) end

-- An error message without the "file:line: " position Lua put in front of it.
local function bare(err)
  local s = tostring(err)
  return (s:gsub("^[^\n:]*:%d+: ", ""))
end

-- fn(...) with any error re-raised as load_pretrained's, without its position.
local function stage(fn, ...)
  local r = table.pack(pcall(fn, ...))
  if not r[1] then fail(bare(r[2])) end
  return table.unpack(r, 2, r.n)
end

local function is_tensor(x) return graft.is_tensor(x) end

local function is_module(x)
  if type(x) ~= "table" then return false end
  local mt = getmetatable(x)
  return type(mt) == "table" and rawget(mt, "__graft_module") == true
end

local function is_callable(x)
  if type(x) == "function" then return true end
  local mt = type(x) == "table" and getmetatable(x)
  return type(mt) == "table" and mt.__call ~= nil and not is_module(x)
end

local function shape_str(s)
  if is_tensor(s) then s = s:shape() end
  if type(s) ~= "table" then return tostring(s) end
  return "[" .. table.concat(s, ", ") .. "]"
end

-- Whether checkpoint value v fits model tensor t as load_state_dict copies it (a
-- 0-dim model tensor also takes a one-element [1], PyTorch's old-checkpoint rule).
local function fits(t, v)
  if not is_tensor(v) then return false end
  local ts, vs = t:shape(), v:shape()
  if #ts == 0 and #vs == 1 and vs[1] == 1 then return true end
  if #ts ~= #vs then return false end
  for i = 1, #ts do
    if ts[i] ~= vs[i] then return false end
  end
  return true
end

local function capped(names, cap) return state._capped(names, cap or CAP) end

---------------------------------------------------------------------------------------
-- Options

local function check_policy(v, what)
  if v == nil then return nil end
  if not POLICIES[v] then
    fail(('%s must be "error", "warn" or "ignore", got %s'):format(what, type(v) == "string" and ('"' .. v .. '"') or type(v)))
  end
  return v
end

local function check_mismatch_policy(v, what)
  if v == "error" or v == "skip" or is_callable(v) then return v end
  fail(('%s must be "error", "skip" or an adapter function(name, model_tensor, ckpt_tensor), got %s')
    :format(what, type(v) == "string" and ('"' .. v .. '"') or type(v)))
end

-- on_mismatch as a function(name) -> policy. A table maps exact key names to policies,
-- its list part holds {pattern, policy} rules tried in order (string.find on the key),
-- and `default` covers the rest ("error" when absent).
local function mismatch_resolver(v)
  if v == nil then return function() return "error" end end
  if type(v) == "string" or is_callable(v) then
    check_mismatch_policy(v, "on_mismatch")
    return function() return v end
  end
  if type(v) ~= "table" then check_mismatch_policy(v, "on_mismatch") end
  local n = #v
  for k, p in pairs(v) do
    if math.type(k) == "integer" and k >= 1 and k <= n then
      if type(p) ~= "table" or type(p[1]) ~= "string" or p[2] == nil then
        fail(("on_mismatch[%d] must be a rule {pattern, policy}"):format(k))
      end
      check_mismatch_policy(p[2], ("on_mismatch[%d]'s policy"):format(k))
    elseif type(k) == "string" then
      check_mismatch_policy(p, ("on_mismatch[%q]"):format(k))
    else
      fail(("on_mismatch has a %s key: keys are names, `default`, or a list of {pattern, policy}"):format(type(k)))
    end
  end
  return function(name)
    local p = rawget(v, name)
    if p ~= nil and name ~= "default" then return p end
    for i = 1, n do
      if name:find(v[i][1]) then return v[i][2] end
    end
    return v.default or "error"
  end
end

-- include / exclude: a Lua pattern, a list of patterns, or a function(key, value).
local function matcher(v, what)
  if v == nil then return nil end
  if type(v) == "string" then v = { v } end
  if is_callable(v) then return function(k, val) return v(k, val) and true or false end end
  if type(v) ~= "table" or #v == 0 then
    fail(("%s must be a Lua pattern, a list of patterns or a function(key, value), got %s"):format(what, type(v)))
  end
  for i, p in ipairs(v) do
    if type(p) ~= "string" then fail(("%s[%d] must be a Lua pattern (a string), got %s"):format(what, i, type(p))) end
  end
  return function(k)
    if type(k) ~= "string" then return false end
    for _, p in ipairs(v) do
      if k:find(p) then return true end
    end
    return false
  end
end

local function check_options(opts)
  if opts == nil then return {} end
  if type(opts) ~= "table" then fail("options must be a table, got " .. type(opts)) end
  for k in pairs(opts) do
    if not OPTION_SET[k] then
      fail(("unknown option %q (options: %s)"):format(tostring(k), table.concat(OPTIONS, ", ")))
    end
  end
  return opts
end

---------------------------------------------------------------------------------------
-- The report

local Report = { __name = "graft.LoadReport" }
Report.__index = Report

local function new_report()
  return setmetatable({
    loaded = {}, skipped = {}, missing = {}, unexpected = {}, mismatched = {}, adapted = {}, cast = {},
    defaulted = {}, prefixes = {}, renamed = {}, warnings = {}, errors = {}, counts = {},
  }, Report)
end

local function mismatch_text(m)
  local s = ("%s (model %s, checkpoint %s)"):format(m.key, shape_str(m.model), shape_str(m.checkpoint))
  if m.action == "adapted" and m.shape then
    s = s .. ": adapted"
  elseif m.action then
    s = s .. ": " .. m.action
  end
  return s
end

function Report.__tostring(r)
  local lines = {}
  local head = ("load_pretrained %s%s: %d of %d model tensors %s"):format(
    r.path and ('"' .. r.path .. '"') or r.source, r.dry_run and " (dry run, nothing copied)" or "",
    r.counts.loaded, r.model_keys, r.dry_run and "would load" or "loaded")
  lines[1] = head
  local ck = { ("%d tensors"):format(r.checkpoint_keys) }
  if r.unwrapped then ck[1] = ck[1] .. (' under "%s"'):format(r.unwrapped) end
  for _, p in ipairs(r.prefixes) do
    ck[#ck + 1] = ('stripped "%s" from %d keys%s'):format(p.prefix, p.count, p.auto and " (auto)" or "")
  end
  if #r.renamed > 0 then ck[#ck + 1] = ("%d renamed"):format(#r.renamed) end
  lines[#lines + 1] = "  checkpoint  " .. table.concat(ck, ", ")
  local function row(label, n, text)
    lines[#lines + 1] = ("  %-11s %4d%s"):format(label, n, (n > 0 and text and text ~= "") and ("  " .. text) or "")
  end
  row("loaded", #r.loaded, capped(r.loaded))
  local mm = {}
  for i = 1, math.min(#r.mismatched, CAP) do mm[i] = mismatch_text(r.mismatched[i]) end
  local mt = table.concat(mm, ", ")
  if #r.mismatched > CAP then mt = mt .. (", ... and %d more"):format(#r.mismatched - CAP) end
  row("mismatched", #r.mismatched, mt)
  row("missing", #r.missing, capped(r.missing))
  row("unexpected", #r.unexpected, capped(r.unexpected))
  row("skipped", #r.skipped, capped(r.skipped) .. " (include/exclude)")
  local casts, kinds, kind = {}, {}, nil
  for i, c in ipairs(r.cast) do
    casts[i] = c.key
    local k = c.from .. " -> " .. c.to
    if not kinds[k] then kinds[k], kind = true, (kind and kind .. ", " or "") .. k end
  end
  row("cast", #r.cast, capped(casts) .. (kind and (" (" .. kind .. ")") or ""))
  if #r.defaulted > 0 then
    lines[#lines + 1] = ("  kept %d num_batches_tracked the checkpoint predates: %s"):format(#r.defaulted, capped(r.defaulted))
  end
  if r.hint then lines[#lines + 1] = "  hint: " .. r.hint end
  for _, w in ipairs(r.warnings) do lines[#lines + 1] = "  warning: " .. w end
  for _, e in ipairs(r.errors) do lines[#lines + 1] = "  error: " .. e end
  return table.concat(lines, "\n")
end

---------------------------------------------------------------------------------------
-- Stages

-- strip_prefix: a string, a list of strings (stripped in order), or "auto".
local function count_named(sd, tset)
  local n = 0
  for k in pairs(sd) do
    if tset[k] then n = n + 1 end
  end
  return n
end

local function strip_stage(sd, spec, tset, report)
  if spec == nil then return sd end
  if spec == "auto" then
    -- candidates: every run of known prefixes a key starts with ("_orig_mod.module.")
    local cands, seen = {}, {}
    for k in pairs(sd) do
      if type(k) == "string" then
        local p, found = "", true
        while found do
          found = false
          for _, a in ipairs(AUTO_PREFIXES) do
            if k:sub(#p + 1, #p + #a) == a then
              p, found = p .. a, true
              if not seen[p] then seen[p] = true; cands[#cands + 1] = p end
              break
            end
          end
        end
      end
    end
    for _ = 1, #cands do
      local base = count_named(sd, tset)
      local best
      for _, p in ipairs(cands) do
        local ok, s2, n = pcall(state.strip_prefix, sd, p)
        if ok and n > 0 then
          local c = count_named(s2, tset)
          if c > base and (not best or c > best.matched) then
            best = { prefix = p, sd = s2, count = n, matched = c }
          end
        end
      end
      if not best then break end
      sd = best.sd
      report.prefixes[#report.prefixes + 1] = { prefix = best.prefix, count = best.count, auto = true }
    end
    return sd
  end
  local list = type(spec) == "string" and { spec } or spec
  if type(list) ~= "table" or #list == 0 then
    fail('strip_prefix must be a prefix, a list of prefixes or "auto", got ' .. type(spec))
  end
  for i, p in ipairs(list) do
    if type(p) ~= "string" then fail(("strip_prefix[%d] must be a string, got %s"):format(i, type(p))) end
    local n
    sd, n = stage(state.strip_prefix, sd, p)
    report.prefixes[#report.prefixes + 1] = { prefix = p, count = n }
  end
  return sd
end

-- rename: state.rename's rules {{pattern, replacement}, ...}, or one rule {pat, repl}.
local function rename_stage(sd, rules, report)
  if rules == nil then return sd end
  if type(rules) == "table" and type(rules[1]) == "string" then rules = { rules } end
  if type(rules) ~= "table" then fail("rename must be a list of {pattern, replacement} rules, got " .. type(rules)) end
  local renamed
  sd, renamed = stage(state.rename, sd, rules)
  for i, r in ipairs(renamed) do report.renamed[i] = { from = r[1], to = r[2] } end
  return sd
end

-- The hint of the zero-loaded error, from check_keys where it can tell (a prefix to
-- strip or add, another configuration) or from this pipeline's own stages.
local function empty_hint(target, sd, report)
  local ok, err = pcall(state.check_keys, target, sd, { quiet = true })
  if not ok then
    local h = bare(err):match("used[^)]*%): (.*)$")
    if h then
      h = h:gsub('use graft%.state%.strip_prefix%(sd, "([^"]*)"%)', 'pass {strip_prefix = "%1"} (or "auto")')
      h = h:gsub('use graft%.state%.add_prefix%(sd, "([^"]*)"%)', 'pass {rename = {{"^", "%1"}}}')
      return h
    end
  end
  if #report.skipped > 0 then
    return ("include/exclude dropped %d checkpoint keys (e.g. %s): check the patterns"):format(#report.skipped, report.skipped[1])
  end
  if #report.mismatched > 0 then
    return ("the keys found by name have other shapes in the checkpoint (e.g. %s) and on_mismatch skipped them: " ..
      "a different configuration of the model, or an adapter to write (graft.adapt)?")
      :format(mismatch_text({ key = report.mismatched[1].key, model = report.mismatched[1].model,
        checkpoint = report.mismatched[1].checkpoint }))
  end
  return "the model has no tensors, or the checkpoint is empty"
end

---------------------------------------------------------------------------------------
-- load(model, path_or_ckpt [, opts]) -> report. See the header and README.
function M.load(model, src, opts)
  if not is_module(model) then
    fail("expected a model (an nn.Module) to load into, got " .. (is_tensor(model) and "a tensor" or type(model)))
  end
  opts = check_options(opts)
  local dry = opts.dry_run and true or false
  local verbose = opts.verbose
  if verbose == nil then verbose = dry end
  local missing_policy = check_policy(opts.missing, "missing") or "warn"
  local unexpected_policy = check_policy(opts.unexpected, "unexpected") or "warn"
  local policy_of = mismatch_resolver(opts.on_mismatch)
  local include, exclude = matcher(opts.include, "include"), matcher(opts.exclude, "exclude")
  if opts.load ~= nil and type(opts.load) ~= "table" then fail("load (graft.load's options) must be a table") end

  local report = new_report()
  report.dry_run = dry

  -- 1. open
  local ckpt
  if type(src) == "string" then
    local info
    ckpt, info = stage(graft.load, src, opts.load)
    report.path, report.source, report.format = src, ('"' .. src .. '"'), info.format
  elseif is_module(src) then
    ckpt = src:state_dict()
    report.source = "the model " .. src:_get_name()
  elseif type(src) == "table" and not is_tensor(src) then
    ckpt = src
    report.source = "the checkpoint"
  else
    fail("expected a checkpoint path, a loaded checkpoint (a table) or a model, got " ..
      (is_tensor(src) and "a tensor" or type(src)))
  end

  -- 2. the weights
  local sd, uinfo = stage(state.unwrap, ckpt)
  report.unwrapped, report.checkpoint_keys, report.other_entries = uinfo.key, #sd, uinfo.other_keys

  local target = model:state_dict()
  local tkeys = target:keys()
  local tset = {}
  for _, k in ipairs(tkeys) do tset[k] = true end
  report.model_keys = #tkeys

  -- 3. keys
  sd = strip_stage(sd, opts.strip_prefix, tset, report)
  sd = rename_stage(sd, opts.rename, report)
  local unfiltered = sd
  local function selected(k, v)
    if include and not include(k, v) then return false end
    if exclude and exclude(k, v) then return false end
    return true
  end
  if include or exclude then
    local dropped
    sd, dropped = stage(state.filter, sd, selected)
    report.skipped = dropped
  end

  -- 4. match, 5. policies
  local final = OrderedDict()
  if sd:metadata() then final:set_metadata(sd:metadata()) end
  local meta = sd:metadata()
  local errors = report.errors
  local mismatch_errors = {}
  local function record_cast(k, from, to)
    if from ~= to then report.cast[#report.cast + 1] = { key = k, from = from, to = to } end
  end
  for _, k in ipairs(tkeys) do
    local t = OrderedDict.get(target, k)
    local v = OrderedDict.get(sd, k)
    if v == nil then
      if selected(k, t) and not OrderedDict.has(unfiltered, k) then
        -- BatchNorm's old-format rule: load_state_dict keeps num_batches_tracked when the
        -- checkpoint's module version predates it (< 2 or unknown), as PyTorch does.
        -- Only where the checkpoint has the layer's other buffers (an old checkpoint).
        local mpath = k == "num_batches_tracked" and "" or k:match("^(.*)%.num_batches_tracked$")
        local version = mpath and meta and meta[mpath] and meta[mpath].version
        local ok, owner = false, nil
        if mpath and OrderedDict.has(sd, mpath == "" and "running_mean" or mpath .. ".running_mean") then
          ok, owner = pcall(model.get_submodule, model, mpath)
        end
        if ok and owner._load_fixup and (version == nil or version < 2) then
          report.defaulted[#report.defaulted + 1] = k
        else
          report.missing[#report.missing + 1] = k
        end
      end
    elseif not is_tensor(t) then
      final[k] = v -- extra state
      report.loaded[#report.loaded + 1] = k
    elseif fits(t, v) then
      final[k] = v
      report.loaded[#report.loaded + 1] = k
      record_cast(k, v:dtype(), t:dtype())
    else
      local m = { key = k, model = t:shape(), checkpoint = is_tensor(v) and v:shape() or type(v) }
      report.mismatched[#report.mismatched + 1] = m
      local policy = policy_of(k)
      if policy == "skip" then
        m.action = "skipped"
      elseif policy == "error" then
        m.action = "error"
        mismatch_errors[#mismatch_errors + 1] = mismatch_text({ key = k, model = m.model, checkpoint = m.checkpoint })
      else
        local ok, out = pcall(graft.no_grad, policy, k, t, v)
        local problem
        if not ok then
          problem = ("the adapter for %q failed: %s"):format(k, bare(out))
        elseif out == "skip" then
          m.action = "skipped"
        elseif not is_tensor(out) then
          problem = ('the adapter for %q returned a %s: return a tensor of shape %s (or "skip")')
            :format(k, type(out), shape_str(t))
        elseif not fits(t, out) then
          problem = ("the adapter for %q returned %s; the model's tensor is %s"):format(k, shape_str(out), shape_str(t))
        else
          m.action, m.shape = "adapted", out:shape()
          final[k] = out
          report.loaded[#report.loaded + 1] = k
          report.adapted[#report.adapted + 1] = k
          record_cast(k, out:dtype(), t:dtype())
        end
        if problem then
          m.action = "error"
          if not dry then fail(problem) end
          errors[#errors + 1] = problem
        end
      end
    end
  end
  for k in pairs(sd) do
    if not tset[k] then report.unexpected[#report.unexpected + 1] = k end
  end

  if #report.loaded == 0 and not opts.allow_empty then
    table.insert(errors, 1, ("no tensor of %s matches the model (0 of %d keys): %s"):format(
      report.source, #tkeys, empty_hint(target, unfiltered, report)))
  end
  if #mismatch_errors > 0 then
    errors[#errors + 1] = ('%d tensor%s of the checkpoint %s another shape: %s. Pass on_mismatch = "skip" to keep ' ..
      "the model's, an adapter (graft.adapt), or a table of per-key policies"):format(#mismatch_errors,
      #mismatch_errors == 1 and "" or "s", #mismatch_errors == 1 and "has" or "have", capped(mismatch_errors))
  end
  if #report.missing > 0 then
    local msg = ("%d model tensor%s not in the checkpoint (left as initialised): %s"):format(#report.missing,
      #report.missing == 1 and " is" or "s are", capped(report.missing))
    if missing_policy == "error" then
      errors[#errors + 1] = msg .. ' (missing = "warn" or "ignore" to accept that)'
    elseif missing_policy == "warn" then
      report.warnings[#report.warnings + 1] = msg
    end
  end
  if #report.unexpected > 0 then
    local msg = ("%d checkpoint tensor%s not in the model (unused): %s"):format(#report.unexpected,
      #report.unexpected == 1 and " is" or "s are", capped(report.unexpected))
    if unexpected_policy == "error" then
      errors[#errors + 1] = msg .. ' (unexpected = "warn" or "ignore" to accept that, or exclude them)'
    elseif unexpected_policy == "warn" then
      report.warnings[#report.warnings + 1] = msg
    end
  end

  if #report.missing > 0 and #report.unexpected > 0 and #report.loaded > 0 then
    -- some keys may differ only by a prefix: check_keys can tell
    local ok, ck = pcall(state.check_keys, target, unfiltered, { quiet = true })
    if ok and ck.hint then report.hint = ck.hint end
  end
  local c = report.counts
  for _, f in ipairs({ "loaded", "skipped", "missing", "unexpected", "mismatched", "adapted", "cast", "defaulted" }) do
    c[f] = #report[f]
  end
  if #errors > 0 and not dry then
    fail(table.concat(errors, "\n  "))
  end

  -- 6. copy
  if not dry then
    local ok, err = pcall(model.load_state_dict, model, final, { strict = false })
    if not ok then fail("copying into the model failed: " .. bare(err)) end
  end
  if verbose then
    print(tostring(report)) -- the warnings are in it
  elseif not dry then
    for _, w in ipairs(report.warnings) do io.stderr:write("load_pretrained: warning: " .. w .. "\n") end
  end
  return report
end

return M
