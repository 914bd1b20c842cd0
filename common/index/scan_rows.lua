-- IndexStore.rows_and_signatures(scan_only=True): one consistent read of where products are and their
-- scanned bytes.
-- KEYS: rows, then one column per scanned signal; ARGV: pids.
-- Returns {rows (-1: not indexed), then per column the 8-byte values of the found products, concatenated}.
local ROWS = KEYS[1]
local FIRST_COLUMN = 2

local rows, found = {}, {}
for i = 1, #ARGV do
  local row = redis.call('HGET', ROWS, ARGV[i])
  if row then
    rows[i] = tonumber(row)
    found[#found + 1] = tonumber(row)
  else
    rows[i] = -1
  end
end
local out = {rows}
for c = FIRST_COLUMN, #KEYS do
  local parts = {}
  for k = 1, #found do
    parts[k] = redis.call('GETRANGE', KEYS[c], found[k] * 8, found[k] * 8 + 7)
  end
  out[c] = table.concat(parts)
end
return out
