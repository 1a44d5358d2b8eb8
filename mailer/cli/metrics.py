"""``mailer metrics serve``: a machine's Celery workers for Prometheus, where no web app runs.

The workers write their counters to ``MAILER_METRICS_DIR``; this serves what is there,
added up, as the web app's ``/metrics`` does on its own machine. Queue depth and
campaigns by state are the web app's to serve: they are the same from every machine.
"""

from __future__ import annotations

import click
from prometheus_client import start_http_server

from mailer.cli import Context, console
from mailer.cli.terminal import shown
from mailer.errors import ConfigError
from mailer.metrics import registry


@click.group()
def metrics() -> None:
    """Prometheus metrics without the web app.

    \b
    Example:
      mailer metrics serve --port 9464
    """


@metrics.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (no authentication: a private network only).",
)
@click.option("--port", default=9464, show_default=True)
@click.pass_obj
def serve(ctx: Context, host: str, port: int) -> None:
    """Serve the counters in MAILER_METRICS_DIR at http://HOST:PORT/metrics.

    \b
    Example:
      MAILER_METRICS_DIR=/run/mailer-metrics mailer metrics serve --port 9464
    """
    folder = ctx.settings.metrics_dir
    if folder is None:
        raise ConfigError(
            "MAILER_METRICS_DIR is not set: set it to one folder for the workers and this command"
        )
    server, thread = start_http_server(port, host, registry(folder))
    console.print(
        f"Serving the metrics in {shown(folder)} on http://{host}:{port}/metrics (Ctrl-C stops)"
    )
    try:
        thread.join()
    except KeyboardInterrupt:
        server.shutdown()
