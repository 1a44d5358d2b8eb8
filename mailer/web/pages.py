"""HTML pages from ``templates/pages``, in the publication's language."""

from __future__ import annotations

from typing import Any

from fastapi.responses import HTMLResponse

from mailer.config import Publication, Settings
from mailer.content.templating import Templates

__all__ = ["Pages"]


class Pages:
    def __init__(self, templates: Templates, settings: Settings) -> None:
        self.templates = templates
        self.publication = Publication.of(settings)
        self.lang = settings.lang or "en"
        self.strings = {
            key: value.replace("{publication}", settings.publication_name)
            for key, value in templates.strings(self.lang).items()
        }

    def render(self, name: str, status_code: int = 200, /, **context: Any) -> HTMLResponse:
        html = self.templates.render(
            f"pages/{name}.html",
            lang=self.lang,
            strings=self.strings,
            settings=self.publication,
            **context,
        )
        response = HTMLResponse(html, status_code=status_code)
        response.headers["Cache-Control"] = "no-store"  # the security headers: SecurityHeaders
        return response

    def message(self, title: str, text: str, status_code: int = 200) -> HTMLResponse:
        return self.render("message", status_code, title=title, text=text)
