-- Count source paths no mapping entry reads (paths only, never values), at most LIMIT distinct.
-- KEYS: counts, first seen, last seen, overflow counter. ARGV: limit, now (ms), then path, count pairs.
-- Returns how many occurrences were not counted because the table was full.
local counts, first, last, overflow = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local limit, now = tonumber(ARGV[1]), ARGV[2]
local refused = 0
for i = 3, #ARGV, 2 do
  local path, n = ARGV[i], tonumber(ARGV[i + 1])
  if redis.call('HEXISTS', counts, path) == 1 or redis.call('HLEN', counts) < limit then
    redis.call('HINCRBY', counts, path, n)
    redis.call('HSETNX', first, path, now)
    redis.call('HSET', last, path, now)
  else
    refused = refused + n
  end
end
if refused > 0 then redis.call('INCRBY', overflow, refused) end
return refused
