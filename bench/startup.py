"""Start-up: wall time and peak memory of ``mailer --help`` and ``mailer preview POST``.

    .venv/bin/python bench/startup.py [--runs 7] [--post posts/2026-02-06-ai-weekly.md]
        [--mjml PATH] [--base DIR]

Each command is a fresh process (``python -m mailer …`` from an empty folder, without
``MAILER_*`` settings, its bytecode cached as an installed copy's is); its wall time is
measured here and its peak RSS is the child's own ``ru_maxrss`` (``os.wait4``). The
peer is node's ``mjml`` CLI compiling the MJML mailer makes for the same post
(``--mjml``, else ``mjml`` on PATH; skipped when there is none: ``npm install mjml`` in
any folder gives ``node_modules/.bin/mjml``). ``--base`` runs the same commands from
another checkout too (``git archive HEAD | tar -x -C DIR`` gives one), for a
before/after. The variants run interleaved, round after round, so that load from
elsewhere falls on all of them alike; the table shows medians. Targets (issue 16):
``--help`` under 0.3 s; ``preview`` within 1.2× of ``mjml`` and under 120 MiB.
``preview_pair`` gives ``bench/compare.py`` the same preview and its peer.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_POST = ROOT / "posts" / "2026-02-06-ai-weekly.md"
HELP_TARGET_S = 0.3
PREVIEW_TARGET_RATIO = 1.2
PREVIEW_TARGET_MIB = 120.0


@dataclass
class Variant:
    """One command line, measured once per round."""

    command: str  # what is measured: "--help" or "preview"
    name: str  # whose: "mailer", "base", "mjml"
    argv: list[str]
    env: dict[str, str]
    seconds: list[float] = field(default_factory=list)
    mib: list[float] = field(default_factory=list)

    def run(self, folder: Path) -> float:
        """One fresh process, from ``folder``; its seconds (also kept, with its peak RSS)."""
        began = time.perf_counter()
        child = subprocess.Popen(
            self.argv, cwd=folder, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        _, status, usage = os.wait4(child.pid, 0)
        self.seconds.append(time.perf_counter() - began)
        child.returncode = os.waitstatus_to_exitcode(status)
        stderr = child.stderr.read().decode(errors="replace") if child.stderr else ""
        if child.returncode != 0:
            raise SystemExit(f"{' '.join(self.argv)} exited with {child.returncode}: {stderr}")
        self.mib.append(usage.ru_maxrss / 1024)  # kilobytes on Linux
        return self.seconds[-1]


def write_mjml(post: Path, path: Path) -> None:
    """The MJML document mailer compiles for ``post`` (its template filled in), as a file.
    In a child of its own: a child's peak RSS counts its parent's from before the exec, so
    this process must stay small."""
    sys.path.insert(0, str(ROOT))
    from mailer.config import Settings
    from mailer.content.post import load_post
    from mailer.content.render import Renderer

    renderer = Renderer(Settings(data_dir=path.parent))
    source, _ = renderer.template(renderer.prepare(load_post(post)))
    path.write_text(source, "utf-8")


def clean_env() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if not name.startswith("MAILER_")}


def mailer_variants(name: str, checkout: Path, post: Path, folder: Path) -> list[Variant]:
    """``mailer --help`` and ``mailer preview POST`` run from ``checkout``, with bytecode
    kept in ``folder`` as an installed copy keeps it (pip compiles it): under
    ``PYTHONDONTWRITEBYTECODE=1`` every run would compile mailer's modules again."""
    env = {**clean_env(), "PYTHONPATH": str(checkout)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(folder / "pycache")
    mailer = [sys.executable, "-m", "mailer"]
    out = str(folder / f"out-{name}")
    return [
        Variant("--help", name, [*mailer, "--help"], env),
        Variant("preview", name, [*mailer, "preview", str(post), "--out", out], env),
    ]


def mjml_variant(node: Path, post: Path, folder: Path) -> Variant:
    """Node's ``mjml`` CLI compiling the MJML mailer makes for ``post`` (written first)."""
    source = folder / f"{post.stem}.mjml"
    command = [sys.executable, __file__, "--post", str(post), "--write-mjml", str(source)]
    subprocess.run(command, check=True)
    argv = [str(node), str(source), "-o", str(folder / "mjml.html")]
    return Variant("preview", "mjml", argv, clean_env())


def find_mjml() -> Path | None:
    found = shutil.which("mjml")
    return Path(found) if found else None


def preview_pair(
    post: Path, mjml: Path | None = None
) -> tuple[Callable[[], float], dict[str, Callable[[], float]]] | None:
    """Node's ``mjml`` CLI (at ``mjml``, else on PATH) on the MJML mailer makes for ``post``,
    and ``mailer preview POST``: each a function timing one fresh process, run from a folder
    of the benchmark's own (``bench/compare.py`` interleaves them). None without the CLI."""
    node = mjml or find_mjml()
    if node is None:
        return None
    folder = Path(tempfile.mkdtemp(prefix="mailer-bench-startup-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    peer = mjml_variant(node, post.resolve(), folder)
    _, preview = mailer_variants("mailer", ROOT, post.resolve(), folder)
    warm_up([peer, preview], folder)
    return (lambda: peer.run(folder)), {"mailer preview": lambda: preview.run(folder)}


def warm_up(found: list[Variant], folder: Path) -> None:
    """One untimed run of each: caches (bytecode, image sizes) filled before timing."""
    for variant in found:
        variant.run(folder)
        variant.seconds.clear()
        variant.mib.clear()


def variants(args: argparse.Namespace, folder: Path) -> list[Variant]:
    checkouts = [("mailer", ROOT)] + ([("base", args.base.resolve())] if args.base else [])
    found = [v for name, at in checkouts for v in mailer_variants(name, at, args.post, folder)]
    node = args.mjml or find_mjml()
    if node:
        found.append(mjml_variant(node, args.post, folder))
    else:
        print(
            "no mjml CLI (--mjml PATH, or npm install mjml): preview has no peer", file=sys.stderr
        )
    return found


def report(found: list[Variant], runs: int) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"Start-up, fresh processes, medians of {runs} interleaved rounds",
        caption=(
            f"Targets: --help under {HELP_TARGET_S} s; preview within {PREVIEW_TARGET_RATIO}× "
            f"of node's mjml CLI on the same post and under {PREVIEW_TARGET_MIB:.0f} MiB. "
            f"{os.cpu_count()} cores, shared with whatever else runs."
        ),
    )
    for heading in ("command", "variant", "median s", "min s", "peak MiB", "vs mjml", "target"):
        table.add_column(heading, justify="left" if heading in ("command", "variant") else "right")
    peer = next((v for v in found if v.name == "mjml"), None)
    peer_s = statistics.median(peer.seconds) if peer else 0.0
    for variant in found:
        seconds, mib = statistics.median(variant.seconds), statistics.median(variant.mib)
        ratio = f"{seconds / peer_s:.2f}×" if peer_s and variant.command == "preview" else ""
        if variant.name == "mjml":
            verdict = ""
        elif variant.command == "--help":
            verdict = "[green]✓[/]" if seconds < HELP_TARGET_S else "[red]✗[/]"
        else:
            fast = not peer_s or seconds <= PREVIEW_TARGET_RATIO * peer_s
            small = mib < PREVIEW_TARGET_MIB
            verdict = ("[green]time ✓[/]" if fast else "[red]time ✗[/]") + (
                " [green]memory ✓[/]" if small else " [red]memory ✗[/]"
            )
        table.add_row(
            variant.command,
            variant.name,
            f"{seconds:.3f}",
            f"{min(variant.seconds):.3f}",
            f"{mib:.0f}",
            ratio,
            verdict,
        )
    Console().print(table)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="rounds (7; at least 5)")
    parser.add_argument("--post", type=Path, default=SAMPLE_POST)
    parser.add_argument("--mjml", type=Path, help="node's mjml CLI (default: mjml on PATH)")
    parser.add_argument("--base", type=Path, help="another checkout to run the same commands from")
    parser.add_argument("--write-mjml", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write_mjml:
        write_mjml(args.post, args.write_mjml)
        return 0
    if args.runs < 5:
        parser.error("--runs: at least 5")
    args.post = args.post.resolve()
    if not args.post.is_file():
        parser.error(f"--post: no such file: {args.post}")
    if args.base and not (args.base / "mailer" / "cli").is_dir():
        parser.error(f"--base: not a mailer checkout: {args.base}")
    with tempfile.TemporaryDirectory(prefix="mailer-bench-startup-") as name:
        folder = Path(name)
        found = variants(args, folder)
        warm_up(found, folder)
        for _ in range(args.runs):
            for variant in found:
                variant.run(folder)
        report(found, args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
