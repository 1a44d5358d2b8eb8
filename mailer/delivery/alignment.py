"""Whether the sending identity can pass DMARC: relaxed alignment, and no freemail From.

DMARC (RFC 7489) passes when DKIM's ``d=`` or SPF's domain (the envelope sender's:
the bounce domain, with VERP) shares the From domain's organizational domain (the
name under its public suffix: ``news.example.co.uk`` → ``example.co.uk``). A From at
a mailbox provider (gmail.com, qq.com …) can never align: those domains publish
``p=reject`` or ``p=quarantine`` and sign only their own users' mail, so bulk mail
from them is refused or filed as spam. Such a From is refused for every backend that
sends to the world; the outbox, which sends nowhere, may keep one for local trials.

The public suffix list is the copy ``publicsuffixlist`` ships: no network at start.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cache
from typing import Literal

from publicsuffixlist import PublicSuffixList

from mailer.config import Settings
from mailer.errors import ConfigError

__all__ = ["Finding", "check_identity", "findings", "freemail", "organizational_domain"]

log = logging.getLogger(__name__)

# Mailbox providers' domains (organizational domains), and the names under which a
# provider registers in many countries (yahoo.co.jp, hotmail.fr, gmx.de, yandex.ru …).
FREEMAIL_DOMAINS = frozenset({
    "gmail.com", "googlemail.com", "outlook.com", "live.com", "msn.com", "aol.com",
    "icloud.com", "me.com", "mac.com", "ymail.com", "rocketmail.com", "qq.com", "foxmail.com",
    "163.com", "126.com", "yeah.net", "sina.com", "sohu.com", "aliyun.com", "naver.com",
    "mail.ru", "inbox.ru", "list.ru", "bk.ru", "proton.me", "protonmail.com", "pm.me",
    "tutanota.com", "zoho.com", "web.de", "t-online.de", "laposte.net", "orange.fr",
    "free.fr", "libero.it", "seznam.cz", "wp.pl", "o2.pl", "rediffmail.com", "hey.com",
    "fastmail.com", "mail.com",
})  # fmt: skip
FREEMAIL_NAMES = frozenset({"yahoo", "hotmail", "outlook", "live", "gmx", "yandex", "aol"})


@dataclass(frozen=True)
class Finding:
    """One thing about the identity: an ``error`` refuses a send, a ``warning`` does not."""

    level: Literal["error", "warning"]
    text: str


@cache
def _suffixes() -> PublicSuffixList:
    return PublicSuffixList()  # parses the bundled list: once per process


def organizational_domain(domain: str) -> str:
    """The registrable name of ``domain`` (``a.b.example.co.uk`` → ``example.co.uk``);
    ``domain`` itself when it is a public suffix or not under one."""
    domain = domain.lower().rstrip(".")
    return _suffixes().privatesuffix(domain) or domain


def aligned(domain: str, from_domain: str) -> bool:
    """Relaxed DMARC alignment: the same organizational domain."""
    return organizational_domain(domain) == organizational_domain(from_domain)


def freemail(domain: str) -> bool:
    """Whether ``domain`` is a mailbox provider's, whose name no one else may send under."""
    org = organizational_domain(domain)
    return org in FREEMAIL_DOMAINS or org.partition(".")[0] in FREEMAIL_NAMES


def findings(settings: Settings) -> list[Finding]:
    """What stands between this configuration and a DMARC pass."""
    from_domain = settings.sender_domain
    found = []
    if freemail(from_domain):
        found.append(
            Finding(
                "error",
                f"MAILER_SENDER_EMAIL={settings.sender_email}: {from_domain} is a mailbox "
                "provider's domain, which fails DMARC for bulk mail from anyone but that "
                "provider: send from a domain of your own (the outbox backend may keep it)",
            )
        )
    if settings.backend == "smtp":
        if settings.dkim_private_key_file is None:
            found.append(
                Finding(
                    "warning",
                    "SMTP mail is not DKIM-signed (MAILER_DKIM_PRIVATE_KEY_FILE is empty): "
                    "Gmail and Yahoo require DKIM of bulk senders",
                )
            )
        elif settings.dkim_domain and not aligned(settings.dkim_domain, from_domain):
            found.append(
                Finding(
                    "warning",
                    f"MAILER_DKIM_DOMAIN={settings.dkim_domain} is not aligned with the From "
                    f"domain {from_domain} (relaxed DMARC: the same organizational domain, "
                    f"{organizational_domain(from_domain)}): DKIM will not count for DMARC",
                )
            )
        if settings.bounce_domain and not aligned(settings.bounce_domain, from_domain):
            found.append(
                Finding(
                    "warning",
                    f"MAILER_BOUNCE_DOMAIN={settings.bounce_domain} is not aligned with the "
                    f"From domain {from_domain} (relaxed DMARC: the same organizational "
                    f"domain, {organizational_domain(from_domain)}): SPF will not count "
                    "for DMARC",
                )
            )
    return found


def check_identity(settings: Settings) -> None:
    """At start: refuse what cannot pass (unless the backend is the outbox), warn of the rest."""
    for finding in findings(settings):
        if finding.level == "error" and settings.backend != "outbox":
            raise ConfigError(finding.text)
        log.warning("%s", finding.text)
