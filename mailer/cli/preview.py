"""``mailer preview``: what readers will get, written out, with what would hurt them."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import click
from rich.table import Table
from rich.text import Text

from mailer.cli import Context, console
from mailer.cli.terminal import finding_text, printable, shown
from mailer.content.lint import CLIP_LIMIT, group_findings
from mailer.content.preview import Preview, build_preview, serve_preview, write_preview


@click.command()
@click.argument("post", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Folder for <slug>.html and <slug>.txt [default: MAILER_PREVIEW_DIR].",
)
@click.option("--open", "open_browser", is_flag=True, help="Open the HTML in a web browser.")
@click.option(
    "--serve", is_flag=True, help="Serve on localhost; reload when the post or a template changes."
)
@click.option("--port", default=8025, show_default=True, help="Port for --serve.")
@click.option("--strict", is_flag=True, help="Exit with status 1 if the linter finds errors.")
@click.pass_obj
def preview(
    ctx: Context,
    post: Path,
    out_dir: Path | None,
    open_browser: bool,
    serve: bool,
    port: int,
    strict: bool,
) -> None:
    """Render POST as readers will get it, write it out and report what would hurt them.

    \b
    Examples:
      mailer preview posts/2026-02-06-ai-weekly.md --open
      mailer preview posts/2026-02-06-ai-weekly.md --serve    # reloads as you edit
    """
    settings = ctx.settings
    result = build_preview(post, settings)
    html_path, text_path = write_preview(result, out_dir or settings.preview_dir)
    _print_summary(result, html_path, text_path)
    if open_browser:
        _open(html_path.resolve().as_uri())
    if serve:
        url = f"http://127.0.0.1:{port}/"
        console.print(
            f"Serving [bold]{url}[/] — reloads when {shown(post)} or a template changes "
            "(Ctrl-C stops)"
        )
        if open_browser:
            _open(url)

        def report(error: str | None) -> None:
            said = f"[red]error:[/] {shown(error)}" if error else f"re-rendered {shown(post)}"
            console.print(said)

        with contextlib.suppress(KeyboardInterrupt):
            serve_preview(post, settings, "127.0.0.1", port, on_change=report)
    if strict and any(f.severity == "error" for f in result.findings):
        sys.exit(1)


def _open(url: str) -> None:
    import webbrowser  # here: most previews open nothing (it takes 5 ms to import)

    webbrowser.open(url)


def _print_summary(result: Preview, html_path: Path, text_path: Path) -> None:
    edition = result.edition
    share = edition.size / CLIP_LIMIT
    size_style = "red" if share > 1 else "yellow" if share > 0.9 else "green"
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("Subject", Text(printable(edition.subject)))
    table.add_row(
        "Preheader",
        Text(printable(edition.preheader)) if edition.preheader else "[yellow](none)[/]",
    )
    table.add_row("Language", shown(edition.lang))
    table.add_row(
        "Size",
        f"[{size_style}]{edition.size / 1000:.1f} KB[/] of Gmail's {CLIP_LIMIT / 1000:.0f} KB "
        f"clip limit ({share:.0%})"
        + (f", shortened from {edition.full_size / 1000:.1f} KB" if edition.moved else ""),
    )
    if edition.moved:
        titles = [printable(s.title or "(the rest)") for s in edition.moved]
        more = [f"… and {len(titles) - 10} more"] if len(titles) > 10 else []
        moved = Text("\n".join(titles[:10] + more))
        table.add_row("On the web only", moved)
    table.add_row("Links", str(len(edition.links)))
    table.add_row("Images", str(len(edition.images)))
    table.add_row("Wrote", f"{shown(html_path)}\n{shown(text_path)}")
    console.print(table)
    if not result.findings:
        console.print("[green]No lint findings.[/]")
    for group in group_findings(result.findings):
        console.print(finding_text(group))
