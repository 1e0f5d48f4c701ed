-- The embedding API (lua/graft.h) from a C host: runs build/host_example (built by
-- `make` from spec/host/host.c), which prints `ok N - what` or `not ok N - what` per
-- check and exits non-zero when one fails.
local HOST = os.getenv("GRAFT_HOST_EXAMPLE") or "build/host_example"

describe("the embedding API (graft.h), used from a C host", function()
  local out, code

  setup(function()
    assert(io.open(HOST, "rb"), HOST .. " is missing: run `make build/host_example` first"):close()
    local path = os.tmpname()
    local _, _, c = os.execute(HOST .. " > " .. path .. " 2>&1")
    local f = assert(io.open(path, "rb"))
    out, code = f:read("a"), c
    f:close()
    os.remove(path)
  end)

  local function passed(what)
    local line = ("\n" .. out):match("\n(n?o?t? ?ok %d+ %- " .. what:gsub("%p", "%%%0") .. ")\n")
    assert.truthy(line, "no check named: " .. what .. "\n" .. out)
    assert.truthy(line:find("^ok"), line .. "\n" .. out)
  end

  it("passes every check and exits 0", function()
    assert.falsy(out:find("not ok", 1, true), out)
    assert.truthy(out:find("\nPASSED\n$"), out)
    assert.are.equal(0, code, out)
    local n = 0
    for _ in out:gmatch("ok %d+ %- ") do n = n + 1 end
    assert.truthy(n >= 50, "only " .. n .. " checks ran")
  end)

  it("hands a host buffer to Lua without copying", function()
    passed("graft_push_buffer wraps a float buffer")
    passed("the writes land in the host buffer")
    passed("xt is b transposed, not contiguous")
    passed("it is the host's own buffer, with its shape and strides")
  end)

  it("calls Lua functions by name with numbers, strings and tensors both ways", function()
    passed("graft_call(\"scale_row\") with a tensor, an integer, a number")
    passed("its values are x[2] * 0.5")
    passed("the tensor went back to Lua")
    passed("graft_call takes dotted names (graft.is_tensor)")
  end)

  it("runs each release callback exactly once, when the last view dies", function()
    passed("a live view keeps the buffer")
    passed("the release runs once the last view dies")
    passed("graft_close releases the buffers Lua held")
    passed("its release runs when the host lets go")
    passed("a refused buffer is released before graft_push_buffer returns")
    passed("every release ran exactly once")
  end)

  it("returns status codes and messages, never raising into the host", function()
    passed("a syntax error: ESYNTAX and where")
    passed("its message has a traceback")
    passed("calling a missing function: ENOTFOUND, named")
    passed("calling a number: ETYPE")
    passed("a missing file: EFILE")
    passed("the next call fails with the push's status, without running")
    passed("running out of memory in Lua: ENOMEM")
    passed("a buffer push that runs out of memory releases it once")
    passed("pushing a string without memory: ENOMEM")
    passed("the runtime recovers")
    passed("graft_interrupt stops a running loop")
    passed("the runtime works after errors")
  end)
end)
