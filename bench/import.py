r"""Import a generated CSV of a million subscribers into SQLite and PostgreSQL.

    .venv/bin/python bench/import.py [--rows N] [--databases sqlite,postgresql] [--repeat K]
                                     [--against OLD_CHECKOUT]

Writes a CSV (``email,name,tags``: unique addresses, some in capitals, ~0.5% bad rows, a
few repeats) into a temporary folder. Each run, for each database, on a fresh database
each time: ``import_csv`` of the whole file, then a count of the confirmed subscribers it
left (checked against what the generator wrote, untimed). With ``--against`` the same
import runs again in the same run with the code of another checkout (``git worktree add
/tmp/old HEAD``, or ``git archive HEAD | tar -x -C /tmp/old``): interleaved, so both
meet the same machine. On PostgreSQL each run also times the floor: psql's ``\copy`` of
the very file into a plain one-column table (each line one value).

Each import runs in a child process of its own, so its peak RSS (``ru_maxrss``) is its
own; a child that only imports the modules gives the baseline. The parent keeps to the
standard library while children run: Linux hands a parent's peak RSS on to a child at
exec, so a big parent would raise every child's figure.

Prints medians over ``--repeat`` runs of wall time, rows/s and peak RSS, the import's
counts, each import's ratio to ``\copy`` and the old import's to the new, and the
targets: a million rows in under 60 s, peak memory under 200 MB, PostgreSQL within 25× of
``\copy`` (issue 16). Exits 1 if an import or a check fails. The temporary folder and the
PostgreSQL databases are removed even on error.

``import_pair`` hands ``bench/compare.py`` the same pair as functions: ``\copy``, and the
import on each database, one timed run on a fresh database per call. (``import`` is a
keyword: load this module with ``importlib.import_module("bench.import")``.)
"""

from __future__ import annotations

import argparse
import atexit
import csv
import functools
import itertools
import json
import os
import random
import resource
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

POSTGRES_ADMIN_URL = os.environ.get(
    "MAILER_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
DATABASES = ("sqlite", "postgresql")
TARGET_SECONDS_PER_MILLION = 60.0
TARGET_RSS_MB = 200.0
TARGET_COPY_RATIO = 25.0  # PostgreSQL import time over a plain \copy of the same file
CONSENT_SOURCE = "import:bench.csv"
SCRIPT = str(Path(__file__).resolve())

# Shares of the generated rows.
INVALID_SHARE = 0.005
DUPLICATE_SHARE = 0.002
CAPITALS_SHARE = 0.03

FIRST = (
    "anna", "ben", "carla", "david", "elif", "farid", "grace", "hugo", "ines", "jonas",
    "kenji", "lena", "marco", "nadia", "oliver", "priya", "quentin", "rosa", "samir", "tara",
    "ulrich", "vera", "wei", "ximena", "yusuf", "zoe", "amara", "bjorn", "chloe", "diego",
    "emma", "fatima", "gabriel", "hana", "ivan", "julia", "kofi", "lucia", "mateo", "noor",
)  # fmt: skip
LAST = (
    "smith", "garcia", "muller", "rossi", "dubois", "kowalski", "nakamura", "okafor", "silva",
    "jensen", "novak", "haddad", "schmidt", "martin", "kim", "nguyen", "patel", "ivanova",
    "lopez", "fischer", "moreau", "costa", "sato", "andersson", "bianchi", "wagner", "yilmaz",
    "oconnor", "mendes", "horvat", "petrov", "chen", "weber", "lindqvist", "romero", "tanaka",
)  # fmt: skip
DOMAINS = (
    "gmail.com", "gmail.com", "gmail.com", "outlook.com", "hotmail.com", "yahoo.com",
    "yahoo.co.uk", "icloud.com", "proton.me", "posteo.de", "web.de", "gmx.net", "orange.fr",
    "libero.it", "fastmail.com", "uni-heidelberg.de", "acme-corp.com", "mail.ru", "qq.com",
    "example-newsroom.org",
)  # fmt: skip
DISPLAY = {"muller": "Müller", "bjorn": "Björn", "chloe": "Chloé", "oconnor": "O'Connor"}
COUNTS = {  # ImportReport field: heading
    "added": "added",
    "existing": "existing",
    "duplicates": "repeated",
    "suppressed": "suppressed",
    "bad": "bad",
}
TAGS = ("news", "weekly", "conference-2025", "beta", "vip", "de", "fr")


# The CSV -------------------------------------------------------------------------------


@dataclass
class Expected:
    """What the generator wrote: what the import should report."""

    rows: int = 0
    unique: int = 0
    duplicates: int = 0
    bad: int = 0
    size: int = 0


def address(n: int) -> str:
    """The n-th unique address: the same for the same n, different for different n.

    Every form ends its local part in the decimal ``n``, after a non-digit, so two
    numbers never give one address.
    """
    first, last = FIRST[n % len(FIRST)], LAST[(n // len(FIRST)) % len(LAST)]
    domain = DOMAINS[(n * 2654435761 >> 7) % len(DOMAINS)]
    local = (
        f"{first}.{last}{n}",
        f"{first}{last[0]}{n}",
        f"{first[0]}{last}.{n}",
        f"{first}_{last}{n}",
        f"{last}.{first}+news{n}",
    )[n % 5]
    return f"{local}@{domain}"


def capitals(email: str, rng: random.Random) -> str:
    """The same address as a person might type it: other capitals, stray spaces."""
    local, domain = email.split("@")
    form = rng.randrange(4)
    if form == 0:
        return f"{local.capitalize()}@{domain}"
    if form == 1:
        return email.upper()
    if form == 2:
        return f"{local}@{domain.upper()}"
    return f"  {local.title()}@{domain} "


def bad_row(n: int, rng: random.Random) -> list[str]:
    """A row the import must skip: a broken address, an over-long name, an extra field."""
    local, domain = address(n).split("@")
    name = "Someone"
    kind = rng.randrange(9)
    if kind == 6:
        return [address(n), "x" * 250, ""]  # a name over 200 characters
    if kind == 7:
        return [address(n), name, "news", "unexpected"]  # more fields than the header
    email = (
        "",
        f"{local}.{domain}",  # no @
        f"{local}@@{domain}",
        f"{local}@{domain.split('.')[0]}",  # no dot in the domain
        f"{local}..x@{domain}",
        f"{local} x@{domain}",
        "n/a",
    )[kind if kind < 6 else 6]
    return [email, name, ""]


def person(n: int, rng: random.Random) -> tuple[str, str]:
    first, last = FIRST[n % len(FIRST)], LAST[(n // len(FIRST)) % len(LAST)]
    first, last = DISPLAY.get(first, first.title()), DISPLAY.get(last, last.title())
    draw = rng.random()
    name = "" if draw < 0.1 else f"{last}, {first}" if draw < 0.15 else f"{first} {last}"
    tags = ";".join(rng.sample(TAGS, rng.choice((0, 0, 1, 1, 2, 3))))
    return name, tags


def write_csv(path: Path, rows: int, seed: int) -> Expected:
    """Write ``rows`` rows, streaming, and say what they hold."""
    rng = random.Random(seed)
    expected = Expected()
    with path.open("w", encoding="utf-8", newline="", buffering=1 << 20) as out:
        writer = csv.writer(out)
        writer.writerow(["email", "name", "tags"])
        for _ in range(rows):
            draw = rng.random()
            if draw < INVALID_SHARE:
                writer.writerow(bad_row(expected.unique, rng))
                expected.bad += 1
            elif draw < INVALID_SHARE + DUPLICATE_SHARE and expected.unique:
                n = rng.randrange(expected.unique)
                email = address(n)
                email = capitals(email, rng) if rng.random() < 0.5 else email
                writer.writerow([email, *person(n, rng)])
                expected.duplicates += 1
            else:
                n = expected.unique
                email = address(n)
                email = capitals(email, rng) if rng.random() < CAPITALS_SHARE else email
                writer.writerow([email, *person(n, rng)])
                expected.unique += 1
            expected.rows += 1
    expected.size = path.stat().st_size
    return expected


# The children: each one job, its result as JSON in a file --------------------------------


def peak_rss_kib() -> dict[str, int]:
    """ru_maxrss (KiB on Linux), and VmHWM: this process's own peak, never inherited."""
    peak = {"maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "hwm_kib": 0}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peak["hwm_kib"] = int(line.split()[1])
    except OSError:
        pass
    return peak


def child(args: argparse.Namespace) -> None:
    # The modules every mode uses, imported here only: the parent stays small.
    from sqlalchemy import create_engine, text

    from mailer.store.db import make_engine, make_sessions, upgrade
    from subscribers.importer import import_csv
    from subscribers.store import Consent

    result: dict[str, Any] = {}
    if args.child == "baseline":
        make_engine(args.url).dispose()  # loads the dialect and its driver; no connection
    elif args.child in ("create", "drop"):
        admin = create_engine(args.admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            for name in args.names:
                if args.child == "create":
                    connection.execute(text(f'CREATE DATABASE "{name}"'))
                else:
                    connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    elif args.child == "upgrade":
        engine = make_engine(args.url)
        upgrade(engine)
        engine.dispose()
    elif args.child == "import":
        engine = make_engine(args.url)
        sessions = make_sessions(engine)
        consent = Consent(source=CONSENT_SOURCE, text="Signed up for the benchmark")
        chunks = 0

        def progress(_done: int) -> None:
            nonlocal chunks
            chunks += 1

        profiler = None
        if args.profile:
            import cProfile

            profiler = cProfile.Profile()
        with Path(args.errors).open("w", encoding="utf-8", newline="") as errors:
            start = time.perf_counter()
            if profiler is not None:
                profiler.enable()
            report = import_csv(
                Path(args.csv), sessions, consent, progress=progress, errors_to=errors
            )
            if profiler is not None:
                profiler.disable()
            result["seconds"] = time.perf_counter() - start
        if profiler is not None:
            profiler.dump_stats(args.profile)
        report.problems = []
        result["report"] = asdict(report)
        result["chunks"] = chunks
        with engine.connect() as connection:  # untimed: what the import left
            confirmed = "SELECT COUNT(*) FROM subscribers WHERE status = 'confirmed'"
            result["count"] = connection.execute(text(confirmed)).scalar()
        engine.dispose()
    result.update(peak_rss_kib())
    Path(args.out).write_text(json.dumps(result), "utf-8")


# The parent ---------------------------------------------------------------------------


class ChildFailed(Exception):
    pass


def last_error(finished: subprocess.CompletedProcess[bytes]) -> str:
    """The exception a child died of: the last line of its traceback that is not indented."""
    lines = finished.stderr.decode(errors="replace").strip().splitlines()
    starts = [i for i, line in enumerate(lines) if line[:1].isalpha()]
    return " ".join(line.strip() for line in lines[starts[-1] :][:3]) if starts else "no message"


@dataclass
class Runner:
    folder: Path
    admin_url: str
    databases: list[str] = field(default_factory=list)  # PostgreSQL ones, to drop
    calls: int = 0

    def run(self, mode: str, *options: str, code: str | None = None) -> dict[str, Any]:
        """Run this script as a child in ``mode`` (with the code of the checkout ``code``
        first on its path); its result, or ChildFailed."""
        self.calls += 1
        out = self.folder / f"child-{self.calls}.json"
        command = [sys.executable, SCRIPT, "--child", mode, "--out", str(out), *options]
        env = {**os.environ, "PYTHONPATH": code} if code else None
        finished = subprocess.run(command, capture_output=True, env=env)
        if finished.returncode != 0 or not out.exists():
            raise ChildFailed(f"{mode} exited with {finished.returncode}: {last_error(finished)}")
        return json.loads(out.read_text("utf-8"))

    def fresh(self, database: str, run: int, code: str | None = None) -> str:
        """The URL of a new, empty database, migrated by ``code`` (None: nothing in it)."""
        if database == "sqlite":
            path = self.folder / f"bench-{run}.db"
            for stale in self.folder.glob(f"{path.name}*"):
                stale.unlink()
            url = f"sqlite:///{path}"
        else:
            name = f"mailer_bench_{os.getpid()}_{secrets.token_hex(3)}_{run}"
            self.databases.append(name)  # before it exists: dropped whatever happens next
            self.run("create", "--admin-url", self.admin_url, "--names", name)
            url = urlunsplit(urlsplit(self.admin_url)._replace(path=f"/{name}"))
        self.run("upgrade", "--url", url, code=code)
        return url

    def discard(self, database: str, url: str) -> None:
        if database == "sqlite":
            path = Path(url.removeprefix("sqlite:///"))
            for stale in path.parent.glob(f"{path.name}*"):
                stale.unlink()
        else:
            name = urlsplit(url).path.lstrip("/")
            self.run("drop", "--admin-url", self.admin_url, "--names", name)
            self.databases.remove(name)

    def plain_copy(self, csv_path: Path, run: int) -> float:
        r"""Seconds psql takes to ``\copy`` the file into a plain table (one text column: each
        line one value, so rows of any width go in), in a database of its own."""
        name = f"mailer_bench_{os.getpid()}_{secrets.token_hex(3)}_copy{run}"
        self.databases.append(name)
        self.run("create", "--admin-url", self.admin_url, "--names", name)
        url = urlunsplit(urlsplit(self.admin_url)._replace(path=f"/{name}"))
        url = url.replace("postgresql+psycopg://", "postgresql://", 1)
        psql = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", url, "-c"]
        try:
            subprocess.run([*psql, "CREATE TABLE plain (line text)"], check=True)
            copy = (
                f"\\copy plain FROM '{csv_path}' "
                "WITH (FORMAT csv, HEADER, DELIMITER E'\\x1f', QUOTE E'\\x1e')"
            )
            start = time.perf_counter()
            subprocess.run([*psql, copy], check=True)
            return time.perf_counter() - start
        except (OSError, subprocess.CalledProcessError) as exc:
            raise ChildFailed(f"psql \\copy: {exc}") from exc
        finally:
            self.run("drop", "--admin-url", self.admin_url, "--names", name)
            self.databases.remove(name)

    def drop_all(self) -> str | None:
        if not self.databases:
            return None
        try:
            self.run("drop", "--admin-url", self.admin_url, "--names", *self.databases)
        except ChildFailed as exc:
            return f"could not drop {', '.join(self.databases)}: {exc}"
        self.databases.clear()
        return None


@dataclass
class Measure:
    database: str
    step: str
    seconds: list[float] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)
    hwm_kib: list[int] = field(default_factory=list)
    rows: int | None = None
    report: dict[str, int] | None = None
    failure: str | None = None

    def add(self, result: dict[str, Any]) -> None:
        if "seconds" in result:
            self.seconds.append(result["seconds"])
        if "maxrss_kib" in result:
            self.rss_kib.append(result["maxrss_kib"])
            self.hwm_kib.append(result["hwm_kib"])

    @property
    def time(self) -> float | None:
        return statistics.median(self.seconds) if self.seconds else None

    @property
    def rss_mb(self) -> float | None:
        return statistics.median(self.rss_kib) / 1024 if self.rss_kib else None


def check_import(result: dict[str, Any], expected: Expected) -> str | None:
    report = result["report"]
    wanted = {
        "rows": expected.rows,
        "added": expected.unique,
        "existing": 0,
        "duplicates": expected.duplicates,
        "suppressed": 0,
        "bad": expected.bad,
    }
    wrong = [f"{k} {report[k]:,} ≠ {v:,}" for k, v in wanted.items() if report[k] != v]
    if result["count"] != expected.unique:
        wrong.append(f"{result['count']:,} confirmed subscribers ≠ {expected.unique:,}")
    return "counts differ from the file: " + ", ".join(wrong) if wrong else None


def bench_database(
    runner: Runner, database: str, csv_path: Path, expected: Expected, args: argparse.Namespace
) -> list[Measure]:
    """Each run: the baseline child, this code's import, the other checkout's, \\copy."""
    baseline = Measure(database, "baseline")
    imports = {"import": Measure(database, "import")}
    if args.against:
        imports["import (against)"] = Measure(database, "import (against)")
    copied = Measure(database, "\\copy")
    measures = [baseline, *imports.values()]
    if database == "postgresql":
        measures.append(copied)
    current = baseline  # the step a failing child is charged to
    try:
        for run in range(args.repeat):
            current = baseline
            url = runner.fresh(database, run)
            try:
                baseline.add(runner.run("baseline", "--url", url))
            finally:
                runner.discard(database, url)
            for step, measure in imports.items():
                current = measure
                code = args.against if step != "import" else None
                url = runner.fresh(database, run, code)
                try:
                    options = ["--url", url, "--csv", str(csv_path)]
                    options += ["--errors", str(runner.folder / "errors.csv")]
                    if args.profile:
                        which = "against" if code else "new"
                        options += ["--profile", f"{args.profile}-{database}-{which}.prof"]
                    result = runner.run("import", *options, code=code)
                finally:
                    runner.discard(database, url)
                measure.add(result)
                measure.rows, measure.report = expected.rows, result["report"]
                measure.failure = measure.failure or check_import(result, expected)
            if database == "postgresql":
                current = copied
                copied.add({"seconds": runner.plain_copy(csv_path, run)})
                copied.rows = expected.rows
            done = ", ".join(f"{m.step} {m.seconds[-1]:.1f} s" for m in measures[1:] if m.seconds)
            print(f"{database} run {run + 1}/{args.repeat}: {done}", file=sys.stderr, flush=True)
    except ChildFailed as exc:
        current.failure = str(exc)
        print(f"{database} {current.step}: {exc}", file=sys.stderr, flush=True)
    return measures


def import_pair(
    rows: int, databases: tuple[str, ...] = ("postgresql", "sqlite")
) -> tuple[Callable[[], float], dict[str, Callable[[], float]]]:
    r"""psql's ``\copy`` of a generated CSV of ``rows`` rows, and ``import_csv`` of the same
    file into each of ``databases``: functions each timing one run on a fresh database
    (seconds), for ``bench/compare.py`` to interleave. The CSV is written once, here; the
    folder and any database left are removed at exit. A failed or miscounted import
    raises ``ChildFailed``."""
    folder = Path(tempfile.mkdtemp(prefix="mailer-bench-import-"))
    runner = Runner(folder, POSTGRES_ADMIN_URL)

    def clean_up() -> None:
        runner.drop_all()
        shutil.rmtree(folder, ignore_errors=True)

    atexit.register(clean_up)
    csv_path = folder / "subscribers.csv"
    expected = write_csv(csv_path, rows, 2026)
    runs = itertools.count()

    def copy() -> float:
        return runner.plain_copy(csv_path, next(runs))

    def imported(database: str) -> float:
        url = runner.fresh(database, next(runs))
        try:
            options = ["--url", url, "--csv", str(csv_path), "--errors", str(folder / "errors")]
            result = runner.run("import", *options)
        finally:
            runner.discard(database, url)
        failure = check_import(result, expected)
        if failure:
            raise ChildFailed(f"{database}: {failure}")
        return float(result["seconds"])

    return copy, {database: functools.partial(imported, database) for database in databases}


def print_table(measures: list[Measure], expected: Expected, args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    time_target = TARGET_SECONDS_PER_MILLION * expected.rows / 1_000_000
    table = Table(
        title=f"Import of {expected.rows:,} rows, median of {args.repeat} run(s)",
        caption=(
            "baseline: a child that imports the modules only; import: import_csv"
            + (f"; import (against): import_csv of {args.against}" if args.against else "")
            + "; \\copy: psql's \\copy of the file into a plain one-column table."
            f"\nCSV {expected.size / 2**20:.1f} MB: {expected.unique:,} unique addresses, "
            f"{expected.duplicates:,} repeated, {expected.bad:,} bad rows. Targets: import "
            f"under {time_target:.3g} s (60 s a million), peak RSS under {TARGET_RSS_MB:.0f} "
            f"MB, PostgreSQL within {TARGET_COPY_RATIO:.0f}× of \\copy."
            + (" Timed under cProfile." if args.profile else "")
        ),
    )
    table.add_column("database")
    table.add_column("step")
    for heading in ("time, s", "rows/s", "× \\copy", "peak RSS, MB", "+ baseline"):
        table.add_column(heading, justify="right")
    for heading in COUNTS.values():
        table.add_column(heading, justify="right")
    table.add_column("targets", no_wrap=True)
    baselines: dict[str, float | None] = {}
    copies = {m.database: m.time for m in measures if m.step == "\\copy"}
    for measure in measures:
        seconds, rss = measure.time, measure.rss_mb
        if measure.step == "baseline":
            baselines[measure.database] = rss
        base = baselines.get(measure.database)
        floor = copies.get(measure.database)
        ratio = seconds / floor if seconds and floor and measure.step != "\\copy" else None
        report = measure.report or {}
        cells = [
            measure.database,
            measure.step,
            f"{seconds:.2f}" if seconds is not None else "",
            f"{measure.rows / seconds:,.0f}" if seconds and measure.rows else "",
            f"{ratio:.1f}" if ratio else "",
            f"{rss:.0f}" if rss is not None else "",
            f"+{rss - base:.0f}" if rss and base and measure.step != "baseline" else "",
            *(f"{report[key]:,}" if key in report else "" for key in COUNTS),
        ]
        verdict = ""
        if measure.failure:
            verdict = "[red]FAILED[/]"
        elif measure.step.startswith("import") and rss is not None and seconds is not None:
            verdict = "[green]RSS ✓[/]" if rss < TARGET_RSS_MB else "[red]RSS ✗[/]"
            fast = seconds < time_target
            verdict = ("[green]time ✓[/] " if fast else "[red]time ✗[/] ") + verdict
            if ratio:
                near = ratio <= TARGET_COPY_RATIO
                verdict += " [green]\\copy ✓[/]" if near else " [red]\\copy ✗[/]"
        table.add_row(*cells, verdict)
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 160)  # a log keeps the whole table
    console.print(table)
    for database in dict.fromkeys(m.database for m in measures):
        new, old = (
            next((m.time for m in measures if m.database == database and m.step == step), None)
            for step in ("import", "import (against)")
        )
        if new and old:
            console.print(
                f"{database}: the import of {args.against} takes {old / new:.2f}× as long"
            )
    for measure in measures:
        if measure.failure:
            console.print(f"[red]{measure.database} {measure.step}:[/] {measure.failure}")
        gap = max(
            (abs(a - b) for a, b in zip(measure.rss_kib, measure.hwm_kib, strict=True)), default=0
        )
        if gap > 4096:
            console.print(
                f"{measure.database} {measure.step}: ru_maxrss and VmHWM differ by "
                f"{gap / 1024:.0f} MB (a parent's peak inherited at exec?)"
            )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the CSV (1000000)")
    parser.add_argument(
        "--databases",
        default=",".join(DATABASES),
        help="comma-separated, of sqlite and postgresql (both)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs of each step, median (1)")
    parser.add_argument("--seed", type=int, default=2026, help="seed of the generated CSV")
    parser.add_argument(
        "--postgres-admin-url",
        default=POSTGRES_ADMIN_URL,
        help="where to create and drop the benchmark's databases "
        "(MAILER_BENCH_POSTGRES_URL, else postgres@127.0.0.1:5432/postgres)",
    )
    parser.add_argument(
        "--against",
        metavar="CHECKOUT",
        help="also time the import of this checkout of the code (PYTHONPATH), interleaved",
    )
    parser.add_argument(
        "--profile",
        metavar="PREFIX",
        help="run each import under cProfile, stats to PREFIX-DATABASE.prof",
    )
    hidden = argparse.SUPPRESS
    parser.add_argument("--child", help=hidden)
    parser.add_argument("--out", help=hidden)
    parser.add_argument("--url", help=hidden)
    parser.add_argument("--csv", help=hidden)
    parser.add_argument("--errors", help=hidden)
    parser.add_argument("--admin-url", help=hidden)
    parser.add_argument("--names", nargs="*", default=[], help=hidden)
    args = parser.parse_args()
    if args.child is None:
        args.databases = [d.strip() for d in args.databases.split(",") if d.strip()]
        unknown = set(args.databases) - set(DATABASES)
        if unknown or not args.databases:
            parser.error(f"--databases: choose among {', '.join(DATABASES)}")
        if args.rows < 1 or args.repeat < 1:
            parser.error("--rows and --repeat must be at least 1")
        if args.profile:
            args.profile = str(Path(args.profile).resolve())
        if args.against:
            args.against = str(Path(args.against).resolve())
            if not (Path(args.against) / "subscribers" / "importer.py").is_file():
                parser.error(f"--against: no subscribers/importer.py in {args.against}")
    return args


def _terminate(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through the clean-up below


def main() -> int:
    args = parse_args()
    if args.child is not None:
        child(args)
        return 0
    signal.signal(signal.SIGTERM, _terminate)
    folder = Path(tempfile.mkdtemp(prefix="mailer-bench-import-"))
    runner = Runner(folder, args.postgres_admin_url)
    measures: list[Measure] = []
    try:
        csv_path = folder / "subscribers.csv"
        start = time.perf_counter()
        expected = write_csv(csv_path, args.rows, args.seed)
        print(
            f"wrote {expected.rows:,} rows ({expected.size / 2**20:.1f} MB) in "
            f"{time.perf_counter() - start:.1f} s",
            file=sys.stderr,
            flush=True,
        )
        for database in args.databases:
            measures += bench_database(runner, database, csv_path, expected, args)
    finally:
        problem = runner.drop_all()
        shutil.rmtree(folder, ignore_errors=True)
        if problem:
            print(problem, file=sys.stderr)
    print_table(measures, expected, args)
    return 1 if any(m.failure for m in measures) or problem else 0


if __name__ == "__main__":
    sys.exit(main())
