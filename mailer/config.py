"""All settings in one place: ``MAILER_*`` environment variables over an optional ``mailer.toml``.

Every default works on a fresh machine with nothing set up (SQLite file, no broker,
an outbox folder, localhost URLs). Those local defaults are marked ``LOCAL_DEFAULT``
so that the parts that face the internet can refuse them. A wrong value is reported
by the name the operator wrote it under, never as a traceback.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import ipaddress
import logging
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from mailer.errors import ConfigError, MailerError
from mailer.headers import check_header_text
from mailer.langtag import is_language_tag

__all__ = [
    "LOCAL_DEFAULT_SECRET",
    "LOCAL_DEFAULT_URL",
    "MIN_SECRET_BYTES",
    "Publication",
    "Settings",
    "is_loopback",
    "load_settings",
    "refuse_local_defaults",
]

log = logging.getLogger(__name__)
ENV_PREFIX = "MAILER_"
CONFIG_FILE_ENV = "MAILER_CONFIG"
DEFAULT_CONFIG_FILE = Path("mailer.toml")
LOCAL_DEFAULT_URL = "http://127.0.0.1:8000"
# For a laptop only: anyone can read it here, so anyone could forge links signed with it.
LOCAL_DEFAULT_SECRET = "local-default-secret-do-not-use-in-production"
# A short secret is found offline from one signed link (3 characters took 0.2 s):
# 32 random bytes, as `mailer secret` prints, are out of reach.
MIN_SECRET_BYTES = 32


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    return value.rstrip("/")


HttpUrl = Annotated[str, AfterValidator(_http_url)]
_PLAIN_PATH = re.compile(r"(?:/(?:[A-Za-z0-9._~-]|%[0-9A-Fa-f]{2})+)*")


def _service_url(value: str) -> str:
    """The URL every link of the service starts with, the pages' links with its path: so
    that path is plain segments, safe in HTML and in headers, and nothing follows it."""
    value = _http_url(value)
    parts = urlsplit(value)
    if parts.query or parts.fragment or not _PLAIN_PATH.fullmatch(parts.path):
        raise ValueError(
            "must be an http(s) URL whose path, if it has one, is plain segments (letters, "
            "digits, - . _ ~ or %XX), with no //, ?query or #fragment"
        )
    return value


ServiceUrl = Annotated[str, AfterValidator(_service_url)]


def _optional_https_url(value: str) -> str:
    parts = urlsplit(value)
    if value and (parts.scheme != "https" or not parts.hostname):
        raise ValueError("must be an https:// URL (mail clients block http: images), or empty")
    return value


def _hex_color(value: str) -> str:
    if value and not re.fullmatch(r"#[0-9a-fA-F]{6}", value):
        raise ValueError(f"must be a colour written #rrggbb, such as #0b63c5, not {value!r}")
    return value.lower()


def _header_text(value: str) -> str:
    return check_header_text(value.strip(), "a mail header")


def _language_tag(value: str) -> str:
    if value and not is_language_tag(value):
        raise ValueError("must be a language tag such as en or zh-CN")
    return value


# A domain name of letters, digits and hyphens (an IDN in its xn-- form).
_DOMAIN = re.compile(
    r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,61}[a-z0-9]"
)


def _domain(value: str) -> str:
    value = value.strip().lower()
    if value and not _DOMAIN.fullmatch(value):
        raise ValueError("must be a domain name such as bounces.example.org")
    return value


# Text that goes into a mail header (From, Subject): no encoded words, no line breaks.
HeaderText = Annotated[str, AfterValidator(_header_text)]


def _clock_time(value: str) -> str:
    try:
        moment = dt.time.fromisoformat(value)
    except ValueError as exc:
        raise ValueError("must be a time of day such as 09:00") from exc
    return f"{moment:%H:%M}"


def _timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError("must be an IANA time zone such as Asia/Shanghai") from exc
    return value


def _email(value: str) -> str:
    """Pydantic's ``EmailStr``, in its words, with email-validator imported when an address
    is first read rather than when the settings are defined; in ASCII, the domain in its
    IDNA form (it goes into From, the Message-ID and DKIM, which take no other)."""
    from email_validator import EmailNotValidError
    from email_validator import validate_email as ascii_form
    from pydantic.networks import validate_email
    from pydantic_core import PydanticCustomError

    address = validate_email(value)[1]
    try:
        checked = ascii_form(address, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:  # worded as pydantic words the address's other faults
        raise PydanticCustomError(
            "value_error", "value is not a valid email address: {reason}", {"reason": str(exc)}
        ) from exc
    return checked.ascii_email or address


EmailAddress = Annotated[str, AfterValidator(_email)]


def _database_url(value: str) -> str:
    """The store's own rule for the URLs it runs on (imported here: SQLAlchemy is heavy,
    and a command such as `mailer preview` never opens a database)."""
    from mailer.store.dialect import database_url

    return database_url(value)


class Settings(BaseModel):
    """The service's settings; field names are the lower-case ``MAILER_*`` names.

    Read as pydantic-settings read them, without the tenth of a second it took every
    command to import. The defaults are not checked each time (a test checks them once):
    their checks would import SQLAlchemy, `limits` and email-validator, which most
    commands never use."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=False)

    # Where the posts live on the web: relative links in a post resolve against it.
    site_url: HttpUrl = LOCAL_DEFAULT_URL
    # A post's own page, under site_url, when its front matter has no canonical URL.
    post_path: str = "posts/{slug}/"
    # The address of this service's web app (unsubscribe, archive, tracking links).
    public_url: ServiceUrl = LOCAL_DEFAULT_URL

    publication_name: HeaderText = "The Weekly"
    sender_name: HeaderText = "The Weekly"
    sender_email: EmailAddress = "newsletter@example.com"
    # Required by anti-spam law in most places; the linter warns while it is empty.
    postal_address: str = ""
    # Language of posts that do not say; empty means detect it from the text.
    lang: Annotated[str, AfterValidator(_language_tag)] = ""
    # A web-font stylesheet (e.g. Google Fonts) and the family it defines; off by default
    # so that opening the email does not tell a font host about the reader.
    font_url: str = ""
    font_family: str = ""
    # The email's masthead: the publication's name set as a heading above the post, or its
    # logo (an https image; the name is its alt text), which implies the masthead.
    masthead: bool = False
    logo_url: Annotated[str, AfterValidator(_optional_https_url)] = ""
    # The brand colour of links and buttons, as #rrggbb; empty: the theme's.
    accent_color: Annotated[str, AfterValidator(_hex_color)] = ""

    posts_dir: Path = Path("posts")
    # The operator's own templates, searched before the built-in ones.
    templates_dir: Path | None = None
    preview_dir: Path = Path("preview")

    # Secrets that sign the links in email, newest first (older ones still verify).
    secret_keys: list[str] = [LOCAL_DEFAULT_SECRET]
    # Off: a subscriber is confirmed at once, without the confirmation email.
    double_opt_in: bool = True
    confirm_link_days: int = Field(default=7, ge=1)
    resend_confirmation_minutes: int = Field(default=10, ge=0)
    # Per client IP, in the syntax of the `limits` package ("5/minute", "20 per hour").
    subscribe_rate_limit: str = "5/minute"
    # Proxies whose X-Forwarded-For is believed (comma-separated IPs or networks); empty:
    # none, the connecting address is the client's. Set it only to your own proxy's address.
    trusted_proxies: str = ""

    # sqlite:///FILE or postgresql://… (postgres://, as hosts give it, means the same).
    database_url: Annotated[str, AfterValidator(_database_url)] = "sqlite:///mailer.db"
    # Empty: tasks run inline in the calling process (the embedded default).
    broker_url: str = ""
    backend: Literal["outbox", "sendgrid", "smtp"] = "outbox"
    outbox_dir: Path = Path("outbox")
    # The services' own state (beat's schedule file), made when first needed.
    data_dir: Path = Path("data")
    # Log records as text for people, or as one JSON object per line for log shippers.
    log_format: Literal["text", "json"] = "text"
    # Where every process on this machine (web, workers, CLI) writes its Prometheus metrics
    # for /metrics to add up (PROMETHEUS_MULTIPROC_DIR); none: each process counts alone.
    metrics_dir: Path | None = None

    sendgrid_api_key: str = ""
    sendgrid_host: HttpUrl = "https://api.sendgrid.com"
    smtp_host: str = "localhost"
    smtp_port: int = 587
    smtp_security: Literal["starttls", "ssl", "none"] = "starttls"
    smtp_username: str = ""
    smtp_password: str = ""
    # SMTP connections a process sends one batch over at once, kept open between batches
    # (servers limit connections per client, often to a handful: stay under that).
    smtp_connections: int = Field(default=2, ge=1, le=20)
    # DKIM signing of SMTP mail: on when a private key file is set. The domain: empty, the
    # From address's (what DMARC aligns with); `mailer dns` prints the record to publish.
    dkim_private_key_file: Path | None = None
    dkim_selector: str = Field(default="mail", pattern=r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$")
    dkim_domain: Annotated[str, AfterValidator(_domain)] = ""
    # Seconds to wait for a provider's answer; a send that times out is `unknown`.
    delivery_timeout: float = Field(default=30.0, gt=0)
    # An inbox the operator reads, offered as the mailto: List-Unsubscribe target.
    unsubscribe_mailto: EmailAddress | Literal[""] = ""
    # Where readers' replies go; empty: to the From address (no Reply-To header).
    reply_to: EmailAddress | Literal[""] = ""
    # Gmail's feedback loop: the SenderId of every Feedback-ID (5-15 characters, the same
    # for the whole mail stream); campaign and publication are the other two fields.
    feedback_sender_id: str = Field(default="newsletter", pattern=r"^[A-Za-z0-9._-]{5,15}$")
    # The DNS server `mailer dns --check` asks ("127.0.0.1:5353"); empty: the system's.
    dns_resolver: str = ""
    # Addresses (comma-separated) that every `mailer send --test-to` copy also goes to:
    # the operator's own inboxes at several mailbox providers.
    seed_list: list[str] = []

    # Open pixel and click redirects (a campaign can also be sent without them).
    tracking: bool = True
    batch_size: int = Field(default=1000, ge=1, le=1000)
    # Messages per second across all workers, per backend; 0 for no limit.
    send_rate: float = Field(default=0.0, ge=0)
    # Permanent provider errors (400, 401, 413) a campaign takes before it is paused.
    max_batch_errors: int = Field(default=3, ge=1)
    # Transient errors (429, 5xx, no connection) a batch retries before it gives up,
    # waiting base × 2^attempt seconds (with jitter, at most the max) between tries.
    max_retries: int = Field(default=10, ge=0)
    retry_base_seconds: float = Field(default=2.0, gt=0)
    retry_max_seconds: float = Field(default=300.0, gt=0)
    # A claimed row older than this belongs to a dead worker and becomes `unknown`.
    stale_claim_seconds: int = Field(default=900, ge=1)
    # How often beat looks for dead workers' rows and for stalled campaigns.
    sweep_seconds: int = Field(default=60, ge=1)
    # What to do with `unknown` rows: wait for the provider's events, or send again.
    unknown_policy: Literal["reconcile", "resend"] = "reconcile"
    # An `unknown` row with no `processed`/`delivered` event this long after its request is
    # taken as not sent: the resend policy (or `mailer campaigns reconcile --resend`) may
    # send it again. Shorter risks a second copy when the provider's events come late.
    unknown_window_seconds: int = Field(default=3600, ge=0)
    # A batch still queued this long after it was handed to the broker has lost its message
    # (a Redis restart without persistence, a crash before the hand-over): the sweep hands
    # it out again. Keep it above the longest wait for rate tokens (batch / send rate).
    lost_batch_seconds: int = Field(default=300, ge=1)

    # SendGrid's Event Webhook verification key (Mail Settings → Signed Event Webhook),
    # and how old a signed request may be before it is taken for a replay.
    sendgrid_webhook_key: str = ""
    webhook_replay_seconds: int = Field(default=600, ge=1)
    # Temporary bounces an address takes before it is suppressed.
    soft_bounce_limit: int = Field(default=3, ge=1)
    # VERP: SMTP mail goes out with the envelope sender bounces+<signed delivery>@this
    # domain, whose mail must reach the bounce mailbox below; empty: the From address.
    bounce_domain: Annotated[str, AfterValidator(_domain)] = ""
    # The bounce mailbox (IMAP): off while the host is empty. "none" (no TLS) only to a
    # loopback host. The password is a secret: set it in the environment.
    bounce_imap_host: str = ""
    bounce_imap_port: int = Field(default=993, ge=1, le=65535)
    bounce_imap_security: Literal["ssl", "starttls", "none"] = "ssl"
    bounce_imap_username: str = ""
    bounce_imap_password: str = ""
    # A CA certificate file (PEM) to trust for the IMAP server's, beside the system's: for
    # a server whose certificate your own CA signed. Empty: the system's CAs only.
    bounce_imap_ca_file: str = ""
    bounce_imap_folder: str = "INBOX"
    # Where read reports go (never deleted), and those that are no bounce or complaint.
    bounce_done_folder: str = "Processed"
    bounce_unparseable_folder: str = "Unparseable"
    # How often beat reads the mailbox.
    bounce_fetch_seconds: int = Field(default=300, ge=10)
    # The reputation brake: a campaign pauses itself when more than this share of its
    # attempted messages bounced hard (once at least the minimum were attempted), or more
    # than this share of its delivered ones drew a complaint (Gmail's limit is 0.3%).
    brake_bounce_rate: float = Field(default=0.05, gt=0, le=1)
    brake_bounce_min_attempted: int = Field(default=500, ge=1)
    brake_complaint_rate: float = Field(default=0.001, gt=0, le=1)
    brake_complaint_min_delivered: int = Field(default=1000, ge=1)
    # Opens the read-only stats pages (/stats/…) to whoever has it; empty: pages off.
    stats_token: str = ""

    # The scheduled send: beat starts the posts scheduled for today at this moment.
    send_weekday: Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"] = "fri"
    send_time: Annotated[str, AfterValidator(_clock_time)] = "09:00"
    send_timezone: Annotated[str, AfterValidator(_timezone)] = "Asia/Shanghai"

    @model_validator(mode="before")
    @classmethod
    def _sources(cls, values: Any) -> Any:
        """``values`` over the ``MAILER_*`` variables over the TOML file (``config_file``).
        A validator, not ``__init__``: mypy's pydantic plugin still checks the names given."""
        given = _by_field(values) if isinstance(values, dict) else values
        return _by_field(_from_file(config_file())) | _from_environment() | given

    @field_validator("secret_keys", "seed_list", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        """A list setting may be written as one comma-separated string (the environment's)."""
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("seed_list")
    @classmethod
    def _seed_addresses(cls, value: list[str]) -> list[str]:
        from subscribers.addresses import normalize  # the one address rule (email-validator)

        seeds = []
        for raw in value:
            try:
                seeds.append(normalize(raw))
            except MailerError as exc:
                raise ValueError(f"{raw!r}: {exc}") from exc
        return seeds

    @field_validator("secret_keys")
    @classmethod
    def _some_secret(cls, value: list[str]) -> list[str]:
        # Caught here, not mid-send when the first link is signed.
        if not value or not all(value):
            raise ValueError("set at least one secret (`mailer secret` prints one)")
        return value

    @field_validator("subscribe_rate_limit")
    @classmethod
    def _rate_limit_syntax(cls, value: str) -> str:
        from limits import parse  # here: `limits` takes a tenth of a second to import

        try:
            parse(value)
        except ValueError as exc:
            raise ValueError("use a rate such as '5/minute' or '20 per hour'") from exc
        return value

    @property
    def sender_domain(self) -> str:
        """The From address's domain (in ASCII), lower-cased."""
        return self.sender_email.rpartition("@")[2].lower()

    def unsafe_local_defaults(self) -> list[str]:
        """Settings still at a local default (or a secret too short) that must not face the
        internet; ``refuse_local_defaults`` says where that is."""
        unsafe = []
        weak = (len(key.encode()) < MIN_SECRET_BYTES for key in self.secret_keys)
        if LOCAL_DEFAULT_SECRET in self.secret_keys or any(weak):
            unsafe.append("MAILER_SECRET_KEYS")
        if is_loopback(urlsplit(self.public_url).hostname or ""):
            unsafe.append("MAILER_PUBLIC_URL")
        return unsafe

    @model_validator(mode="after")
    def _batch_fits_the_rate(self) -> Settings:
        # A batch waits for its tokens inside one task, which a worker kills after 600 s.
        if self.send_rate and self.batch_size / self.send_rate > 300:
            raise ValueError(
                f"a batch of {self.batch_size} at {self.send_rate}/s waits too long: "
                "lower MAILER_BATCH_SIZE or raise MAILER_SEND_RATE"
            )
        return self

    @model_validator(mode="after")
    def _bounce_mailbox_over_tls(self) -> Settings:
        # The password and every report would cross the network in clear text.
        host = self.bounce_imap_host
        if host and self.bounce_imap_security == "none" and not is_loopback(host):
            raise ValueError(
                f"bounce_imap_security is none for {host}: plain IMAP only to a loopback "
                "host; use ssl or starttls"
            )
        if host and not (self.bounce_imap_username and self.bounce_imap_password):
            raise ValueError(
                "bounce_imap_host is set: set bounce_imap_username and bounce_imap_password too"
            )
        return self

    @model_validator(mode="after")
    def _font_needs_family(self) -> Settings:
        if self.font_url and not self.font_family:
            raise ValueError("font_url is set: set font_family to the family it defines too")
        return self


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# What each way of facing the public needs set, not left at its local default.
_SECRET, _URL = "MAILER_SECRET_KEYS", "MAILER_PUBLIC_URL"
_WHY = {
    _SECRET: (
        f"is the published local default or shorter than {MIN_SECRET_BYTES} bytes: set one "
        "from `mailer secret`, or anyone can forge readers' links"
    ),
    _URL: "is a loopback address: set the address readers reach the web app at",
}


def refuse_local_defaults(
    settings: Settings, *, web_app: bool = False, host: str = "", campaign: bool = False
) -> None:
    """The one rule for local defaults in public: a ``ConfigError`` naming each setting still
    at its local default where strangers would meet it.

    The secret signs every reader's link, so anything public needs a real one: mail through
    a real backend, the ``web_app`` at a public URL that is not local, or served on a
    ``host`` beyond loopback. The public URL is where readers' links lead, so it must be
    real once the app is served beyond loopback, or a ``campaign`` goes out through a real
    backend (a confirmation through a local SMTP server to a local app is a test, not a send).
    """
    unsafe = settings.unsafe_local_defaults()
    served = bool(host) and not is_loopback(host)
    real_backend = settings.backend != "outbox"
    public_app = web_app and _URL not in unsafe
    needed = {_SECRET} if served or public_app or real_backend else set()
    if served or (campaign and real_backend):
        needed.add(_URL)
    refused = [name for name in unsafe if name in needed]
    if not refused:
        return
    if served:
        doing = f"serve on {host}"
    elif public_app:
        doing = f"serve {settings.public_url}"
    else:
        doing = f"send through {settings.backend}"
    reasons = "; ".join(f"{name} {_WHY[name]}" for name in refused)
    raise ConfigError(f"refusing to {doing} with local defaults: {reasons}")


@dataclasses.dataclass(frozen=True)
class Publication:
    """What templates may read of the settings (as ``settings``): who publishes, where, in
    which font. An operator's template never sees a secret or a credential."""

    publication_name: str
    site_url: str
    postal_address: str
    font_url: str
    font_family: str
    masthead: bool
    logo_url: str
    accent_color: str

    @classmethod
    def of(cls, settings: Settings) -> Publication:
        return cls(**{f.name: getattr(settings, f.name) for f in dataclasses.fields(cls)})


def _from_environment() -> dict[str, str]:
    """The ``MAILER_*`` variables that name settings, by setting, the case of the name aside."""
    prefix = ENV_PREFIX.lower()
    found = {}
    for name, value in os.environ.items():
        field = name.lower().removeprefix(prefix)
        if name.lower().startswith(prefix) and field in Settings.model_fields:
            found[field] = value
    return found


def _by_field(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` under the names of the settings they set, the case of a key aside (of two
    keys for one setting, the first); the rest as they are, to be refused as unknown."""
    named: dict[str, Any] = {}
    for key, value in values.items():
        if key.lower() in Settings.model_fields:
            named.setdefault(key.lower(), value)
        else:
            named[key] = value
    return named


def _from_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except tomllib.TOMLDecodeError as exc:  # not a ValueError: pydantic lets it through
        raise ConfigError(f"{path}: {exc}") from exc


def config_file() -> Path:
    """The TOML file in use: ``$MAILER_CONFIG`` or ``./mailer.toml``."""
    return Path(os.environ.get(CONFIG_FILE_ENV) or DEFAULT_CONFIG_FILE)


def load_settings(**overrides: Any) -> Settings:
    """Read the settings; a validation failure becomes one ``ConfigError`` naming each field."""
    path = config_file()
    if CONFIG_FILE_ENV in os.environ and not path.is_file():
        raise ConfigError(f"{CONFIG_FILE_ENV}={path}: no such file")
    _warn_unknown_variables()
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError("; ".join(_describe(err, path) for err in exc.errors())) from exc


def _warn_unknown_variables() -> None:
    """A typo in a variable's name would otherwise leave the default in force unnoticed
    (the same typo in mailer.toml is refused)."""
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields} | {CONFIG_FILE_ENV}
    for name in sorted(os.environ):  # read whatever their case, so checked so too
        if name.upper().startswith(ENV_PREFIX) and name.upper() not in known:
            guess = difflib.get_close_matches(name.upper(), known, n=1)
            hint = f": did you mean {guess[0]}?" if guess else ""
            log.warning("%s is not a setting and is ignored%s", name, hint)


def _describe(error: Any, path: Path) -> str:
    if not error["loc"]:  # a rule across several settings
        return str(error["msg"]).removeprefix("Value error, ")
    field = str(error["loc"][0])
    env_name = ENV_PREFIX + field.upper()
    where = env_name if env_name in os.environ else f"{field} in {path}"
    if error["type"] == "extra_forbidden":
        return f"{where}: unknown setting"
    message = error["msg"]
    if field in _CREDENTIALS:  # a URL's password or a key is not echoed to a log
        return f"{where}: {message}"
    return f"{where}: {message} (got {error['input']!r})"


# Settings whose value may hold a password or a key.
_CREDENTIALS = frozenset(
    {
        "database_url",
        "broker_url",
        "secret_keys",
        "sendgrid_api_key",
        "sendgrid_webhook_key",
        "smtp_password",
        "bounce_imap_password",
        "stats_token",
    }
)
