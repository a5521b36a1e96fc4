-- Remembering transmissionIds compactly (worker/dedupe.py): each event's 128-bit id is a member
-- of one of DEDUPE_BUCKETS sorted sets, scored with the second it is forgotten. Small sets are
-- stored by Redis as listpacks (about 30 bytes per id, where a key per id costs about 150).
-- A member counts only until its score; every set expires DEDUPE_TTL + 1 h after its last write,
-- and housekeeping sweeps every set's expired members once an hour.
local function now_seconds()
  local t = redis.call('TIME')
  return tonumber(t[1])
end

-- True if the id is new (or replayed), and then remembers it until now + ttl. `legacy` is the
-- per-event key earlier versions wrote; it still counts until it expires by itself.
local function claim(bucket, member, legacy, replay, now, ttl)
  if replay ~= '1' then
    local until_ = redis.call('ZSCORE', bucket, member)
    -- Scores are whole seconds: an id counts through its last second, never less than the TTL.
    if until_ and tonumber(until_) >= now then return false end
    if legacy ~= '' and redis.call('EXISTS', legacy) == 1 then return false end
  end
  redis.call('ZADD', bucket, now + ttl, member)
  return true
end

-- After a batch of claims: push back the touched sets' expiry (the sweep drops expired members,
-- so a claim costs no trim of its own).
local function tidy(buckets, now, ttl)
  for bucket in pairs(buckets) do
    redis.call('EXPIRE', bucket, ttl + 3600)
  end
end
