"""Send the sample post to N subscribers end to end: real Celery workers into the SendGrid stand-in.

    .venv/bin/python bench/send.py [--sizes 10000,100000,1000000] [--workers 1,2] [--repeat K]
        [--no-validate] [--ceiling-seconds S] [--timeout S] [--py-spy FOLDER]
    .venv/bin/python bench/send.py --pair [--sizes 100000] [--workers 1,2] [--repeat 3]
        [--base /path/to/another/checkout]

For each size N and worker count K, on a fresh PostgreSQL database each time: N confirmed
subscribers seeded with one ``INSERT … SELECT generate_series`` (then ``ANALYZE``), Redis
db 10 flushed, a SendGrid stand-in (``testkit/sendgrid_standin.py``) serving in a process of
its own, and a real ``celery -A worker worker --concurrency=K`` on that broker with the
``sendgrid`` backend pointed at the stand-in (batches of 1000, tracking on as by default).
Once the worker answers a ping, the campaign is created and ``start()``ed (which fills the
ledger and enqueues the batches) and the wall time runs until the worker marks the
campaign sent (its ``finished_at``). Just before the worker is stopped, the peak RSS
(``VmHWM``) of its main process and of each pool process is read from ``/proc``; the CPU
seconds spent meanwhile by the worker processes, PostgreSQL, Redis and the stand-in are
taken from ``/proc`` too, so the table shows where the machine's cores went. The
stand-in's own counts check that every subscriber received the edition exactly once and
nobody else did; the ledger must say the same.

In the same run the stand-in's own ceiling is measured: a fresh stand-in process, and a
client replaying a request the pipeline really sent (1000 recipients, pre-serialized,
keep-alive) from 1 and then 2 processes for ``--ceiling-seconds`` each. Each pipeline
row shows its rate divided by the better of the two.

``--pair`` (``sendgrid_pair``, which ``bench/compare.py`` runs): issue 16's pair at the
first size, interleaved as compare.py interleaves them. The peer is a naive loop with the
``sendgrid`` helper library: ``Mail`` and a ``Personalization`` per reader (the mailer's
own signed links and list headers), ``SendGridAPIClient.send`` per 1000, no ledger, into a
fresh stand-in that must count each reader once. The variants: the mailer as above with
each worker count (and with ``--base``, the same running another checkout's worker code),
and the stand-in's ceiling, given as the seconds it would need for N at its best rate.

Prints one table, medians over ``--repeat`` runs, with the targets of issue 4: a
million recipients in under 60 s on this machine, memory per worker flat in N and under
150 MB. Exits 1 if a run fails or a check does not hold. Databases, the Redis db,
processes and temporary files are removed even on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import functools
import json
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_POST = ROOT / "posts" / "2026-02-06-ai-weekly.md"  # the reference post, in the repo
SCRIPT = str(Path(__file__).resolve())
SECRET = "bench-secret-for-the-send-benchmark"
BATCH_SIZE = 1000
TARGET_SECONDS_PER_MILLION = 60.0
TARGET_RATE = 1_000_000 / TARGET_SECONDS_PER_MILLION  # recipients/s
TARGET_RSS_MB = 150.0
READER = "reader{}@bench.example.org"
READER_PATTERN = re.compile(r"reader(\d+)@bench\.example\.org")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `testkit` (the stand-in, child_env), as the workers see it

from bench.common import (  # noqa: E402  (needs ROOT on the path)
    POSTGRES_ADMIN_URL,
    create_database,
    drop_database,
    stop_group,
    terminate,
)


def broker() -> str:
    """A Redis database of this run's own, claimed as the tests claim theirs (so a benchmark
    and a test run on one machine never flush each other's queue)."""
    from testkit.redis_db import redis_url

    return redis_url()


# /proc ------------------------------------------------------------------------------


def proc_status(pid: int, field_name: str) -> int:
    """A ``kB`` field of /proc/PID/status (VmHWM, VmRSS), in KiB; 0 if the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def proc_stat(pid: int) -> tuple[str, int, float] | None:
    """(comm, ppid, CPU seconds of the process and its reaped children) or None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime, stime, cutime, cstime are fields 14 to 17.
    ticks = sum(int(value) for value in fields[11:15])
    return comm, int(fields[1]), ticks / CLOCK_TICKS


def all_processes() -> dict[int, tuple[str, int, float]]:
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := proc_stat(int(entry))) is not None:
            found[int(entry)] = stat
    return found


def children(pid: int) -> list[int]:
    return sorted(p for p, (_, ppid, _) in all_processes().items() if ppid == pid)


def cpu_by_part(worker_pid: int, standin_pid: int) -> dict[str, float]:
    """CPU seconds so far of the worker (main and pool), PostgreSQL, Redis and the stand-in.

    A process's count includes its reaped children (cutime), so PostgreSQL's backends
    that ended are still counted in the postmaster's figure.
    """
    processes = all_processes()
    parts = {"workers": 0.0, "postgres": 0.0, "redis": 0.0, "stand-in": 0.0}
    for pid, (comm, ppid, seconds) in processes.items():
        if pid == worker_pid or ppid == worker_pid:
            parts["workers"] += seconds
        elif pid == standin_pid:
            parts["stand-in"] += seconds
        elif comm.startswith("postgres"):
            parts["postgres"] += seconds
        elif comm.startswith("redis-server"):
            parts["redis"] += seconds
    return parts


# Children: the stand-in and the replaying client ------------------------------------------


def standin_child(args: argparse.Namespace) -> None:
    """Serve a SendGridStandIn until stdin closes; then write its counts as JSON."""
    import resource

    from testkit.sendgrid_standin import SendGridStandIn

    capture = Path(args.capture) if args.capture else None

    class Standin(SendGridStandIn):
        first: bytes | None = None
        captured = capture is None

        def answer(self, body: bytes, authorization: str) -> tuple[int, dict[str, str], bytes]:
            status, headers, payload = super().answer(body, authorization)
            if status == 202 and not self.captured:
                with self.lock:
                    if not self.captured:  # keep a full batch, as sent, for the ceiling
                        self.first = self.first or body
                        if len(json.loads(body)["personalizations"]) >= BATCH_SIZE:
                            capture.write_bytes(body)
                            self.captured = True
            return status, headers, payload

    standin = Standin()
    standin.keep_bodies = False
    if not args.validate:
        standin.validate = lambda request: request
    with standin:
        print(standin.url, flush=True)
        sys.stdin.read()  # until the parent closes it (or dies)
    if capture is not None and not standin.captured and standin.first:
        capture.write_bytes(standin.first)
    counts = standin.recipients
    expected = 0
    for email in counts:
        match = READER_PATTERN.fullmatch(email)
        if match and int(match.group(1)) < args.expect:
            expected += 1
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result = {
        "validate": args.validate,
        "total": sum(counts.values()),
        "distinct": len(counts),
        "max": max(counts.values(), default=0),
        "repeated": sum(1 for n in counts.values() if n > 1),
        "unexpected": len(counts) - expected,
        "missing": args.expect - expected,
        "answers": {str(k): v for k, v in standin.answers.items()},
        "invalid": len(standin.invalid),
        "first_invalid": standin.invalid[0][:300] if standin.invalid else "",
        "cpu": usage.ru_utime + usage.ru_stime,
        "hwm_kib": proc_status(os.getpid(), "VmHWM"),
    }
    Path(args.out).write_text(json.dumps(result), "utf-8")


def replay_child(args: argparse.Namespace) -> None:
    """POST one ready-made request to the stand-in again and again, on one keep-alive
    connection, for ``--seconds`` (at most ``--max-requests``)."""
    import http.client
    from urllib.parse import urlsplit

    from testkit.sendgrid_standin import API_KEY

    body = Path(args.body).read_bytes()
    recipients = sum(len(p["to"]) for p in json.loads(body)["personalizations"])
    url = urlsplit(args.url)
    headers = {
        "Authorization": f"Bearer {API_KEY}",
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
    }
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    while time.time() < args.start_at:  # the processes of one measurement start together
        time.sleep(0.001)
    accepted = refused = 0
    start = time.perf_counter()
    while time.perf_counter() - start < args.seconds and accepted + refused < args.max_requests:
        connection.request("POST", "/v3/mail/send", body, headers)
        response = connection.getresponse()
        response.read()
        if response.status == 202:
            accepted += 1
        else:
            refused += 1
    seconds = time.perf_counter() - start
    connection.close()
    result = {
        "accepted": accepted,
        "refused": refused,
        "seconds": seconds,
        "recipients": accepted * recipients,
        "body_bytes": len(body),
        "per_request": recipients,
    }
    Path(args.out).write_text(json.dumps(result), "utf-8")


# The parent's processes -------------------------------------------------------------------


class StandinProcess:
    """The stand-in in a process of its own; ``stop()`` returns its counts."""

    def __init__(
        self, folder: Path, expect: int, validate: bool, capture: Path | None, name: str
    ) -> None:
        self.out = folder / f"{name}.json"
        command = [sys.executable, SCRIPT, "--child", "standin", "--out", str(self.out)]
        command += ["--expect", str(expect), "--validate" if validate else "--no-validate"]
        if capture is not None:
            command += ["--capture", str(capture)]
        self.log = (folder / f"{name}.log").open("wb")
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            start_new_session=True,
        )
        line = self.process.stdout.readline().decode().strip()
        if not line.startswith("http://"):
            self.kill()
            raise RunFailed(f"the stand-in did not start: {tail(folder / f'{name}.log')}")
        self.url = line

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> dict[str, Any]:
        self.process.stdin.close()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.kill()
        self.log.close()
        if not self.out.exists():
            raise RunFailed(f"the stand-in wrote no counts: {tail(Path(self.log.name))}")
        return json.loads(self.out.read_text("utf-8"))

    def kill(self) -> None:
        stop_group(self.process, grace=5)
        if not self.log.closed:
            self.log.close()


def tail(path: Path, lines: int = 3) -> str:
    try:
        return " | ".join(path.read_text("utf-8", "replace").strip().splitlines()[-lines:])
    except OSError:
        return "no log"


class RunFailed(Exception):
    pass


@dataclass
class Cleanup:
    """What must go whatever happens: processes, databases, the Redis db, the folder."""

    folder: Path
    admin_url: str
    processes: list[subprocess.Popen] = field(default_factory=list)
    standins: list[StandinProcess] = field(default_factory=list)
    databases: list[str] = field(default_factory=list)

    def drop(self, name: str) -> None:
        drop_database(self.admin_url, name)
        if name in self.databases:
            self.databases.remove(name)

    def all(self) -> list[str]:
        problems = []
        for process in self.processes:
            try:
                stop_group(process, grace=10)
            except Exception as exc:
                problems.append(f"could not stop process {process.pid}: {exc}")
        for standin in self.standins:
            standin.kill()
        for name in list(self.databases):
            try:
                self.drop(name)
            except Exception as exc:
                problems.append(f"could not drop database {name}: {exc}")
        try:
            flush_broker()
        except Exception as exc:
            problems.append(f"could not flush {broker()}: {exc}")
        shutil.rmtree(self.folder, ignore_errors=True)
        return problems


def flush_broker() -> None:
    import redis

    with redis.Redis.from_url(broker()) as client:
        client.flushdb()


# One run ----------------------------------------------------------------------------------


@dataclass
class Run:
    size: int
    workers: int
    start_seconds: float = 0.0  # start(): the ledger filled and the batches enqueued
    wall_seconds: float = 0.0  # start() called → the campaign marked sent
    seed_seconds: float = 0.0
    main_kib: int = 0
    pool_kib: list[int] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)
    standin: dict[str, Any] = field(default_factory=dict)
    ledger: dict[str, int] = field(default_factory=dict)
    failure: str | None = None

    @property
    def rate(self) -> float:
        return self.size / self.wall_seconds if self.wall_seconds else 0.0


def seed(url: str, size: int) -> None:
    """``size`` confirmed subscribers in one statement, then fresh planner statistics."""
    from sqlalchemy import text

    from mailer.store.db import make_engine, upgrade

    engine = make_engine(url)
    try:
        upgrade(engine)
        with engine.begin() as connection:
            connection.execute(
                text(
                    """
                    INSERT INTO subscribers (email, email_hash, name, tags, status, source,
                        created_at, confirmed_at, consent_at, consent_ip, consent_user_agent,
                        consent_source, consent_text, soft_bounces)
                    SELECT e, encode(sha256(convert_to(e, 'UTF8')), 'hex'), 'Reader ' || i,
                        CAST('[]' AS json), 'confirmed', 'bench', now(), now(), now(), '', '',
                        'bench', 'Signed up for the benchmark', 0
                    FROM (SELECT i, replace(:pattern, '{}', i::text) AS e
                          FROM generate_series(0, :size - 1) AS i) AS readers
                    """
                ),
                {"pattern": READER, "size": size},
            )
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE subscribers"))
    finally:
        engine.dispose()


def start_worker(
    folder: Path, settings: Any, concurrency: int, log: Path, root: Path = ROOT
) -> subprocess.Popen:
    """A Celery worker of ``concurrency`` processes in its own process group (so that
    ``stop_group`` reaches its pool), run with exactly ``settings``, its stderr in ``log``;
    the code it runs is ``root``'s (another checkout, to compare before and after)."""
    from testkit.processes import child_env

    command = [sys.executable, "-m", "celery", "-A", "worker", "worker",
               f"--concurrency={concurrency}", "--without-mingle", "--without-gossip",
               "--loglevel=WARNING"]  # fmt: skip
    env = child_env(settings) | {"PYTHONPATH": str(root)}
    with log.open("ab") as stderr:
        return subprocess.Popen(
            command, cwd=folder, env=env, start_new_session=True,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
        )  # fmt: skip


def wait_ready(process: subprocess.Popen, concurrency: int, log: Path, seconds: float = 90) -> None:
    """Until the worker answers a ping and its pool has ``concurrency`` processes."""
    from celery import Celery

    app = Celery("bench-ping", broker=broker())
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RunFailed(f"the worker exited with {process.returncode}: {tail(log)}")
            if len(children(process.pid)) >= concurrency and app.control.ping(timeout=0.5):
                return
            time.sleep(0.2)
    finally:
        app.close()
    raise RunFailed(f"the worker was not ready in {seconds:.0f} s: {tail(log)}")


def wait_sent(engine: Any, campaign_id: int, seconds: float) -> Any:
    """Poll the campaign's own row (cheap) until it leaves ``sending``; its finished_at."""
    from sqlalchemy import text

    deadline = time.monotonic() + seconds
    next_note = time.monotonic() + 15
    query = text("SELECT status, finished_at, last_error FROM campaigns WHERE id = :id")
    while time.monotonic() < deadline:
        with engine.connect() as connection:
            status, finished_at, last_error = connection.execute(query, {"id": campaign_id}).one()
        if status == "sent":
            return finished_at
        if status != "sending":
            raise RunFailed(f"the campaign became {status}: {last_error[:300]}")
        if time.monotonic() > next_note:
            next_note += 15
            with engine.connect() as connection:
                done = connection.execute(
                    text(
                        "SELECT count(*) FROM deliveries "
                        "WHERE campaign_id = :id AND status = 'sent'"
                    ),
                    {"id": campaign_id},
                ).scalar()
            print(f"  … {done:,} sent so far", file=sys.stderr, flush=True)
        time.sleep(0.1)
    raise RunFailed(f"the campaign was not sent in {seconds:.0f} s")


def run_once(
    size: int,
    workers: int,
    run: int,
    edition: Any,
    cleanup: Cleanup,
    args: argparse.Namespace,
    root: Path = ROOT,
) -> Run:
    import datetime as dt

    from mailer.config import Settings
    from mailer.runtime import Runtime
    from mailer.sending.dispatch import CeleryQueue, create_campaign, progress, start
    from testkit.sendgrid_standin import API_KEY

    result = Run(size, workers)
    name = f"mailer_bench_send_{os.getpid()}_{secrets.token_hex(3)}_{run}"
    cleanup.databases.append(name)  # before it exists: dropped whatever happens next
    url = create_database(cleanup.admin_url, name)
    started = time.perf_counter()
    seed(url, size)
    result.seed_seconds = time.perf_counter() - started
    flush_broker()

    folder = cleanup.folder
    capture = folder / "request.json"
    standin = StandinProcess(
        folder, size, args.validate, None if capture.exists() else capture, f"standin-{run}"
    )
    cleanup.standins.append(standin)
    settings = Settings(
        database_url=url,
        broker_url=broker(),
        backend="sendgrid",
        sendgrid_host=standin.url,
        sendgrid_api_key=API_KEY,
        public_url="https://mail.example.org",
        site_url="https://blog.example.org",
        secret_keys=[SECRET],
        batch_size=BATCH_SIZE,
    )
    rt = Runtime(settings)
    log = folder / f"worker-{run}.log"
    worker = start_worker(folder, settings, workers, log, root)
    cleanup.processes.append(worker)
    spy = None
    try:
        wait_ready(worker, workers, log)
        campaign, new = create_campaign(rt, edition, SAMPLE_POST)
        assert new, "a fresh database has no campaign yet"
        if args.py_spy:
            out = Path(args.py_spy) / f"send-{size}-{workers}-{run}.txt"
            with (folder / "py-spy.log").open("ab") as spy_log:
                spy = subprocess.Popen(
                    [args.py_spy_command, "record", "--pid", str(worker.pid), "--subprocesses",
                     "--rate", "50", "--idle", "--format", "raw", "--nonblocking",
                     "--output", str(out)],
                    stdout=subprocess.DEVNULL, stderr=spy_log, start_new_session=True,
                )  # fmt: skip
            cleanup.processes.append(spy)
            time.sleep(1)  # py-spy attaches
        cpu_before = cpu_by_part(worker.pid, standin.pid)
        queue = CeleryQueue(broker())
        try:
            began = dt.datetime.now(dt.UTC)
            clock = time.perf_counter()
            if not start(rt, campaign.id, queue):
                raise RunFailed("start() did not start the campaign")
            result.start_seconds = time.perf_counter() - clock
        finally:
            queue.close()
        finished_at = wait_sent(rt.engine, campaign.id, args.timeout)
        result.wall_seconds = (finished_at - began).total_seconds()
        # Just before stopping: the peaks of the worker's main process and of its pool.
        result.main_kib = proc_status(worker.pid, "VmHWM")
        result.pool_kib = [proc_status(pid, "VmHWM") for pid in children(worker.pid)]
        cpu_after = cpu_by_part(worker.pid, standin.pid)
        result.cpu = {part: cpu_after[part] - cpu_before[part] for part in cpu_after}
        state = progress(rt, campaign.id)
        result.ledger = {
            key: getattr(state, key) for key in ("sent", "failed", "unknown", "queued", "sending")
        }
    except RunFailed as exc:
        result.failure = str(exc)
    finally:
        if spy is not None and spy.poll() is None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            try:
                spy.wait(timeout=30)
            except subprocess.TimeoutExpired:
                stop_group(spy)
        stop_group(worker)
        cleanup.processes.remove(worker)
        rt.close()
    try:
        result.standin = standin.stop()
    except RunFailed as exc:
        result.failure = result.failure or str(exc)
    cleanup.standins.remove(standin)
    cleanup.drop(name)
    flush_broker()
    if result.failure is None:
        result.failure = check(result)
    return result


def check(result: Run) -> str | None:
    """Every subscriber exactly once, nobody else, and the ledger agrees."""
    s, n = result.standin, result.size
    problems = []
    if s["total"] != n or s["distinct"] != n or s["missing"] or s["unexpected"]:
        problems.append(
            f"stand-in got {s['total']:,} messages for {s['distinct']:,} addresses "
            f"({s['missing']:,} missing, {s['unexpected']:,} unexpected), {n:,} expected"
        )
    if s["max"] > 1:
        problems.append(f"{s['repeated']:,} addresses received it more than once")
    if s["invalid"]:
        problems.append(f"{s['invalid']} requests failed the schema: {s['first_invalid']}")
    unfinished = {k: v for k, v in result.ledger.items() if k != "sent" and v}
    if result.ledger.get("sent") != n or unfinished:
        problems.append(f"ledger: {result.ledger}")
    return "; ".join(problems) or None


# The stand-in's ceiling -------------------------------------------------------------------


def ceiling(
    clients: int, body: Path, cleanup: Cleanup, args: argparse.Namespace, run: int
) -> dict[str, float]:
    """Recipients/s a fresh stand-in takes from ``clients`` replaying processes."""
    folder = cleanup.folder
    standin = StandinProcess(folder, 0, args.validate, None, f"ceiling-{clients}-{run}")
    cleanup.standins.append(standin)
    start_at = time.time() + 1.0
    processes = []
    try:
        for i in range(clients):
            out = folder / f"replay-{clients}-{run}-{i}.json"
            command = [sys.executable, SCRIPT, "--child", "replay", "--out", str(out),
                       "--url", standin.url, "--body", str(body),
                       "--seconds", str(args.ceiling_seconds), "--max-requests", "100000",
                       "--start-at", str(start_at)]  # fmt: skip
            process = subprocess.Popen(
                command, env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=subprocess.PIPE,
                start_new_session=True,
            )  # fmt: skip
            cleanup.processes.append(process)
            processes.append((process, out))
        results = []
        for process, out in processes:
            _, stderr = process.communicate(timeout=args.ceiling_seconds + 120)
            cleanup.processes.remove(process)
            if process.returncode != 0 or not out.exists():
                raise RunFailed(f"the replaying client failed: {stderr.decode()[-300:]}")
            results.append(json.loads(out.read_text("utf-8")))
    finally:
        counts = standin.stop()
        cleanup.standins.remove(standin)
    seconds = max(r["seconds"] for r in results)
    accepted = sum(r["accepted"] for r in results)
    refused = sum(r["refused"] for r in results) + counts["invalid"]
    if refused:
        raise RunFailed(f"the stand-in refused {refused} replayed requests")
    return {
        "rate": sum(r["recipients"] for r in results) / seconds,
        "requests": accepted / seconds,
        "body_kib": results[0]["body_bytes"] / 1024,
        "per_request": results[0]["per_request"],
        "standin_cpu": counts["cpu"],
        "seconds": seconds,
    }


# The table --------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def print_table(
    runs: dict[tuple[int, int], list[Run]],
    ceilings: dict[int, list[dict[str, float]]],
    args: argparse.Namespace,
) -> None:
    from rich.console import Console
    from rich.table import Table

    best_ceiling = max((median([c["rate"] for c in cs]) for cs in ceilings.values()), default=0)
    body = next((c[0] for c in ceilings.values() if c), None)
    caption = (
        f"Wall: start() called → campaign marked sent (start() alone: the ledger filled and "
        f"the batches enqueued). Batches of {BATCH_SIZE}, tracking on, backend sendgrid "
        f"into the stand-in (schema validation {'on' if args.validate else 'OFF'}), "
        f"PostgreSQL, Redis. RSS: VmHWM of the worker's main process and of its largest "
        f"pool process. CPU: seconds used during the send by the worker processes, "
        f"PostgreSQL, the stand-in and Redis; {os.cpu_count()} cores. Ceiling: a fresh "
        f"stand-in, a client replaying one real request"
        + (f" ({body['body_kib']:,.0f} KiB, {body['per_request']:.0f} recipients)" if body else "")
        + f" for {args.ceiling_seconds:g} s, keep-alive; ÷ ceiling uses the better of 1 and 2 "
        f"clients. Targets: 1,000,000 recipients in under {TARGET_SECONDS_PER_MILLION:.0f} s "
        f"({TARGET_RATE:,.0f}/s; smaller N pay fixed costs), worker RSS under "
        f"{TARGET_RSS_MB:.0f} MB and flat in N."
    )
    table = Table(title=f"Send, median of {args.repeat} run(s)", caption=caption)
    table.add_column("recipients", justify="right")
    table.add_column("workers", justify="right")
    for heading in ("start()\ns", "wall\ns", "recipients\n/s", "÷\nceiling",
                    "RSS main\nMB", "RSS pool\nMB", "CPU s\nworkers", "CPU s\nPG",
                    "CPU s\nstand-in", "CPU s\nRedis"):  # fmt: skip
        table.add_column(heading, justify="right")
    table.add_column("exactly\nonce")
    table.add_column("targets", no_wrap=True)
    for (size, workers), group in runs.items():
        if not group:
            continue
        good = [r for r in group if r.failure is None or r.wall_seconds]
        wall = median([r.wall_seconds for r in good])
        rate = median([r.rate for r in good])
        main = median([r.main_kib for r in good]) / 1024
        pool = median([max(r.pool_kib, default=0) for r in good]) / 1024
        cpu = (
            {part: median([r.cpu.get(part, 0.0) for r in good]) for part in good[0].cpu}
            if (good and good[0].cpu)
            else {}
        )
        failures = [r.failure for r in group if r.failure]
        verdict = ""
        if wall:
            fast = rate >= TARGET_RATE
            small = max(main, pool) < TARGET_RSS_MB
            verdict = ("[green]rate ✓[/]" if fast else "[red]rate ✗[/]") + (
                " [green]RSS ✓[/]" if small else " [red]RSS ✗[/]"
            )
        table.add_row(
            f"{size:,}",
            str(workers),
            f"{median([r.start_seconds for r in good]):.1f}" if good else "",
            f"{wall:.1f}" if wall else "",
            f"{rate:,.0f}" if rate else "",
            f"{rate / best_ceiling:.2f}" if rate and best_ceiling else "",
            f"{main:.0f}" if main else "",
            f"{pool:.0f}" if pool else "",
            *(f"{cpu[p]:.1f}" if p in cpu else "" for p in ("workers", "postgres", "stand-in")),
            f"{cpu['redis']:.1f}" if "redis" in cpu else "",
            "[red]NO[/]" if failures else "[green]yes[/]",
            verdict,
        )
    table.add_section()
    for clients, group in ceilings.items():
        rate = median([c["rate"] for c in group])
        table.add_row(
            "ceiling",
            f"{clients} client{'s' if clients > 1 else ''}",
            "",
            f"{median([c['seconds'] for c in group]):.1f}",
            f"{rate:,.0f}",
            f"{median([c['requests'] for c in group]):.1f} req/s",
            "",
            "",
            "",
            "",
            f"{median([c['standin_cpu'] for c in group]):.1f}",
            "",
            "",
            "",
        )
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 160)  # a log keeps the whole table
    console.print(table)
    for (size, workers), group in runs.items():
        for r in group:
            if r.failure:
                console.print(f"[red]{size:,} × {workers}:[/] {r.failure}")
            seed_note = f"seeded in {r.seed_seconds:.1f} s"
            pools = ", ".join(f"{kib / 1024:.0f}" for kib in r.pool_kib)
            answers = r.standin.get("answers", {})
            console.print(
                f"{size:,} × {workers}: {seed_note}; pool RSS MB [{pools}]; stand-in answers "
                f"{answers}, its RSS {r.standin.get('hwm_kib', 0) / 1024:.0f} MB"
            )


# The pair for bench/compare.py -------------------------------------------------------------


@dataclass
class Pair:
    """What the runs of ``sendgrid_pair`` share: the folder and its clean-up, the edition,
    one request the mailer really sent (for the ceiling), and the run count."""

    size: int
    folder: Path
    cleanup: Cleanup
    edition: Any
    args: argparse.Namespace
    runs: int = 0

    @property
    def body(self) -> Path:
        return self.folder / "request.json"


def naive_loop(pair: Pair) -> float:
    """Seconds for the naive loop: the ``sendgrid`` helper library's ``Mail`` objects, a
    ``Personalization`` for each reader with the mailer's own links (unsubscribe URL and
    tracking token, signed alike), ``SendGridAPIClient.send`` for each 1000, no ledger, to
    a fresh stand-in that must count every reader exactly once."""
    from sendgrid import SendGridAPIClient
    from sendgrid.helpers.mail import (
        Category,
        ClickTracking,
        CustomArg,
        From,
        Header,
        Mail,
        OpenTracking,
        Personalization,
        Substitution,
        To,
        TrackingSettings,
    )

    from mailer.config import Settings
    from mailer.edition import UNSUBSCRIBE_PLACEHOLDER, VIEW_PLACEHOLDER
    from mailer.tokens import Purpose, Signer
    from mailer.tracking.links import TRACK_PLACEHOLDER, link_table, track
    from testkit.sendgrid_standin import API_KEY

    settings = Settings(public_url="https://mail.example.org", secret_keys=[SECRET])
    signer = Signer(settings.secret_keys)
    html, text = track(pair.edition, link_table(pair.edition), settings.public_url)
    view_url = f"{settings.public_url}/archive/{pair.edition.slug}"
    html, text = html.replace(VIEW_PLACEHOLDER, view_url), text.replace(VIEW_PLACEHOLDER, view_url)
    unsubscribe = f"{settings.public_url}/unsubscribe/"
    # The readers as bench/send.py's seed makes them (ids from 1, in order).
    readers = [(i + 1, READER.format(i), f"Reader {i}") for i in range(pair.size)]
    pair.runs += 1
    standin = StandinProcess(pair.folder, pair.size, pair.args.validate, None, f"naive-{pair.runs}")
    pair.cleanup.standins.append(standin)
    try:
        client = SendGridAPIClient(api_key=API_KEY, host=standin.url)
        started = time.perf_counter()
        for first in range(0, pair.size, BATCH_SIZE):
            mail = Mail(
                from_email=From(settings.sender_email, settings.sender_name),
                subject=pair.edition.subject,
                plain_text_content=text,
                html_content=html,
            )
            for subscriber_id, email, name in readers[first : first + BATCH_SIZE]:
                link = unsubscribe + signer.sign_ids(Purpose.UNSUBSCRIBE, subscriber_id)
                personalization = Personalization()
                personalization.add_to(To(email, name))
                personalization.add_substitution(Substitution(UNSUBSCRIBE_PLACEHOLDER, link))
                token = signer.sign_ids(Purpose.TRACK, 1, subscriber_id)
                personalization.add_substitution(Substitution(TRACK_PLACEHOLDER, token))
                personalization.add_custom_arg(CustomArg("delivery", f"1-{subscriber_id}"))
                personalization.add_header(Header("List-Unsubscribe", f"<{link}>"))
                personalization.add_header(
                    Header("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")
                )
                mail.add_personalization(personalization)
            mail.tracking_settings = TrackingSettings(
                ClickTracking(False, False), OpenTracking(False)
            )
            mail.category = Category(pair.edition.slug)
            response = client.send(mail)
            if response.status_code != 202:
                raise RunFailed(f"the naive loop got {response.status_code}")
        seconds = time.perf_counter() - started
    finally:
        counts = standin.stop()
        pair.cleanup.standins.remove(standin)
    if counts["total"] != pair.size or counts["max"] != 1 or counts["missing"]:
        raise RunFailed(f"the naive loop: stand-in counts {counts}")
    return seconds


def mailer_timed(pair: Pair, workers: int, root: Path = ROOT) -> float:
    """Seconds from ``start()`` to the campaign marked sent, through a Celery worker of
    ``workers`` processes running ``root``'s code (``run_once``: a fresh database seeded
    and the worker started first, every reader checked once after)."""
    pair.runs += 1
    result = run_once(pair.size, workers, pair.runs, pair.edition, pair.cleanup, pair.args, root)
    if result.failure:
        raise RunFailed(f"{workers} worker(s), {root}: {result.failure}")
    return result.wall_seconds


def ceiling_timed(pair: Pair) -> float:
    """Seconds the stand-in alone would need for ``size`` recipients: the better of 1 and 2
    replaying clients (``ceiling``) with a request the mailer sent in this run."""
    if not pair.body.exists():  # no mailer run yet: one, small, sends the request
        small = dataclasses.replace(pair, size=min(pair.size, 2 * BATCH_SIZE))
        mailer_timed(small, 1)
        pair.runs = small.runs
    pair.runs += 1
    rates = [ceiling(k, pair.body, pair.cleanup, pair.args, pair.runs)["rate"] for k in (1, 2)]
    return pair.size / max(rates)


def sendgrid_pair(
    size: int, workers: list[int], base: Path | None = None
) -> tuple[Callable[[], float], dict[str, Callable[[], float]]]:
    """The naive helper loop (the peer) and, as variants, the mailer with each worker count
    and the stand-in's ceiling (its seconds for ``size`` at its best rate: mailer ÷ ceiling
    is ceiling seconds ÷ mailer seconds); with ``base``, the same worker counts running that
    checkout's code too (before and after, interleaved). ``bench/compare.py`` times them."""
    folder = Path(tempfile.mkdtemp(prefix="mailer-bench-sendgrid-"))
    cleanup = Cleanup(folder, POSTGRES_ADMIN_URL)
    atexit.register(cleanup.all)
    from mailer.config import Settings
    from mailer.content.post import load_post
    from mailer.content.render import Renderer

    edition = Renderer(Settings(site_url="https://blog.example.org")).render(load_post(SAMPLE_POST))
    args = argparse.Namespace(validate=True, ceiling_seconds=3.0, timeout=900.0, py_spy=None)
    pair = Pair(size, folder, cleanup, edition, args)
    variants: dict[str, Callable[[], float]] = {}
    for k in workers:
        variants[f"{k} worker{'s' * (k > 1)}"] = functools.partial(mailer_timed, pair, k)
        if base is not None:
            variants[f"base {k}"] = functools.partial(mailer_timed, pair, k, base)
    variants["ceiling"] = functools.partial(ceiling_timed, pair)
    return functools.partial(naive_loop, pair), variants


def pair_main(args: argparse.Namespace) -> int:
    """``--pair``: the naive loop, the mailer and the ceiling, as ``bench/compare.py`` runs them."""
    from bench.compare import print_pairs, run_pairs

    peer, variants = sendgrid_pair(args.sizes[0], args.workers, args.base)
    figures = run_pairs(peer, variants, args.repeat)
    print_pairs("SendGrid path vs naive loop", args.sizes[0], "rec", figures)
    return 0


# Main -------------------------------------------------------------------------------------


def numbers(value: str) -> list[int]:
    return [int(part.replace("_", "")) for part in value.split(",") if part.strip()]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=numbers, default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--workers", type=numbers, default=[1, 2], help="pool sizes (1,2)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each, median (1)")
    parser.add_argument(
        "--validate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the stand-in checks each request against SendGrid's schema (on)",
    )
    parser.add_argument("--ceiling-seconds", type=float, default=10.0, help="per client count")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per send (900)")
    parser.add_argument(
        "--py-spy",
        metavar="FOLDER",
        help="record the worker and its pool with py-spy (raw stacks, idle included) into FOLDER",
    )
    parser.add_argument(
        "--postgres-admin-url",
        default=POSTGRES_ADMIN_URL,
        help="where to create and drop the databases (MAILER_BENCH_POSTGRES_URL)",
    )
    parser.add_argument(
        "--pair",
        action="store_true",
        help="the naive helper loop, the mailer and the ceiling at the first size, interleaved "
        "(--repeat rounds), as bench/compare.py runs them",
    )
    parser.add_argument("--base", type=Path, help="with --pair: also run this checkout's worker")
    hidden = argparse.SUPPRESS
    parser.add_argument("--child", help=hidden)
    parser.add_argument("--out", help=hidden)
    parser.add_argument("--expect", type=int, default=0, help=hidden)
    parser.add_argument("--capture", help=hidden)
    parser.add_argument("--url", help=hidden)
    parser.add_argument("--body", help=hidden)
    parser.add_argument("--seconds", type=float, default=10.0, help=hidden)
    parser.add_argument("--max-requests", type=int, default=100_000, help=hidden)
    parser.add_argument("--start-at", type=float, default=0.0, help=hidden)
    args = parser.parse_args()
    if args.child is None:
        if min(args.sizes, default=0) < 1 or min(args.workers, default=0) < 1 or args.repeat < 1:
            parser.error("--sizes, --workers and --repeat need positive numbers")
        if args.py_spy:
            args.py_spy_command = shutil.which("py-spy") or shutil.which(
                "py-spy", path=str(Path(sys.executable).parent)
            )
            if args.py_spy_command is None:
                parser.error("--py-spy: no py-spy on PATH or beside Python (pip install py-spy)")
            Path(args.py_spy).mkdir(parents=True, exist_ok=True)
            args.py_spy = str(Path(args.py_spy).resolve())
    return args


def main() -> int:
    args = parse_args()
    if args.child == "standin":
        standin_child(args)
        return 0
    if args.child == "replay":
        replay_child(args)
        return 0
    signal.signal(signal.SIGTERM, terminate)
    # Default settings only: no MAILER_* variable or local mailer.toml skews the numbers.
    for name in [name for name in os.environ if name.startswith("MAILER_")]:
        del os.environ[name]
    if args.pair:
        return pair_main(args)
    folder = Path(tempfile.mkdtemp(prefix="mailer-bench-send-"))
    os.chdir(folder)
    cleanup = Cleanup(folder, args.postgres_admin_url)
    runs: dict[tuple[int, int], list[Run]] = {
        (size, workers): [] for size in args.sizes for workers in args.workers
    }
    ceilings: dict[int, list[dict[str, float]]] = {1: [], 2: []}
    problems: list[str] = []
    failed = False
    try:
        from mailer.config import Settings
        from mailer.content.post import load_post
        from mailer.content.render import Renderer

        edition = Renderer(Settings(site_url="https://blog.example.org")).render(
            load_post(SAMPLE_POST)
        )
        count = 0
        for repeat in range(args.repeat):
            for size in args.sizes:
                for workers in args.workers:
                    count += 1
                    print(f"{size:,} recipients, {workers} worker(s), run {repeat + 1}…",
                          file=sys.stderr, flush=True)  # fmt: skip
                    result = run_once(size, workers, count, edition, cleanup, args)
                    runs[(size, workers)].append(result)
                    print(
                        f"  {result.wall_seconds:.1f} s, {result.rate:,.0f}/s"
                        + (f"; FAILED: {result.failure}" if result.failure else ""),
                        file=sys.stderr,
                        flush=True,
                    )
            body = folder / "request.json"
            if not body.exists():
                problems.append("no request was captured: the stand-in ceiling is not measured")
                continue
            for clients in ceilings:
                try:
                    ceilings[clients].append(ceiling(clients, body, cleanup, args, repeat))
                except RunFailed as exc:
                    problems.append(f"ceiling with {clients} client(s): {exc}")
                print(
                    f"ceiling, {clients} client(s): "
                    + (f"{ceilings[clients][-1]['rate']:,.0f}/s" if ceilings[clients] else "—"),
                    file=sys.stderr,
                    flush=True,
                )
    except BaseException:
        failed = True
        raise
    finally:
        problems += cleanup.all()
        for problem in problems:
            print(problem, file=sys.stderr)
        if not failed or any(runs.values()):
            print_table(runs, {k: v for k, v in ceilings.items() if v}, args)
    return 1 if problems or any(r.failure for group in runs.values() for r in group) else 0


if __name__ == "__main__":
    sys.exit(main())
