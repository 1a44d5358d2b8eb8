"""VERP: one envelope sender per reader's copy, ``bounces+<campaign>-<delivery>-<mac>@domain``.

A bounce goes to the envelope sender, so the address it comes back to names the copy it
is about without parsing its body. The ids are base 36 and the MAC (``Signer`` under its
own purpose, 96 bits) base 32, all in lower case: mail servers may change the case of a
local part, and RFC 5321 allows 64 octets (this is at most 56). Nobody can make an
address of their own that names one of our deliveries, so a forged bounce suppresses
nobody.
"""

from __future__ import annotations

import base64
import re

from mailer.delivery.message import MAX_ID, key_ids
from mailer.errors import TokenError
from mailer.tokens import Purpose, Signer

__all__ = ["LOCAL_PREFIX", "Verp"]

LOCAL_PREFIX = "bounces"
# RFC 5321 4.5.3.1.1: the longest local part.
_MAX_LOCAL = 64
_ADDRESS = re.compile(
    rf"{LOCAL_PREFIX}\+([0-9a-z]{{1,13}})-([0-9a-z]{{1,13}})-([a-z2-7]{{20}})@([^@\s]+)"
)


class Verp:
    def __init__(self, signer: Signer, domain: str) -> None:
        self.signer = signer
        self.domain = domain.lower()

    def address(self, campaign_id: int, delivery_id: int) -> str:
        """The envelope sender of one reader's copy."""
        token = self.signer.sign_ids(Purpose.BOUNCE, campaign_id, delivery_id)
        mac = base64.urlsafe_b64decode(token.rpartition(".")[2])
        local = "-".join(
            (
                f"{LOCAL_PREFIX}+{_base36(campaign_id)}",
                _base36(delivery_id),
                base64.b32encode(mac).decode().rstrip("=").lower(),
            )
        )
        assert len(local) <= _MAX_LOCAL, local
        return f"{local}@{self.domain}"

    def sender_for(self, key: str) -> str:
        """The envelope sender of the copy with delivery key ``key`` (``<campaign>-<delivery>``);
        other mail (a confirmation, a test send) returns to the bare bounce address."""
        ids = key_ids(key)
        return f"{LOCAL_PREFIX}@{self.domain}" if ids is None else self.address(*ids)

    def parse(self, address: str) -> tuple[int, int] | None:
        """The (campaign id, delivery id) of a genuine address of ours, else None. Any
        case, any domain (the domain may have been renamed since), angle brackets allowed."""
        match = _ADDRESS.fullmatch(address.strip().strip("<>").lower())
        if match is None:
            return None
        campaign_id, delivery_id = int(match[1], 36), int(match[2], 36)
        if max(campaign_id, delivery_id) > MAX_ID:
            return None
        mac = base64.b32decode(match[3].upper() + "====")
        token = f"{campaign_id}.{delivery_id}.{base64.urlsafe_b64encode(mac).decode()}"
        try:
            self.signer.verify_ids(Purpose.BOUNCE, token, 2)
        except TokenError:
            return None
        return campaign_id, delivery_id


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        number, rest = divmod(number, 36)
        out = digits[rest] + out
        if not number:
            return out
