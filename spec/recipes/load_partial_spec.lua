-- scripts/load_partial.lua: the key-filtering techniques side by side, each doing what
-- it says on a checkpoint whose keys partly differ.
local H = require("spec.recipes.helper")

describe("scripts/load_partial.lua", function()
  local out, err, code
  setup(function()
    assert(H.have_bin(), H.BIN .. " is missing: run `make build/graft` first")
    out, err, code = H.run("load_partial", "--out", H.tmpdir())
  end)
  teardown(H.cleanup)

  local function section(n)
    local s = out:match("== " .. n .. "%..-\n(.-)\n== ") or out:match("== " .. n .. "%..-\n(.*)$")
    assert.is_not_nil(s, "section " .. n .. " in:\n" .. out)
    return s
  end

  it("runs", function() assert.are.equal(0, code, err) end)

  it("1. strict = false with a prefix loads nothing, silently", function()
    local s = section(1)
    assert.truthy(s:find("no error, but 8 missing and 10 unexpected keys: 0 of 8", 1, true), s)
  end)

  it("2. strip_prefix, then strict = false: a size mismatch is still an error", function()
    local s = section(2)
    assert.truthy(s:find("strip_prefix changed 10 keys", 1, true), s)
    assert.truthy(s:find("size mismatch for 9.weight: copying a param with shape [10, 128]", 1, true), s)
  end)

  it("3. filtering by keys drops the extra head; select_matching also the mismatched shapes", function()
    local s = section(3)
    assert.truthy(s:find("kept 8 keys, dropped 2: aux.weight, aux.bias", 1, true), s)
    assert.truthy(s:find("kept 6, dropped 4: 9.weight (shape mismatch)", 1, true), s)
    assert.truthy(s:find("-> 6 of 8 model tensors hold the checkpoint's values", 1, true), s)
  end)

  it("4. check_keys raises with a hint on the prefixed keys and reports on the stripped ones", function()
    local s = section(4)
    assert.truthy(s:find('carry the prefix "module."', 1, true), s)
    assert.truthy(s:find("6 of 8 model keys loaded; 0 missing, 2 shape mismatches, 2 unused", 1, true), s)
  end)

  it("5. load_pretrained with policies: 6 loaded, the head skipped, the extra head ignored", function()
    local s = section(5)
    assert.truthy(s:find("6 of 8 model tensors loaded", 1, true), s)
    assert.truthy(s:find('stripped "module." from 10 keys (auto)', 1, true), s)
    assert.truthy(s:find("9.weight (model [5, 128], checkpoint [10, 128]): skipped", 1, true), s)
    assert.truthy(s:find("-> 6 of 8 model tensors hold", 1, true), s)
  end)

  it("6. an adapter keeps the head rows of classes 5-9", function()
    local s = section(6)
    assert.truthy(s:find("8 of 8 model tensors loaded", 1, true), s)
    assert.truthy(s:find("checkpoint's rows 5-9: true", 1, true), s)
  end)

  it("7. a dry run changes nothing", function()
    local s = section(7)
    assert.truthy(s:find("(dry run, nothing copied): 6 of 8 model tensors would load", 1, true), s)
    assert.truthy(s:find("the model is unchanged: true", 1, true), s)
  end)
end)
