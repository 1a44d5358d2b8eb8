"""The embedded default backend: each reader's message as an ``.eml`` file in a folder.

The file is exactly what an SMTP server would receive, so the outbox is a faithful
preview of a send (spliced from the batch built once, as SMTP's), and tests read mail from
it as a reader would. A reader whose copy would be unsafe (``Compiled.to_bytes`` refuses
it) gets no file and a failed outcome.
"""

from __future__ import annotations

import os
from pathlib import Path

from mailer.delivery import Outcome
from mailer.delivery.identity import Identity
from mailer.delivery.message import Batch, Compiled, check_batch
from mailer.errors import UnsafeHeaderValue

__all__ = ["OutboxBackend"]


class OutboxBackend:
    name = "outbox"

    def __init__(self, folder: Path, identity: Identity | None = None) -> None:
        self.folder = folder
        self.identity = identity

    def send(self, batch: Batch) -> list[Outcome]:
        check_batch(batch)
        self.folder.mkdir(parents=True, exist_ok=True)
        compiled = Compiled(batch, self.identity)
        outcomes = []
        for envelope in batch.envelopes:
            try:
                data = compiled.to_bytes(envelope)
            except UnsafeHeaderValue as exc:
                outcomes.append(Outcome(envelope.key, "failed", error=f"not sent: {exc}"))
                continue
            path = self.folder / f"{envelope.key}.eml"
            partial = path.with_suffix(".eml.part")
            partial.write_bytes(data)
            os.replace(partial, path)  # a reader of the folder never sees half a message
            outcomes.append(Outcome(envelope.key, "sent", provider_id=path.name))
        return outcomes
