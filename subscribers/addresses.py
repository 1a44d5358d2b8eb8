"""Email addresses: checked with ``email-validator`` (syntax only, no DNS), normalised, hashed."""

from __future__ import annotations

import hashlib
from functools import lru_cache

from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES, DOT_ATOM_TEXT

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
    return _known_domain(candidate) or _validated(candidate)


def _validated(candidate: str) -> str:
    try:
        # ASCII only in the local part: most mail systems, ours included, cannot yet
        # deliver SMTPUTF8. Internationalised domains are kept, in their ASCII form.
        valid = validate_email(candidate, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise InvalidAddress(f"{candidate!r} is not a valid email address: {exc}") from exc
    return valid.ascii_email or valid.normalized


def _known_domain(candidate: str) -> str | None:
    """What ``_validated`` returns, without its cost, for a plain local part at a domain
    the validator already passed: a real list has a few domains for a million readers,
    and checking the domain is most of the validator's time (28 µs an address). None
    when this shortcut does not apply, so the validator decides."""
    local, _, domain = candidate.partition("@")
    if not DOT_ATOM_TEXT.match(local):
        return None  # quoted, empty, not ASCII, a display name: the validator's cases
    try:
        ascii_domain, longest = _domain(domain)
    except EmailNotValidError:
        return None  # the validator says why, about the whole address
    # The validator measures the typed, Unicode and ASCII forms; the local part is ASCII
    # (DOT_ATOM_TEXT), so the longest of them is the local part and the longest domain.
    if len(local) + 1 + longest > MAX_LENGTH:
        return None
    if local.lower() in _CASE_INSENSITIVE:
        local = local.lower()  # RFC 2142 names, as the validator does
    return f"{local}@{ascii_domain}"


_CASE_INSENSITIVE = frozenset(CASE_INSENSITIVE_MAILBOX_NAMES)


@lru_cache(maxsize=65536)
def _domain(domain: str) -> tuple[str, int]:
    """The validator's verdict on a domain (its ASCII form, and the length in bytes of the
    longest of the forms it measures: as typed, Unicode, ASCII; or an error), from an
    address whose local part it cannot object to."""
    valid = validate_email(f"x@{domain}", check_deliverability=False, allow_smtputf8=False)
    forms = (domain, valid.domain, valid.ascii_domain)
    return valid.ascii_domain, max(len(form.encode()) for form in forms)


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
