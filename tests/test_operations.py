"""Running it as a service: the version, /healthz, beat's state file, the Procfile under
honcho (a real send through it), and the compose file and Dockerfile (read, not run)."""

from __future__ import annotations

import importlib.metadata
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis
import yaml
from click.testing import CliRunner

from mailer.cli import main
from mailer.config import Settings
from testkit.processes import ROOT, child_env
from testkit.redis_db import redis_url
from tests.conftest import SAMPLE_POST
from tests.live_server import serve
from tests.test_smtp import free_port

PROCFILE = ROOT / "Procfile"
COMPOSE = ROOT / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
# Start-up of web, a worker and beat (imports, two pool processes, the broker): generous,
# as it is only waited out when something is broken.
START_SECONDS = 60.0


def _procfile() -> dict[str, str]:
    lines = PROCFILE.read_text().splitlines()
    entries = (line.split(":", 1) for line in lines if line.strip() and not line.startswith("#"))
    return {name.strip(): command.strip().removeprefix("exec ") for name, command in entries}


# --- mailer --version ------------------------------------------------------------------------


def test_version_prints_the_installed_package_version(monkeypatch: pytest.MonkeyPatch) -> None:
    # A broken setting does not stop it: --version answers before the settings are read.
    monkeypatch.setenv("MAILER_BATCH_SIZE", "many")
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output == f"mailer {importlib.metadata.version('mailer')}\n"


# --- /healthz ------------------------------------------------------------------------------


def test_healthz_names_the_broker_when_it_is_down(
    settings: Settings, database_url: str, tmp_path: Path
) -> None:
    broker = f"redis://127.0.0.1:{free_port()}/0"
    with serve(settings, database_url, tmp_path, broker_url=broker) as server:
        response = httpx.get(f"{server.url}/healthz", timeout=10)
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "error"
    assert body["database"] == "ok"
    assert body["broker"].startswith("cannot reach the broker")
    assert broker in body["broker"]


def test_healthz_is_ok_with_the_database_and_a_live_broker(
    settings: Settings, database_url: str, tmp_path: Path
) -> None:
    with serve(settings, database_url, tmp_path, broker_url=redis_url()) as server:
        response = httpx.get(f"{server.url}/healthz", timeout=10)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_healthz_names_the_database_when_it_is_down(settings: Settings, tmp_path: Path) -> None:
    database = tmp_path / "mailer.db"
    url = f"sqlite:///{database}"
    # A migrated database at start-up, then replaced by a folder: every query fails.
    subprocess.run(
        [sys.executable, "-m", "mailer", "db", "upgrade"],
        env={**child_env(settings), "MAILER_DATABASE_URL": url},
        check=True,
        capture_output=True,
    )
    with serve(settings, url, tmp_path) as server:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{database}{suffix}").unlink(missing_ok=True)
        database.mkdir()
        server.app.state.sessions.kw["bind"].dispose()  # no pooled connection to the old file
        response = httpx.get(f"{server.url}/healthz", timeout=10)
        database.rmdir()
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "error" and body["database"] != "ok" and "broker" not in body


# --- beat's state file -----------------------------------------------------------------------


def _in_worker(code: str, cwd: Path, **env: str) -> str:
    """What ``code`` prints run beside ``import worker`` in a process of its own, with these
    variables: worker.py reads the settings at import, and this test run has its own copy."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    result = subprocess.run(
        [sys.executable, "-c", f"import worker\n{code}"],
        cwd=cwd,
        env={**clean, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_beat_keeps_its_schedule_file_in_the_data_folder(tmp_path: Path) -> None:
    filename = "print(worker.app.conf.beat_schedule_filename)"
    assert _in_worker(filename, tmp_path) == str(Path("data") / "celerybeat-schedule")
    data = tmp_path / "state" / "beat"
    assert _in_worker(filename, tmp_path, MAILER_DATA_DIR=str(data)) == str(
        data / "celerybeat-schedule"
    )
    # Beat's scheduler makes the folder when it opens the file, and writes there only.
    _in_worker(
        "worker.DataDirScheduler(app=worker.app, "
        "schedule_filename=worker.app.conf.beat_schedule_filename, lazy=False).close()",
        tmp_path,
        MAILER_DATA_DIR=str(data),
    )
    assert [p.name for p in data.iterdir()] and all(
        p.name.startswith("celerybeat-schedule") for p in data.iterdir()
    )
    assert not list(tmp_path.glob("celerybeat-schedule*"))  # nothing in the current folder


def test_workers_send_task_events_without_being_told(tmp_path: Path) -> None:
    events = "print(worker.app.conf.worker_send_task_events, worker.app.conf.task_send_sent_event)"
    assert _in_worker(events, tmp_path) == "True True"


# --- the Procfile, run by honcho -------------------------------------------------------------


def _descendants(pid: int) -> set[int]:
    """Every process below ``pid``, from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait(what: str, ready, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(
                f"{what}: not in {START_SECONDS}s; honcho said:\n{log.read_text()}"
            )
        time.sleep(0.2)


def test_honcho_runs_the_procfile_and_a_send_goes_through(
    settings: Settings, broker: redis.Redis, tmp_path: Path
) -> None:
    port = free_port()
    outbox = tmp_path / "outbox"
    env = child_env(settings)
    env.update(
        MAILER_DATABASE_URL=f"sqlite:///{tmp_path / 'mailer.db'}",
        MAILER_BROKER_URL=redis_url(),
        MAILER_OUTBOX_DIR=str(outbox),
        MAILER_DATA_DIR=str(tmp_path / "data"),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    )

    def mailer(*args: str) -> None:
        subprocess.run(["mailer", *args], env=env, cwd=tmp_path, check=True, capture_output=True)

    mailer("db", "upgrade")
    mailer("subscribers", "add", "reader@example.org", "--consent-source", "test")
    log = tmp_path / "honcho.log"
    with log.open("wb") as out:
        honcho = subprocess.Popen(
            [Path(sys.executable).parent / "honcho", "-f", PROCFILE, "-d", tmp_path,
             "start", "--port", str(port)],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        _wait("/healthz", lambda: _healthy(f"http://127.0.0.1:{port}/healthz"), honcho, log)
        _wait("the worker", lambda: b"ready." in log.read_bytes(), honcho, log)
        processes = _descendants(honcho.pid)
        mailer("send", str(SAMPLE_POST))
        _wait("the mail", lambda: list(outbox.glob("*.eml")), honcho, log)
        assert (tmp_path / "data").is_dir() and not list(tmp_path.glob("celerybeat-schedule*"))
        honcho.send_signal(signal.SIGTERM)
        assert honcho.wait(timeout=30) == 143, log.read_text()  # honcho's answer to SIGTERM
    finally:
        if honcho.poll() is None:
            os.killpg(honcho.pid, signal.SIGKILL)
            honcho.wait()
    output = log.read_text()
    # Each stopped on its own within honcho's 5 s (else it sends SIGKILL), and none is left.
    assert "sending SIGKILL" not in output, output
    for name in ("worker", "beat"):
        assert f"{name}.1 stopped (rc=0)" in output, output
    # uvicorn ends by raising the SIGTERM it caught again, once its shutdown is complete.
    assert re.search(r"web\.1 stopped \(rc=(0|-15)\)", output), output
    assert "Finished server process" in output and "Warm shutdown" in output, output
    assert not [pid for pid in processes if _alive(pid)], output
    [message] = [path.read_text() for path in outbox.glob("*.eml")]
    assert "reader@example.org" in message


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


# --- compose.yaml and the Dockerfile ---------------------------------------------------------


def test_compose_runs_the_procfile_commands_on_postgres_and_redis() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert {"postgres", "redis", "web", "worker", "beat"} <= set(services)
    built = {name for name, service in services.items() if "build" in service}
    assert {"web", "worker", "beat"} <= built
    for name in built:
        assert services[name]["build"] == {"context": ".", "dockerfile": "Dockerfile"}
    procfile = _procfile()
    for name in ("web", "worker", "beat"):
        service = services[name]
        assert {"postgres", "redis"} <= set(service["depends_on"]), name
        env = service["environment"]
        assert env["MAILER_DATABASE_URL"].startswith("postgresql://")
        assert "@postgres:5432/" in env["MAILER_DATABASE_URL"]
        assert env["MAILER_BROKER_URL"].startswith("redis://redis:6379/")
        assert f"data:{env['MAILER_DATA_DIR']}" in service["volumes"]
    assert services["worker"]["command"] == shlex.split(procfile["worker"])
    assert services["beat"]["command"] == shlex.split(procfile["beat"])
    # The web app: serve, as in the Procfile, on every interface of its container.
    assert services["web"]["command"][:2] == shlex.split(procfile["web"])[:2] == ["mailer", "serve"]
    assert "data" in compose["volumes"]


def test_compose_commits_no_secret() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if any(word in key for word in ("SECRET", "PASSWORD", "KEY", "TOKEN")):
                assert str(value).startswith(f"${{{key}:?"), f"{name}: {key} is written in"
        url = (service.get("environment") or {}).get("MAILER_DATABASE_URL", "")
        if url:
            assert ":${POSTGRES_PASSWORD:?" in url, f"{name}: a database password is written in"
    assert "MAILER_SECRET_KEYS" in compose["services"]["web"]["environment"]


def test_dockerfile_is_slim_and_runs_as_a_user_of_its_own() -> None:
    lines = [line.split() for line in DOCKERFILE.read_text().splitlines() if line.strip()]
    instructions = [words for words in lines if not words[0].startswith("#")]
    assert instructions[0] == ["FROM", "python:3.11-slim"]
    users = [words[1] for words in instructions if words[0] == "USER"]
    assert users and users[-1] not in ("root", "0")
    # Only the project's own files: no fetching of anything but its Python dependencies.
    text = DOCKERFILE.read_text()
    assert "curl" not in text and "wget" not in text and "apt-get" not in text
    assert "pip install" in text
    assert all(words[1] not in (".", "./") for words in instructions if words[0] == "COPY")
