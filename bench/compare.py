"""Each of issue 16's pairs, the mailer against its peer, measured side by side in one run.

    .venv/bin/python bench/compare.py [--runs 3] [--only smtp,smtp-postfix,smtp-latency,
        import,pixel,click,preview,sendgrid] [--smtp-size 5000] [--smtp-batch-size 500]
        [--smtp-latency-size 1000] [--import-rows 1000000] [--sendgrid-size 100000]
        [--post POST]

A pair is a peer (a function returning seconds) and one or more mailer variants (the
same). Runs are interleaved — peer and every variant once per round, the order rotated
from round to round — so a change in the machine's load falls on both sides; each side's
figure is the median of ``--runs`` rounds, and the ratio is peer seconds / mailer seconds
(above 1: the mailer is faster).

The pairs and issue 16's targets (each benchmark's own module says how it runs):

* ``smtp``: raw smtplib over one connection vs the mailer inline and with 1 and 2 workers,
  into one aiosmtpd sink on this machine (at least 0.8 of raw; ``bench/smtp.py``).
* ``smtp-postfix``: the same into Postfix's ``smtp-sink``, a C sink that costs the shared
  cores a fraction of aiosmtpd's CPU per message, so the senders, not the sink, set the
  pace (fetched with ``apt-get download postfix`` on first use; ``--smtp-size`` and
  ``--smtp-batch-size`` as for ``smtp``).
* ``smtp-latency``: the same against a sink that answers 5 ms late, as a relay across a
  network: how the mailer scales in workers and connections when the server is not the
  bottleneck (2 workers at least 1.7 × one).
* ``import``: ``\\copy`` vs ``import_csv`` of 1M rows (PostgreSQL within 25 ×;
  ``bench/import.py``).
* ``pixel``, ``click``: a bare Starlette app vs mailer's (at least 0.6; ``bench/tracking.py``).
* ``preview``: node's ``mjml`` CLI vs ``mailer preview`` (within 1.2 ×, that is a ratio of at
  least 0.83; ``bench/startup.py``; skipped without the CLI: ``npm install mjml``).
* ``sendgrid``: a naive helper loop vs the mailer's workers (at least 1.0, and 0.3 of the
  stand-in's ceiling with 2 workers; ``bench/send.py``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

Timed = Callable[[], float]  # one run; returns its seconds
# A pair: (the peer, {variant name: the mailer's run}); None while not wired.
Pair = tuple[Timed, dict[str, Timed]]


@dataclass(frozen=True)
class Figure:
    name: str
    runs: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.runs)


def run_pairs(peer: Timed, mailer: dict[str, Timed], runs: int) -> list[Figure]:
    """The peer first, then every mailer variant, each timed ``runs`` times interleaved."""
    sides = [("peer", peer), *mailer.items()]
    seconds: dict[str, list[float]] = {name: [] for name, _ in sides}
    for round_ in range(runs):
        shift = round_ % len(sides)
        for name, timed in sides[shift:] + sides[:shift]:
            seconds[name].append(timed())
            print(f"  round {round_ + 1}: {name} {seconds[name][-1]:.2f} s", file=sys.stderr)
    return [Figure(name, values) for name, values in seconds.items()]


def print_pairs(title: str, size: int, unit: str, figures: list[Figure]) -> None:
    """One line per side: median seconds, rate, and the ratio to the peer (peer first)."""
    peer = figures[0]
    width = max(len(figure.name) for figure in figures)
    print(f"\n{title}: {size:,} {unit}, medians of {len(peer.runs)} interleaved runs")
    for figure in figures:
        rate = size / figure.median
        ratio = peer.median / figure.median
        runs = ", ".join(f"{s:.2f}" for s in figure.runs)
        print(f"  {figure.name:<{width}} {figure.median:8.2f} s {rate:9,.0f} {unit}/s "
              f"{ratio:6.2f} of peer   ({runs})")  # fmt: skip


# The pairs -----------------------------------------------------------------------------


# The mailer inline and with 1 and 2 workers, and the raw loop in 2 processes: how far this
# machine lets even the peer scale, when the sink shares its cores.
_SMTP_MODES = ["inline", "1", "2", "raw2p"]


def smtp(args: argparse.Namespace) -> Pair:
    """Raw smtplib over one connection vs the mailer inline and with 1 and 2 workers, and vs
    the raw loop in 2 processes (bench/smtp.py)."""
    from bench.smtp import smtp_pair

    return smtp_pair(args.smtp_size, _SMTP_MODES, args.smtp_batch_size)


def smtp_postfix(args: argparse.Namespace) -> Pair:
    """The same into Postfix's smtp-sink instead of aiosmtpd (bench/smtp.py)."""
    from bench.smtp import smtp_pair

    return smtp_pair(args.smtp_size, _SMTP_MODES, args.smtp_batch_size, sink="postfix")


def smtp_latency(args: argparse.Namespace) -> Pair:
    """The same against a sink that answers 5 ms late, as a relay across a network does:
    raw smtplib over 1 connection vs the mailer with 1 worker of 1, 2 and 4 connections, 2
    workers of 2, and the raw loop over 4 connections (bench/smtp.py)."""
    from bench.smtp import smtp_latency_pair

    return smtp_latency_pair(args.smtp_latency_size)


def import_copy(args: argparse.Namespace) -> Pair:
    """psql's ``\\copy`` of a generated CSV into a plain table vs ``import_csv`` of the same
    file into PostgreSQL and SQLite, each on a fresh database (bench/import.py)."""
    import importlib

    return importlib.import_module("bench.import").import_pair(args.import_rows)  # a keyword


def pixel_starlette(args: argparse.Namespace) -> Pair:
    """The open pixel vs a bare Starlette app answering the same bytes, one uvicorn process
    each, 20,000 requests a run (bench/tracking.py)."""
    from bench.tracking import pixel_pair

    return pixel_pair()


def click_starlette(args: argparse.Namespace) -> Pair:
    """The click redirect, the same way."""
    from bench.tracking import click_pair

    return click_pair()


def preview_mjml(args: argparse.Namespace) -> Pair | None:
    """``mailer preview`` vs node's ``mjml`` CLI on the same MJML, each a fresh process
    (None without the CLI: ``npm install mjml`` gives one)."""
    from bench.startup import preview_pair

    return preview_pair(args.post)


def sendgrid_naive(args: argparse.Namespace) -> Pair:
    """A naive ``sendgrid``-helper loop with no ledger vs real Celery workers (1 and 2) on
    PostgreSQL, into the SendGrid stand-in; "ceiling" is the stand-in's own best time for the
    same readers (bench/send.py)."""
    from bench.send import sendgrid_pair

    return sendgrid_pair(args.sendgrid_size, [1, 2])


PAIRS: dict[str, tuple[str, Callable[[argparse.Namespace], Pair | None], int, str]] = {
    # name: (title, the pair, size, unit)
    "smtp": ("SMTP to a local aiosmtpd sink", smtp, 5000, "msg"),
    "smtp-postfix": ("SMTP to Postfix's smtp-sink", smtp_postfix, 5000, "msg"),
    "smtp-latency": ("SMTP to a sink 5 ms away", smtp_latency, 1000, "msg"),
    "import": ("import vs \\copy", import_copy, 1_000_000, "rows"),
    "pixel": ("open pixel vs bare Starlette", pixel_starlette, 20_000, "req"),
    "click": ("click redirect vs bare Starlette", click_starlette, 20_000, "req"),
    "preview": ("mailer preview vs mjml CLI", preview_mjml, 1, "run"),
    "sendgrid": ("SendGrid path vs naive loop", sendgrid_naive, 100_000, "rec"),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default=",".join(PAIRS), help="comma-separated pair names")
    parser.add_argument("--smtp-size", type=int, default=5000)
    # 10 batches: two workers share them evenly (5 would split 3:2, a ceiling of 5/3).
    parser.add_argument("--smtp-batch-size", type=int, default=500)
    parser.add_argument("--smtp-latency-size", type=int, default=1000)
    parser.add_argument("--import-rows", type=int, default=1_000_000)
    parser.add_argument("--sendgrid-size", type=int, default=100_000)
    parser.add_argument("--post", type=Path, default=ROOT / "posts" / "2026-02-06-ai-weekly.md")
    args = parser.parse_args()
    for name in args.only.split(","):
        title, make, size, unit = PAIRS[name]
        pair = make(args)
        if pair is None:
            print(f"\n{title}: skipped, its peer is not installed here ({make.__doc__})")
            continue
        size = {
            "smtp": args.smtp_size,
            "smtp-postfix": args.smtp_size,
            "smtp-latency": args.smtp_latency_size,
            "import": args.import_rows,
            "sendgrid": args.sendgrid_size,
        }.get(name, size)
        peer, mailer = pair
        print_pairs(title, size, unit, run_pairs(peer, mailer, args.runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
