"""The key prefix and the Lua scripts that take, renew and give back the keys one replica
holds (leases and idempotency claims); the key layout is in the package's docstring."""

from __future__ import annotations

PREFIX = "sync-gateway:"

# Renew a key this replica holds, or take it again when it vanished (Redis restarted).
RENEW = """local v = redis.call('get', KEYS[1])
if v == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
if not v then redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
return 0"""
RELEASE = """if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0"""
# Claim a free key (nil) or answer what holds it.
CLAIM = """local v = redis.call('get', KEYS[1])
if v then return v end
redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false"""
# Replace our pending claim (or a claim lost in a Redis restart) with its outcome.
SETTLE = """local v = redis.call('get', KEYS[1])
if v and v ~= ARGV[1] then return 0 end
redis.call('set', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1"""


def ms(seconds: float) -> int:
    """A TTL in whole milliseconds for ``PX``/``PEXPIRE``, never zero."""
    return max(1, int(seconds * 1000))
