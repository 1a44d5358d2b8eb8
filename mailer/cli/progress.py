"""A live view of a campaign: sent / failed / unknown / remaining, rate and time left."""

from __future__ import annotations

import time
from typing import Any

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from mailer.cli import console
from mailer.cli.terminal import shown
from mailer.sending.dispatch import Progress as CampaignProgress

__all__ = ["CampaignBar"]


class CampaignBar:
    def __init__(self, title: str, total: int) -> None:
        self.bar = Progress(
            TextColumn("[bold]{task.fields[title]}"),  # a field: a title's {braces} stay text
            BarColumn(),
            TextColumn("{task.completed:,}/{task.total:,}"),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        self.task = self.bar.add_task("send", total=total, detail="", title=shown(title))
        self.started = time.monotonic()

    def __enter__(self) -> CampaignBar:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.__exit__(*exc)

    def show(self, p: CampaignProgress) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = (p.sent + p.failed + p.unknown) / elapsed
        detail = (
            f"sent {p.sent:,} · failed {p.failed:,} · unknown {p.unknown:,} · "
            f"remaining {p.queued + p.sending:,} · {rate:,.0f}/s · {shown(p.status)}"
        )
        self.bar.update(self.task, completed=p.done, total=max(p.recipients, 1), detail=detail)
