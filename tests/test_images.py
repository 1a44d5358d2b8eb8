"""Images keep their own size: explicit, read from the file, or fetched (once) from the web."""

from __future__ import annotations

import re
import struct
import threading
import zlib
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mailer.config import Settings
from mailer.content.images import ImageSizes
from mailer.content.post import load_post
from mailer.content.render import Renderer


def png(width: int, height: int) -> bytes:
    """A valid, grey PNG of that size."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


@pytest.fixture
def image_server(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    """A loopback web server of images; yields its URL and the paths it was asked for."""
    folder = tmp_path / "web"
    folder.mkdir()
    (folder / "logo.png").write_bytes(png(300, 100))
    (folder / "wide.png").write_bytes(png(2000, 500))
    asked: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            super().do_GET()

        def log_message(self, format: str, *args: object) -> None:
            """Quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", asked
    finally:
        server.shutdown()
        server.server_close()


def widths(renderer: Renderer, write_post, body: str) -> list[str]:
    """The width attribute of each image of the email."""
    edition = renderer.render(load_post(write_post("---\ntitle: T\n---\n" + body)))
    tags = re.findall(r"<img\b[^>]*>", edition.html)
    return [re.search(r'\swidth="(\d+)"', tag)[1] for tag in tags]  # type: ignore[index]


def test_explicit_and_local_sizes_and_never_upscaled(write_post, renderer, tmp_path) -> None:
    (tmp_path / "qr.png").write_bytes(png(600, 600))
    (tmp_path / "small.png").write_bytes(png(120, 40))
    (tmp_path / "photo.png").write_bytes(png(1600, 900))
    body = (
        "![QR](qr.png){width=240}\n\n![Small](small.png)\n\n![Small](small.png){width=400}\n\n"
        "![Photo](photo.png)\n"
    )
    # 240 as asked; 120 its own (not the column's 544); 400 asked of a 120 px image: 120;
    # a photo wider than the column: the column's width.
    assert widths(renderer, write_post, body) == ["240", "120", "120", "544"]


def test_only_width_and_height_may_be_set_on_an_image(write_post, renderer) -> None:
    edition = renderer.render(
        load_post(
            write_post('# T\n\nSee ![x](https://cdn.example/x.png){width=30 onerror="a()"}\n')
        )
    )
    assert 'width="30"' in edition.html and "onerror" not in edition.html


def test_a_remote_image_is_measured_once_then_from_the_cache(
    write_post, settings: Settings, image_server, tmp_path
) -> None:
    url, asked = image_server
    body = f"![Logo]({url}/logo.png)\n\n![Wide]({url}/wide.png)\n\n![Gone]({url}/missing.png)\n"
    cache = tmp_path / "sizes.json"
    renderer = Renderer(settings, ImageSizes(cache, fetch=True))
    assert widths(renderer, write_post, body) == ["300", "544", "544"]
    assert sorted(asked) == ["/logo.png", "/missing.png", "/wide.png"]
    # A new renderer (the next send) reads the cache: only the unknown image is asked again.
    assert widths(Renderer(settings, ImageSizes(cache, fetch=True)), write_post, body) == [
        "300",
        "544",
        "544",
    ]
    assert sorted(asked) == ["/logo.png", "/missing.png", "/missing.png", "/wide.png"]


def test_nothing_is_fetched_but_http_and_https(write_post, settings, tmp_path) -> None:
    sizes = ImageSizes(tmp_path / "sizes.json", fetch=True)
    secret = tmp_path / "secret.png"
    secret.write_bytes(png(50, 50))
    assert sizes.size("", secret.as_uri(), tmp_path, deadline=float("inf")) is None
    assert not (tmp_path / "sizes.json").exists()


def test_only_a_renderer_asked_to_fetch_goes_to_the_web(
    write_post, settings: Settings, image_server
) -> None:
    url, asked = image_server
    body = f"![Logo]({url}/logo.png)\n"
    assert widths(Renderer(settings), write_post, body) == ["544"] and asked == []
    assert widths(Renderer(settings, fetch_images=True), write_post, body) == ["300"]
    # What preview measured serves every later render, which still asks nothing.
    assert widths(Renderer(settings), write_post, body) == ["300"] and asked == ["/logo.png"]
