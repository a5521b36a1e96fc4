-- Ingest hand-off, all or nothing: claim each transmissionId, append to the outbox, dead-letter
-- the invalid, ack and delete the inbox entries. KEYS: inbox, outbox, deadletter, its counts.
-- ARGV: group, dedupe TTL, dead-letter MINID, then per entry the 11 fields Handoff.__call__ lists.
local inbox, outbox, dlq, counts = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local group, ttl, minid = ARGV[1], ARGV[2], ARGV[3]
local sent, repeats, dead, done = 0, 0, 0, {}
for i = 4, #ARGV, 11 do
  local kind, id, seen, replay, tid, et, rcv, push, payload, reason, attempts = unpack(ARGV, i, i + 10)
  if redis.call('XACK', inbox, group, id) == 1 then
    done[#done + 1] = id
    if kind == 'o' then
      local fresh
      if replay == '1' then
        fresh = redis.call('SET', seen, '1', 'EX', ttl)
      else
        fresh = redis.call('SET', seen, '1', 'NX', 'EX', ttl)
      end
      if fresh then
        redis.call('XADD', outbox, '*', 'message', payload, 'transmissionId', tid, 'eventType', et,
                   'receivedMs', rcv, 'push', push)
        sent = sent + 1
      else
        repeats = repeats + 1
      end
    else
      if dead == 0 then trim_expired(dlq, counts, minid) end
      add_letter(dlq, counts, reason, payload, push, '', tid, et, attempts, rcv)
      dead = dead + 1
    end
  end
end
if #done > 0 then redis.call('XDEL', inbox, unpack(done)) end
return {sent, repeats, dead}
