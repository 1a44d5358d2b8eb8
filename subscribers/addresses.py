"""Email addresses: checked with ``email-validator`` (syntax only, no DNS), normalised, hashed."""

from __future__ import annotations

import hashlib

from email_validator import EmailNotValidError, validate_email

from mailer.errors import InvalidAddress

__all__ = ["address_hash", "lookup_hash", "normalize"]

MAX_LENGTH = 254  # RFC 5321's limit on a forward path, less the angle brackets


def normalize(raw: str) -> str:
    """The address as it should be stored (domain lower-cased, Unicode normalised)."""
    candidate = raw.strip()
    if not candidate:
        raise InvalidAddress("the email address is empty")
    if len(candidate) > MAX_LENGTH:
        raise InvalidAddress(f"the email address is longer than {MAX_LENGTH} characters")
    try:
        # ASCII only in the local part: most mail systems, ours included, cannot yet
        # deliver SMTPUTF8. Internationalised domains are kept, in their ASCII form.
        valid = validate_email(candidate, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise InvalidAddress(f"{candidate!r} is not a valid email address: {exc}") from exc
    return valid.ascii_email or valid.normalized


def address_hash(email: str) -> str:
    """The identity of an address, the same for every capitalisation of it."""
    return hashlib.sha256(email.strip().lower().encode("utf-8")).hexdigest()


def lookup_hash(typed: str) -> str:
    """The identity of an address as someone typed it (``Bob@Bücher.de``): the stored form
    is normalised, so look it up normalised; an invalid one is hashed as it is."""
    try:
        return address_hash(normalize(typed))
    except InvalidAddress:
        return address_hash(typed)
