"""``mailer preview``: write what readers will get, and optionally serve it with live reload.

The preview is personalised like a real send, with the archive link and a
placeholder unsubscribe link, so every link in it can be clicked.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

from mailer.config import Settings
from mailer.content.last_issue import last_sent_preheader
from mailer.content.lint import lint
from mailer.content.post import load_post
from mailer.content.render import Renderer
from mailer.content.templating import Templates
from mailer.edition import Edition, Finding
from mailer.errors import MailerError

if TYPE_CHECKING:
    import watchfiles

__all__ = ["Preview", "build_preview", "serve_preview", "write_preview"]

# Polls the server and reloads when the preview changes; only in served pages.
_RELOAD_SCRIPT = """<script>
(function () {
  var seen = null;
  setInterval(function () {
    fetch("/__version").then(function (r) { return r.text(); }).then(function (v) {
      if (seen !== null && v !== seen) { location.reload(); }
      seen = v;
    }).catch(function () {});
  }, 500);
})();
</script>"""


@dataclass(frozen=True)
class Preview:
    edition: Edition
    html: str
    text: str
    findings: list[Finding]


def build_preview(post_path: Path, settings: Settings, renderer: Renderer | None = None) -> Preview:
    """Load, render, personalise and lint one post."""
    post = load_post(post_path)
    # Preview is where remote images are measured (once, then cached for the send).
    edition = (renderer or Renderer(settings, fetch_images=True)).render(post)
    html, text = edition.personalize(
        unsubscribe_url=f"{settings.public_url}/unsubscribe/preview",
        view_url=f"{settings.public_url}/archive/{edition.slug}",
    )
    previous = last_sent_preheader(settings, edition.slug)  # None without a store
    return Preview(edition, html, text, lint(edition, settings, post, previous))


def write_preview(preview: Preview, out_dir: Path) -> tuple[Path, Path]:
    """Write ``<slug>.html`` and ``<slug>.txt`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    html_path = out_dir / f"{preview.edition.slug}.html"
    text_path = out_dir / f"{preview.edition.slug}.txt"
    html_path.write_text(preview.html, "utf-8")
    text_path.write_text(preview.text, "utf-8")
    return html_path, text_path


class _LivePage:
    """The page being served; re-rendered whenever the post or a template changes."""

    def __init__(self, post_path: Path, settings: Settings) -> None:
        self.post_path = post_path
        self.settings = settings
        self.version = 0
        self.body = b""
        self.refresh()

    def refresh(self) -> str | None:
        """Render again; on a bad edit, serve the error instead and return it."""
        error = None
        try:
            # A new Renderer re-reads the theme and templates, which may have changed too.
            html = build_preview(self.post_path, self.settings).html
        except MailerError as exc:
            error = str(exc)
            html = f"<!doctype html><meta charset=utf-8><pre>{escape(error)}</pre></body>"
        self.body = html.replace("</body>", _RELOAD_SCRIPT + "</body>", 1).encode("utf-8")
        self.version += 1  # after the body: a reload never fetches the old page
        return error


def serve_preview(
    post_path: Path,
    settings: Settings,
    host: str,
    port: int,
    on_change: Callable[[str | None], None] | None = None,
) -> None:
    """Serve the preview at http://host:port/ until interrupted, re-rendering on changes."""
    # Imported here: `mailer preview` without --serve needs neither.
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import watchfiles

    live = _LivePage(post_path, settings)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/__version":
                body, kind = str(live.version).encode(), "text/plain"
            elif self.path in ("/", "/index.html"):
                body, kind = live.body, "text/html; charset=utf-8"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the terminal shows re-renders, not every poll."""

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    post_file = post_path.resolve()
    template_dirs = Templates(settings.templates_dir).search_path
    # Watch the post's folder, not the file: editors save by replacing the file.
    folders = [post_file.parent, *template_dirs]

    def relevant(_change: watchfiles.Change, path: str) -> bool:
        changed = Path(path)
        return changed == post_file or any(changed.is_relative_to(d) for d in template_dirs)

    try:
        for _changes in watchfiles.watch(*folders, watch_filter=relevant, debounce=200):
            error = live.refresh()
            if on_change is not None:
                on_change(error)
    finally:
        server.shutdown()
