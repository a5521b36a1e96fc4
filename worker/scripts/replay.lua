-- Dead-letter replay: if the letter is still there, add its push to the inbox (an inbox record
-- marked replay, with its first receipt time) and delete the letter. XADD first, so an
-- out-of-memory refusal leaves the letter untouched. KEYS: deadletter, inbox, the letters' counts.
-- ARGV: letter id, the inbox record's names, its values (worker/replay.py).
if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) == 0 then return false end
local names, i = read_names(ARGV, 2)
local inbox_id = add_record(KEYS[2], names, ARGV, i)
remove_letter(KEYS[1], KEYS[3], ARGV[1])
return inbox_id
