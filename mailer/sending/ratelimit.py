"""The global send rate: a token bucket per backend, shared by every worker through Redis.

Tokens accrue at ``rate`` per second up to one second's worth (or one batch,
whichever is larger); a batch takes as many tokens as it has readers and waits
for them. Redis keeps the bucket and its clock (``TIME``), so workers on other
machines share one limit; inline sending keeps the same bucket in memory.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

import redis

__all__ = ["LocalBucket", "RedisBucket", "SendRate", "make_bucket"]

# Returns how many milliseconds to wait before `n` tokens are there (0: taken now).
_TAKE = """
local rate, capacity, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = clock[1] * 1000 + math.floor(clock[2] / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + (now - at) * rate / 1000)
local wait = 0
if tokens >= n then
  tokens = tokens - n
else
  wait = math.ceil((n - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], 60000)
return wait
"""


class SendRate(Protocol):
    def take(self, n: int) -> None:
        """Block until ``n`` messages may go out."""


class _Unlimited:
    def take(self, n: int) -> None:
        return None


class RedisBucket:
    def __init__(self, client: redis.Redis, key: str, rate: float, capacity: int) -> None:
        self.script = client.register_script(_TAKE)
        self.key = key
        self.rate = rate
        self.capacity = max(capacity, int(rate))

    def take(self, n: int) -> None:
        while n > 0:
            piece = min(n, self.capacity)
            wait_ms = int(self.script(keys=[self.key], args=[self.rate, self.capacity, piece]))
            if wait_ms:
                time.sleep(wait_ms / 1000)
                continue
            n -= piece


class LocalBucket:
    def __init__(self, rate: float, capacity: int) -> None:
        self.rate = rate
        self.capacity = max(capacity, int(rate))
        self.tokens = float(self.capacity)
        self.at = time.monotonic()
        self.lock = threading.Lock()

    def take(self, n: int) -> None:
        while n > 0:
            piece = min(n, self.capacity)
            with self.lock:
                now = time.monotonic()
                self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
                self.at = now
                wait = 0.0 if self.tokens >= piece else (piece - self.tokens) / self.rate
                if not wait:
                    self.tokens -= piece
            if wait:
                time.sleep(wait)
                continue
            n -= piece


def make_bucket(rate: float, backend: str, batch_size: int, redis_url: str = "") -> SendRate:
    """The bucket for ``backend``: none when ``rate`` is 0, in Redis when there is a broker."""
    if rate <= 0:
        return _Unlimited()
    if redis_url.startswith("redis"):
        return RedisBucket(
            redis.Redis.from_url(redis_url), f"mailer:rate:{backend}", rate, batch_size
        )
    return LocalBucket(rate, batch_size)
