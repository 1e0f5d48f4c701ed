-- The graft executable, from outside: spawns build/graft (or $GRAFT_BIN) with its output
-- redirected to temp files and checks stdout, stderr and the exit status.
local BIN = os.getenv("GRAFT_BIN") or "build/graft"
local ABS_BIN = BIN:sub(1, 1) == "/" and BIN or assert(os.getenv("PWD")) .. "/" .. BIN -- for runs elsewhere

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function write(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
  return path
end

local temps = {}
local function tmp(contents)
  local path = os.tmpname()
  temps[#temps + 1] = path
  if contents then write(path, contents) end
  return path
end

-- Runs `graft <args>` (args: a shell-quoted string) with stdin from `input` (a string,
-- or nil for /dev/null); returns stdout, stderr and the exit status.
local function graft(args, input, opts)
  opts = opts or {}
  local out, err = tmp(), tmp()
  local stdin = input and q(tmp(input)) or "/dev/null"
  local cmd = ("%s%s %s < %s > %s 2> %s"):format(opts.prefix or "", opts.bin or q(BIN), args, stdin, q(out), q(err))
  if opts.cd then cmd = "cd " .. q(opts.cd) .. " && " .. cmd end
  local _, _, code = os.execute(cmd)
  return read(out), read(err), code
end

local function script(src) return tmp(src) end

describe("the graft executable", function()
  setup(function()
    assert(io.open(BIN, "rb"), BIN .. " is missing: run `make build/graft` first"):close()
  end)
  teardown(function()
    for _, p in ipairs(temps) do os.remove(p) end
  end)

  describe("graft script.lua [args]", function()
    it("runs the script with arg set as lua5.4 sets it", function()
      local s = script("print(#arg, arg[0] == ..., arg[1], arg[2], arg[-1] ~= nil)\n"
        .. "print(select('#', ...), ...)\n")
      local out, err, code = graft(q(s) .. " " .. q(s) .. " two", nil)
      assert.are.equal(0, code, err)
      assert.are.equal("2\ttrue\t" .. s .. "\ttwo\ttrue\n2\t" .. s .. "\ttwo\n", out)
    end)

    it("puts the interpreter and its options at negative indices", function()
      local s = script("print(arg[-3] == os.getenv('GRAFT_SELF'), arg[-2], arg[-1], arg[0] ~= nil, arg[1])\n")
      local out, err, code = graft("-e " .. q("x = 1") .. " " .. q(s) .. " a", nil, { prefix = "GRAFT_SELF=" .. q(BIN) .. " " })
      assert.are.equal(0, code, err)
      assert.are.equal("true\t-e\tx = 1\ttrue\ta\n", out)
    end)

    it("has graft loaded as a global and in package.loaded", function()
      local out, err, code = graft("-e " .. q("print(graft == require('graft'), graft.version, graft.is_tensor(graft.ones(2)))"))
      assert.are.equal(0, code, err)
      assert.are.equal("true\t0.1.0\ttrue\n", out)
    end)

    it("skips a first line that starts with # (a shebang)", function()
      local s = script("#!/usr/bin/env graft\nprint('shebang ok')\nerror('line three')\n")
      local out, err, code = graft(q(s))
      assert.are.equal("shebang ok\n", out)
      assert.are.equal(1, code)
      assert.truthy(err:find(":3: line three", 1, true), err) -- line numbers unchanged
    end)

    it("runs busted's own Lua script, as `graft /usr/bin/busted`", function()
      local f = io.open("/usr/bin/busted", "rb")
      if not f then return pending("/usr/bin/busted is not installed") end
      f:close()
      local out, err, code = graft("/usr/bin/busted --version")
      assert.are.equal(0, code, err)
      assert.truthy(out:match("^%d+%.%d+"), out)
    end)

    it("exits non-zero with the error and a traceback on stderr when the script fails", function()
      local s = script("local function inner() error('boom in inner') end\nlocal function outer() inner() end\nouter()\n")
      local out, err, code = graft(q(s))
      assert.are.equal(1, code)
      assert.are.equal("", out)
      assert.truthy(err:find("^graft: " .. s:gsub("%p", "%%%0") .. ":1: boom in inner\n"), err)
      assert.truthy(err:find("stack traceback:", 1, true), err)
      assert.truthy(err:find("in local 'inner'", 1, true) or err:find("in upvalue 'inner'", 1, true), err)
      assert.truthy(err:find("in main chunk", 1, true), err)
    end)

    it("reports errors that are not strings", function()
      local _, err, code = graft("-e " .. q("error(setmetatable({}, {__tostring = function() return 'custom object' end}))"))
      assert.are.equal(1, code)
      assert.truthy(err:find("custom object", 1, true), err)
      _, err, code = graft("-e " .. q("error({})"))
      assert.are.equal(1, code)
      assert.truthy(err:find("(error object is a table value)", 1, true), err)
    end)

    it("reports a syntax error and a missing script", function()
      local out, err, code = graft(q(script("x = = 1\n")))
      assert.are.equal(1, code)
      assert.are.equal("", out)
      assert.truthy(err:find(":1: unexpected symbol near '='", 1, true), err)
      _, err, code = graft("/no/such/script.lua")
      assert.are.equal(1, code)
      assert.truthy(err:find("cannot open /no/such/script.lua", 1, true), err)
    end)

    it("lets os.exit set the exit status", function()
      local out, _, code = graft("-e " .. q("io.write('bye') os.exit(7)"))
      assert.are.equal(7, code)
      assert.are.equal("bye", out)
      _, _, code = graft("-e " .. q("os.exit(false)"))
      assert.are.equal(1, code)
      _, _, code = graft("-e " .. q("os.exit(true, true)"))
      assert.are.equal(0, code)
    end)

    it("interrupts a running script on SIGINT (Ctrl-C) with a traceback", function()
      -- the script marks a file once it runs (its handler is installed by then), and
      -- only then is SIGINT sent: a loaded machine may take long to start the process
      local ready = tmp()
      os.remove(ready)
      local err_path = tmp()
      local script = ("io.open(%q, 'w'):close() while true do end"):format(ready)
      local cmd = ("%s -e %s 2> %s & pid=$!; for i in $(seq 500); do [ -f %s ] && break; sleep 0.01; done; "
        .. "kill -INT $pid; wait $pid"):format(q(BIN), q(script), q(err_path), q(ready))
      local _, _, code = os.execute(cmd)
      local err = read(err_path)
      os.remove(ready)
      assert.are.equal(1, code)
      assert.truthy(err:find("interrupted!", 1, true), err)
      assert.truthy(err:find("stack traceback:", 1, true), err)
    end)
  end)

  describe("options", function()
    it("-e runs code, in order, and may be repeated", function()
      local out, err, code = graft("-e " .. q("a = 20") .. " -e " .. q("print(a + 1)") .. " -e" .. q("print('joined')"))
      assert.are.equal(0, code, err)
      assert.are.equal("21\njoined\n", out)
    end)

    it("-e stops at the first error", function()
      local out, err, code = graft("-e " .. q("print(1)") .. " -e " .. q("error('second')") .. " -e " .. q("print(3)"))
      assert.are.equal(1, code)
      assert.are.equal("1\n", out)
      assert.truthy(err:find("(command line):1: second", 1, true), err)
    end)

    it("-l requires a module into a global, -l g=mod under another name", function()
      local out, err, code = graft("-l string -l S=table -e " .. q("print(string.rep('ab', 2), S.concat({1, 2}, '+'))"))
      assert.are.equal(0, code, err)
      assert.are.equal("abab\t1+2\n", out)
    end)

    it("- reads the script from stdin, with args", function()
      local out, err, code = graft("- one two", "print('from stdin', ...)\n")
      assert.are.equal(0, code, err)
      assert.are.equal("from stdin\tone\ttwo\n", out)
    end)

    it("reads the script from stdin when there are no arguments and stdin is not a terminal", function()
      local out, err, code = graft("", "#!/shebang skipped\nprint(6 * 7)\n")
      assert.are.equal(0, code, err)
      assert.are.equal("42\n", out)
    end)

    it("-- ends the options: a script named -e", function()
      local dir = tmp()
      os.remove(dir)
      os.execute("mkdir -p " .. q(dir))
      write(dir .. "/-e", "print('the script -e', ...)\n")
      local out, err, code = graft("-- -e x", nil, { cd = dir, bin = q(ABS_BIN) })
      os.remove(dir .. "/-e")
      os.remove(dir)
      assert.are.equal(0, code, err)
      assert.are.equal("the script -e\tx\n", out)
    end)

    it("--version and -v print the version", function()
      local out, err, code = graft("--version")
      assert.are.equal(0, code, err)
      assert.are.equal("graft 0.1.0 (Lua 5.4)\n", out)
      out, _, code = graft("-v")
      assert.are.equal(0, code)
      assert.are.equal("graft 0.1.0 (Lua 5.4)\n", out)
      out = graft("-v -e " .. q("print('then code')"))
      assert.are.equal("graft 0.1.0 (Lua 5.4)\nthen code\n", out)
    end)

    it("--help prints the usage on stdout and exits 0", function()
      local out, err, code = graft("--help")
      assert.are.equal(0, code, err)
      assert.truthy(out:find("^usage: graft %[options%] %[script %[args%]%]"), out)
      for _, opt in ipairs({ "-e stat", "-i", "-l mod", "-v", "--version" }) do
        assert.truthy(out:find(opt, 1, true), opt)
      end
    end)

    it("rejects an unknown option or a missing argument with the usage on stderr", function()
      local out, err, code = graft("-x")
      assert.are.equal(1, code)
      assert.are.equal("", out)
      assert.truthy(err:find("unrecognized option '-x'", 1, true), err)
      assert.truthy(err:find("usage: graft", 1, true), err)
      _, err, code = graft("-e")
      assert.are.equal(1, code)
      assert.truthy(err:find("'-e' needs argument", 1, true), err)
    end)
  end)

  describe("-i script.lua with piped input", function()
    it("runs the script, then the REPL with its globals, printing expressions", function()
      local s = script("base = 40\nfunction add(a, b) return a + b end\n")
      local input = table.concat({
        "base + 2",
        "add(base,",          -- a statement over two lines
        "  5)",
        "x = graft.zeros(2)",  -- a statement prints nothing
        "x",
        "{1, 'two', n = {m = true}}",
        "1, nil, 'three'",
        "error('oops')",
        "print('after the error')",
        "",
      }, "\n")
      local out, err, code = graft("-i " .. q(s), input)
      assert.are.equal(0, code, err)
      assert.are.equal(table.concat({
        "42",
        "45",
        "tensor([0., 0.])",
        '{1, "two", n = {m = true}}',
        "1\tnil\tthree",
        "after the error",
        "",
      }, "\n"), out)
      assert.truthy(err:find("stdin:1: oops", 1, true), err)
      assert.truthy(err:find("stack traceback:", 1, true), err)
    end)

    it("has help()", function()
      local out, err, code = graft("-i", "help()\n")
      assert.are.equal(0, code, err)
      assert.truthy(out:find("graft 0.1.0", 1, true), out)
      assert.truthy(out:find("Ctrl-D", 1, true), out)
    end)

    it("reports a statement left open at the end of input", function()
      local out, err, code = graft("-i", "function f()\n")
      assert.are.equal(0, code, err)
      assert.are.equal("", out)
      assert.truthy(err:find("<eof>", 1, true), err)
    end)
  end)

  describe("subcommands", function()
    local dir
    setup(function()
      dir = tmp()
      os.remove(dir)
      os.execute("mkdir -p " .. q(dir .. "/graft/cli"))
      write(dir .. "/graft/cli/hello.lua",
        "return function(...) print('hello', arg[0], ...) return 3 end\n")
      write(dir .. "/graft/cli/tool.lua", "return { main = function(...) print('tool', select('#', ...)) end }\n")
      write(dir .. "/graft/cli/broken.lua", "error('broken module')\n")
    end)
    teardown(function()
      os.execute("rm -rf " .. q(dir))
    end)
    local function run(args)
      return graft(args, nil, { cd = dir, bin = q(ABS_BIN) })
    end

    it("dispatch `graft NAME args` to the module graft.cli.NAME", function()
      local out, err, code = run("hello a b")
      assert.are.equal(3, code, err)
      assert.are.equal("hello\thello\ta\tb\n", out)
      out, err, code = run("tool x y z")
      assert.are.equal(0, code, err)
      assert.are.equal("tool\t3\n", out)
    end)

    it("report a failing subcommand with a traceback", function()
      local _, err, code = run("broken")
      assert.are.equal(1, code)
      assert.truthy(err:find("broken module", 1, true), err)
      assert.truthy(err:find("stack traceback:", 1, true), err)
    end)

    it("say an unknown name is neither a command nor a script (a file of that name runs)", function()
      local _, err, code = run("nosuchcommand")
      assert.are.equal(1, code)
      assert.truthy(err:find("'nosuchcommand' is neither a command (inspect, convert, diff, plot) nor a script file",
        1, true), err)
      local _, err2, code2 = run("./nosuchcommand")
      assert.are.equal(1, code2)
      assert.truthy(err2:find("cannot open ./nosuchcommand", 1, true), err2)
    end)

    it("list the commands in --help", function()
      local out, _, code = run("--help")
      assert.are.equal(0, code)
      for _, c in ipairs({ "inspect", "convert", "diff", "plot" }) do
        assert.truthy(out:find("\n  " .. c .. " ", 1, true), out)
      end
    end)
  end)
end)
