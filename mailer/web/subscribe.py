"""Subscribe (HTML form and JSON API), confirm and unsubscribe (each a page, then a button).

Every subscribe request that passes the guards gets the same answer, whatever the
address's state, so the form cannot be used to learn who is on the list; and it gets
it before the store is touched, so the time it takes tells nothing either.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from mailer.errors import InvalidAddress, TokenError, TokenExpired, UnsafeHeaderValue
from mailer.headers import check_header_text
from mailer.web.guards import (
    CSRF_COOKIE,
    MAX_BODY,
    AfterResponse,
    LimitUnavailable,
    RateLimiter,
    client_ip,
    csrf_ok,
    new_csrf_token,
    read_body,
)
from mailer.web.pages import Pages
from subscribers.addresses import MAX_LENGTH, normalize
from subscribers.models import Status
from subscribers.optin import OptIn
from subscribers.store import Consent

__all__ = ["router"]

router = APIRouter()
MAX_NAME = 200
# The fields a JSON body may hold a wrong type in, and the message that says so.
_FIELD_ERRORS = {"email": "invalid_email", "name": "name_invalid", "consent": "consent_required"}


class _BadRequest(Exception):
    def __init__(
        self, status: int, key: str, field: str = "", headers: dict[str, str] | None = None
    ) -> None:
        self.status = status
        self.key = key  # the message, in the page's strings
        self.field = field  # the form field at fault, if one is
        self.headers = headers or {}  # of the answer (a 503's Retry-After)


def _pages(request: Request) -> Pages:
    return request.app.state.pages


def _optin(request: Request) -> OptIn:
    return request.app.state.optin


def _form_page(
    request: Request, status: int = 200, error: str = "", field: str = "", **values: str
) -> HTMLResponse:
    """The form; after an error, with what the visitor typed and the faulty ``field`` marked."""
    token = request.cookies.get(CSRF_COOKIE) or new_csrf_token()
    response = _pages(request).render(
        "subscribe",
        status,
        csrf=token,
        error=error,
        field=field,
        email=values.get("email", ""),
        name=values.get("name", ""),
    )
    secure = request.app.state.settings.public_url.startswith("https:")
    response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="strict", secure=secure)
    return response


@router.get("/subscribe", response_class=HTMLResponse)
def subscribe_form(request: Request) -> HTMLResponse:
    return _form_page(request)


@router.post("/subscribe")
async def subscribe(request: Request) -> Response:
    is_json = request.headers.get("content-type", "").startswith("application/json")
    await _pages(request).ask_lang()  # the pages' language may wait for the database
    strings = _pages(request).strings
    data: dict[str, Any] = {}
    try:
        data = await _read(request, is_json)
        if not is_json and not csrf_ok(request, str(data.get("csrf", ""))):
            raise _BadRequest(403, "form_expired")
        if data.get("website"):  # the honeypot: people do not see it, bots fill it in
            return _accepted(request, is_json, str(data.get("email", "")))
        if not await _allowed(request):
            raise _BadRequest(429, "too_many")
        email = str(data.get("email", "")).strip()
        try:
            normalize(email)
        except InvalidAddress as exc:
            raise _BadRequest(400, "invalid_email", "email") from exc
        name = _name(str(data.get("name", "")))
        if data.get("consent") not in (True, "yes", "on"):
            raise _BadRequest(400, "consent_required", "consent")
        consent = Consent(
            source="api" if is_json else "web form",
            text=strings["consent_text"],
            ip=client_ip(request),
            user_agent=request.headers.get("user-agent", ""),
        )
        response = _accepted(request, is_json, email)
        # The store and the confirmation email after the answer: a new address (an INSERT
        # and a commit) and a known one take the same time to answer.
        after: AfterResponse = request.app.state.after_response
        response.background = after.task(_optin(request).subscribe, email, consent, name)
        return response
    except _BadRequest as bad:
        answer: Response
        if is_json:  # a field the client got wrong is 422, as FastAPI's own validation says
            status = 422 if bad.field else bad.status
            answer = JSONResponse({"error": bad.key, "message": strings[bad.key]}, status)
        else:
            typed = {key: str(data.get(key, ""))[:MAX_LENGTH] for key in ("email", "name")}
            answer = _form_page(request, bad.status, strings[bad.key], bad.field, **typed)
        answer.headers.update(bad.headers)
        return answer


async def _allowed(request: Request) -> bool:
    """Whether the client's address has a sign-up left; 503 while the count cannot be kept
    (its Redis failed), so that a flood is never let through."""
    limit: RateLimiter = request.app.state.subscribe_limit
    try:
        return await limit.allowed(client_ip(request))
    except LimitUnavailable as exc:
        raise _BadRequest(503, "busy", headers=exc.headers) from exc


def _name(typed: str) -> str:
    """The name without surrounding spaces; refused if it could not go into the To header of
    the confirmation email as it is (an encoded word, a control character, too long)."""
    name = typed.strip(" ")
    try:
        return check_header_text(name, "name", MAX_NAME)
    except UnsafeHeaderValue as exc:
        key = "name_too_long" if len(name) > MAX_NAME else "name_invalid"
        raise _BadRequest(400, key, "name") from exc


async def _read(request: Request, is_json: bool) -> dict[str, Any]:
    """The request's fields, from a urlencoded form or a flat JSON object, within MAX_BODY."""
    body = await read_body(request)
    if body is None:
        raise _BadRequest(413, "too_large")
    if not is_json:
        try:
            return {key: values[0] for key, values in parse_qs(body.decode("utf-8")).items()}
        except UnicodeDecodeError as exc:  # an old browser's form, a non-UTF-8 address in it
            raise _BadRequest(400, "invalid_email") from exc
    try:
        data = json.loads(body or b"{}")
    except (ValueError, RecursionError) as exc:  # not JSON, or nested past the parser's depth
        raise _BadRequest(400, "invalid_request") from exc
    if not isinstance(data, dict):
        raise _BadRequest(400, "invalid_request")
    for key, value in data.items():  # text and true/false only: nothing nested
        if not isinstance(value, str | bool):
            field = key if key in _FIELD_ERRORS else ""
            raise _BadRequest(400, _FIELD_ERRORS.get(key, "invalid_request"), field)
    return data


def _accepted(request: Request, is_json: bool, email: str) -> Response:
    message = _pages(request).strings["check_inbox"].replace("{email}", email)
    if is_json:
        return JSONResponse({"status": "check_inbox", "message": message}, 202)
    pages = _pages(request)
    return pages.message(pages.strings["check_inbox_title"], message)


@router.get("/confirm/{token}", response_class=HTMLResponse)
def confirm_page(request: Request, token: str) -> HTMLResponse:
    """Ask first: mail scanners fetch every link, and a GET must not confirm."""
    pages = _pages(request)
    try:
        subscriber = _optin(request).subscriber_to_confirm(token)
    except TokenError as exc:
        return _bad_link(pages, exc)
    if subscriber.status == Status.CONFIRMED:
        return pages.message(pages.strings["confirmed_title"], pages.strings["confirmed"])
    return pages.render("confirm", email=subscriber.email)


@router.post("/confirm/{token}", response_class=HTMLResponse)
def confirm(request: Request, token: str) -> HTMLResponse:
    """The page's button; no cookie or CSRF token, as the link's token is the secret."""
    pages = _pages(request)
    try:
        _optin(request).confirm(token)
    except TokenError as exc:
        return _bad_link(pages, exc)
    return pages.message(pages.strings["confirmed_title"], pages.strings["confirmed"])


@router.get("/unsubscribe/{token}", response_class=HTMLResponse)
def unsubscribe_page(request: Request, token: str) -> HTMLResponse:
    """Ask first: mail scanners fetch every link, and a GET must not unsubscribe."""
    pages = _pages(request)
    try:
        subscriber = _optin(request).subscriber_for_unsubscribe(token)
    except TokenError as exc:
        return _bad_link(pages, exc)
    return pages.render("unsubscribe", email=subscriber.email)


@router.post("/unsubscribe/{token}")
async def unsubscribe(request: Request, token: str) -> Response:
    """The page's button, and RFC 8058 one-click: 200 at once, no redirect, no cookie."""
    body = ""
    async for chunk in request.stream():
        body += chunk.decode("utf-8", "replace")
        if len(body) > MAX_BODY:
            break
    # RFC 8058 senders post List-Unsubscribe=One-Click as a urlencoded or multipart form.
    one_click = "List-Unsubscribe" in body and "One-Click" in body
    optin, pages = _optin(request), _pages(request)
    await pages.ask_lang()
    try:
        how = "one-click" if one_click else "web page"
        subscriber = await run_in_threadpool(optin.unsubscribe, token, how)
    except TokenError as exc:
        if one_click:
            return PlainTextResponse(str(exc), 400)
        return _bad_link(pages, exc)
    if one_click:
        return PlainTextResponse("unsubscribed")
    text = pages.strings["unsubscribed"].replace("{email}", subscriber.email)
    return pages.message(pages.strings["unsubscribed_title"], text)


def _bad_link(pages: Pages, error: TokenError) -> HTMLResponse:
    text = pages.strings["link_expired" if isinstance(error, TokenExpired) else "link_invalid"]
    return pages.message(pages.strings["link_invalid_title"], text, 400)
