"""`mailer dns` against a DNS server of our own on loopback (dnspython's message API, no network).

The records it prints, served as printed, check out; a zone with another DKIM key, two
SPF records and no DMARC record is reported record by record, with exit status 1.
"""

from __future__ import annotations

import base64
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailer.cli import main
from tests.test_dkim import write_key

Records = dict[tuple[str, str], list[str]]


class Zone:
    """A UDP DNS server answering from ``records`` ((name, type) → rdata texts), else NXDOMAIN."""

    def __init__(self, records: Records) -> None:
        self.records = records
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)  # so that the thread sees ``stop`` soon
        self.stop = threading.Event()
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            query = dns.message.from_wire(data)
            response = dns.message.make_response(query)
            question = query.question[0]
            kind = dns.rdatatype.to_text(question.rdtype)
            texts = self.records.get((question.name.to_text().lower(), kind))
            if texts:
                response.answer.append(
                    dns.rrset.from_text_list(question.name, 300, "IN", kind, texts)
                )
            else:
                response.set_rcode(dns.rcode.NXDOMAIN)
            self.sock.sendto(response.to_wire(), peer)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    write_key(tmp_path / "dkim.pem", rsa.generate_private_key(65537, 2048))
    return {
        "MAILER_BACKEND": "smtp",
        "MAILER_SMTP_HOST": "203.0.113.5",
        "MAILER_SENDER_EMAIL": "news@example.org",
        "MAILER_DKIM_PRIVATE_KEY_FILE": str(tmp_path / "dkim.pem"),
        "MAILER_BOUNCE_DOMAIN": "bounces.example.org",
    }


@pytest.fixture
def zone() -> Iterator[Zone]:
    server = Zone({})
    yield server
    server.close()


def mailer_dns(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, ["dns", *args], env=env)


def printed_records(output: str) -> Records:
    """The zone-file lines of the output, as records."""
    records: Records = {}
    for line in output.splitlines():
        if line and not line.startswith(";"):
            name, kind, value = line.split("  ", 2)
            records.setdefault((name, kind), []).append(value)
    return records


def test_the_printed_records_check_out_and_a_bad_zone_is_told_apart(
    env: dict[str, str], zone: Zone
) -> None:
    printed = mailer_dns(env)
    assert printed.exit_code == 0, printed.output
    zone.records = printed_records(printed.output)
    assert sorted(zone.records) == [
        ("_dmarc.example.org.", "TXT"),
        ("bounces.example.org.", "MX"),
        ("bounces.example.org.", "TXT"),  # SPF is checked on the envelope (VERP) domain
        ("mail._domainkey.example.org.", "TXT"),
    ]
    assert zone.records[("bounces.example.org.", "TXT")] == ['"v=spf1 ip4:203.0.113.5 ~all"']

    checked = mailer_dns(env, "--check", "--nameserver", zone.address)
    assert checked.exit_code == 0, checked.output
    assert checked.output.count(";   ok") == 4

    other = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    der = other.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    zone.records = {
        ("mail._domainkey.example.org.", "TXT"): [
            f'"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"'
        ],
        ("bounces.example.org.", "TXT"): ['"v=spf1 -all"', '"v=spf1 mx ~all"'],
        ("bounces.example.org.", "MX"): ["10 mx.example.org."],
    }
    bad = mailer_dns({**env, "MAILER_DNS_RESOLVER": zone.address}, "--check")
    assert bad.exit_code == 1
    results = [line for line in bad.output.splitlines() if line.startswith(";   ")]
    assert results == [
        ";   wrong: p= is another key than MAILER_DKIM_PRIVATE_KEY_FILE's",
        ";   wrong: 2 SPF records: receivers take that as an error",
        ";   missing",
        ";   ok: 10 mx.example.org.",
    ]
    assert bad.output.endswith("3 of 4 records are not as they should be.\n")


def test_a_freemail_from_gets_no_records_and_a_bad_nameserver_is_named(
    env: dict[str, str],
) -> None:
    freemail = mailer_dns({**env, "MAILER_SENDER_EMAIL": "me@gmail.com"})
    assert freemail.exit_code == 1
    assert freemail.output.startswith("error: MAILER_SENDER_EMAIL=me@gmail.com: gmail.com is")
    assert "TXT" not in freemail.output

    bad = mailer_dns(env, "--check", "--nameserver", "dns.example:53")
    assert bad.exit_code == 2
    assert "--nameserver=dns.example:53: not a nameserver address" in bad.output
