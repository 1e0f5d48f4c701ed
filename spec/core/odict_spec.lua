-- graft.OrderedDict: insertion order, removal, methods that never clash with keys.
local graft = require("graft")

describe("graft.OrderedDict", function()
  it("iterates in insertion order and counts its keys", function()
    local d = graft.OrderedDict()
    d.z = 1; d.a = 2; d["m.n"] = 3
    local seen = {}
    for k, v in pairs(d) do seen[#seen + 1] = k .. "=" .. v end
    assert.are.same({ "z=1", "a=2", "m.n=3" }, seen)
    assert.are.equal(3, #d)
    assert.are.equal(3, d:len())
    assert.are.same({ "z", "a", "m.n" }, d:keys())
    assert.are.same({ 1, 2, 3 }, d:values())
  end)

  it("keeps a key's place when it is reassigned and drops it when set to nil", function()
    local d = graft.OrderedDict({ "a", "b", "c" }, { a = 1, b = 2, c = 3 })
    d.a = 10
    d.b = nil
    assert.are.same({ "a", "c" }, d:keys())
    assert.are.equal(10, d.a)
    d.b = 5
    assert.are.same({ "a", "c", "b" }, d:keys())
  end)

  it("reads a key named like a method as the value", function()
    local d = graft.OrderedDict.from_pairs({ "keys", "x" }, { "value", 1 })
    assert.are.equal("value", d.keys)
    assert.are.same({ "keys", "x" }, graft.OrderedDict.keys(d))
  end)

  it("builds from a plain table with sorted keys, and copies with metadata", function()
    local d = graft.OrderedDict.from_table({ b = 1, a = 2, [1] = 3 })
    assert.are.same({ 1, "a", "b" }, d:keys())
    d:set_metadata({ [""] = { version = 1 } })
    local c = d:copy()
    c.a = 99
    assert.are.equal(2, d.a)
    assert.are.equal(1, c:metadata()[""].version)
    assert.is_true(graft.OrderedDict.is(c))
    assert.is_false(graft.OrderedDict.is({}))
    assert.truthy(tostring(d):find('OrderedDict(3 keys: "1", "a", "b")', 1, true))
  end)
end)
