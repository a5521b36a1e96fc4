-- Housekeeping's sweep of the dedupe sets: drop expired members from the next ARGV[2] of the
-- ARGV[3] sets (hex names under prefix ARGV[1]), resuming where the last sweep stopped (the
-- cursor in KEYS[1]); returns how many members it dropped.
local prefix, count, buckets = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local first = tonumber(redis.call('GET', KEYS[1]) or '0') % buckets
local last = math.min(first + count, buckets) - 1
redis.call('SET', KEYS[1], (last + 1) % buckets)
local now = now_seconds()
local dropped = 0
for n = first, last do
  dropped = dropped + redis.call('ZREMRANGEBYSCORE', prefix .. string.format('%x', n), '-inf', '(' .. now)
end
return dropped
