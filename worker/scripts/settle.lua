-- Delivery settlement: ack what AEP accepted, dead-letter what it refused, delete both from the
-- outbox. KEYS: outbox, deadletter, its counts. ARGV: group, dead-letter MINID, number of acks,
-- the ids to ack, the letter record's names, then per dead letter its outbox id and the letter's
-- values (worker/deliver.py, Settler.__call__).
local outbox, dlq, counts = KEYS[1], KEYS[2], KEYS[3]
local group, minid, n_acks = ARGV[1], ARGV[2], tonumber(ARGV[3])
local done, trimmed = {}, false
for i = 4, 3 + n_acks do
  if redis.call('XACK', outbox, group, ARGV[i]) == 1 then done[#done + 1] = ARGV[i] end
end
local names, i = read_names(ARGV, 4 + n_acks)
while i <= #ARGV do
  local id = ARGV[i]
  if redis.call('XACK', outbox, group, id) == 1 then
    done[#done + 1] = id
    if not trimmed then trim_expired(dlq, counts, minid); trimmed = true end
    add_letter(dlq, counts, names, ARGV, i + 1)
  end
  i = i + 1 + #names
end
if #done > 0 then redis.call('XDEL', outbox, unpack(done)) end
return #done
