-- Ingest hand-off, all or nothing: claim each transmissionId, append to the outbox, dead-letter
-- the invalid, ack and delete the inbox entries. KEYS: inbox, outbox, deadletter, its counts.
-- ARGV: group, dedupe TTL, dead-letter MINID, the outbox record's names, the letter record's
-- names, then per entry: kind ('o' or 'd'), inbox id, dedupe set, member, legacy key, replay
-- ('1' or ''), and the values of its outbox record or dead letter (worker/dedupe.py).
local inbox, outbox, dlq, counts = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local group, ttl, minid = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local now, touched = now_seconds(), {}
local out_names, i = read_names(ARGV, 4)
local letter_names
letter_names, i = read_names(ARGV, i)
local sent, repeats, dead, done = 0, 0, 0, {}
while i <= #ARGV do
  local kind, id, bucket, member, legacy, replay =
    ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  local values = i + 6
  i = values + (kind == 'o' and #out_names or #letter_names)
  if redis.call('XACK', inbox, group, id) == 1 then
    done[#done + 1] = id
    if kind == 'o' then
      touched[bucket] = true
      if claim(bucket, member, legacy, replay, now, ttl) then
        add_record(outbox, out_names, ARGV, values)
        sent = sent + 1
      else
        repeats = repeats + 1
      end
    else
      if dead == 0 then trim_expired(dlq, counts, minid) end
      add_letter(dlq, counts, letter_names, ARGV, values)
      dead = dead + 1
    end
  end
end
tidy(touched, now, ttl)
if #done > 0 then redis.call('XDEL', inbox, unpack(done)) end
return {sent, repeats, dead}
