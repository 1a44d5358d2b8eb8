"""`mailer preview` as an author runs it: a real process, its output and its exit status."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import SAMPLE_POST
from tests.test_smtp import free_port


def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    clean_env["COLUMNS"] = "200"
    return subprocess.run(
        [sys.executable, "-m", "mailer", *args],
        cwd=cwd,
        env={**clean_env, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_preview_writes_html_and_text_and_prints_a_summary(tmp_path: Path) -> None:
    result = run("preview", str(SAMPLE_POST), "--out", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    html = (tmp_path / "out" / "2026-02-06-ai-weekly.html").read_text("utf-8")
    text = (tmp_path / "out" / "2026-02-06-ai-weekly.txt").read_text("utf-8")
    assert html.startswith("<!doctype html>") and "2026年2月第一周AI与科技动态周报" in text
    out = result.stdout
    assert "Subject    2026年2月第一周AI与科技动态周报" in out
    assert "Preheader  本周AI领域依然精彩纷呈" in out
    assert "Language   zh-CN" in out
    assert "of Gmail's 102 KB clip limit" in out
    assert "Links      12" in out and "Images     0" in out
    assert "warning [no-postal-address]" in out


def test_preview_uses_the_configured_folder(tmp_path: Path) -> None:
    result = run("preview", str(SAMPLE_POST), cwd=tmp_path, env={"MAILER_PREVIEW_DIR": "p"})
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "p" / "2026-02-06-ai-weekly.html").is_file()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("---\ntitle: x\ntags: [a\n---\nBody\n", "post.md:3: malformed YAML front matter"),
        (b"---\ntitle: x\n---\n\xff\xfe\n", "post.md:4: not UTF-8 text"),
        ("---\ntitle: x\n---\n", "post.md: the post has no body"),
        ("Only text.\n", "post.md: the post has no title"),
    ],
)
def test_bad_post_is_one_line_on_stderr_and_exit_2(tmp_path: Path, content, message) -> None:
    post = tmp_path / "post.md"
    if isinstance(content, bytes):
        post.write_bytes(content)
    else:
        post.write_text(content, "utf-8")
    result = run("preview", "post.md", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert not (tmp_path / "preview").exists()


def test_bad_setting_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = run("preview", str(SAMPLE_POST), cwd=tmp_path, env={"MAILER_SITE_URL": "nope"})
    assert result.returncode == 2
    assert result.stderr.startswith("error: MAILER_SITE_URL: ")
    assert result.stderr.count("\n") == 1


def test_strict_fails_on_lint_errors_only(tmp_path: Path) -> None:
    (tmp_path / "post.md").write_text("# T\n\n![](https://cdn.example/x.png)\n", "utf-8")
    assert run("preview", "post.md", cwd=tmp_path).returncode == 0
    strict = run("preview", "post.md", "--strict", cwd=tmp_path)
    assert strict.returncode == 1
    assert "error [missing-alt]" in strict.stdout
    shutil.copy(SAMPLE_POST, tmp_path / "sample.md")
    assert run("preview", "sample.md", "--strict", cwd=tmp_path).returncode == 0  # warnings only


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode("utf-8")


def _wait_for(predicate, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_serve_reloads_when_the_post_changes(tmp_path: Path) -> None:
    post = tmp_path / "post.md"
    post.write_text("# First title\n\nHello.\n", "utf-8")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    server = subprocess.Popen(
        [sys.executable, "-m", "mailer", "preview", "post.md", "--serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for(lambda: "First title" in _get(base + "/"))
        page = _get(base + "/")
        assert 'fetch("/__version")' in page  # the reload script is only in the served page
        assert "__version" not in (tmp_path / "preview" / "post.html").read_text("utf-8")
        version = _get(base + "/__version")
        post.write_text("# Second title\n\nHello again.\n", "utf-8")
        _wait_for(lambda: _get(base + "/__version") != version)
        assert "Second title" in _get(base + "/")
        post.write_text("---\ntitle: [broken\n---\nBody\n", "utf-8")
        _wait_for(lambda: "malformed YAML" in _get(base + "/"))
    finally:
        server.terminate()
        out, _ = server.communicate(timeout=10)
    assert "re-rendered post.md" in out
    assert "error: " in out and "malformed YAML" in out
