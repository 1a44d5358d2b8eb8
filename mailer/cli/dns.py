"""``mailer dns``: the DNS records to publish for mail that passes DMARC, and ``--check``.

The records print as zone-file lines, each after a ``;`` comment saying why, so they
can be pasted into a zone or a provider's form. What stands in the way of alignment
(a DKIM or bounce domain outside the From's organizational domain) is said first; a
freemail From, which no record can make pass, is said alone, with exit status 1. With
``--check`` each record is looked up; the command exits 1 when one is missing, wrong or
unanswered, so a deploy script can stop on it.
"""

from __future__ import annotations

import sys

import click

from mailer.cli import Context, console
from mailer.cli.terminal import shown
from mailer.delivery.alignment import findings
from mailer.delivery.records import check, make_resolver, records

__all__ = ["dns"]

_STYLE = {"ok": "green", "missing": "red", "wrong": "red", "unknown": "yellow"}


@click.command()
@click.option("--check", "check_", is_flag=True, help="Look the records up and say what is off.")
@click.option(
    "--nameserver",
    metavar="HOST[:PORT]",
    help="The DNS server to ask (default: MAILER_DNS_RESOLVER, else the system's).",
)
@click.pass_obj
def dns(ctx: Context, check_: bool, nameserver: str | None) -> None:
    """Print the DNS records that let receivers trust this sender (SPF, DKIM, DMARC, MX).

    \b
    Examples:
      mailer dns
      mailer dns --check    # are they published?
    """
    settings = ctx.settings
    found = findings(settings)
    for finding in found:
        colour = "red" if finding.level == "error" else "yellow"
        console.print(f"[{colour}]{finding.level}:[/] {shown(finding.text)}", soft_wrap=True)
    if settings.backend != "outbox" and any(f.level == "error" for f in found):
        sys.exit(1)  # no record makes such a sender pass: fix the setting first
    wanted = records(settings)
    if not wanted:
        console.print("MAILER_BACKEND=outbox sends nowhere: no DNS records are needed.")
        return
    setting = "--nameserver" if nameserver else "MAILER_DNS_RESOLVER"
    lookup = make_resolver(nameserver or settings.dns_resolver, setting) if check_ else None
    trouble = 0
    for record in wanted:
        console.print(f"; {record.kind}: {shown(record.why)}", soft_wrap=True)
        console.print(
            f"{shown(record.name)}  {record.rdtype}  {shown(record.value)}", soft_wrap=True
        )
        if lookup is not None:
            result = check(record, lookup)
            trouble += result.status != "ok"
            detail = f": {shown(result.detail)}" if result.detail else ""
            console.print(
                f";   [{_STYLE[result.status]}]{result.status}[/]{detail}", soft_wrap=True
            )
    if trouble:
        console.print(f"{trouble} of {len(wanted)} records are not as they should be.")
        sys.exit(1)
