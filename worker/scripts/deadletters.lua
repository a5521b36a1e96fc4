-- Shared by every script that adds or removes dead letters (loaded after records.lua): the count
-- of letters per reason (a hash) changes in the same atomic step as the stream, so reading the
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

-- A letter whose values start at argv[i]; the reason is its first field (LetterRecord.FIELDS).
local function add_letter(dlq, counts, names, argv, i)
  add_record(dlq, names, argv, i)
  redis.call('HINCRBY', counts, argv[i], 1)
end

local function remove_letter(dlq, counts, id)
  local found = redis.call('XRANGE', dlq, id, id)
  if #found == 0 then return false end
  redis.call('XDEL', dlq, id)
  redis.call('HINCRBY', counts, reason_of(found[1][2]), -1)
  return true
end
