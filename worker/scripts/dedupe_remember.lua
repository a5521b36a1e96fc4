-- Claims ids without a hand-off (the benchmark's memory row and the exactness test use it).
-- ARGV: ttl, then per id: bucket, member. Returns how many were new.
local ttl, now, fresh, touched = tonumber(ARGV[1]), now_seconds(), 0, {}
for i = 2, #ARGV, 2 do
  if claim(ARGV[i], ARGV[i + 1], '', '', now, ttl) then fresh = fresh + 1 end
  touched[ARGV[i]] = true
end
tidy(touched, now, ttl)
return fresh
