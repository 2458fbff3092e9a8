-- wrk script: durable single-message produce of a 64-byte body. Counts
-- answers that are not 200 with "durable":true (per thread, summed at the
-- end).
--   wrk -t2 -c100 -d10s -s bench/scripts/produce.lua 'http://127.0.0.1:1109/broker/topics/bench/produce?partition=0'
wrk.method = "POST"
wrk.body = string.rep("x", 64)
wrk.headers["Authorization"] = "Bearer dev"
wrk.headers["Content-Type"] = "application/octet-stream"

local threads = {}

setup = function(thread)
  table.insert(threads, thread)
end

init = function(args)
  bad = 0
end

response = function(status, headers, body)
  if status ~= 200 or not string.find(body, '"durable":true', 1, true) then
    bad = bad + 1
  end
end

done = function(summary, latency, requests)
  local total = 0
  for _, t in ipairs(threads) do
    total = total + t:get("bad")
  end
  io.write(string.format("answers not 200 with \"durable\":true: %d\n", total))
end
