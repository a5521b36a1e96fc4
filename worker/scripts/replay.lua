-- Dead-letter replay: if the letter is still there, add its push to the inbox (marked replay,
-- with its first receipt time) and delete the letter. XADD first, so an out-of-memory refusal
-- leaves the letter untouched. KEYS: deadletter, inbox, the letters' counts.
-- ARGV: letter id, push, receipt, receivedMs.
if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) == 0 then return false end
local inbox_id = redis.call('XADD', KEYS[2], '*', 'push', ARGV[2], 'receipt', ARGV[3],
                            'replay', '1', 'receivedMs', ARGV[4])
remove_letter(KEYS[1], KEYS[3], ARGV[1])
return inbox_id
