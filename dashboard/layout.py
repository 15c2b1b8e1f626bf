"""What the page shows: its structure, its figures and numbers from a snapshot, its status texts.

Pure functions: data in, components and figures out (the app's callbacks call them).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from dash import dcc, html

from dashboard import figures, ids
from dashboard.data import EMAIL_DOMAINS, Problem, Reading, is_empty, select

WAITING = "Waiting for the first reading…"
PLACEHOLDER_TITLES = {
    ids.GRAPH_NATIONALITY: "Users by nationality",
    ids.GRAPH_MAP: "Users by country",
    ids.GRAPH_AGE_BANDS: "Age bands",
    ids.GRAPH_GENDER: "Gender split",
    ids.GRAPH_DOMAINS: "Top email domains",
    ids.GRAPH_REGISTRATIONS: "Profiles registered per month",
}


def format_moment(iso: str | None) -> str:
    """``2026-05-01T12:00:00+00:00`` -> ``2026-05-01 12:00:00 UTC``; an en dash when unknown."""
    if not iso:
        return ids.NO_VALUE
    return dt.datetime.fromisoformat(iso).astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def status_banner(
    problem: Problem | None, snapshot: Mapping[str, Any] | None, refresh_seconds: int
) -> tuple[str, str]:
    """The banner's text and CSS class: a problem, an empty database, or nothing (hidden)."""
    if problem is not None:
        text = problem.message
        if snapshot:
            text += f" Showing the data read at {format_moment(snapshot.get('read_at'))}."
        return f"{text} Retrying every {refresh_seconds} s.", "banner banner-error"
    if is_empty(snapshot):
        return (
            "No aggregates in MongoDB yet: the stream job writes them after its first "
            f"micro-batch. This page checks again every {refresh_seconds} s.",
            "banner banner-info",
        )
    return "", "banner hidden"


def data_note(snapshot: Mapping[str, Any]) -> str:
    """What the page did with aggregate documents it could not take as they are (or "")."""
    unrecognised = sum(snapshot.get("unrecognised", {}).values())
    ignored = sum(snapshot.get("ignored", {}).values())
    parts = []
    if unrecognised:
        parts.append(f"{unrecognised:,} unrecognised aggregate keys counted as “{ids.OTHER}”")
    if ignored:
        parts.append(f"{ignored:,} documents with unreadable counts left out")
    if snapshot.get("truncated"):
        parts.append("not every document read of " + ", ".join(snapshot["truncated"]))
    return " · " + "; ".join(parts) if parts else ""


def render_page(
    snapshot: dict[str, Any], nationalities: list[str] | None, genders: list[str] | None, today: dt.date
) -> list[Any]:
    """Everything the app's ``render`` outputs: figures in ``ids.GRAPHS`` order, the four
    numbers, the time of the last update, the note on documents not taken as they are."""
    selection = select(snapshot, nationalities, genders, today)
    note = figures.NOT_FILTERED if selection.filtered else None
    domains_complete = EMAIL_DOMAINS not in snapshot.get("truncated", ())
    return [
        figures.nationality_bar(selection.by_nationality, selection.age_by_nationality),
        figures.nationality_map(selection.by_nationality, selection.age_by_nationality),
        figures.age_band_bar(snapshot["age_bands"], note),
        figures.gender_split(selection.by_gender),
        figures.email_domain_bar(
            snapshot["email_domains"],
            snapshot["email_domain_count"],
            note,
            snapshot.get("unrecognised", {}).get(EMAIL_DOMAINS, 0),
            domains_complete,
        ),
        figures.registrations_over_time(
            snapshot["registrations"], note, snapshot.get("registrations_other", 0)
        ),
        figures.format_count(selection.users),
        figures.format_age(selection.average_age),
        figures.format_count(len(set(selection.by_nationality) - {ids.OTHER})),
        figures.format_count(snapshot["email_domain_count"], domains_complete),
        format_moment(snapshot["updated_at"]),
        data_note(snapshot),
    ]


def filter_options(snapshot: dict[str, Any]) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Nationalities and genders that are in the aggregates, for the two dropdowns (not
    ``OTHER``: the filters choose among real values)."""
    nationalities = sorted((set(snapshot["nationality"]) | set(snapshot["nationality_gender"])) - {ids.OTHER})
    genders = sorted(set(snapshot["gender"]) - {ids.OTHER})
    return (
        [{"label": f"{figures.country_name(code)} ({code})", "value": code} for code in nationalities],
        [{"label": gender, "value": gender} for gender in genders],
    )


def _kpi(label: str, component_id: str, value: str) -> html.Div:
    return html.Div(
        className="kpi",
        children=[
            html.Div(value, id=component_id, className="kpi-value"),
            html.Div(label, className="kpi-label"),
        ],
    )


def _graph(component_id: str, figure: figures.Figure, topojson_url: str) -> html.Div:
    return html.Div(
        className="card",
        children=dcc.Graph(
            id=component_id,
            figure=figure,
            config={"displaylogo": False, "topojsonURL": topojson_url, "responsive": True},
        ),
    )


def build(
    refresh_seconds: int, topojson_url: str, reading: Reading | None = None, today: dt.date | None = None
) -> html.Div:
    """The page; with a ``reading``, already showing its data (or its problem)."""
    snapshot = reading.snapshot if reading else None
    if snapshot:
        outputs = render_page(snapshot, None, None, today or dt.datetime.now(dt.UTC).date())
        graphs = dict(zip(ids.GRAPHS, outputs[:6], strict=True))
        users, age, nationalities, domains, last_update, note = outputs[6:]
        nationality_options, gender_options = filter_options(snapshot)
    else:
        graphs = {graph: figures.empty(PLACEHOLDER_TITLES[graph], WAITING) for graph in ids.GRAPHS}
        users = age = nationalities = domains = last_update = ids.NO_VALUE
        note = ""
        nationality_options, gender_options = [], []
    banner_text, banner_class = (
        status_banner(reading.problem, snapshot, refresh_seconds) if reading else ("", "banner hidden")
    )
    return html.Div(
        className="page",
        children=[
            html.Header(
                className="header",
                children=[
                    html.H1("BigDataFlow · user profiles"),
                    html.Div(
                        className="meta",
                        children=[
                            "Aggregates last updated ",
                            html.Span(last_update, id=ids.LAST_UPDATE),
                            " · read ",
                            html.Span(
                                format_moment(snapshot["read_at"]) if snapshot else ids.NO_VALUE,
                                id=ids.LAST_READ,
                            ),
                            html.Span(note, id=ids.DATA_NOTE),
                        ],
                    ),
                ],
            ),
            html.Div(banner_text, id=ids.BANNER, className=banner_class, role="status"),
            html.Section(
                className="filters",
                children=[
                    html.Div(
                        className="filter",
                        children=[
                            html.Label("Nationality", htmlFor=ids.NATIONALITY_FILTER),
                            dcc.Dropdown(
                                id=ids.NATIONALITY_FILTER,
                                multi=True,
                                options=nationality_options,
                                placeholder="All nationalities",
                            ),
                        ],
                    ),
                    html.Div(
                        className="filter",
                        children=[
                            html.Label("Gender", htmlFor=ids.GENDER_FILTER),
                            dcc.Dropdown(
                                id=ids.GENDER_FILTER,
                                multi=True,
                                options=gender_options,
                                placeholder="All genders",
                            ),
                        ],
                    ),
                ],
            ),
            html.Section(
                className="kpis",
                children=[
                    _kpi("users", ids.KPI_USERS, users),
                    _kpi("average age (years)", ids.KPI_AVERAGE_AGE, age),
                    _kpi("nationalities", ids.KPI_NATIONALITIES, nationalities),
                    _kpi("email domains", ids.KPI_DOMAINS, domains),
                ],
            ),
            html.Section(
                className="grid",
                children=[_graph(graph, graphs[graph], topojson_url) for graph in ids.GRAPHS],
            ),
            html.Footer(
                className="footer",
                children=(
                    "Anonymous aggregates from MongoDB only: counts per nationality, gender, email "
                    "domain, birth month and registration month; no record about a person is read. "
                    f"Refreshes every {refresh_seconds} s."
                ),
            ),
            dcc.Interval(id=ids.INTERVAL, interval=refresh_seconds * 1000),
            dcc.Store(id=ids.SNAPSHOT, data=snapshot, storage_type="memory"),
        ],
    )
