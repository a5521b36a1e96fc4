-- Shared by the scripts that write stream records (loaded first). The field names of each record
-- come from shared/records.py once per call, as a count then the names; each entry's values
-- follow in the same order. No script spells a record's fields, so they are defined in one place.

-- The names starting at ARGV[i]; returns them and the index just after.
local function read_names(argv, i)
  local n = tonumber(argv[i])
  local names = {}
  for j = 1, n do names[j] = argv[i + j] end
  return names, i + n + 1
end

-- XADD one record whose values start at argv[i].
local function add_record(key, names, argv, i)
  local pairs_ = {}
  for j = 1, #names do
    pairs_[2 * j - 1] = names[j]
    pairs_[2 * j] = argv[i + j - 1]
  end
  return redis.call('XADD', key, '*', unpack(pairs_))
end
