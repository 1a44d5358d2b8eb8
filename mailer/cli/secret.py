"""``mailer secret``: a new signing secret for ``MAILER_SECRET_KEYS``."""

from __future__ import annotations

import secrets

import click

from mailer.config import MIN_SECRET_BYTES


@click.command()
def secret() -> None:
    """Print a new random secret for MAILER_SECRET_KEYS.

    To rotate, put it first and keep the old one after it until old links may expire.

    \b
    Examples:
      mailer secret
      export MAILER_SECRET_KEYS="$(mailer secret),$MAILER_SECRET_KEYS"   # rotate
    """
    click.echo(secrets.token_urlsafe(MIN_SECRET_BYTES))
