-- Shared by every script that adds or removes dead letters (loaded before it): the count of
-- letters per reason (a hash) changes in the same atomic step as the stream, so reading the
-- counts never means reading the letters.

local function reason_of(fields)
  for j = 1, #fields, 2 do
    if fields[j] == 'reason' then return fields[j + 1] end
  end
  return ''
end

-- Letters older than the retention go first, at most 100 per call (each call trims a little),
-- each uncounted as it is deleted.
local function trim_expired(dlq, counts, minid)
  for _, entry in ipairs(redis.call('XRANGE', dlq, '-', '(' .. minid, 'COUNT', 100)) do
    redis.call('HINCRBY', counts, reason_of(entry[2]), -1)
    redis.call('XDEL', dlq, entry[1])
  end
end

-- Field order: the same for every letter (shared/deadletter.FIELDS), so Redis stores the names once.
local function add_letter(dlq, counts, reason, detail, push, xdm, tid, et, attempts, rcv)
  redis.call('XADD', dlq, '*', 'reason', reason, 'detail', detail, 'push', push, 'xdm', xdm,
             'transmissionId', tid, 'eventType', et, 'attempts', attempts, 'receivedMs', rcv)
  redis.call('HINCRBY', counts, reason, 1)
end

local function remove_letter(dlq, counts, id)
  local found = redis.call('XRANGE', dlq, id, id)
  if #found == 0 then return false end
  redis.call('XDEL', dlq, id)
  redis.call('HINCRBY', counts, reason_of(found[1][2]), -1)
  return true
end
