"""The Lua scripts of the Redis bus (worldloop.bus.redis) and the stream-id arithmetic they need.

Each script is one atomic step on the world's keys. :data:`START` is where an owner takes the
command stream over, and the step that keeps a Redis *restart* safe: a Redis without
persistence comes back empty, its streams' ids start again from its own clock, and if that clock
is behind the journaled cursor (the Redis moved host, or the clock stepped back) every new
command would get an id at or below the cursor and never be read. So START also makes sure the
stream's next ids come after the cursor (XSETID on an emptied stream, or an XADD + XDEL at the
cursor on a missing one) before it counts what waits.
"""

from __future__ import annotations

PUT = """
if KEYS[4] ~= '' then
  local first = redis.call('GET', KEYS[4])
  if first then return {0, first} end
end
if tonumber(redis.call('GET', KEYS[3]) or '0') >= tonumber(ARGV[1]) then return {-1} end
local seq = redis.call('INCR', KEYS[2])
local id = redis.call('XADD', KEYS[1], '*', 'seq', seq, 'c', ARGV[2])
redis.call('INCR', KEYS[3])
if KEYS[4] ~= '' then redis.call('SET', KEYS[4], seq .. ' ' .. ARGV[2], 'PX', ARGV[3]) end
return {1, seq, id}
"""
START = """
redis.call('XTRIM', KEYS[1], 'MINID', ARGV[1])
if ARGV[2] ~= '0-0' then
  if redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('XADD', KEYS[1], ARGV[2], 'seq', '0', 'c', 'null')
    redis.call('XDEL', KEYS[1], ARGV[2])
  elseif redis.call('XLEN', KEYS[1]) == 0 then
    redis.pcall('XSETID', KEYS[1], ARGV[2])
  end
end
local waiting = redis.call('XLEN', KEYS[1])
redis.call('SET', KEYS[2], waiting)
return waiting
"""
SET_SEQ = """
if tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
end
return 1
"""


def after(stream_id: str) -> str:
    """The smallest stream id after ``stream_id`` (XTRIM MINID keeps it and what follows)."""
    ms, _, n = stream_id.partition("-")
    return f"{ms}-{int(n or 0) + 1}"


def id_key(stream_id: str) -> tuple[int, int]:
    """A stream id as a comparable pair (``"1700000000000-3"`` -> ``(1700000000000, 3)``)."""
    ms, _, n = stream_id.partition("-")
    return int(ms or 0), int(n or 0)
