-- graft.data's file readers: IDX (every dtype, gzip and plain), PNG and JPEG decoding
-- against PIL's pixels, PNG writing, CSV parsing; and hostile files, each an error that
-- names the file and the problem, with nothing leaked.
local graft = require("graft")
local H = require("spec.helpers")
local data = require("graft.data")

local FIX = H.fixture("data")
local DIR = "spec/fixtures/data/"
local TMP = os.tmpname()

local write = H.write

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

-- max |a - b| over two uint8 tensors
local function maxdiff(a, b)
  return (a:long() - H.T(b):long()):abs():max():item()
end

describe("data.idx", function()
  for _, name in ipairs({ "u8", "i8", "i16", "i32", "f32", "f64" }) do
    it("reads " .. name .. " files, plain and gzip, with the file's dtype and dims (big-endian)", function()
      local want = FIX.idx[name]
      assert.tensor_near(data.idx(DIR .. "small-" .. name .. ".idx"), want, { rtol = 0, atol = 0 })
      assert.tensor_near(data.idx(DIR .. "small-" .. name .. ".idx.gz"), want, { rtol = 0, atol = 0 })
    end)
  end

  local hostile = {
    { "bad-magic.idx", "wrong magic 01 02" },
    { "bad-dtype.idx", "unknown dtype code 0x0a" },
    { "zero-dims.idx", "0 dims" },
    { "short-header.idx", "too short for an IDX header" },
    { "empty.idx", "too short for an IDX header" },
    { "short-dims.idx", "declares 3 dims but ends after 10 bytes" },
    { "truncated.idx", "dims [3, 2, 2] of uint8 need 12 bytes of data, the file has 7" },
    { "trailing.idx", "2 bytes of trailing data" },
    { "huge-dims.idx", "need over 2^62 bytes" },
    { "huge-dims.idx.gz", "more than a gzip file of 43 bytes can hold" },
    { "truncated.idx.gz", "truncated: dims [4000] of int32 need 16000 bytes" },
    { "corrupt.idx.gz", "corrupt gzip data" },
    { "data-short.idx.gz", "need 12 bytes of data, the file holds 9" },
  }
  for _, case in ipairs(hostile) do
    it("refuses " .. case[1] .. " naming the file and the problem", function()
      H.raises(case[2], data.idx, DIR .. case[1])
      H.raises('"' .. DIR .. case[1] .. '"', data.idx, DIR .. case[1])
    end)
  end

  it("says when a file is missing or a folder", function()
    H.raises('idx: cannot open "no/such.idx"', data.idx, "no/such.idx")
    H.raises("not a regular file", data.idx, DIR)
  end)
end)

describe("data.read_image", function()
  local png_cases = {
    { "rgb.png", "rgb_png" }, { "gray.png", "gray_png" }, { "palette.png", "palette_png" },
    { "rgba.png", "rgba_png" }, { "la.png", "la_png" }, { "bits.png", "bits_png" }, { "gray16.png", "gray16_png" },
  }
  for _, c in ipairs(png_cases) do
    it("decodes " .. c[1] .. " to uint8 [H, W, C] as PIL does (palette expanded, alpha dropped)", function()
      assert.tensor_near(data.read_image(DIR .. c[1]), FIX[c[2]], { rtol = 0, atol = 0 })
    end)
  end

  it("converts channels on request: RGB to gray with PIL's luma, gray to RGB", function()
    assert.tensor_near(data.read_image(DIR .. "rgb.png", { channels = 1 }), FIX.rgb_png_gray, { rtol = 0, atol = 0 })
    assert.tensor_near(data.read_image(DIR .. "gray.png", { channels = 3 }), FIX.gray_png_rgb, { rtol = 0, atol = 0 })
    assert.tensor_near(data.read_image(DIR .. "rgb.png", { channels = 3 }), FIX.rgb_png, { rtol = 0, atol = 0 })
  end)

  for _, c in ipairs({ { "rgb.jpg", "rgb_jpg" }, { "progressive.jpg", "progressive_jpg" }, { "gray.jpg", "gray_jpg" },
    { "cmyk.jpg", "cmyk_jpg" }, { "noise.jpg", "noise_jpg" } }) do
    it("decodes " .. c[1] .. " to PIL's pixels (within 1)", function()
      local img = data.read_image(DIR .. c[1])
      local want = H.T(FIX[c[2]])
      assert.are.same(want:shape(), img:shape())
      assert.equal("uint8", img:dtype())
      assert.is_true(maxdiff(img, want) <= 1, "max difference " .. maxdiff(img, want))
    end)
  end

  it("decodes a JPEG close to the pixels it was made from", function()
    local img = data.read_image(DIR .. "rgb.jpg")
    local mean = (img:float() - H.T(FIX.rgb_jpg_source):float()):abs():mean():item()
    assert.is_true(mean < 3, "mean difference " .. mean)
  end)

  it("decodes from a string (decode_image), the format from the bytes, not the name", function()
    assert.tensor_near(data.decode_image(read(DIR .. "rgb.png")), FIX.rgb_png, { rtol = 0, atol = 0 })
    write(TMP, read(DIR .. "gray.jpg"))
    assert.are.same({ 12, 16, 1 }, data.read_image(TMP):shape())
  end)

  local hostile = {
    { "truncated.png", "corrupt PNG (truncated" },
    { "bad-crc.png", "corrupt PNG (IHDR: CRC error)" },
    { "bad-idat.png", "corrupt PNG (IDAT" },
    { "huge.png", "PNG of 100000 x 100000 pixels is over the limit" },
    { "bomb.png", "6000 x 6000 pixels need more data than its 74 bytes can hold" },
    { "not-an-image.png", "not a PNG or JPEG image" },
    { "truncated.jpg", "truncated JPEG" },
    { "garbage.jpg", "corrupt JPEG" },
    { "huge.jpg", "JPEG of 60000 x 60000 pixels is over the limit" },
    { "empty.idx", "empty file" },
  }
  for _, c in ipairs(hostile) do
    it("refuses " .. c[1] .. " with a clear error, leaking nothing", function()
      H.raises(c[2], data.read_image, DIR .. c[1])
      H.raises('read_image: "' .. DIR .. c[1] .. '"', data.read_image, DIR .. c[1])
    end)
  end

  it("refuses every truncation of a PNG and a JPEG without crashing", function()
    for _, name in ipairs({ "rgb.png", "palette.png", "rgb.jpg", "progressive.jpg" }) do
      local s = read(DIR .. name)
      H.no_leak(function()
        for n = 0, #s - 1, 7 do
          local ok, err = pcall(data.decode_image, s:sub(1, n))
          assert.is_false(ok, name .. " cut at " .. n .. " decoded")
          assert.is_truthy(tostring(err):find("read_image", 1, true))
        end
      end)
    end
  end)

  it("checks its arguments", function()
    H.raises("channels must be 1 or 3", data.read_image, DIR .. "rgb.png", { channels = 2 })
    H.raises("cannot open", data.read_image, "no/such.png")
  end)
end)

describe("data.save_png", function()
  it("writes uint8 [H, W, C] for C = 1..4 and [H, W], which read back exactly", function()
    local img = graft.randint(0, 256, { 5, 7, 4 }, { dtype = "uint8" })
    for c = 1, 4 do
      local part = img:narrow(3, 1, c)
      data.save_png(part, TMP)
      local back = data.read_image(TMP)
      if c <= 2 then
        assert.tensor_near(back, part:narrow(3, 1, 1), { rtol = 0, atol = 0 })
      else
        assert.tensor_near(back, part:narrow(3, 1, 3), { rtol = 0, atol = 0 })
      end
    end
    data.save_png(img:select(3, 1), TMP)
    assert.tensor_near(data.read_image(TMP), img:narrow(3, 1, 1), { rtol = 0, atol = 0 })
  end)

  it("writes float [C, H, W] in [0, 1] scaled by 255 and rounded, as torchvision's save_image", function()
    local x = graft.tensor({ { { 0, 0.5, 1 }, { -1, 2, 0.2 } } }) -- [1, 2, 3]
    data.save_png(x, TMP)
    assert.tensor_near(data.read_image(TMP), graft.tensor({ { 0, 128, 255 }, { 0, 255, 51 } }, { dtype = "uint8" }):view(2, 3, 1),
      { rtol = 0, atol = 0 })
    local rgb = graft.rand(3, 4, 5)
    data.save_png(rgb, TMP)
    local back = data.read_image(TMP):permute(3, 1, 2):float() / 255
    assert.tensor_near(back, rgb, { atol = 0.5 / 255 + 1e-6, rtol = 0 })
  end)

  it("reads non-contiguous views", function()
    local img = graft.randint(0, 256, { 3, 6, 8 }, { dtype = "uint8" }):permute(2, 3, 1) -- [6, 8, 3] strided
    data.save_png(img, TMP)
    assert.tensor_near(data.read_image(TMP), img, { rtol = 0, atol = 0 })
  end)

  it("refuses what a PNG cannot hold, and unwritable paths", function()
    H.raises("save_png: expected a uint8 tensor, got int64", data.save_png, graft.zeros(2, 2, 3, { dtype = "int64" }), TMP)
    H.raises("expected 1, 2, 3 or 4 channels", data.save_png, graft.zeros(2, 2, 5, { dtype = "uint8" }), TMP)
    H.raises("save_png: expected a floating tensor [C, H, W]", data.save_png, graft.zeros(4), TMP)
    H.raises("cannot open \"no/such/dir/x.png\" for writing", data.save_png, graft.zeros(2, 2, 1, { dtype = "uint8" }),
      "no/such/dir/x.png")
  end)
end)

describe("data.read_csv", function()
  it("reads numbers into float32 [rows, cols], with the header's names", function()
    write(TMP, "a,b,c\n1,2,3\n4.5, -5e-1 ,6\n\n7,8,9\n")
    local v, names = data.read_csv(TMP)
    assert.are.same({ "a", "b", "c" }, names)
    assert.tensor_near(v, graft.tensor({ { 1, 2, 3 }, { 4.5, -0.5, 6 }, { 7, 8, 9 } }))
  end)

  it("detects a header unless told; header = false makes a bad first row an error", function()
    write(TMP, "1,2\n3,4\n")
    local v, names = data.read_csv(TMP)
    assert.is_nil(names)
    assert.are.same({ 2, 2 }, v:shape())
    v = data.read_csv(TMP, { header = true })
    assert.are.same({ 1, 2 }, v:shape())
    write(TMP, "x,y\n3,4\n")
    H.raises("line 1, column 1: \"x\" is not a number", data.read_csv, TMP, { header = false })
  end)

  it("takes a delimiter, quotes, CRLF line ends, a byte-order mark and float64", function()
    write(TMP, "\239\187\191\"p;q\";r\r\n\"1.25\";2\r\n3;\"4\"\r\n")
    local v, names = data.read_csv(TMP, { delimiter = ";", dtype = "float64" })
    assert.are.same({ "p;q", "r" }, names)
    assert.equal("float64", v:dtype())
    assert.tensor_near(v, graft.tensor({ { 1.25, 2 }, { 3, 4 } }, { dtype = "float64" }))
    write(TMP, "1\t2\n3\t4\n")
    assert.tensor_near(data.read_csv(TMP, { delimiter = "\t" }), graft.tensor({ { 1, 2 }, { 3, 4 } }):float())
  end)

  it("names the line and column of a bad cell", function()
    write(TMP, "a,b\n1,2\n3,oops\n")
    H.raises('read_csv: "' .. TMP .. '": line 3, column 2: "oops" is not a number', data.read_csv, TMP)
    write(TMP, "1,2\n3,\n")
    H.raises("line 2, column 2: an empty cell where a number is expected", data.read_csv, TMP)
    write(TMP, "1,2\n3,4,5\n")
    H.raises("line 2 has 3 columns, expected 2 (as the first row)", data.read_csv, TMP)
    write(TMP, "a,b\n1,2\n3\n")
    H.raises("line 3 has 1 columns, expected 2 (as the header)", data.read_csv, TMP)
    write(TMP, "1,\"2\n")
    H.raises("line 1, column 2: unterminated quoted cell", data.read_csv, TMP)
    write(TMP, "1,\"2\"x\n")
    H.raises("unexpected character 'x' after a quoted cell", data.read_csv, TMP)
    write(TMP, "")
    H.raises("no rows (the file is empty)", data.read_csv, TMP)
    H.raises("cannot open", data.read_csv, "no/such.csv")
    H.raises("dtype must be float32 or float64", data.read_csv, TMP, { dtype = "int64" })
    H.raises("delimiter must be a one-character string", data.read_csv, TMP, { delimiter = ";;" })
  end)

  it("counts lines inside quoted cells", function()
    write(TMP, "\"a\nb\",c\n1,2\nx,3\n")
    H.raises("line 4, column 1", data.read_csv, TMP)
  end)
end)

describe("data.makedirs and data.listdir", function()
  it("creates nested folders and lists them sorted", function()
    local root = TMP .. ".d"
    data.makedirs(root .. "/b/c")
    data.makedirs(root .. "/a")
    data.makedirs(root .. "/a") -- exists: fine
    write(root .. "/z.txt", "z")
    assert.are.same({ "a", "b", "z.txt" }, data.listdir(root))
    H.raises("is not a folder", data.makedirs, root .. "/z.txt")
    os.execute("rm -rf '" .. root .. "'")
    H.raises("cannot open folder", data.listdir, root)
  end)
end)

os.remove(TMP)
