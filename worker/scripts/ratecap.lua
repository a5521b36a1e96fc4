-- The fleet-wide AEP rate cap: a GCRA (generic cell rate algorithm) schedule in one key.
-- KEYS: the bucket (its theoretical arrival time, in microseconds of Redis's clock).
-- ARGV: messages wanted, microseconds per message, burst allowance in microseconds.
-- Books the messages at once and returns how many microseconds the caller waits before sending
-- them (0: now): callers queue up in booking order, and no slot is lost to retries.
-- Redis's own clock (TIME) is used, so hosts whose clocks disagree still share one schedule.
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local wanted = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + wanted * interval
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
local send_at = new_tat - burst
if send_at > now then return send_at - now end
return 0
