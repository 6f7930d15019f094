-- wrk script: POST a JSON AdmissionReview that differs on every request.
-- The file given after `--` is a template with {{slot}} markers (bench/bodies.py writes it). It is
-- split once; each request joins the pieces with values computed from a counter, the same way
-- bench.bodies.fill does (the tests compare the two).
local pieces, slots = {}, {}
local n = 0

init = function(args)
  local f = assert(io.open(args[1], "rb"))
  local text = f:read("*a")
  f:close()
  local start = 1
  while true do
    local first, last, name = string.find(text, "{{(%a+)}}", start)
    if not first then break end
    pieces[#pieces + 1] = string.sub(text, start, first - 1)
    slots[#slots + 1] = name
    start = last + 1
  end
  pieces[#pieces + 1] = string.sub(text, start)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

local function values(i)
  local minimum = i % 4
  local replicas = minimum + math.floor(i / 4) % 4
  return {
    uid = string.format("6c3f2a1e-%04x-4000-8000-%012d", i % 65536, i),
    name = tostring(i),
    min = tostring(minimum),
    replicas = tostring(replicas),
    max = tostring(replicas + 1 + i),
  }
end

request = function()
  n = n + 1
  local v = values(n)
  local parts = {}
  for k = 1, #slots do
    parts[#parts + 1] = pieces[k]
    parts[#parts + 1] = v[slots[k]]
  end
  parts[#parts + 1] = pieces[#pieces]
  return wrk.format(nil, nil, nil, table.concat(parts))
end
