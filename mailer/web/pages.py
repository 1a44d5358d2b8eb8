"""HTML pages from ``templates/pages``, in the publication's language."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from mailer.config import Publication, Settings
from mailer.content.spacing import fill
from mailer.content.templating import Templates
from mailer.store.publication_lang import DEFAULT_LANG, PublicationLang

__all__ = ["Pages", "not_found"]


class Pages:
    """Renders a page in the language ``lang()`` gives now (default: ``MAILER_LANG``, or
    English), its strings with the publication's name filled in. The pages' links to each
    other start with ``base``, the path of MAILER_PUBLIC_URL ("" at a host's root): behind
    a proxy that serves the app under a path (``https://example.org/newsletter``, the
    prefix taken off), a link to ``/subscribe`` would leave the app for the host's own."""

    def __init__(
        self, templates: Templates, settings: Settings, lang: Callable[[], str] | None = None
    ) -> None:
        self.templates = templates
        self.publication = Publication.of(settings)
        self.base = urlsplit(settings.public_url).path  # no trailing slash: config strips it
        self.lang = lang or (lambda: settings.lang or DEFAULT_LANG)
        self._strings: dict[str, dict[str, str]] = {}

    @property
    def strings(self) -> dict[str, str]:
        """The strings of the language the pages are in now."""
        return self.strings_for(self.lang())

    def strings_for(self, lang: str) -> dict[str, str]:
        if lang not in self._strings:
            name = self.publication.publication_name
            self._strings[lang] = {
                key: fill(value, publication=name)  # spaced from CJK text around it
                for key, value in self.templates.strings(lang).items()
            }
        return self._strings[lang]

    def render(self, name: str, status_code: int = 200, /, **context: Any) -> HTMLResponse:
        lang = self.lang()
        html = self.templates.render(
            f"pages/{name}.html",
            lang=lang,
            strings=self.strings_for(lang),
            settings=self.publication,
            base=self.base,
            **context,
        )
        response = HTMLResponse(html, status_code=status_code)
        response.headers["Cache-Control"] = "no-store"  # the security headers: SecurityHeaders
        return response

    def message(self, title: str, text: str, status_code: int = 200) -> HTMLResponse:
        return self.render("message", status_code, title=title, text=text)

    async def ask_lang(self) -> None:
        """Ask the language in a thread when that waits for the database (a stale
        ``PublicationLang``): a page then built on the event loop reads what it cached,
        and the loop's other requests do not wait for the query."""
        if isinstance(self.lang, PublicationLang) and self.lang.stale:
            await run_in_threadpool(self.lang)

    def not_found(self) -> HTMLResponse:
        """The one "not found" page (404), in the language of the pages now."""
        strings = self.strings
        return self.message(strings["not_found_title"], strings["not_found"], 404)

    def busy(self, headers: dict[str, str]) -> HTMLResponse:
        """The "try again in a few minutes" page (503): what a limited page answers while the
        limits' Redis is away (``guards.LimitUnavailable``, whose ``headers`` it carries)."""
        strings = self.strings
        response = self.message(strings["busy_title"], strings["busy"], 503)
        response.headers.update(headers)
        return response


async def not_found(request: Request, exc: Exception) -> Response:
    """An unknown address: a page a person can read for a browser (it asks for text/html),
    FastAPI's JSON for everyone else (an API client, a probe)."""
    assert isinstance(exc, HTTPException)
    if exc.status_code != 404 or "text/html" not in request.headers.get("accept", ""):
        return await http_exception_handler(request, exc)
    pages: Pages = request.app.state.pages
    await pages.ask_lang()
    return pages.not_found()
