"""All settings in one place: ``MAILER_*`` environment variables over an optional ``mailer.toml``.

Every default works on a fresh machine with nothing set up (SQLite file, no broker,
an outbox folder, localhost URLs). Those local defaults are marked ``LOCAL_DEFAULT``
so that the parts that face the internet can refuse them. A wrong value is reported
by the name the operator wrote it under, never as a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from limits import parse
from pydantic import (
    AfterValidator,
    EmailStr,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from mailer.errors import ConfigError

__all__ = ["LOCAL_DEFAULT_SECRET", "LOCAL_DEFAULT_URL", "Settings", "load_settings"]

ENV_PREFIX = "MAILER_"
CONFIG_FILE_ENV = "MAILER_CONFIG"
DEFAULT_CONFIG_FILE = Path("mailer.toml")
LOCAL_DEFAULT_URL = "http://127.0.0.1:8000"
# For a laptop only: anyone can read it here, so anyone could forge links signed with it.
LOCAL_DEFAULT_SECRET = "local-default-secret-do-not-use-in-production"


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    return value.rstrip("/")


HttpUrl = Annotated[str, AfterValidator(_http_url)]


class Settings(BaseSettings):
    """The service's settings; field names are the lower-case ``MAILER_*`` names."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    # Where the posts live on the web: relative links in a post resolve against it.
    site_url: HttpUrl = LOCAL_DEFAULT_URL
    # A post's own page, under site_url, when its front matter has no canonical URL.
    post_path: str = "posts/{slug}/"
    # The address of this service's web app (unsubscribe, archive, tracking links).
    public_url: HttpUrl = LOCAL_DEFAULT_URL

    publication_name: str = "The Weekly"
    sender_name: str = "The Weekly"
    sender_email: EmailStr = "newsletter@example.com"
    # Required by anti-spam law in most places; the linter warns while it is empty.
    postal_address: str = ""
    # Language of posts that do not say; empty means detect it from the text.
    lang: str = ""
    # A web-font stylesheet (e.g. Google Fonts) and the family it defines; off by default
    # so that opening the email does not tell a font host about the reader.
    font_url: str = ""
    font_family: str = ""

    posts_dir: Path = Path("posts")
    # The operator's own templates, searched before the built-in ones.
    templates_dir: Path | None = None
    preview_dir: Path = Path("preview")

    # Secrets that sign the links in email, newest first (older ones still verify).
    secret_keys: Annotated[list[str], NoDecode] = [LOCAL_DEFAULT_SECRET]
    # Off: a subscriber is confirmed at once, without the confirmation email.
    double_opt_in: bool = True
    confirm_link_days: int = Field(default=7, ge=1)
    resend_confirmation_minutes: int = Field(default=10, ge=0)
    # Per client IP, in the syntax of the `limits` package ("5/minute", "20 per hour").
    subscribe_rate_limit: str = "5/minute"

    database_url: str = "sqlite:///mailer.db"
    # Empty: tasks run inline in the calling process (the embedded default).
    broker_url: str = ""
    backend: Literal["outbox", "sendgrid", "smtp"] = "outbox"
    outbox_dir: Path = Path("outbox")

    @field_validator("secret_keys", mode="before")
    @classmethod
    def _split_secrets(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("subscribe_rate_limit")
    @classmethod
    def _rate_limit_syntax(cls, value: str) -> str:
        try:
            parse(value)
        except ValueError as exc:
            raise ValueError("use a rate such as '5/minute' or '20 per hour'") from exc
        return value

    def unsafe_local_defaults(self) -> list[str]:
        """Settings still at a local default that must not face the internet."""
        unsafe = []
        if LOCAL_DEFAULT_SECRET in self.secret_keys:
            unsafe.append("MAILER_SECRET_KEYS")
        if urlsplit(self.public_url).hostname in ("127.0.0.1", "localhost", "::1"):
            unsafe.append("MAILER_PUBLIC_URL")
        return unsafe

    @model_validator(mode="after")
    def _font_needs_family(self) -> Settings:
        if self.font_url and not self.font_family:
            raise ValueError("font_url is set: set font_family to the family it defines too")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=config_file())
        return init_settings, env_settings, toml


def config_file() -> Path:
    """The TOML file in use: ``$MAILER_CONFIG`` or ``./mailer.toml``."""
    return Path(os.environ.get(CONFIG_FILE_ENV) or DEFAULT_CONFIG_FILE)


def load_settings(**overrides: Any) -> Settings:
    """Read the settings; a validation failure becomes one ``ConfigError`` naming each field."""
    path = config_file()
    if CONFIG_FILE_ENV in os.environ and not path.is_file():
        raise ConfigError(f"{CONFIG_FILE_ENV}={path}: no such file")
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError("; ".join(_describe(err, path) for err in exc.errors())) from exc
    except ValueError as exc:  # a TOML syntax error
        raise ConfigError(f"{path}: {exc}") from exc


def _describe(error: Any, path: Path) -> str:
    if not error["loc"]:  # a rule across several settings
        return str(error["msg"]).removeprefix("Value error, ")
    field = str(error["loc"][0])
    env_name = ENV_PREFIX + field.upper()
    where = env_name if env_name in os.environ else f"{field} in {path}"
    if error["type"] == "extra_forbidden":
        return f"{where}: unknown setting"
    return f"{where}: {error['msg']} (got {error['input']!r})"
