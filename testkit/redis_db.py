"""A Redis database of this test run's own.

The broker tests flush their database and their workers take whatever task is queued
there: two runs on one machine (two developers, a developer and CI) sharing a fixed
database would take each other's tasks. Each run claims a free one of Redis's 16
(database 0 holds the claims), and gives it back when it ends.
"""

from __future__ import annotations

import atexit
import functools
import os

import redis

__all__ = ["redis_url"]

SERVER = "redis://127.0.0.1:6379"
CLAIM_SECONDS = 6 * 3600  # a run killed without its atexit frees its claim by then


@functools.cache
def redis_url() -> str:
    """``redis://…/N`` for a database no other live test run holds."""
    with redis.Redis.from_url(f"{SERVER}/0") as client:
        for number in range(1, 16):
            key = f"mailer-tests:claim:{number}"
            if client.set(key, os.getpid(), nx=True, ex=CLAIM_SECONDS):
                atexit.register(_release, key)
                return f"{SERVER}/{number}"
    raise RuntimeError("every Redis database is claimed by another test run (db 0 lists them)")


def _release(key: str) -> None:
    with redis.Redis.from_url(f"{SERVER}/0") as client:
        if client.get(key) == str(os.getpid()).encode():
            client.delete(key)
