-- Dead-letter purge: delete the given letters that still exist, uncounting each.
-- KEYS: deadletter, its counts. ARGV: the letter ids. Returns how many were deleted.
local removed = 0
for _, id in ipairs(ARGV) do
  if remove_letter(KEYS[1], KEYS[2], id) then removed = removed + 1 end
end
return removed
