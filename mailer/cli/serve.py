"""``mailer serve``: the web app readers touch (subscribe, confirm, unsubscribe)."""

from __future__ import annotations

import click
import uvicorn

from mailer.cli import Context, console
from mailer.config import refuse_local_defaults
from mailer.web import create_app


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True)
@click.pass_obj
def serve(ctx: Context, host: str, port: int) -> None:
    """Serve the web app with uvicorn.

    The pages readers use: subscribe, confirm, unsubscribe, the archive.

    \b
    Examples:
      mailer serve                          # http://127.0.0.1:8000/
      mailer serve --host 0.0.0.0 --port 8080  # behind your proxy
    """
    settings = ctx.settings
    refuse_local_defaults(settings, web_app=True, host=host)
    app = create_app(ctx)
    console.print(f"Serving {settings.publication_name} on http://{host}:{port}/ (Ctrl-C stops)")
    uvicorn.run(
        app,
        host=host,
        port=port,
        # X-Forwarded-For only from the proxies the operator named: from anyone else it
        # would let a client pick its own address (and so its own rate limit).
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=settings.trusted_proxies,
        log_level="info",
        log_config=None,  # uvicorn's records go through MAILER_LOG_FORMAT's handler (mailer.logs)
    )
