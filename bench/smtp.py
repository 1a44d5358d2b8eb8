"""The SMTP path against a raw smtplib loop: the same bytes, the same local sink.

    .venv/bin/python bench/smtp.py [--size 5000] [--runs 3] [--modes inline,1,2]
        [--batch-size 1000] [--sink aiosmtpd|postfix] [--sink-latency-ms 0]
        [--sink-processes 1] [--base /path/to/another/checkout]

Each run, interleaved (the order rotates from run to run, so drift in the machine's load
falls on every mode alike): the raw loop (one ``smtplib`` connection, ``sendmail`` of one
message the mailer built, ``--size`` times, each to its own recipient), then the mailer's
SMTP backend sending the sample post to ``--size`` confirmed subscribers of a fresh
PostgreSQL database, inline (``InlineQueue`` in this process) and through real Celery
workers (``--concurrency=K`` on a Redis database of this run's own). The mailer's time runs
from ``start()`` to the campaign's ``finished_at``. The sink, a process of its own, counts
what each recipient got, and every run checks each reader got exactly one message. The
CPU seconds of the sink, of the sender (this process for the raw loop and inline, the
Celery worker's processes otherwise), of PostgreSQL (the backends of this run's database,
and all its processes) and of the whole machine (its cores' busy time, whoever ran: on a
shared machine, what other work took) go to stderr, read from /proc.

Two regimes, to be reported apart:

- CPU-bound (the default): the sink answers at once and shares the machine's cores with
  the senders and PostgreSQL; the single-process sink alone costs more CPU per message than
  a worker does, so on a small machine it, not the mailer, sets the pace of many workers.
- Latency-bound (``--sink-latency-ms L``): every line the sink answers goes out L ms late,
  as from a relay across a network (``asyncio.sleep``, no CPU), so each connection waits on
  round trips and the figure shows how the mailer scales when the server is not the
  bottleneck. ``--modes`` then takes ``KxC`` (K worker processes, MAILER_SMTP_CONNECTIONS
  C) and ``rawC`` (the raw loop over C connections, a thread each).

``rawPp`` (either regime) runs the raw loop in P processes, a connection each: how far the
machine lets even the peer scale with processes, beside the mailer's K workers.

``--sink-processes N`` runs N sinks on one port (SO_REUSEPORT), to spread the sink's CPU.

``--sink postfix`` (CPU-bound only) swaps the aiosmtpd sink for Postfix's ``smtp-sink``, a
small C server that costs a fraction of aiosmtpd's CPU per message, so that on this
machine's 2 cores the senders, not the sink, set the pace. It is not installed: the
first run fetches Debian's ``postfix`` package with ``apt-get download`` into
``~/.cache/mailer-bench`` (``$XDG_CACHE_HOME``) and unpacks it with ``dpkg -x``; no MTA
is set up. It runs as ``nobody`` when started by root (it refuses root) and appends each
message it takes, with its envelope, to a dump file in /dev/shm, from which the
recipients are counted.

``--base PATH`` runs each worker mode a second time ("base K") with the Celery worker on
that checkout's code (before and after a change, interleaved in one run).

``bench/compare.py`` imports ``smtp_pair`` (CPU-bound) and may import ``smtp_latency_pair``
from here; run alone, this prints the same table.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402  (needs ROOT on the path)
    POSTGRES_ADMIN_URL,
    create_database,
    drop_database,
    stop_group,
)

SCRIPT = str(Path(__file__).resolve())
SAMPLE_POST = ROOT / "posts" / "2026-02-06-ai-weekly.md"
SECRET = "bench-secret-for-the-smtp-benchmark"
SENDER = "newsletter@example.com"
Timed = Callable[[], float]  # one run; returns its seconds


# The sink -----------------------------------------------------------------------------------


def sink_child(port: int, out: Path, latency_ms: float) -> None:
    """An aiosmtpd server that accepts everything and, on SIGTERM, writes its counts. With
    ``latency_ms``, every line it answers goes out that late, as from a server across a
    network (each command's round trip takes that long more; ``asyncio.sleep``: the wait
    costs no CPU). The port is bound with SO_REUSEPORT, so several of these may share it
    (the kernel spreads connections)."""
    import asyncio

    from aiosmtpd.smtp import SMTP

    counts: Counter[str] = Counter()
    delay = latency_ms / 1000

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            counts.update(envelope.rcpt_tos)
            return "250 OK"

    class Remote(SMTP):
        async def push(self, status: Any) -> None:
            await asyncio.sleep(delay)
            await super().push(status)

    server_class = Remote if delay else SMTP

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        stopped = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stopped.set)
        server = await loop.create_server(
            lambda: server_class(Handler(), hostname="sink"), "127.0.0.1", port, reuse_port=True
        )
        out.with_suffix(".ready").touch()
        await stopped.wait()
        server.close()

    asyncio.run(serve())
    cpu = os.times()
    out.write_text(json.dumps({"counts": counts, "cpu": cpu.user + cpu.system}))


class Sink:
    """The sink in ``processes`` processes of its own on one port (so its CPU is not the
    sender's), answering ``latency_ms`` late (0: at once)."""

    def __init__(self, folder: Path, name: str, latency_ms: float = 0, processes: int = 1) -> None:
        self.port = free_port()
        self.outs = [folder / f"{name}-{i}.json" for i in range(processes)]
        command = [sys.executable, SCRIPT, "--sink-port", str(self.port)]
        command += ["--sink-latency-ms", str(latency_ms), "--out"]
        self.processes = [
            subprocess.Popen([*command, str(out)], stdin=subprocess.DEVNULL) for out in self.outs
        ]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if all(out.with_suffix(".ready").exists() for out in self.outs):
                return
            if any(process.poll() is not None for process in self.processes):
                break
            time.sleep(0.05)
        for process in self.processes:
            process.kill()
            process.wait()
        raise RuntimeError("the sink did not start")

    def stop(self) -> Counter[str]:
        """What each recipient got; the sink's CPU seconds go to stderr (is it the limit?)."""
        for process in self.processes:
            process.terminate()
        counts: Counter[str] = Counter()
        cpu = 0.0
        for process, out in zip(self.processes, self.outs, strict=True):
            process.wait(30)
            result = json.loads(out.read_text())
            counts.update(result["counts"])
            cpu += result["cpu"]
        print(f"    the sink used {cpu:.2f} s of CPU", file=sys.stderr)
        return counts


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


POSTFIX = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mailer-bench"
DUMP_MARK = "=== smtp-sink transaction ==="  # starts each message in the dump (its -S)
# The header lines smtp-sink writes before a message's own: X-Mail-Args, X-Rcpt-Args...
_DUMPED = re.compile(rb"^" + re.escape(DUMP_MARK.encode()) + rb"\n((?:X-[A-Za-z-]+: .*\n)+)", re.M)


def postfix_sink_binary() -> Path:
    """Postfix's ``smtp-sink``, unpacked (not installed: no MTA) from Debian's package in the
    cache folder, which the first call fills with ``apt-get download`` and ``dpkg -x``."""
    binary = POSTFIX / "postfix" / "usr" / "sbin" / "smtp-sink"
    if not binary.exists():
        POSTFIX.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "download", "postfix"], cwd=POSTFIX, check=True)
        deb = max(POSTFIX.glob("postfix_*.deb"))
        subprocess.run(["dpkg", "-x", str(deb), str(POSTFIX / "postfix")], check=True)
    return binary


class PostfixSink:
    """Postfix's ``smtp-sink`` on a loopback port: one event-driven C process. It appends
    each message it takes (``-D``: after the transaction, whole, so connections do not
    interleave) to a dump file in /dev/shm, headed by the envelope's recipients."""

    def __init__(self) -> None:
        binary = postfix_sink_binary()
        self.port = free_port()
        shm = Path("/dev/shm")
        self.dumps = Path(
            tempfile.mkdtemp(prefix="mailer-bench-sink-", dir=shm if shm.is_dir() else None)
        )
        command = [str(binary), "-D", str(self.dumps / "dump"), "-S", DUMP_MARK + "\\n"]
        if os.geteuid() == 0:  # it will not serve as root
            os.chown(self.dumps, pwd.getpwnam("nobody").pw_uid, -1)
            command += ["-u", "nobody"]
        libraries = binary.parents[1] / "lib" / "postfix"  # usr/lib/postfix
        self.process = subprocess.Popen(
            [*command, f"127.0.0.1:{self.port}", "256"],
            stdin=subprocess.DEVNULL,
            env={**os.environ, "LD_LIBRARY_PATH": str(libraries)},
        )
        deadline = time.monotonic() + 30
        while self.process.poll() is None and time.monotonic() < deadline:
            try:
                smtplib.SMTP("127.0.0.1", self.port, timeout=5).quit()
                return
            except OSError:
                time.sleep(0.05)
        self.process.kill()
        self.process.wait()
        shutil.rmtree(self.dumps, ignore_errors=True)
        raise RuntimeError("smtp-sink did not start")

    def stop(self) -> Counter[str]:
        """What each recipient got, from the dump; the sink's CPU seconds go to stderr."""
        from bench.send import proc_stat

        stat = proc_stat(self.process.pid)
        self.process.terminate()
        self.process.wait(30)
        counts: Counter[str] = Counter()
        try:
            dump = self.dumps / "dump"
            for headers in _DUMPED.findall(dump.read_bytes() if dump.exists() else b""):
                for line in headers.splitlines():
                    if line.startswith(b"X-Rcpt-Args: "):
                        counts[line.split()[1].strip(b"<>").decode()] += 1
        finally:
            shutil.rmtree(self.dumps, ignore_errors=True)
        print(
            f"    the sink used {stat[2] if stat else float('nan'):.2f} s of CPU", file=sys.stderr
        )
        return counts


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


def raw_loop(
    folder: Path, size: int, message: bytes, shape: SinkShape, connections: int, processes: int
) -> float:
    """Seconds for ``size`` sendmail calls over ``connections`` connections, a thread each,
    or, with ``processes`` above 1, a forked process each (each taking every so many
    recipients), with the sink's check."""
    sink = shape.start(folder, f"raw-{secrets.token_hex(3)}")
    streams = max(connections, processes)

    def loop(first: int) -> None:
        with smtplib.SMTP("127.0.0.1", sink.port) as smtp:
            for i in range(first, size, streams):
                smtp.sendmail(SENDER, [f"reader{i}@bench.example.org"], message)

    try:
        cpu_before, machine_before = _own_cpu(), machine_cpu()
        started = time.perf_counter()
        if processes > 1:
            _in_processes(loop, streams)
        else:
            threads = [threading.Thread(target=loop, args=(i,)) for i in range(streams)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        seconds = time.perf_counter() - started
        cpu, machine = _own_cpu() - cpu_before, machine_cpu() - machine_before
        print(f"    the sender used {cpu:.2f} s of CPU; the machine {machine:.2f} s",
              file=sys.stderr)  # fmt: skip
    finally:
        counts = sink.stop()
    exactly_once(counts, size)
    return seconds


def _in_processes(loop: Callable[[int], None], count: int) -> None:
    """``loop(i)`` for each i below ``count``, each in a process forked for it. A bare fork,
    not ``multiprocessing``, whose after-fork hooks (kombu's, once a Celery app is imported
    here) close the parent's broker connections from the child and may hang there."""
    children: list[int] = []
    failed = []
    try:
        for i in range(count):
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    loop(i)
                    code = 0
                except BaseException:
                    traceback.print_exc()
                finally:
                    os._exit(code)
            children.append(pid)
        while children:
            if os.waitpid(children[0], 0)[1]:
                failed.append(children[0])
            children.pop(0)
    finally:  # interrupted (Ctrl-C, a failed fork): no child outlives the run
        for pid in children:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    if failed:
        raise RuntimeError(f"{len(failed)} raw sender processes failed (tracebacks above)")


def _own_cpu() -> float:
    """CPU seconds of this process and its children that have ended."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


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


def mailer_run(
    folder: Path,
    size: int,
    mode: Mode,
    admin_url: str,
    batch_size: int,
    shape: SinkShape,
    root: Path = ROOT,
) -> float:
    """Seconds from ``start()`` to ``finished_at``: inline with ``mode.workers`` 0, else
    through a Celery worker of that concurrency running ``root``'s code; the sender's CPU
    seconds go to stderr."""
    import datetime as dt

    from bench import send as sb  # its PostgreSQL seeding and Celery worker helpers
    from mailer.content.post import load_post
    from mailer.runtime import Runtime
    from mailer.sending.dispatch import CeleryQueue, InlineQueue, create_campaign, start

    workers = mode.workers
    name = f"mailer_bench_smtp_{os.getpid()}_{secrets.token_hex(3)}"
    url = create_database(admin_url, name)
    sink = shape.start(folder, name)
    worker = None
    rt = None
    try:
        sb.seed(url, size)
        extra: dict[str, Any] = {"batch_size": batch_size}
        if mode.connections:
            extra["smtp_connections"] = mode.connections
        if workers:
            extra["broker_url"] = sb.broker()
        settings = bench_settings(url, sink.port, **extra)
        rt = Runtime(settings)
        if workers:
            sb.flush_broker()
            log = folder / f"{name}.log"
            worker = sb.start_worker(folder, settings, workers, log, root)
            sb.wait_ready(worker, workers, log)
        edition = rt.renderer.render(load_post(SAMPLE_POST))
        campaign, _ = create_campaign(rt, edition, SAMPLE_POST)
        queue = CeleryQueue(sb.broker()) if workers else InlineQueue(rt)
        cpu_before = _sender_cpu(worker)
        postgres_before, machine_before = _postgres_cpu(name), machine_cpu()
        began = dt.datetime.now(dt.UTC)
        try:
            assert start(rt, campaign.id, queue)
        finally:
            if workers:
                queue.close()
        finished_at = sb.wait_sent(rt.engine, campaign.id, 600)
        seconds = (finished_at - began).total_seconds()
        cpu = _sender_cpu(worker) - cpu_before
        ours, every = (b - a for a, b in zip(postgres_before, _postgres_cpu(name), strict=True))
        machine = machine_cpu() - machine_before
        print(f"    the sender used {cpu:.2f} s of CPU, PostgreSQL {ours:.2f} s for this run's "
              f"database ({every:.2f} s in all); the machine {machine:.2f} s",
              file=sys.stderr)  # fmt: skip
    finally:
        if worker is not None:
            stop_group(worker)
        if rt is not None:
            rt.close()
        counts = sink.stop()
        drop_database(admin_url, name)
    exactly_once(counts, size)
    return seconds


def _sender_cpu(worker: subprocess.Popen | None) -> float:
    """CPU seconds so far of the Celery worker (main and pool), or of this process (inline;
    its polling of the campaign's row counts too)."""
    if worker is None:
        return time.process_time()
    from bench import send as sb  # its PostgreSQL seeding and Celery worker helpers

    return sum(
        seconds
        for pid, (_, ppid, seconds) in sb.all_processes().items()
        if worker.pid in (pid, ppid)
    )


def machine_cpu() -> float:
    """CPU seconds the machine's cores have been busy, whoever ran (/proc/stat): what is
    left of them is what the run could have had."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(
        int, Path("/proc/stat").read_text().split(maxsplit=9)[1:9]
    )
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _postgres_cpu(database: str) -> tuple[float, float]:
    """CPU seconds so far of the backends serving ``database`` (their title names it) and
    of all PostgreSQL's processes (a backend that ended counts in the postmaster's figure,
    as a reaped child's time): other users of the server show in the difference."""
    from bench import send as sb

    ours = every = 0.0
    for pid, (comm, _, seconds) in sb.all_processes().items():
        if comm.startswith("postgres"):
            every += seconds
            with contextlib.suppress(OSError):
                if f" {database} ".encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    ours += seconds
    return ours, every


@dataclass(frozen=True)
class SinkShape:
    """Which sink (``aiosmtpd`` or ``postfix``: Postfix's smtp-sink) and how it answers:
    ``latency_ms`` late to each command that carries the message (a server across a
    network), from ``processes`` processes sharing its port (aiosmtpd's only)."""

    latency_ms: float = 0.0
    processes: int = 1
    kind: str = "aiosmtpd"

    def __post_init__(self) -> None:
        if self.kind == "postfix" and (self.latency_ms or self.processes != 1):
            raise ValueError("smtp-sink answers at once, from one process")

    def start(self, folder: Path, name: str) -> Sink | PostfixSink:
        if self.kind == "postfix":
            return PostfixSink()
        return Sink(folder, name, self.latency_ms, self.processes)


@dataclass(frozen=True)
class Mode:
    """One side of a pair: the raw loop (``raw``) or the mailer inline (``workers`` 0) or
    with a Celery worker of ``workers`` processes; ``connections`` per sending process
    (MAILER_SMTP_CONNECTIONS for the mailer; 0: its default)."""

    workers: int = 0
    connections: int = 0
    raw: bool = False
    processes: int = 1  # the raw loop's

    @classmethod
    def parse(cls, text: str) -> Mode:
        """``inline``, ``K`` (workers), ``KxC`` (workers × connections), ``rawC``, ``rawPp``."""
        if text == "inline":
            return cls()
        if text.startswith("raw") and text.endswith("p"):
            processes = int(text[3:-1])
            if processes < 2:
                raise ValueError(f"{text}: rawPp takes 2 processes or more (raw1 is one)")
            return cls(connections=1, raw=True, processes=processes)
        if text.startswith("raw"):
            return cls(connections=int(text[3:] or 1), raw=True)
        workers, _, connections = text.partition("x")
        return cls(int(workers), int(connections or 0))

    @property
    def label(self) -> str:
        conns = f" × {self.connections} conn" if self.connections else ""
        if self.raw and self.processes > 1:
            return f"raw × {self.processes} processes"
        if self.raw:
            return f"raw{conns}"
        if not self.workers:
            return f"inline{conns}"
        return f"{self.workers} worker{'s' * (self.workers > 1)}{conns}"


def pair(
    size: int, modes: list[str], batch_size: int, shape: SinkShape, base: Path | None = None
) -> tuple[Timed, dict[str, Timed]]:
    """The raw loop over one connection (the peer) and each mode, as functions returning
    seconds for ``size`` messages (``bench/compare.py`` interleaves them); with ``base``,
    each worker mode again with the worker running that checkout's code ("base K")."""
    folder = Path(tempfile.mkdtemp(prefix="mailer-bench-smtp-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    admin_url = POSTGRES_ADMIN_URL
    message = sample_message()

    def timed(mode: Mode, root: Path = ROOT) -> Timed:
        if mode.raw:
            return lambda: raw_loop(folder, size, message, shape, mode.connections, mode.processes)
        return lambda: mailer_run(folder, size, mode, admin_url, batch_size, shape, root)

    sides: dict[str, Timed] = {}
    for mode in map(Mode.parse, modes):
        sides[mode.label] = timed(mode)
        if base is not None and mode.workers:
            sides[f"base {mode.label}"] = timed(mode, base)
    return timed(Mode(raw=True, connections=1)), sides


def smtp_pair(
    size: int, modes: list[str], batch_size: int = 1000, sink: str = "aiosmtpd"
) -> tuple[Timed, dict[str, Timed]]:
    """The CPU-bound pair: the sink answers at once, so it and the senders share the
    machine's cores. ``modes`` as for ``--modes``; ``sink``: ``aiosmtpd`` or ``postfix``
    (Postfix's smtp-sink, which costs the machine far less per message)."""
    return pair(size, modes, batch_size, SinkShape(kind=sink))


def smtp_latency_pair(
    size: int = 1000,
    modes: tuple[str, ...] = ("1x1", "1x2", "1x4", "2x2", "raw4"),
    batch_size: int = 125,
    latency_ms: float = 5.0,
) -> tuple[Timed, dict[str, Timed]]:
    """The latency-bound pair: every line the sink answers goes out ``latency_ms`` late, as
    from a relay across a network, at no CPU cost, so the figure shows what the mailer does
    when the server is not the bottleneck. ``modes`` as for ``--modes`` (``KxC``: K workers
    of C connections each; ``rawC``: the raw loop over C). The default batch size makes 8
    batches, which 2 workers share evenly (5 batches split 3:2, a ceiling of 5/3)."""
    return pair(size, list(modes), batch_size, SinkShape(latency_ms))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1000, help="MAILER_BATCH_SIZE")
    parser.add_argument(
        "--modes",
        default="inline,1,2",
        help="comma-separated: inline, K (workers), KxC (K workers, C connections each), "
        "rawC (the raw loop over C connections), rawPp (over P processes)",
    )
    parser.add_argument(
        "--sink-latency-ms",
        type=float,
        default=0.0,
        help="every line the sink answers goes out this late (a server across a network)",
    )
    parser.add_argument("--sink-processes", type=int, default=1, help="sink processes, one port")
    parser.add_argument(
        "--sink",
        choices=["aiosmtpd", "postfix"],
        default="aiosmtpd",
        help="postfix: Postfix's smtp-sink, fetched with apt-get download (CPU-bound only)",
    )
    parser.add_argument(
        "--base", type=Path, help="also run each worker mode with this checkout's worker code"
    )
    parser.add_argument("--sink-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink_port:
        sink_child(args.sink_port, args.out, args.sink_latency_ms)
        return 0
    from bench.compare import print_pairs, run_pairs

    shape = SinkShape(args.sink_latency_ms, args.sink_processes, args.sink)
    raw, mailer = pair(args.size, args.modes.split(","), args.batch_size, shape, args.base)
    bound = f"latency-bound, {shape.latency_ms:g} ms" if shape.latency_ms else "CPU-bound"
    sink = f"aiosmtpd sink of {shape.processes} process{'es' * (shape.processes > 1)}"
    if shape.kind == "postfix":
        sink = "Postfix's smtp-sink"
    title = f"SMTP ({bound}, {sink})"
    figures = run_pairs(raw, mailer, args.runs)
    print_pairs(title, args.size, "msg", figures)
    first, *others = figures[1:]  # how each side scales against the first mode given
    for figure in others:
        print(f"  {figure.name} ÷ {first.name}: {first.median / figure.median:.2f}× as fast")
    return 0


if __name__ == "__main__":
    sys.exit(main())
