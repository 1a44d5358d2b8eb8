"""Images at their own size: a QR code or a logo is not stretched to the column's width.

MJML draws an image as wide as the column unless told a width. The width is the one the
post gives (``![QR](qr.png){width=240}``), else the image's own: read from the file next
to the post, or from the first bytes of a remote image (fetched once, with a timeout and
a cap on what is read, then kept in an on-disk cache). Never wider than the image itself:
upscaling blurs it. Only ``fetch=True`` goes to the web: preview and campaign creation ask
for it; tests, the web app's requests and any other render read the cache alone.
"""

from __future__ import annotations

import functools
import io
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from mailer.content.markdown import Block

if TYPE_CHECKING:
    import urllib.request

__all__ = ["ImageSizes"]

# Enough for the header of every common format (a JPEG's size can follow its EXIF block).
MAX_BYTES = 256 * 1024
TIMEOUT = 3.0  # seconds per image
DEADLINE = 10.0  # seconds of fetching per render, whatever the number of images


@functools.cache
def _opener() -> urllib.request.OpenerDirector:
    """The opener of every fetch, made at the first: a post without images never loads
    urllib.request (see ``_measure``)."""
    import urllib.request

    class WebOnlyRedirects(urllib.request.HTTPRedirectHandler):
        """Follow a redirect only to http(s): not to ftp:, which urllib would."""

        def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
            if urlsplit(newurl).scheme not in ("http", "https"):
                return None
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    return urllib.request.build_opener(WebOnlyRedirects())


class ImageSizes:
    """Sizes of images, known from disk, a cache file or the web."""

    def __init__(self, cache_file: Path | None, *, fetch: bool = False) -> None:
        self.cache_file = cache_file
        self.fetch = fetch
        self._cache: dict[str, tuple[int, int]] | None = None

    def fit(self, blocks: list[Block], folder: Path, column: int) -> None:
        """Give each image block the width to draw it at (None: the column's)."""
        deadline = time.monotonic() + DEADLINE
        for block in blocks:
            if block.kind != "image":
                continue
            own = self.size(block.source, block.src, folder, deadline)
            width = block.width
            if own is not None:
                width = min(width or own[0], own[0])
            block.width = width if width and width < column else None

    def size(self, source: str, url: str, folder: Path, deadline: float) -> tuple[int, int] | None:
        """(width, height) of the image written ``source`` in the post, at ``url``."""
        parts = urlsplit(source)
        if not parts.scheme and not parts.netloc and not parts.path.startswith("/"):
            path = folder / unquote(parts.path)
            if path.is_file():
                return _measure(path)
        if urlsplit(url).scheme not in ("http", "https"):
            return None
        cache = self._load()
        if url not in cache and self.fetch and time.monotonic() < deadline:
            found = self._fetch(url, min(TIMEOUT, deadline - time.monotonic()))
            if found is not None:
                cache[url] = found
                self._save()
        return cache.get(url)

    def _fetch(self, url: str, timeout: float) -> tuple[int, int] | None:
        import urllib.request

        request = urllib.request.Request(
            url, headers={"Range": f"bytes=0-{MAX_BYTES - 1}", "User-Agent": "mailer"}
        )
        try:
            with _opener().open(request, timeout=timeout) as response:
                head = response.read(MAX_BYTES)
        except (OSError, ValueError):
            return None  # unreachable, refused, too slow: the image keeps the column's width
        return _measure(io.BytesIO(head))

    def _load(self) -> dict[str, tuple[int, int]]:
        if self._cache is None:
            self._cache = {}
            if self.cache_file is not None and self.cache_file.is_file():
                try:
                    stored = json.loads(self.cache_file.read_text("utf-8"))
                    self._cache = {str(k): (int(v[0]), int(v[1])) for k, v in stored.items()}
                except (ValueError, TypeError, IndexError, AttributeError):
                    pass  # a damaged cache is only a cache: measure again
        return self._cache

    def _save(self) -> None:
        if self.cache_file is None or self._cache is None:
            return
        try:
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.cache_file.with_suffix(".tmp")
            temporary.write_text(json.dumps(self._cache), "utf-8")
            temporary.replace(self.cache_file)
        except OSError:
            pass  # a read-only data folder: sizes are fetched again next time


def _measure(image: Path | io.BytesIO) -> tuple[int, int] | None:
    # Imported here: imagesize loads urllib.request, http.client, ssl, email and ElementTree
    # (about 12 ms), which `mailer preview` of a post without images need not pay.
    import imagesize

    try:
        width, height = imagesize.get(image)
    except (OSError, ValueError):
        return None
    return (width, height) if width > 0 and height > 0 else None
