"""A local stand-in for SendGrid's Mail Send API, for tests and benchmarks (loopback only).

It checks every request against the official request schema
(``testkit/data/sendgrid/mail_send.schema.json``) and records every recipient it
accepts. It can be told to answer 429 (with ``Retry-After``) or 500 at random, to
answer slowly, or to hang (``stall``), so the sending pipeline's retries and its
uncertain outcomes can be tested for real.
"""

from __future__ import annotations

import collections
import json
import random
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import fastjsonschema

# SendGrid's official schema (MIT, testkit/data/sendgrid/LICENSE; its source is in its
# "description"), copied so a clone stands alone.
SCHEMA_PATH = Path(__file__).resolve().parent / "data" / "sendgrid" / "mail_send.schema.json"
API_KEY = "SG.test-key-for-the-local-stand-in"


class SendGridStandIn:
    def __init__(
        self,
        *,
        rate_limited: float = 0.0,
        server_errors: float = 0.0,
        retry_after: float = 0.2,
        delay: float = 0.0,
        seed: int | None = None,
    ) -> None:
        self.validate = fastjsonschema.compile(json.loads(SCHEMA_PATH.read_text("utf-8")))
        self.rate_limited = rate_limited
        self.server_errors = server_errors
        self.retry_after = retry_after
        self.delay = delay  # seconds before each answer, like a real API's latency
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.recipients: collections.Counter[str] = collections.Counter()
        self.deliveries: collections.Counter[str] = collections.Counter()
        self.requests: list[dict[str, Any]] = []  # every accepted request body
        self.invalid: list[str] = []  # schema errors of refused requests
        self.answers: collections.Counter[int] = collections.Counter()
        self.keep_bodies = True
        self.stalls = 0  # how many of the next requests hang (see ``stall``)
        self.stall_accepts = False
        self.stalled: list[dict[str, Any]] = []  # the bodies of the hanging requests
        self.released = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def __enter__(self) -> SendGridStandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()

    def stall(self, requests: int, *, accept: bool) -> None:
        """The next ``requests`` requests hang unanswered until the stand-in stops, so their
        clients time out (or die waiting). With ``accept`` each is accepted first, as when
        SendGrid took a request and its answer was lost; without, none of it is sent, as
        when a request never reached SendGrid."""
        with self.lock:
            self.stalls, self.stall_accepts = requests, accept

    def stalled_keys(self) -> list[str]:
        """The delivery keys (``custom_args``) of the requests hanging so far."""
        with self.lock:
            return [
                p["custom_args"]["delivery"]
                for body in self.stalled
                for p in body["personalizations"]
            ]

    def accepted(self) -> int:
        """How many recipients have been accepted so far (safe while requests arrive)."""
        with self.lock:
            return sum(self.recipients.values())

    def answer(self, body: bytes, authorization: str) -> tuple[int, dict[str, str], bytes]:
        """Decide the answer to one request (also used directly by the benchmark)."""
        if authorization != f"Bearer {API_KEY}":
            return self._count(401, {}, _errors("authorization required"))
        try:
            request = json.loads(body)
            self.validate(request)
        except (ValueError, fastjsonschema.JsonSchemaException) as exc:
            with self.lock:
                self.invalid.append(str(exc))
            return self._count(400, {}, _errors(str(exc)))
        roll = self.random.random()
        if roll < self.rate_limited:
            return self._count(
                429, {"Retry-After": str(self.retry_after)}, _errors("too many requests")
            )
        if roll < self.rate_limited + self.server_errors:
            return self._count(500, {}, _errors("internal error"))
        with self.lock:
            for personalization in request["personalizations"]:
                for to in personalization["to"]:
                    self.recipients[to["email"].lower()] += 1
                key = personalization.get("custom_args", {}).get("delivery")
                if key:
                    self.deliveries[key] += 1
            if self.keep_bodies:
                self.requests.append(request)
        return self._count(202, {"X-Message-Id": uuid.uuid4().hex[:22]}, b"")

    def _count(
        self, status: int, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        with self.lock:
            self.answers[status] += 1
        return status, headers, body

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with standin.lock:
                    hang, standin.stalls = standin.stalls > 0, max(standin.stalls - 1, 0)
                if hang:
                    if standin.stall_accepts:
                        standin.answer(body, self.headers.get("Authorization", ""))
                    with standin.lock:
                        standin.stalled.append(json.loads(body))
                    standin.released.wait()
                    self.close_connection = True  # no answer: the client has gone
                    return
                if standin.delay:
                    time.sleep(standin.delay)
                headers: dict[str, str]
                if self.path != "/v3/mail/send":
                    status, headers, payload = 404, {}, _errors("no such endpoint")
                else:
                    status, headers, payload = standin.answer(
                        body, self.headers.get("Authorization", "")
                    )
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:
                """Quiet."""

        return Handler


def copy_headers(request: dict[str, Any]) -> list[dict[str, str]]:
    """The headers each personalization's copy gets, as SendGrid writes them: the request's
    own ``headers``, then the personalization's, which win over them."""
    shared = request.get("headers", {})
    return [shared | p.get("headers", {}) for p in request["personalizations"]]


def _errors(message: str) -> bytes:
    return json.dumps({"errors": [{"message": message, "field": None, "help": None}]}).encode()
