"""The global send rate (mailer/sending/ratelimit.py) against this run's own Redis database.

No assertion on how long anything took: each test counts the tokens granted while it
watched, and checks the count against what a bucket of that rate and capacity can
grant over the time that actually passed (a full bucket, plus ``rate`` a second).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from mailer.sending.ratelimit import LocalBucket, SendRate, make_bucket
from testkit.redis_db import redis_url
from tests.conftest import ROOT

RATE = 40.0  # tokens a second; the capacity is one second's worth (batches of 1)
CAPACITY = 40
WINDOW = 1.5  # seconds each test takes tokens for

# A worker process of its own: from ``start`` (wall clock) to ``start + seconds`` it takes
# one token at a time from the bucket of ``backend``, then prints what it got and when.
CHILD = """
import json, sys, time
from mailer.sending.ratelimit import make_bucket
url, backend, rate, start, seconds = sys.argv[1:3] + [float(a) for a in sys.argv[3:]]
bucket = make_bucket(rate, backend, 1, url)
time.sleep(max(0.0, start - time.time()))
granted = 0
while time.time() < start + seconds:
    bucket.take(1)
    granted += 1
print(json.dumps({"granted": granted, "last": time.time()}))
"""


@pytest.fixture
def backend() -> Iterator[str]:
    """A backend name no other test uses, so its bucket starts full; removed afterwards."""
    name = f"ratelimit-test-{uuid.uuid4().hex[:8]}"
    yield name
    with redis.Redis.from_url(redis_url()) as client:
        client.delete(f"mailer:rate:{name}")


def most_granted(seconds: float) -> float:
    """What one bucket may grant over ``seconds``: a full bucket, then the rate (+1 for the
    millisecond rounding of Redis's clock)."""
    return CAPACITY + RATE * seconds + 1


def take_for(buckets: list[SendRate], seconds: float) -> tuple[int, float]:
    """Each bucket taken from one token at a time by a thread of its own for ``seconds``:
    (tokens granted in all, seconds from the start to the last grant)."""
    counts = [0] * len(buckets)
    start = time.monotonic()

    def take(i: int) -> None:
        while time.monotonic() - start < seconds:
            buckets[i].take(1)
            counts[i] += 1

    threads = [threading.Thread(target=take, args=(i,)) for i in range(len(buckets))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts), time.monotonic() - start


def test_a_burst_gets_a_full_bucket_then_the_rate(backend: str) -> None:
    granted, elapsed = take_for([make_bucket(RATE, backend, 1, redis_url())], WINDOW)
    assert CAPACITY < granted <= most_granted(elapsed)


def test_a_batch_larger_than_the_bucket_takes_it_in_pieces(backend: str) -> None:
    bucket = make_bucket(RATE, backend, 1, redis_url())
    bucket.take(2 * CAPACITY + 5)  # more than the bucket holds: it waits for the rest
    granted, elapsed = take_for([bucket], 0.5)
    assert granted <= RATE * elapsed + 1  # what the batch took is not given again


def test_two_processes_share_one_rate(backend: str) -> None:
    start = time.time() + 4  # both children are running by then
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [redis_url(), backend, str(RATE), str(start), str(WINDOW)]
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, *args], env=env, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    results = [json.loads(child.communicate(timeout=60)[0]) for child in children]
    assert all(r["granted"] > 0 for r in results)
    elapsed = max(r["last"] for r in results) - start
    assert sum(r["granted"] for r in results) <= most_granted(elapsed)


def test_without_a_broker_the_bucket_is_in_process_and_shared_by_its_threads() -> None:
    bucket = make_bucket(RATE, "outbox", 1, "")
    assert isinstance(bucket, LocalBucket)
    granted, elapsed = take_for([bucket, bucket], WINDOW)
    assert CAPACITY < granted <= most_granted(elapsed)


def test_a_rate_of_zero_is_no_limit() -> None:
    make_bucket(0, "sendgrid", 1000, redis_url()).take(10**9)  # returns at once
