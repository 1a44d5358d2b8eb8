"""The DNS records a sender publishes for its mail to pass DMARC, and what the DNS says of them.

From the settings: the DKIM key's TXT record (derived from the private key), an SPF
record for the domain SPF checks (the bounce domain with VERP, else the From domain)
naming the relay, a DMARC record to start with, and the bounce domain's MX. ``check``
looks each up with ``dnspython`` and says ``ok``, ``missing``, ``wrong`` (with why) or
``unknown`` (the DNS did not answer).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import dns.exception
import dns.resolver

from mailer.config import Settings, is_loopback
from mailer.delivery.alignment import organizational_domain
from mailer.delivery.dkim import dkim_key
from mailer.errors import ConfigError

__all__ = ["Check", "Record", "check", "make_resolver", "records"]

# Relays that send from addresses of their own: SPF must include the provider's record.
RELAY_SPF = {
    "sendgrid.net": "include:sendgrid.net",
    "amazonaws.com": "include:amazonses.com",
    "mailgun.org": "include:mailgun.org",
    "postmarkapp.com": "include:spf.mtasv.net",
}
TXT_STRING_MAX = 255  # one character-string of a TXT record (RFC 1035)
Status = Literal["ok", "missing", "wrong", "unknown"]
Lookup = Callable[[str, str], list[str]]


@dataclass(frozen=True)
class Record:
    """One record to publish: ``value`` is zone-file text; ``want`` is what a check looks for
    in it (empty: that the record exists); ``first``, a name a receiver asks before ``name``."""

    kind: str
    name: str
    rdtype: str
    value: str
    why: str
    want: str = ""
    first: str = ""


@dataclass(frozen=True)
class Check:
    record: Record
    status: Status
    detail: str = ""


def _quoted(text: str) -> str:
    """``text`` as TXT character-strings of at most 255 characters each."""
    chunks = [text[i : i + TXT_STRING_MAX] for i in range(0, len(text), TXT_STRING_MAX)]
    return " ".join(f'"{chunk}"' for chunk in chunks)


def _spf_mechanism(settings: Settings) -> str:
    """What SPF must allow: the provider's include, the relay's address or its name; empty
    when the relay is this machine (its public address is not known here)."""
    if settings.backend == "sendgrid":
        return RELAY_SPF["sendgrid.net"]
    host = settings.smtp_host.lower().rstrip(".")
    if is_loopback(host):
        return ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        for provider, include in RELAY_SPF.items():
            if host.endswith(f".{provider}"):
                return include
        return f"a:{host}"
    return f"ip{address.version}:{address}"


def records(settings: Settings) -> list[Record]:
    """The records this configuration needs (none for the outbox, which sends nowhere)."""
    if settings.backend == "outbox":
        return []
    from_domain = settings.sender_domain
    org = organizational_domain(from_domain)
    found = []
    key = dkim_key(settings) if settings.backend == "smtp" else None
    if key is not None:
        found.append(
            Record(
                "DKIM",
                f"{key.record_name}.",
                "TXT",
                _quoted(key.record()),
                "the public half of MAILER_DKIM_PRIVATE_KEY_FILE: receivers verify signatures "
                "with it",
                want=key.public_key,
            )
        )
    spf_domain = (settings.backend == "smtp" and settings.bounce_domain) or from_domain
    mechanism = _spf_mechanism(settings)
    shown = mechanism or "ip4:THIS.SERVER.PUBLIC.IP"
    found.append(
        Record(
            "SPF",
            f"{spf_domain}.",
            "TXT",
            _quoted(f"v=spf1 {shown} ~all"),
            f"the envelope sender's domain ({spf_domain}) allows the sending servers; add the "
            "mechanism to a record you have rather than publishing a second one",
            want=mechanism,
        )
    )
    found.append(
        Record(
            "DMARC",
            f"_dmarc.{org}.",
            "TXT",
            _quoted(f"v=DMARC1; p=none; rua=mailto:dmarc-reports@{org}"),
            "a policy that only reports, to start with (Gmail and Yahoo require one); rua is "
            "a mailbox you read; once reports show only your own mail, p=quarantine",
            first=f"_dmarc.{from_domain}." if from_domain != org else "",
        )
    )
    if settings.backend == "smtp" and settings.bounce_domain:
        mailbox = settings.bounce_imap_host or "YOUR.BOUNCE.MAIL.SERVER"
        found.append(
            Record(
                "MX",
                f"{settings.bounce_domain}.",
                "MX",
                f"10 {mailbox}.",
                "bounces (to bounces+…@MAILER_BOUNCE_DOMAIN) must reach the bounce mailbox that "
                "`mailer bounces fetch` reads",
            )
        )
    return found


def make_resolver(nameserver: str, setting: str) -> Lookup:
    """A lookup (name, type) → texts through ``nameserver`` (``host``, ``host:port``,
    ``[v6]:port``), or the system's resolver when it is empty."""
    resolver = dns.resolver.Resolver(configure=not nameserver)
    resolver.lifetime = 5.0
    if nameserver:
        host, port = _host_port(nameserver, setting)
        resolver.nameservers = [host]
        resolver.port = port

    def lookup(name: str, rdtype: str) -> list[str]:
        try:
            answer = resolver.resolve(name, rdtype)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        if rdtype == "TXT":
            return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]
        return [r.to_text() for r in answer]

    return lookup


def _host_port(text: str, setting: str) -> tuple[str, int]:
    host, port = text, "53"
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":") or port
    elif text.count(":") == 1:
        host, port = text.split(":")
    try:
        address = ipaddress.ip_address(host)
        number = int(port)
        if not 0 < number < 65536:
            raise ValueError(port)
    except ValueError as exc:
        raise ConfigError(
            f"{setting}={text}: not a nameserver address such as 127.0.0.1:5353 or [::1]:53"
        ) from exc
    return str(address), number


def check(record: Record, lookup: Lookup) -> Check:
    """What the DNS says of ``record``."""
    try:
        if record.kind == "DMARC":
            return _check_dmarc(record, lookup)
        found = lookup(record.name, record.rdtype)
    except dns.exception.DNSException as exc:
        return Check(record, "unknown", f"no answer: {exc}")
    if record.kind == "SPF":
        found = [text for text in found if text.lower().startswith("v=spf1")]
    if not found:
        return Check(record, "missing")
    if record.kind == "DKIM":
        return _check_dkim(record, found)
    if record.kind == "SPF":
        return _check_spf(record, found)
    return Check(record, "ok", ", ".join(found))


def _tags(text: str) -> dict[str, str]:
    tags = (part.partition("=") for part in text.split(";"))
    return {k.strip().lower(): "".join(v.split()) for k, _, v in tags if k.strip()}


def _check_dkim(record: Record, found: list[str]) -> Check:
    published = [_tags(text).get("p", "") for text in found]
    if record.want in published:
        return Check(record, "ok")
    if published == [""]:
        return Check(record, "wrong", "p= is empty: the key is revoked")
    return Check(record, "wrong", "p= is another key than MAILER_DKIM_PRIVATE_KEY_FILE's")


def _check_spf(record: Record, found: list[str]) -> Check:
    if len(found) > 1:
        return Check(record, "wrong", f"{len(found)} SPF records: receivers take that as an error")
    terms = {term.lstrip("+").lower() for term in found[0].split()}
    if record.want and record.want.lower() not in terms:
        return Check(record, "wrong", f"{found[0]!r} does not name {record.want}")
    return Check(record, "ok", found[0])


def _check_dmarc(record: Record, lookup: Lookup) -> Check:
    """The From domain's own record, or its organizational domain's (RFC 7489 §6.6.3)."""
    found: list[str] = []
    for name in filter(None, (record.first, record.name)):
        found = found or [t for t in lookup(name, "TXT") if t.lower().startswith("v=dmarc1")]
    if not found:
        return Check(record, "missing")
    policy = _tags(found[0]).get("p", "")
    if policy not in ("none", "quarantine", "reject"):
        return Check(record, "wrong", f"{found[0]!r} has no valid p= policy")
    return Check(record, "ok", found[0])
