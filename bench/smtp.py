"""The SMTP path against a raw smtplib loop: the same bytes, the same local aiosmtpd sink.

    .venv/bin/python bench/smtp.py [--size 5000] [--runs 3] [--modes inline,1,2]

Each run, interleaved (the order rotates from run to run, so drift in the machine's load
falls on every mode alike): the raw loop (one ``smtplib`` connection, ``sendmail`` of one
message the mailer built, ``--size`` times, each to its own recipient), then the mailer's
SMTP backend sending the sample post to ``--size`` confirmed subscribers of a fresh
PostgreSQL database, inline (``InlineQueue`` in this process) and through real Celery
workers (``--concurrency=K`` on a Redis database of this run's own). The mailer's time runs
from ``start()`` to the campaign's ``finished_at``. The sink, a process of its own, counts
what each recipient got, and every run checks each reader got exactly one message.

``bench/compare.py`` imports ``smtp_pair`` from here; run alone, this prints the same table.
"""

from __future__ import annotations

import argparse
import atexit
import functools
import importlib.util
import json
import os
import secrets
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
SCRIPT = str(Path(__file__).resolve())
SAMPLE_POST = ROOT / "posts" / "2026-02-06-ai-weekly.md"
SECRET = "bench-secret-for-the-smtp-benchmark"
SENDER = "newsletter@example.com"


@functools.cache
def _send_bench() -> Any:
    """bench/send.py's PostgreSQL seeding and Celery worker helpers (one copy of each)."""
    spec = importlib.util.spec_from_file_location("bench_send", ROOT / "bench" / "send.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_send"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


# The sink -----------------------------------------------------------------------------------


def sink_child(port: int, out: Path) -> None:
    """An aiosmtpd server that accepts everything and, on SIGTERM, writes its counts."""
    from aiosmtpd.controller import Controller

    counts: Counter[str] = Counter()

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            counts.update(envelope.rcpt_tos)
            return "250 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=port, server_hostname="sink")
    controller.start()
    stopped = False

    def stop(_signum: int, _frame: Any) -> None:
        nonlocal stopped
        stopped = True

    signal.signal(signal.SIGTERM, stop)
    while not stopped:
        time.sleep(0.05)
    controller.stop()
    cpu = os.times()
    out.write_text(json.dumps({"counts": counts, "cpu": cpu.user + cpu.system}))


class Sink:
    """The sink in a process of its own (so its CPU is not the sender's)."""

    def __init__(self, folder: Path, name: str) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.out = folder / f"{name}.json"
        command = [sys.executable, SCRIPT, "--sink", str(self.port), "--out", str(self.out)]
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        self.process.kill()
        raise RuntimeError("the sink did not start")

    def stop(self) -> Counter[str]:
        """What each recipient got; the sink's CPU seconds go to stderr (is it the limit?)."""
        self.process.terminate()
        self.process.wait(30)
        result = json.loads(self.out.read_text())
        print(f"    the sink used {result['cpu']:.2f} s of CPU", file=sys.stderr)
        return Counter(result["counts"])


def exactly_once(counts: Counter[str], size: int) -> None:
    if len(counts) != size or set(counts.values()) != {1}:
        raise RuntimeError(f"the sink got {sum(counts.values())} messages for {len(counts)} "
                           f"recipients, {size} expected once each")  # fmt: skip


# The two sides ------------------------------------------------------------------------------


def sample_message() -> bytes:
    """What one reader of the sample post gets from the mailer (the raw loop sends it)."""
    from mailer.content.post import load_post
    from mailer.content.render import Renderer
    from mailer.delivery.identity import Identity
    from mailer.delivery.message import Batch, Envelope, Sender, to_bytes

    settings = bench_settings("sqlite://", 25)
    edition = Renderer(settings).render(load_post(SAMPLE_POST))
    envelope = Envelope("reader0@bench.example.org", "Reader 0", "1-1", "https://x.example/u/t")
    batch = Batch(edition.subject, edition.html, edition.text, Sender(SENDER, "Bench"), (envelope,))
    return to_bytes(batch, envelope, Identity.of(settings))


def raw_loop(folder: Path, size: int, message: bytes) -> float:
    """Seconds for ``size`` sendmail calls over one connection, with the sink's check."""
    sink = Sink(folder, f"raw-{secrets.token_hex(3)}")
    try:
        started = time.perf_counter()
        with smtplib.SMTP("127.0.0.1", sink.port) as smtp:
            for i in range(size):
                smtp.sendmail(SENDER, [f"reader{i}@bench.example.org"], message)
        seconds = time.perf_counter() - started
    finally:
        counts = sink.stop()
    exactly_once(counts, size)
    return seconds


def bench_settings(database_url: str, port: int, **extra: Any) -> Any:
    from mailer.config import Settings

    return Settings(
        database_url=database_url,
        backend="smtp",
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_security="none",
        sender_email=SENDER,
        public_url="https://mail.example.org",
        site_url="https://blog.example.org",
        secret_keys=[SECRET],
        **extra,
    )


def mailer_run(folder: Path, size: int, workers: int, admin_url: str, batch_size: int) -> float:
    """Seconds from ``start()`` to ``finished_at``: inline with ``workers`` 0, else through a
    Celery worker of that concurrency."""
    import datetime as dt

    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from mailer.content.post import load_post
    from mailer.runtime import Runtime
    from mailer.sending.dispatch import CeleryQueue, InlineQueue, create_campaign, start
    from mailer.store.db import make_engine

    sb = _send_bench()
    name = f"mailer_bench_smtp_{os.getpid()}_{secrets.token_hex(3)}"
    admin = make_engine(admin_url).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    sink = Sink(folder, name)
    worker = None
    rt = None
    try:
        sb.seed(url, size)
        extra: dict[str, Any] = {"batch_size": batch_size}
        if workers:
            extra["broker_url"] = sb.broker()
        settings = bench_settings(url, sink.port, **extra)
        rt = Runtime(settings)
        if workers:
            sb.flush_broker()
            log = folder / f"{name}.log"
            worker = sb.start_worker(folder, settings, workers, log)
            sb.wait_ready(worker, workers, log)
        edition = rt.renderer.render(load_post(SAMPLE_POST))
        campaign, _ = create_campaign(rt, edition, SAMPLE_POST)
        queue = CeleryQueue(sb.broker()) if workers else InlineQueue(rt)
        began = dt.datetime.now(dt.UTC)
        try:
            assert start(rt, campaign.id, queue)
        finally:
            if workers:
                queue.close()
        finished_at = sb.wait_sent(rt.engine, campaign.id, 600)
        seconds = (finished_at - began).total_seconds()
    finally:
        if worker is not None:
            sb.stop_group(worker)
        if rt is not None:
            rt.close()
        counts = sink.stop()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    exactly_once(counts, size)
    return seconds


def smtp_pair(
    size: int, modes: list[int], batch_size: int = 1000
) -> tuple[Callable[[], float], dict[str, Callable[[], float]]]:
    """The raw loop and each mailer mode, as functions returning seconds for ``size``
    messages (``bench/compare.py`` interleaves them)."""
    folder = Path(tempfile.mkdtemp(prefix="mailer-bench-smtp-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    admin_url = os.environ.get(
        "MAILER_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    message = sample_message()
    mailer = {
        ("inline" if k == 0 else f"{k} worker{'s' * (k > 1)}"): (
            lambda k=k: mailer_run(folder, size, k, admin_url, batch_size)
        )
        for k in modes
    }
    return (lambda: raw_loop(folder, size, message)), mailer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1000, help="MAILER_BATCH_SIZE")
    parser.add_argument("--modes", default="inline,1,2", help="inline and/or worker counts")
    parser.add_argument("--sink", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink:
        sink_child(args.sink, args.out)
        return 0
    from bench.compare import print_pairs, run_pairs

    modes = [0 if m == "inline" else int(m) for m in args.modes.split(",")]
    raw, mailer = smtp_pair(args.size, modes, args.batch_size)
    print_pairs("SMTP", args.size, "msg", run_pairs(raw, mailer, args.runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
