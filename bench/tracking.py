"""Requests/s and latency one server process holds on the open pixel and the click redirect,
and events/s the signed SendGrid webhook ingests.

    .venv/bin/python bench/tracking.py [--database sqlite|postgresql] [--seconds 10]
        [--connections 50] [--max-requests 2000000] [--generator auto|wrk|python]
        [--rate 2000] [--rounds 3] [--webhook-clients 1] [--webhook-batches 400]

One ``uvicorn`` process serves ``mailer.web.from_environment()`` (through a small
factory, on a socket this script binds on loopback) on a fresh database: SQLite in a
temporary folder by default, or a fresh PostgreSQL database. The sample post is a
campaign there, with its link table; the tokens are made with ``mailer.tokens.Signer``
for 20,000 deliveries of it (every click token names one of its links).

A second ``uvicorn`` process serves the peer: a bare Starlette app whose two routes
answer the same bytes (the GIF, the 302 with its headers) and do nothing else.

Phases, each bounded by ``--seconds`` and by a request count:

* ``pixel``: ``GET /o/<token>.gif`` at full speed from ``--connections`` keep-alive
  connections (``wrk`` when ``command -v wrk`` finds it, else a Python asyncio
  generator in ``--processes`` processes): requests/s and p50/p99 latency. Run
  ``--rounds`` times, each round the bare app first and then mailer's, so that load from
  elsewhere falls on both alike; the ratio of their medians is printed.
* ``pixel @ rate``: mailer's at a fixed ``--rate`` (open loop: latency counted from
  when each request was due, so a stall is not hidden) from the Python generator.
* ``click``: ``GET /c/<token>/<link>`` (302) at full speed, paired as for the pixel.
* ``webhook``: ``POST /webhooks/sendgrid`` with batches of 1000 SendGrid-shaped events
  (all new ``sg_event_id``; a mix of processed, delivered, open, click and 1% bounces),
  each signed with an ECDSA P-256 key made here (its base64 DER public key is the
  server's ``MAILER_SENDGRID_WEBHOOK_KEY``) over timestamp + body, from
  ``--webhook-clients`` processes: events/s.

After each phase the script waits until the app's event buffer (flushed every 0.5 s)
has written what it recorded and counts the rows in ``events``: every answered pixel
and click request is there, and at most one more per connection (requests the server
answered as the generator stopped); every webhook event is there. The server's CPU
use during each phase (100% = one core) and its peak RSS are shown too. Targets of
issue 16: pixel and click at least 0.6 of the bare app, and p99 under 20 ms at a fixed
2,000 pixel requests/s. Exits 1 if a phase fails or a check does not hold; the servers,
the database and the temporary folder are removed even on error or Ctrl-C.

Both servers run under the same uvicorn settings (uvloop and httptools when installed, no
access log). The webhook phase's figure depends on how many rows the phases before it
left in ``events``: compare it between versions with ``--max-requests`` capping those.

``pixel_pair`` and ``click_pair`` give ``bench/compare.py`` the same comparison as timed
runs: the bare app (the peer) and mailer's, each a function returning the seconds of
``PAIR_REQUESTS`` requests at full speed from the Python generator; the servers start on
first use and stop when the process exits.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import base64
import json
import os
import random
import secrets
import shutil
import signal
import socket
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

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `testkit.processes`

from bench.common import (  # noqa: E402  (needs ROOT on the path)
    POSTGRES_ADMIN_URL,
    create_database,
    drop_database,
    stop_group,
    terminate,
)

SCRIPT = str(Path(__file__).resolve())
SECRET = "bench-secret-for-the-tracking-benchmark"
DELIVERIES = 20_000
EVENTS_PER_BATCH = 1000
TARGET_RATE = 2000.0
TARGET_P99_MS = 20.0  # at TARGET_RATE
TARGET_RATIO = 0.6  # of the bare Starlette app, at full speed
USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
)
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
BUCKET_US = 50  # latency histogram resolution
WRK_SCRIPT = """
local paths = {}
local i = 0
local count = 0
local limit = 0
function init(args)
  for line in io.lines(args[1]) do paths[#paths + 1] = line end
  limit = tonumber(args[2])
  i = math.random(#paths)
end
function request()
  i = i % #paths + 1
  return wrk.format("GET", paths[i], {["User-Agent"] = "USER_AGENT"})
end
function response(status, headers, body)
  count = count + 1
  if count >= limit then wrk.thread:stop() end
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "seconds": %f, "p50_us": %d, "p99_us": %d, "max_us": %d, '
    .. '"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(99),
    latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


# /proc ------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (and its reaped children); 0 if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = raw[raw.rindex(")") + 2 :].split()
    return sum(int(value) for value in fields[11:15]) / CLOCK_TICKS


def peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return 0.0


# Children: the server, the Python load generator, the webhook client ----------------------


def app_factory() -> Any:
    """The app as the service builds it, from MAILER_* settings."""
    from mailer.web import from_environment

    return from_environment()


def bare_factory() -> Any:
    """The peer: Starlette answering the same bytes as mailer's routes, doing nothing else."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, RedirectResponse, Response
    from starlette.routing import Route

    from mailer.web.guards import SECURITY_HEADERS
    from mailer.web.tracking import NO_CACHE, PIXEL

    headers = {**NO_CACHE, **SECURITY_HEADERS}

    async def pixel(request: Request) -> Response:
        return Response(PIXEL, media_type="image/gif", headers=headers)

    async def click(request: Request) -> Response:
        return RedirectResponse("https://example.org/", status_code=302, headers=headers)

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    routes = [Route("/o/{token}.gif", pixel), Route("/c/{token}/{link}", click)]
    return Starlette(routes=[*routes, Route("/healthz", health)])


def server_child(args: argparse.Namespace) -> None:
    import uvicorn

    # The socket the parent bound, as itself (uvicorn's own ``fd`` takes it for AF_UNIX).
    listener = socket.socket(fileno=args.fd)
    factory = bare_factory if args.app == "bare" else app_factory
    config = uvicorn.Config(factory, factory=True, log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[listener])


def percentile(histogram: dict[int, int], fraction: float) -> float:
    """Milliseconds at ``fraction`` of a histogram of BUCKET_US-microsecond buckets."""
    total = sum(histogram.values())
    if not total:
        return 0.0
    wanted, seen = fraction * total, 0
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        if seen >= wanted:
            return (bucket + 1) * BUCKET_US / 1000
    return max(histogram) * BUCKET_US / 1000


async def _load(args: argparse.Namespace, paths: list[str]) -> dict[str, Any]:
    """Keep-alive GETs from ``args.connections`` connections, at full speed or at a fixed
    total rate (then each request's latency counts from when it was due)."""
    histogram: dict[int, int] = {}
    statuses: dict[str, int] = {}
    errors = 0
    done = 0
    start = time.perf_counter()
    stop_at = start + args.seconds
    interval = args.connections / args.rate if args.rate else 0.0
    share = args.max_requests // args.connections + 1

    async def connection(index: int) -> None:
        nonlocal errors, done
        reader, writer = await asyncio.open_connection(args.host, args.port)
        position = random.randrange(len(paths))
        due = start + index * interval / args.connections
        count = 0
        try:
            while count < share:
                if interval:
                    due += interval
                    delay = due - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                now = time.perf_counter()
                if now >= stop_at:
                    return
                began = due if interval else now
                position = (position + 1) % len(paths)
                writer.write(
                    f"GET {paths[position]} HTTP/1.1\r\nHost: {args.host}\r\n"
                    f"User-Agent: {USER_AGENT}\r\n\r\n".encode()
                )
                head = await reader.readuntil(b"\r\n\r\n")
                status = head[9:12].decode()
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                if length:
                    await reader.readexactly(length)
                elapsed_us = (time.perf_counter() - began) * 1e6
                bucket = int(elapsed_us // BUCKET_US)
                histogram[bucket] = histogram.get(bucket, 0) + 1
                statuses[status] = statuses.get(status, 0) + 1
                count += 1
                done += 1
        except (OSError, asyncio.IncompleteReadError):
            errors += 1
        finally:
            writer.close()

    await asyncio.gather(*(connection(i) for i in range(args.connections)))
    return {
        "requests": done,
        "seconds": time.perf_counter() - start,
        "histogram": histogram,
        "statuses": statuses,
        "errors": errors,
    }


def load_child(args: argparse.Namespace) -> None:
    paths = Path(args.paths).read_text().split()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    while time.time() < args.start_at:
        time.sleep(0.001)
    result = asyncio.run(_load(args, paths))
    Path(args.out).write_text(json.dumps(result), "utf-8")


def webhook_child(args: argparse.Namespace) -> None:
    """POST signed batches of new events, one keep-alive connection, for ``--seconds``."""
    import http.client

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = serialization.load_pem_private_key(Path(args.key).read_bytes(), password=None)
    rng = random.Random(args.client)
    kinds = ["processed"] * 30 + ["delivered"] * 30 + ["open"] * 25 + ["click"] * 14
    kinds.append("bounce")
    now = int(time.time())
    bodies = []
    for batch in range(args.batches):
        events = []
        for n in range(EVENTS_PER_BATCH):
            delivery = rng.randrange(1, DELIVERIES + 1)
            kind = rng.choice(kinds)
            event = {
                "email": f"reader{delivery}@bench.example.org",
                "timestamp": now - rng.randrange(3600),
                "event": kind,
                "sg_event_id": f"bench-{args.client}-{batch}-{n}-{secrets.token_hex(4)}",
                "sg_message_id": f"msg{delivery}.filter0001",
                "delivery": f"{args.campaign}-{delivery}",
                "category": ["2026-02-06-ai-weekly"],
            }
            if kind == "bounce":
                event.update(type="bounce", status="5.1.1", reason="550 5.1.1 no such user")
            if kind == "click":
                event["url"] = "https://example.org/"
            events.append(event)
        bodies.append(json.dumps(events).encode())
    connection = http.client.HTTPConnection(args.host, args.port, timeout=120)
    while time.time() < args.start_at:
        time.sleep(0.001)
    histogram: dict[int, int] = {}
    statuses: dict[str, int] = {}
    received = new = 0
    start = time.perf_counter()
    for body in bodies:
        if time.perf_counter() - start >= args.seconds:
            break
        timestamp = str(int(time.time()))
        signature = key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: base64.b64encode(signature).decode(),
            TIMESTAMP_HEADER: timestamp,
        }
        began = time.perf_counter()
        connection.request("POST", "/webhooks/sendgrid", body, headers)
        response = connection.getresponse()
        answer = response.read()
        elapsed_us = (time.perf_counter() - began) * 1e6
        bucket = int(elapsed_us // BUCKET_US)
        histogram[bucket] = histogram.get(bucket, 0) + 1
        statuses[str(response.status)] = statuses.get(str(response.status), 0) + 1
        if response.status == 200:
            payload = json.loads(answer)
            received += payload["received"]
            new += payload["new"]
    seconds = time.perf_counter() - start
    connection.close()
    result = {
        "requests": sum(statuses.values()),
        "seconds": seconds,
        "histogram": histogram,
        "statuses": statuses,
        "received": received,
        "new": new,
        "bytes": len(bodies[0]) if bodies else 0,
    }
    Path(args.out).write_text(json.dumps(result), "utf-8")


# The parent -------------------------------------------------------------------------------


class PhaseFailed(Exception):
    pass


@dataclass
class Phase:
    name: str
    generator: str
    connections: int
    requests: int = 0
    seconds: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    events: int = 0  # what the server reported ingesting (webhook)
    errors: int = 0  # connection errors and unexpected statuses
    statuses: dict[str, int] = field(default_factory=dict)
    server_cpu: float = 0.0  # share of one core during the phase
    rows: int = 0  # events rows written for this phase
    failure: str | None = None
    target: str = ""
    bare: bool = False  # served by the bare Starlette app, not mailer's

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


@dataclass
class Bench:
    folder: Path
    args: argparse.Namespace
    server: subprocess.Popen | None = None
    bare: subprocess.Popen | None = None  # the bare Starlette app
    bare_port: int = 0
    processes: list[subprocess.Popen] = field(default_factory=list)
    database: str | None = None  # a PostgreSQL database to drop
    url: str = ""
    host: str = "127.0.0.1"
    port: int = 0

    def child(
        self, mode: str, *options: str, start_at: float = 0.0, port: int = 0
    ) -> subprocess.Popen:
        out = self.folder / f"{mode}-{len(self.processes)}.json"
        command = [sys.executable, SCRIPT, "--child", mode, "--out", str(out)]
        port = port or self.port
        command += ["--host", self.host, "--port", str(port), "--start-at", str(start_at)]
        process = subprocess.Popen(
            [*command, *options],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        process.out = out  # type: ignore[attr-defined]
        self.processes.append(process)
        return process

    def collect(self, processes: list[subprocess.Popen], seconds: float) -> list[dict[str, Any]]:
        results = []
        for process in processes:
            try:
                _, stderr = process.communicate(timeout=seconds + 120)
            except subprocess.TimeoutExpired as exc:
                raise PhaseFailed("a load generator did not finish") from exc
            self.processes.remove(process)
            out: Path = process.out  # type: ignore[attr-defined]
            if process.returncode != 0 or not out.exists():
                raise PhaseFailed(f"a load generator failed: {stderr.decode()[-400:]}")
            results.append(json.loads(out.read_text("utf-8")))
        return results

    def cleanup(self) -> list[str]:
        problems = []
        servers = [server for server in (self.server, self.bare) if server]
        for process in [*self.processes, *servers]:
            stop_group(process, grace=15)
        if self.database:
            try:
                drop_database(self.args.postgres_admin_url, self.database)
            except Exception as exc:
                problems.append(f"could not drop database {self.database}: {exc}")
        shutil.rmtree(self.folder, ignore_errors=True)
        return problems


def prepare(bench: Bench) -> tuple[Any, int, int]:
    """The database, its campaign and the key pair; returns (settings, campaign id, links)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from mailer.config import Settings
    from mailer.content.post import load_post
    from mailer.content.render import Renderer
    from mailer.runtime import Runtime
    from mailer.sending.dispatch import create_campaign
    from mailer.store.db import make_engine, upgrade
    from mailer.tracking.links import link_table

    args = bench.args
    if args.database == "sqlite":
        bench.url = f"sqlite:///{bench.folder / 'bench.db'}"
    else:
        name = f"mailer_bench_tracking_{os.getpid()}_{secrets.token_hex(3)}"
        bench.database = name  # before it exists: dropped whatever happens next
        bench.url = create_database(args.postgres_admin_url, name)
    engine = make_engine(bench.url)
    upgrade(engine)
    engine.dispose()

    private = ec.generate_private_key(ec.SECP256R1())
    (bench.folder / "webhook-key.pem").write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    settings = Settings(
        database_url=bench.url,
        public_url="https://mail.example.org",
        site_url="https://blog.example.org",
        secret_keys=[SECRET],
        sendgrid_webhook_key=base64.b64encode(public).decode(),
    )
    rt = Runtime(settings)
    try:
        edition = Renderer(settings).render(load_post(SAMPLE_POST))
        campaign, _ = create_campaign(rt, edition, SAMPLE_POST)
    finally:
        rt.close()
    return settings, campaign.id, len(link_table(edition))


def write_paths(bench: Bench, campaign_id: int, links: int) -> tuple[Path, Path]:
    from mailer.tokens import Purpose, Signer

    signer = Signer([SECRET])
    pixel, click = bench.folder / "pixel-paths.txt", bench.folder / "click-paths.txt"
    pixel.write_text(
        "".join(
            f"/o/{signer.sign_ids(Purpose.TRACK, campaign_id, d)}.gif\n"
            for d in range(1, DELIVERIES + 1)
        )
    )
    click.write_text(
        "".join(
            f"/c/{signer.sign_ids(Purpose.TRACK, campaign_id, d)}/{d % links}\n"
            for d in range(1, DELIVERIES + 1)
        )
    )
    return pixel, click


def start_server(bench: Bench, settings: Any, app: str = "mailer") -> None:
    """Mailer's app (``bench.server`` on ``bench.port``) or the bare one (``bench.bare``)."""
    from testkit.processes import child_env

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((bench.host, 0))
    listener.listen(2048)
    port = listener.getsockname()[1]
    log = (bench.folder / f"{app}.log").open("wb")
    command = [sys.executable, SCRIPT, "--child", "server", "--app", app]
    server = subprocess.Popen(
        [*command, "--fd", str(listener.fileno())],
        pass_fds=[listener.fileno()],
        cwd=bench.folder,
        env=child_env(settings),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    listener.close()  # the server holds its own copy
    log.close()
    if app == "bare":
        bench.bare, bench.bare_port = server, port
    else:
        bench.server, bench.port = server, port
    import http.client

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise PhaseFailed(f"the server exited: {server_log(bench, app)}")
        try:
            connection = http.client.HTTPConnection(bench.host, port, timeout=5)
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                connection.close()
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise PhaseFailed(f"the server did not answer /healthz: {server_log(bench, app)}")


def server_log(bench: Bench, app: str) -> str:
    text = (bench.folder / f"{app}.log").read_text("utf-8", "replace").strip()
    return " | ".join(text.splitlines()[-3:]) or "no output"


def count_rows(url: str, source: str, kind: str | None = None) -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as connection:
            query = "SELECT count(*) FROM events WHERE source = :source"
            if kind:
                query += " AND kind = :kind"
            return connection.execute(text(query), {"source": source, "kind": kind}).scalar()
    finally:
        engine.dispose()


def settled_rows(url: str, source: str, kind: str | None, seconds: float = 30.0) -> int:
    """The row count once the app's buffer has written everything (two equal counts in a
    row, each after more than one flush interval)."""
    last = -1
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(1.2)
        now = count_rows(url, source, kind)
        if now == last:
            return now
        last = now
    return last


def wrk_phase(bench: Bench, phase: Phase, paths: Path) -> None:
    args = bench.args
    script = bench.folder / "bench.lua"
    script.write_text(WRK_SCRIPT.replace("USER_AGENT", USER_AGENT))
    per_thread = args.max_requests // args.wrk_threads + 1
    command = [
        "wrk", f"-t{args.wrk_threads}", f"-c{args.connections}", f"-d{args.seconds:g}s",
        "--timeout", "10s", "-s", str(script),
        f"http://{bench.host}:{bench.bare_port if phase.bare else bench.port}",
        "--", str(paths), str(per_thread),
    ]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    bench.processes.append(process)
    try:
        stdout, stderr = process.communicate(timeout=args.seconds + 120)
    except subprocess.TimeoutExpired as exc:
        raise PhaseFailed("wrk did not finish") from exc
    bench.processes.remove(process)
    lines = [line for line in stdout.decode().splitlines() if line.startswith("BENCH ")]
    if process.returncode != 0 or not lines:
        raise PhaseFailed(f"wrk failed: {(stderr or stdout).decode()[-400:]}")
    summary = json.loads(lines[-1].removeprefix("BENCH "))
    phase.requests = summary["requests"]
    phase.seconds = summary["seconds"]
    phase.p50_ms = summary["p50_us"] / 1000
    phase.p99_ms = summary["p99_us"] / 1000
    phase.errors = sum(summary[k] for k in ("connect", "read", "write", "status", "timeout"))
    phase.statuses = {"non-2xx/3xx": summary["status"]} if summary["status"] else {}


def python_phase(
    bench: Bench, phase: Phase, paths: Path, rate: float, processes: int, seconds: float = 0.0
) -> None:
    args = bench.args
    seconds = seconds or args.seconds
    start_at = time.time() + 1.0
    children = []
    for i in range(processes):
        connections = args.connections // processes + (1 if i < args.connections % processes else 0)
        options = ["--paths", str(paths), "--connections", str(connections),
                   "--seconds", str(seconds), "--rate", str(rate / processes),
                   "--max-requests", str(args.max_requests // processes)]  # fmt: skip
        port = bench.bare_port if phase.bare else bench.port
        children.append(bench.child("load", *options, start_at=start_at, port=port))
    results = bench.collect(children, seconds)
    merge(phase, results)


def merge(phase: Phase, results: list[dict[str, Any]]) -> None:
    histogram: dict[int, int] = {}
    for result in results:
        for bucket, count in result["histogram"].items():
            histogram[int(bucket)] = histogram.get(int(bucket), 0) + count
        for status, count in result["statuses"].items():
            phase.statuses[status] = phase.statuses.get(status, 0) + count
        phase.errors += result.get("errors", 0)
    phase.requests = sum(r["requests"] for r in results)
    phase.seconds = max(r["seconds"] for r in results)
    phase.p50_ms = percentile(histogram, 0.50)
    phase.p99_ms = percentile(histogram, 0.99)


def run_phase(
    bench: Bench, phase: Phase, expected_status: str, source: str, kind: str | None, work: Any
) -> Phase:
    server = bench.bare if phase.bare else bench.server
    assert server is not None
    before_rows = 0 if phase.bare else count_rows(bench.url, source, kind)
    before_cpu = cpu_seconds(server.pid)
    clock = time.perf_counter()
    try:
        work()
    except PhaseFailed as exc:
        phase.failure = str(exc)
        return phase
    finally:
        phase.server_cpu = (cpu_seconds(server.pid) - before_cpu) / (time.perf_counter() - clock)
    if not phase.bare:
        phase.rows = settled_rows(bench.url, source, kind) - before_rows
    unexpected = {s: n for s, n in phase.statuses.items() if s != expected_status}
    phase.errors += sum(unexpected.values())
    problems = []
    if phase.errors:
        problems.append(f"{phase.errors} errors or unexpected answers {unexpected}")
    if phase.name == "webhook":
        if phase.rows != phase.events:
            problems.append(f"{phase.events:,} events accepted but {phase.rows:,} rows stored")
    elif not phase.bare and not 0 <= phase.rows - phase.requests <= phase.connections:
        problems.append(f"{phase.requests:,} requests answered but {phase.rows:,} events stored")
    if problems:
        phase.failure = "; ".join(problems)
    print(
        f"{phase.name}: {phase.rate:,.0f} req/s, p50 {phase.p50_ms:.1f} ms, p99 "
        f"{phase.p99_ms:.1f} ms, {phase.rows:,} rows" + (f"; {phase.failure}" if problems else ""),
        file=sys.stderr,
        flush=True,
    )
    return phase


def print_table(bench: Bench, phases: list[Phase], rss_mb: float, stack: str) -> None:
    from rich.console import Console
    from rich.table import Table

    args = bench.args
    table = Table(
        title=f"Tracking and webhook, one uvicorn process, {args.database}",
        caption=(
            f"Server: {stack}; peak RSS {rss_mb:.0f} MB. Loopback, {os.cpu_count()} cores shared "
            f"by the server and the load generator. Each phase at most {args.seconds:g} s and "
            f"{args.max_requests:,} requests; full speed = closed loop (each connection sends "
            f"its next request when the last is answered), so latency grows with the number "
            f"of connections; @ rate = open loop, latency from when each request was due. "
            f"server CPU: share of one core. rows: what reached the events table. Webhook: "
            f"batches of {EVENTS_PER_BATCH} events, each signed, all new. Targets: "
            f"{TARGET_RATIO} of the bare Starlette app at full speed; p99 under "
            f"{TARGET_P99_MS:.0f} ms at {TARGET_RATE:,.0f} pixel requests/s."
        ),
    )
    table.add_column("endpoint")
    table.add_column("generator")
    for heading in ("connections", "requests", "seconds", "requests/s", "events/s", "p50 ms",
                    "p99 ms", "server CPU", "rows", "errors"):  # fmt: skip
        table.add_column(heading, justify="right")
    table.add_column("check")
    table.add_column("target", no_wrap=True)
    for phase in phases:
        events_rate = (phase.events or phase.rows) / phase.seconds if phase.seconds else 0
        table.add_row(
            phase.name,
            phase.generator,
            str(phase.connections),
            f"{phase.requests:,}",
            f"{phase.seconds:.1f}",
            f"{phase.rate:,.0f}",
            f"{events_rate:,.0f}" if phase.name == "webhook" else "",
            f"{phase.p50_ms:.1f}",
            f"{phase.p99_ms:.1f}",
            f"{phase.server_cpu:.0%}",
            f"{phase.rows:,}",
            str(phase.errors),
            "[red]FAILED[/]" if phase.failure else "[green]✓[/]",
            phase.target,
        )
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 160)
    console.print(table)
    for phase in phases:
        if phase.failure:
            console.print(f"[red]{phase.name}:[/] {phase.failure}")


def target(phase: Phase) -> str:
    if "@" not in phase.name or phase.failure:
        return ""
    fast = phase.rate >= TARGET_RATE * 0.98
    good = phase.p99_ms < TARGET_P99_MS
    return ("[green]rate ✓[/]" if fast else "[red]rate ✗[/]") + (
        " [green]p99 ✓[/]" if good else " [red]p99 ✗[/]"
    )


def ratios(phases: list[Phase]) -> list[str]:
    """Per endpoint: the medians of mailer's and the bare app's full-speed rounds, and
    their ratio against the target."""
    lines = []
    for endpoint in ("pixel", "click"):
        rounds = [p for p in phases if p.name.startswith(f"{endpoint} ") and "#" in p.name]
        ours = [p.rate for p in rounds if not p.bare and not p.failure]
        bare = [p.rate for p in rounds if p.bare and not p.failure]
        if not ours or not bare:
            continue
        ratio = statistics.median(ours) / statistics.median(bare)
        mark = "[green]✓[/]" if ratio >= TARGET_RATIO else "[red]✗[/]"
        lines.append(
            f"{endpoint}: mailer {statistics.median(ours):,.0f} req/s, bare Starlette "
            f"{statistics.median(bare):,.0f} req/s (medians of {len(ours)} and {len(bare)} "
            f"interleaved rounds): ratio {ratio:.2f}, target ≥ {TARGET_RATIO} {mark}"
        )
    return lines


def run(bench: Bench) -> list[Phase]:
    args = bench.args
    settings, campaign_id, links = prepare(bench)
    pixel_paths, click_paths = write_paths(bench, campaign_id, links)
    start_server(bench, settings)
    start_server(bench, settings, "bare")
    use_wrk = args.generator == "wrk" or (args.generator == "auto" and shutil.which("wrk"))
    if args.generator == "wrk" and not shutil.which("wrk"):
        raise PhaseFailed("--generator wrk: no wrk on PATH (apt-get install wrk)")
    full = "wrk" if use_wrk else f"python ×{args.processes}"

    def full_speed(phase: Phase, paths: Path) -> Any:
        if use_wrk:
            return lambda: wrk_phase(bench, phase, paths)
        return lambda: python_phase(bench, phase, paths, 0.0, args.processes)

    phases = []
    # A short warm-up (the first click loads the link table), written out before timing.
    warm = Phase("warm-up", "python ×1", 4)
    for paths in (pixel_paths, click_paths):
        python_phase(bench, warm, paths, 0.0, 1, seconds=1.0)
    settled_rows(bench.url, "tracking", None)

    def paired(endpoint: str, paths: Path, status: str, kind: str) -> None:
        """``--rounds`` rounds of the bare app, then mailer's, at full speed."""
        for round in range(1, args.rounds + 1):
            for bare in (True, False):
                name = f"{endpoint} {'bare' if bare else 'mailer'} #{round}"
                phase = Phase(name, full, args.connections, bare=bare)
                phases.append(
                    run_phase(bench, phase, status, "tracking", kind, full_speed(phase, paths))
                )

    paired("pixel", pixel_paths, "200", "opened")
    if args.rate:
        paced = Phase(f"pixel @ {args.rate:,.0f}/s", "python ×1", args.connections)
        paced_load = lambda: python_phase(bench, paced, pixel_paths, args.rate, 1)  # noqa: E731
        phases.append(run_phase(bench, paced, "200", "tracking", "opened", paced_load))
    paired("click", click_paths, "302", "clicked")

    hook = Phase("webhook", f"python ×{args.webhook_clients}", args.webhook_clients)

    def post_events() -> None:
        start_at = time.time() + 2.0 + 0.01 * args.webhook_batches  # after making the bodies
        children = []
        for i in range(args.webhook_clients):
            options = ["--key", str(bench.folder / "webhook-key.pem"), "--client", str(i),
                       "--campaign", str(campaign_id), "--seconds", str(args.seconds),
                       "--batches", str(args.webhook_batches // args.webhook_clients)]  # fmt: skip
            children.append(bench.child("webhook", *options, start_at=start_at))
        results = bench.collect(children, args.seconds + 60)
        merge(hook, results)
        hook.events = sum(r["received"] for r in results)
        if sum(r["new"] for r in results) != hook.events:
            raise PhaseFailed("the webhook stored fewer events than it received")
        if hook.requests >= args.webhook_batches // args.webhook_clients * args.webhook_clients:
            print("webhook: every prepared batch went before the time was up; raise "
                  "--webhook-batches for a longer phase", file=sys.stderr)  # fmt: skip

    phases.append(run_phase(bench, hook, "200", "sendgrid", None, post_events))
    for phase in phases:
        phase.target = target(phase)
    return phases


# Pairs for bench/compare.py -------------------------------------------------------------

PAIR_REQUESTS = 20_000  # per timed run
_shared: dict[str, tuple[Bench, Path, Path]] = {}


def _shared_servers(database: str) -> tuple[Bench, Path, Path]:
    """Both servers on one fresh database, and the pixel and click paths: made on first use,
    warmed up, and removed when this process exits."""
    if database not in _shared:
        args = parse_args(["--database", database])
        bench = Bench(Path(tempfile.mkdtemp(prefix="mailer-bench-tracking-")), args)
        atexit.register(bench.cleanup)
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, terminate)  # so that the clean-up runs
        settings, campaign_id, links = prepare(bench)
        pixel, click = write_paths(bench, campaign_id, links)
        start_server(bench, settings)
        start_server(bench, settings, "bare")
        warm = Phase("warm-up", "python ×1", 4)
        for bare in (False, True):
            warm.bare = bare
            for paths in (pixel, click):
                python_phase(bench, warm, paths, 0.0, 1, seconds=1.0)
        settled_rows(bench.url, "tracking", None)
        _shared[database] = bench, pixel, click
    return _shared[database]


def _timed(database: str, endpoint: str, bare: bool, requests: int) -> float:
    """Seconds the server takes for ``requests`` requests at full speed (the measured rate,
    from a run of about that many); mailer's events are all written, and counted, before
    it returns, so that its flush never falls into the next run."""
    bench, pixel, click = _shared_servers(database)
    paths, status, kind = (
        (pixel, "200", "opened") if endpoint == "pixel" else (click, "302", "clicked")
    )
    name = f"{endpoint} {'bare' if bare else 'mailer'}"
    phase = Phase(name, "python", bench.args.connections, bare=bare)
    bench.args.max_requests = requests

    def load() -> None:
        python_phase(bench, phase, paths, 0.0, bench.args.processes, seconds=600.0)

    run_phase(bench, phase, status, "tracking", kind, load)
    if phase.failure or not phase.requests:
        raise PhaseFailed(f"{phase.name}: {phase.failure or 'no request answered'}")
    return phase.seconds * requests / phase.requests


def pixel_pair(
    requests: int = PAIR_REQUESTS, database: str = "sqlite"
) -> tuple[Callable[[], float], dict[str, Callable[[], float]]]:
    """The bare Starlette app and mailer's on the open pixel, each a function returning the
    seconds of one run of ``requests`` (``bench/compare.py`` interleaves them)."""
    return (lambda: _timed(database, "pixel", True, requests)), {
        "mailer": lambda: _timed(database, "pixel", False, requests)
    }


def click_pair(
    requests: int = PAIR_REQUESTS, database: str = "sqlite"
) -> tuple[Callable[[], float], dict[str, Callable[[], float]]]:
    """The same for the click redirect."""
    return (lambda: _timed(database, "click", True, requests)), {
        "mailer": lambda: _timed(database, "click", False, requests)
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--seconds", type=float, default=10.0, help="per phase (10)")
    parser.add_argument("--connections", type=int, default=50, help="keep-alive connections (50)")
    parser.add_argument("--max-requests", type=int, default=2_000_000, help="per phase")
    parser.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (1)")
    parser.add_argument("--processes", type=int, default=2, help="Python generator processes (2)")
    parser.add_argument(
        "--rate", type=float, default=TARGET_RATE, help="paced pixel phase, requests/s; 0: none"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="full-speed rounds, bare app then mailer's (3)"
    )
    parser.add_argument("--webhook-clients", type=int, default=1)
    parser.add_argument("--webhook-batches", type=int, default=400, help="prepared, at most")
    parser.add_argument(
        "--postgres-admin-url",
        default=POSTGRES_ADMIN_URL,
        help="where to create and drop the database (MAILER_BENCH_POSTGRES_URL)",
    )
    hidden = argparse.SUPPRESS
    parser.add_argument("--child", help=hidden)
    parser.add_argument("--app", choices=("mailer", "bare"), default="mailer", help=hidden)
    parser.add_argument("--out", help=hidden)
    parser.add_argument("--fd", type=int, help=hidden)
    parser.add_argument("--host", default="127.0.0.1", help=hidden)
    parser.add_argument("--port", type=int, default=0, help=hidden)
    parser.add_argument("--paths", help=hidden)
    parser.add_argument("--start-at", type=float, default=0.0, help=hidden)
    parser.add_argument("--key", help=hidden)
    parser.add_argument("--client", type=int, default=0, help=hidden)
    parser.add_argument("--campaign", type=int, default=1, help=hidden)
    parser.add_argument("--batches", type=int, default=0, help=hidden)
    args = parser.parse_args(argv)
    least = min(args.connections, args.processes, args.webhook_clients, args.rounds)
    if args.child is None and least < 1:
        parser.error("--connections, --processes, --rounds and --webhook-clients: at least 1")
    return args


def main() -> int:
    args = parse_args()
    if args.child == "server":
        server_child(args)
        return 0
    if args.child == "load":
        load_child(args)
        return 0
    if args.child == "webhook":
        webhook_child(args)
        return 0
    signal.signal(signal.SIGTERM, terminate)
    for name in [name for name in os.environ if name.startswith("MAILER_")]:
        del os.environ[name]
    folder = Path(tempfile.mkdtemp(prefix="mailer-bench-tracking-"))
    os.chdir(folder)
    bench = Bench(folder, args)
    phases: list[Phase] = []
    problems: list[str] = []
    rss = 0.0
    try:
        phases = run(bench)
        rss = peak_rss_mb(bench.server.pid)
        stop_group(bench.server, grace=15)  # its lifespan writes what is still buffered
        if bench.server.returncode not in (0, -signal.SIGTERM):
            problems.append(f"the server exited with {bench.server.returncode}")
    except PhaseFailed as exc:
        problems.append(str(exc))
    finally:
        problems += bench.cleanup()
    import importlib.util

    stack = "uvicorn " + ", ".join(
        name for name in ("uvloop", "httptools") if importlib.util.find_spec(name)
    )
    if phases:
        print_table(bench, phases, rss, stack)
        from rich.console import Console

        for line in ratios(phases):
            Console().print(line)
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems or any(p.failure for p in phases) else 0


if __name__ == "__main__":
    sys.exit(main())
