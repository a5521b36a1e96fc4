-- Housekeeping's sweep of the dedupe sets: drop expired members from ARGV[3] sets starting at
-- number ARGV[2] (hex names under prefix ARGV[1]); returns how many members it dropped.
local prefix, first, count = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_seconds()
local dropped = 0
for n = first, first + count - 1 do
  dropped = dropped + redis.call('ZREMRANGEBYSCORE', prefix .. string.format('%x', n), '-inf', now)
end
return dropped
