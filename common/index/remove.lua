-- IndexStore.remove: each indexed product leaves every structure (row, meta, order, scan bytes zeroed,
-- blobs, failure record), its row goes to the free list, and it gets its own version and change entry
-- (kind "rm"), all in this one call.
-- KEYS: the fixed keys named below (in the order of the key list in IndexStore.remove, line for line),
--       then one column per scanned signal (column(s)), then one hash per blob signal (blob(b)).
-- ARGV: n_scan, n_blob, maxlen, pids...
-- Returns {removed ids, version, rows in the patch, row slots}.
local VERSION, CHANGES, ROWS, PRODUCTS, FAILURES = unpack(KEYS, 1, 5)
local ROW_COUNT, FREE_ROWS, ROW_PATCH, ADDED = unpack(KEYS, 6, 9)
local FIXED_KEYS = 9

local n_scan = tonumber(ARGV[1])
local n_blob = tonumber(ARGV[2])
local maxlen = ARGV[3]
local FIRST_PID = 4

local function column(s) return KEYS[FIXED_KEYS + s] end
local function blob(b) return KEYS[FIXED_KEYS + n_scan + b] end

local version = tonumber(redis.call('GET', VERSION) or '0')
local n_rows = tonumber(redis.call('GET', ROW_COUNT) or redis.call('HLEN', ROWS))
local zero = string.rep('\0', 8)
local removed = {}
for i = FIRST_PID, #ARGV do
  local pid = ARGV[i]
  local row = redis.call('HGET', ROWS, pid)
  redis.call('HDEL', FAILURES, pid)
  if row then
    redis.call('HDEL', ROWS, pid)
    redis.call('HDEL', PRODUCTS, pid)
    redis.call('HDEL', ADDED, pid)
    for s = 1, n_scan do
      redis.call('SETRANGE', column(s), tonumber(row) * 8, zero)
    end
    for b = 1, n_blob do
      redis.call('HDEL', blob(b), pid)
    end
    redis.call('HSET', ROW_PATCH, row, '')
    redis.call('RPUSH', FREE_ROWS, row)
    version = version + 1
    redis.call('XADD', CHANGES, 'MAXLEN', '~', maxlen, '*', 'pid', pid, 'v', version, 'k', 'rm', 'row', row)
    removed[#removed + 1] = pid
  end
end
redis.call('SET', VERSION, version)
redis.call('SET', ROW_COUNT, n_rows)
return {removed, version, redis.call('HLEN', ROW_PATCH), n_rows}
