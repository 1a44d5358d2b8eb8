"""How every process logs: text for people, or one JSON object per line for log shippers.

``MAILER_LOG_FORMAT`` chooses. ``configure`` sets it up for the CLI and ``mailer serve``
(uvicorn's records go through it too); ``use_format`` puts it on the handlers Celery made
for a worker or for beat, which keep Celery's level and ``--logfile``. A record is a short
fixed message with ``extra=`` fields (ids, counts, seconds), never an address. Text from
outside (a provider's error) is ``clip``-ped; in JSON the encoder escapes control
characters, and in text they are written as visible escapes and every line after a
record's first (a traceback) is indented, so that only a record starts a line.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Literal, TextIO

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from mailer.printable import printable

__all__ = ["MAX_OUTSIDE_TEXT", "LogFormat", "clip", "configure", "formatter", "use_format"]

LogFormat = Literal["text", "json"]
# A provider's error is kept whole in the ledger; a log line needs its start only.
MAX_OUTSIDE_TEXT = 300
# Record attributes that are not fields of ours: logging's own, and uvicorn's copy of its
# message with terminal colours.
_NOT_FIELDS = frozenset({*RESERVED_ATTRS, "message", "asctime", "color_message"})
_SCALARS = (str, int, float)
# What makes a text field's value need quotes to stay one field.
_QUOTE = frozenset(' "=')


def clip(text: str) -> str:
    """Text from outside cut to ``MAX_OUTSIDE_TEXT`` characters for a log field."""
    return text if len(text) <= MAX_OUTSIDE_TEXT else text[: MAX_OUTSIDE_TEXT - 1] + "…"


def _field(value: str | int | float) -> str:
    text = str(value)
    if isinstance(value, str) and (not text or _QUOTE.intersection(text)):
        text = json.dumps(text, ensure_ascii=False)
    return printable(text)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message key=value …``; a traceback follows, indented."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        record.message = printable(record.getMessage())
        record.asctime = self.formatTime(record, self.datefmt)
        line = self.formatMessage(record)
        fields = [
            f"{name}={_field(value)}"
            for name, value in vars(record).items()
            if name not in _NOT_FIELDS and isinstance(value, _SCALARS)
        ]
        if fields:
            line += " " + " ".join(fields)
        details = []
        if record.exc_info:
            details.append(self.formatException(record.exc_info))
        if record.stack_info:
            details.append(self.formatStack(record.stack_info))
        for detail in details:
            line += "".join(f"\n    {printable(part)}" for part in detail.splitlines())
        return line


def formatter(log_format: LogFormat) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time",
            reserved_attrs=sorted(_NOT_FIELDS),
        )
    return TextFormatter()


class _Stderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record comes (click's test runner, for
    one, swaps it for each command it runs)."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> TextIO:
        return sys.stderr


def configure(log_format: LogFormat, level: int) -> None:
    """Log records at ``level`` and above to stderr in ``log_format``, Python's warnings
    too; called again, it replaces what it set up before."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _Stderr)]:
        root.removeHandler(handler)
    handler = _Stderr()
    handler.setFormatter(formatter(log_format))
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)


def use_format(logger: logging.Logger, log_format: LogFormat) -> None:
    """``log_format`` for every handler of ``logger`` (one that Celery set up)."""
    for handler in logger.handlers:
        handler.setFormatter(formatter(log_format))
