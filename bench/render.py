"""Time each stage of rendering the sample post, and a post 20 times as long.

    .venv/bin/python bench/render.py [--runs N] [FOLDER]

Prints the median and p90 in milliseconds of the Markdown (``prepare``), template
(``template``) and MJML (``compile``: MJML, then lean.py) stages and of a whole ``render``
(which shortens a post too long for Gmail), and how much slower each stage is on the
long post. Sizes: MJML's own HTML, the lean HTML of the whole post, and the email as
sent (shortened when needed). With a FOLDER of posts (``*.md``), the median render time
and sizes over them, and how many were shortened. The Renderer is built once, outside
the timed loops, as the sender does; a few warm-up runs go first.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import mjml
from rich.console import Console
from rich.table import Table

from mailer.config import load_settings
from mailer.content.post import Post, load_post
from mailer.content.render import Renderer
from mailer.errors import MailerError

SAMPLE_POST = Path(__file__).resolve().parents[1] / "posts" / "2026-02-06-ai-weekly.md"
REPEAT = 20
WARMUP = 5
STAGES = ("Markdown", "template", "MJML", "total")


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def time_stages(renderer: Renderer, post: Post, runs: int) -> dict[str, list[float]]:
    """Milliseconds per run of each stage; stages feed each other as in ``render``."""
    body = renderer.prepare(post)
    mjml_source, _ = renderer.template(body)
    stages: dict[str, Callable[[], object]] = {
        "Markdown": lambda: renderer.prepare(post),
        "template": lambda: renderer.template(body),
        "MJML": lambda: renderer.compile(mjml_source, post.path),
        "total": lambda: renderer.render(post),
    }
    times: dict[str, list[float]] = {}
    for name, stage in stages.items():
        for _ in range(WARMUP):
            stage()
        samples = []
        for _ in range(runs):
            start = time.perf_counter()
            stage()
            samples.append((time.perf_counter() - start) * 1000)
        times[name] = samples
    return times


def long_post(folder: Path) -> Path:
    """The sample's front matter, as written, over its body repeated REPEAT times."""
    empty, front_matter, body = SAMPLE_POST.read_text("utf-8").split("---\n", 2)
    assert empty == "", "the sample post starts with its front matter"
    path = folder / f"{SAMPLE_POST.stem}-x{REPEAT}.md"
    path.write_text(f"---\n{front_matter}---\n" + "\n\n".join([body.strip()] * REPEAT), "utf-8")
    return path


def sizes_kb(renderer: Renderer, post: Post) -> tuple[float, float, float]:
    """KB of MJML's own HTML, of the lean HTML of the whole post, and of the email."""
    body = renderer.prepare(post)
    source, _ = renderer.template(body)
    mjml_html = mjml.mjml2html(source, disable_comments=True)
    edition = renderer.render(post)
    return len(mjml_html.encode()) / 1000, edition.full_size / 1000, edition.size / 1000


def folder_medians(renderer: Renderer, folder: Path, runs: int) -> None:
    """Median render time and sizes over every post of ``folder``."""
    times, mjml_kb, full_kb, sent_kb, shortened, failed = [], [], [], [], 0, []
    for path in sorted(folder.glob("*.md")):
        try:
            post = load_post(path)
            sizes = sizes_kb(renderer, post)
        except MailerError as exc:
            failed.append(f"{path.name}: {exc}")
            continue
        samples = []
        for _ in range(max(1, runs // 20)):
            start = time.perf_counter()
            edition = renderer.render(post)
            samples.append((time.perf_counter() - start) * 1000)
        times.append(statistics.median(samples))
        mjml_kb.append(sizes[0])
        full_kb.append(sizes[1])
        sent_kb.append(sizes[2])
        shortened += bool(edition.moved)
    if not times:
        Console().print(f"no post could be rendered in {folder}", *failed, sep="\n")
        return
    table = Table(title=f"{len(times)} posts of {folder}: medians")
    for column in ("render, ms", "MJML HTML, KB", "lean, KB", "emailed, KB", "shortened"):
        table.add_column(column, justify="right")
    table.add_row(
        *(f"{statistics.median(v):.1f}" for v in (times, mjml_kb, full_kb, sent_kb)),
        f"{shortened} of {len(times)}; max emailed {max(sent_kb):.1f} KB",
    )
    Console().print(table)
    for line in failed:
        Console().print(f"[yellow]not rendered:[/] {line}", markup=True, highlight=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="timed runs per stage (200)")
    parser.add_argument("folder", nargs="?", type=Path, help="a folder of posts (*.md)")
    args = parser.parse_args()

    # Default settings only: no MAILER_* variable or local mailer.toml skews the numbers.
    for name in [name for name in os.environ if name.startswith("MAILER_")]:
        del os.environ[name]
    home = Path.cwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            renderer = Renderer(load_settings())
            sample, long = load_post(SAMPLE_POST), load_post(long_post(Path(tmp)))
        finally:
            os.chdir(home)
    samples = {
        label: time_stages(renderer, post, args.runs)
        for label, post in (("sample", sample), (f"×{REPEAT}", long))
    }
    sizes = [sizes_kb(renderer, post) for post in (sample, long)]

    table = Table(
        title=f"Rendering, ms over {args.runs} runs",
        caption=f"Markdown: sample {len(sample.body):,} chars, ×{REPEAT} {len(long.body):,}",
    )
    table.add_column("stage")
    for label in samples:
        table.add_column(f"{label}\nmedian", justify="right")
        table.add_column(f"{label}\np90", justify="right")
    table.add_column(f"×{REPEAT}\n÷ sample", justify="right")
    short_times, long_times = samples.values()
    for stage in STAGES:
        cells = [
            f"{fn(times[stage]):.2f}"
            for times in (short_times, long_times)
            for fn in (statistics.median, lambda t: percentile(t, 0.9))
        ]
        ratio = statistics.median(long_times[stage]) / statistics.median(short_times[stage])
        table.add_row(stage, *cells, f"{ratio:.1f}×", end_section=stage == STAGES[-2])
    table.add_section()
    for index, label in enumerate(("MJML's HTML, KB", "lean HTML, KB", "emailed, KB")):
        short, long_kb = sizes[0][index], sizes[1][index]
        table.add_row(label, f"{short:.1f}", "", f"{long_kb:.1f}", "", f"{long_kb / short:.1f}×")
    Console().print(table)
    if args.folder:
        folder_medians(renderer, args.folder, args.runs)


if __name__ == "__main__":
    main()
