-- IndexStore.write: write products atomically; an unchanged product does not bump the version.
-- KEYS: the fixed keys named below (in the order of IndexStore._write_keys, line for line), then one
--       column per scanned signal (column(s)), then one hash per blob signal (blob(b)).
-- ARGV: n_scan, n_blob, force, maxlen, epoch token,
--       then per product: pid, meta, scan values..., blob values...
-- A new product takes a free row when there is one (its id goes to the row patch), else a new row at
-- the end (its id appended to IDS). Returns {written, version, rows in the patch, row slots}.
local VERSION, CHANGES, ROWS, IDS, PRODUCTS, FAILURES, EPOCH = unpack(KEYS, 1, 7)
local ROW_COUNT, FREE_ROWS, ROW_PATCH, ADDED = unpack(KEYS, 8, 11)
local FIXED_KEYS = 11

local n_scan = tonumber(ARGV[1])
local n_blob = tonumber(ARGV[2])
local force = ARGV[3] == '1'
local maxlen = ARGV[4]
local epoch_token = ARGV[5]
local FIRST_PRODUCT = 6
local per = 2 + n_scan + n_blob

local function column(s) return KEYS[FIXED_KEYS + s] end
local function blob(b) return KEYS[FIXED_KEYS + n_scan + b] end

local written = 0
redis.call('SETNX', EPOCH, epoch_token)
local version = tonumber(redis.call('GET', VERSION) or '0')
local n_rows = tonumber(redis.call('GET', ROW_COUNT) or redis.call('HLEN', ROWS))
local i = FIRST_PRODUCT
while i <= #ARGV do
  local pid = ARGV[i]
  local row = redis.call('HGET', ROWS, pid)
  local changed = force or (row == false)
  if row == false then
    local free = redis.call('LPOP', FREE_ROWS)
    if free then
      row = tonumber(free)
      redis.call('HSET', ROW_PATCH, row, pid)
    else
      row = n_rows
      n_rows = n_rows + 1
      redis.call('APPEND', IDS, pid .. '\n')
    end
    redis.call('HSET', ROWS, pid, row)
    redis.call('HSET', ADDED, pid, version + 1)
  else
    row = tonumber(row)
  end
  if not changed then
    for s = 1, n_scan do
      if redis.call('GETRANGE', column(s), row * 8, row * 8 + 7) ~= ARGV[i + 1 + s] then
        changed = true
      end
    end
    for b = 1, n_blob do
      if redis.call('HGET', blob(b), pid) ~= ARGV[i + 1 + n_scan + b] then
        changed = true
      end
    end
  end
  if changed then
    for s = 1, n_scan do
      redis.call('SETRANGE', column(s), row * 8, ARGV[i + 1 + s])
    end
    for b = 1, n_blob do
      redis.call('HSET', blob(b), pid, ARGV[i + 1 + n_scan + b])
    end
    version = version + 1
    redis.call('SET', VERSION, version)
    redis.call('XADD', CHANGES, 'MAXLEN', '~', maxlen, '*', 'pid', pid, 'v', version, 'row', row)
    written = written + 1
  end
  redis.call('HSET', PRODUCTS, pid, ARGV[i + 1])
  redis.call('HDEL', FAILURES, pid)
  i = i + per
end
redis.call('SET', ROW_COUNT, n_rows)
return {written, version, redis.call('HLEN', ROW_PATCH), n_rows}
