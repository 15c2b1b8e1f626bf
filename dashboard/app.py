"""The dashboard: the Dash app, what gunicorn serves, and thin callbacks.

Production (the ``dashboard`` Ansible role)::

    BDF_CONFIG=/etc/bigdataflow/dashboard.toml gunicorn --bind 0.0.0.0:8050 dashboard.app:server

``app`` and ``server`` are built on first access (PEP 562), not at import: the
configuration is read then, a bad one ends the worker with one clear log line, and
MongoDB is only contacted by the first refresh, so a MongoDB that is down never stops
the page from being served.

The callbacks are thin: ``refresh`` (on the interval: read MongoDB into the page's
store, say what went wrong if anything), ``update_filters`` (the dropdowns' choices) and
``render`` (on the store or a filter: figures and numbers from ``layout.render_page``, a
plain function). A page opened while its worker holds a recent reading gets the data in
its layout, without waiting for a callback.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from pathlib import Path
from typing import Any

import click
from dash import Dash, Input, Output, State, no_update

from bdf.config import ConfigError, Settings, load_settings
from bdf.logs import setup_logging
from dashboard import ids, layout
from dashboard.data import AggregateSource
from jobs.cli_options import config_option, verbose_option

log = logging.getLogger(__name__)

TITLE = "BigDataFlow · user profiles"
RENDERED = [
    *(Output(graph, "figure") for graph in ids.GRAPHS),
    Output(ids.KPI_USERS, "children"),
    Output(ids.KPI_AVERAGE_AGE, "children"),
    Output(ids.KPI_NATIONALITIES, "children"),
    Output(ids.KPI_DOMAINS, "children"),
    Output(ids.LAST_UPDATE, "children"),
    Output(ids.DATA_NOTE, "children"),
]


def _same_data(snapshot: dict[str, Any], previous: dict[str, Any] | None) -> bool:
    return previous is not None and {**snapshot, "read_at": None} == {**previous, "read_at": None}


def create_app(settings: Settings, source: AggregateSource | None = None) -> Dash:
    """The Dash app for these settings (``source`` replaces MongoDB in tests)."""
    settings.require("mongodb")
    assert settings.mongodb is not None
    options = settings.dashboard
    if source is None:
        source = AggregateSource(
            settings.mongodb,
            timeout_seconds=options.mongodb_timeout_seconds,
            top_domains=options.top_email_domains,
            reuse_seconds=options.refresh_seconds / 2,
        )
    app = Dash(__name__, title=TITLE, update_title=None, serve_locally=True, eager_loading=True)
    topojson_url = app.get_asset_url(ids.TOPOJSON_ASSET_DIR)

    def serve_layout() -> Any:
        # A page opened while this worker holds a recent reading shows it at once, without a
        # callback round trip; otherwise it shows placeholders until the first refresh.
        reading = source.latest(max_age=options.refresh_seconds)
        return layout.build(options.refresh_seconds, topojson_url, reading, dt.datetime.now(dt.UTC).date())

    app.layout = serve_layout

    @app.callback(
        Output(ids.SNAPSHOT, "data"),
        Output(ids.BANNER, "children"),
        Output(ids.BANNER, "className"),
        Output(ids.LAST_READ, "children"),
        Input(ids.INTERVAL, "n_intervals"),
        State(ids.SNAPSHOT, "data"),
    )
    def refresh(_tick: int | None, previous: dict[str, Any] | None) -> tuple[Any, str, str, str]:
        reading = source.read()
        snapshot = reading.snapshot or previous
        text, css = layout.status_banner(reading.problem, snapshot, options.refresh_seconds)
        read_at = layout.format_moment(snapshot["read_at"]) if snapshot else ids.NO_VALUE
        if reading.snapshot is None or _same_data(reading.snapshot, previous):
            return no_update, text, css, read_at  # charts keep their state (zoom, hover)
        return reading.snapshot, text, css, read_at

    @app.callback(
        Output(ids.NATIONALITY_FILTER, "options"),
        Output(ids.GENDER_FILTER, "options"),
        Input(ids.SNAPSHOT, "data"),
        prevent_initial_call=True,
    )
    def update_filters(snapshot: dict[str, Any] | None) -> tuple[Any, Any]:
        # Dash may call this at start-up with an empty store (prevent_initial_call does not
        # hold when the store's writer runs at start-up): nothing to offer yet.
        if snapshot is None:
            return no_update, no_update
        return layout.filter_options(snapshot)

    @app.callback(
        *RENDERED,
        Input(ids.SNAPSHOT, "data"),
        Input(ids.NATIONALITY_FILTER, "value"),
        Input(ids.GENDER_FILTER, "value"),
        prevent_initial_call=True,
    )
    def render(snapshot: dict[str, Any] | None, nationalities: list[str] | None, genders: list[str] | None):
        if snapshot is None:
            return [no_update] * len(RENDERED)
        return layout.render_page(snapshot, nationalities, genders, dt.datetime.now(dt.UTC).date())

    _warm_up(app)
    return app


def _warm_up(app: Dash) -> None:
    """Serve the page once in-process, before any browser does.

    Dash prepares itself (registers the JavaScript it may serve) on its first request, and
    a second request that arrives meanwhile on another thread is refused ("not a registered
    library"): with gunicorn's threads, a browser's parallel script requests did exactly
    that. Preparing here makes a worker whole before it accepts a connection. MongoDB is
    not contacted: the page's data comes later, through the refresh callback.
    """
    response = app.server.test_client().get(app.config.requests_pathname_prefix)
    if response.status_code != 200:
        raise RuntimeError(f"the dashboard's page answered {response.status_code} in-process")


@functools.cache
def _configured_app() -> Dash:
    setup_logging()
    try:
        settings = load_settings()
        app = create_app(settings)
    except ConfigError as error:
        log.error("cannot start the dashboard", extra={"fields": {"error": str(error)}})
        raise SystemExit(3) from None  # gunicorn: "Worker failed to boot", no traceback
    log.info(
        "dashboard ready",
        extra={
            "fields": {"config": str(settings.source), "refresh_seconds": settings.dashboard.refresh_seconds}
        },
    )
    return app


def __getattr__(name: str) -> Any:
    """``dashboard.app:app`` and ``dashboard.app:server``, configured from ``$BDF_CONFIG``."""
    if name == "app":
        return _configured_app()
    if name == "server":
        return _configured_app().server
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@click.command()
@config_option
@verbose_option
@click.option("--host", help="Address to listen on [default: [dashboard] host].")
@click.option("--port", type=int, help="Port [default: [dashboard] port].")
def main(config_path: Path | None, verbose: bool, host: str | None, port: int | None) -> None:
    """Serve the dashboard with Flask's development server (production: gunicorn dashboard.app:server)."""
    setup_logging(verbose)
    try:
        settings = load_settings(config_path)
        app = create_app(settings)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    app.run(host=host or settings.dashboard.host, port=port or settings.dashboard.port, debug=False)


if __name__ == "__main__":
    main()
