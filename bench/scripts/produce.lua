-- wrk script: durable single-message produce of a 64-byte body.
--   wrk -t2 -c100 -d10s -s bench/scripts/produce.lua http://127.0.0.1:1109/broker/topics/bench/produce?partition=0
wrk.method = "POST"
wrk.body = string.rep("x", 64)
wrk.headers["Authorization"] = "Bearer dev"
wrk.headers["Content-Type"] = "application/octet-stream"

local errors = 0
response = function(status, headers, body)
  if status ~= 200 or not string.find(body, '"durable":true', 1, true) then
    errors = errors + 1
  end
end

done = function(summary, latency, requests)
  io.write(string.format("non-durable or failed answers: %d\n", errors))
end
