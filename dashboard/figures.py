"""Figure builders: pure functions from aggregate numbers to plotly figures.

No I/O and no Dash here: each builder takes plain mappings/lists (what ``dashboard.data``
computes) and returns a plotly figure as a plain dict (``{"data": [...], "layout": {...}}``),
which ``dcc.Graph`` draws as is. Dicts, not ``go.Figure``: building and validating six
``go.Figure`` objects took about 30 ms each, on every refresh and filter change; the unit
tests validate every builder's output with ``go.Figure`` instead.
"""

from __future__ import annotations

import html
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from dashboard import ids
from dashboard.ids import ACCENT, GENDER_COLOURS, GENDER_ORDER, NATIONALITIES, OTHER

Figure = dict[str, Any]

NOT_FILTERED = "all users: this aggregate is not broken down by nationality or gender"
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"
GRID = "#e8edf3"
DOMAIN_LABEL_CHARS = 18  # on the axis; the hover has the whole domain
DOMAIN_CHARS = 253  # the longest domain name: distinct domains stay distinct bars
LABEL_CHARS = 64  # the longest any other label a figure draws
# Unicode categories never drawn: controls, format characters (bidirectional overrides,
# zero widths), surrogates, private use, unassigned, line and paragraph separators.
_UNDRAWN = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
# plotly's "Tealgrn" sequential scale, spelled out: plotly.js knows only a few scales by name.
TEALGRN = [
    [0.0, "rgb(176, 242, 188)"],
    [1 / 6, "rgb(137, 232, 172)"],
    [2 / 6, "rgb(103, 219, 165)"],
    [3 / 6, "rgb(76, 200, 163)"],
    [4 / 6, "rgb(56, 178, 163)"],
    [5 / 6, "rgb(44, 152, 160)"],
    [1.0, "rgb(37, 125, 152)"],
]


def _axis(**settings: Any) -> dict[str, Any]:
    # Fixed margins, no automargin: automargin (and uniformtext) make plotly measure and lay
    # out a chart several times; without them the six charts draw in about half the time.
    return {"gridcolor": GRID, "zerolinecolor": GRID, "linecolor": GRID, "automargin": False, **settings}


def label(text: object, limit: int = LABEL_CHARS) -> str:
    """Text as a figure may draw it: at most ``limit`` characters (an ellipsis ends a
    shortened one), no control characters, and no markup: plotly reads ``<b>``, ``<a>`` and
    entities in labels, titles and hovers, so ``<``, ``>`` and ``&`` are escaped."""
    text = "".join("\ufffd" if unicodedata.category(ch) in _UNDRAWN else ch for ch in str(text)[: limit + 1])
    if len(text) > limit:
        text = text[: limit - 1] + "\u2026"
    return html.escape(text, quote=False)


def _notes(*notes: str | None) -> str | None:
    return " · ".join(note for note in notes if note) or None


def _layout(title: str, note: str | None = None, **settings: Any) -> dict[str, Any]:
    text = title if not note else f"{title}<br><sup>{note}</sup>"
    return {
        "title": {"text": text, "x": 0.01, "xanchor": "left", "font": {"size": 15}},
        "font": {"family": FONT, "size": 12, "color": "#2a3f5f"},
        "paper_bgcolor": "white",
        "plot_bgcolor": "white",
        "margin": {"l": 64, "r": 16, "t": 64 if note else 48, "b": 48},
        "height": 340,
        "showlegend": False,
        "separators": ".,",  # 1,234.5 everywhere
        "hoverlabel": {"bgcolor": "white"},
        "uirevision": title,  # zoom and pan survive a refresh
        **settings,
    }


def _headroom(values: Iterable[int], factor: float = 1.12) -> list[float]:
    """An axis range from 0 with room for the value labels drawn outside the bars."""
    return [0, max([*values, 1]) * factor]


def empty(title: str, message: str) -> Figure:
    """A figure that says there is nothing to draw (no axes, no error)."""
    return {
        "data": [],
        "layout": _layout(
            title,
            xaxis={"visible": False},
            yaxis={"visible": False},
            annotations=[
                {
                    "text": message,
                    "showarrow": False,
                    "x": 0.5,
                    "y": 0.5,
                    "xref": "paper",
                    "yref": "paper",
                    "font": {"size": 14},
                }
            ],
        ),
    }


def country_name(code: str) -> str:
    if code == OTHER:
        return "unrecognised nationalities"
    return NATIONALITIES.get(code, (None, code))[1]


def _age_text(age: float | None) -> str:
    return "n/a" if age is None else f"{age:.1f} years"


def nationality_bar(
    by_nationality: Mapping[str, int],
    age_by_nationality: Mapping[str, float | None],
    note: str | None = None,
) -> Figure:
    """Users per nationality, largest first (``OTHER`` last); hover adds the country and its
    average age."""
    title = "Users by nationality"
    if not by_nationality:
        return empty(title, "No users in this selection")
    codes = sorted(by_nationality, key=lambda code: (code == OTHER, -by_nationality[code], code))
    counts = [by_nationality[code] for code in codes]
    bar = {
        "type": "bar",
        "x": [label(code) for code in codes],
        "y": counts,
        "texttemplate": "%{y:.3~s}",  # 62.6k: 21 exact labels do not fit; the hover is exact
        "textposition": "outside",
        "textangle": -90,
        "constraintext": "none",
        "textfont": {"size": 10},
        "cliponaxis": False,
        "marker": {"color": ACCENT},
        "customdata": [
            [label(country_name(code)), _age_text(age_by_nationality.get(code))] for code in codes
        ],
        "hovertemplate": "%{customdata[0]} (%{x})<br>%{y:,} users<br>average age %{customdata[1]}"
        "<extra></extra>",
    }
    layout = _layout(
        title,
        note,
        xaxis=_axis(type="category"),
        yaxis=_axis(title={"text": "users"}, range=_headroom(counts, 1.2)),
    )
    return {"data": [bar], "layout": layout}


def nationality_map(
    by_nationality: Mapping[str, int], age_by_nationality: Mapping[str, float | None]
) -> Figure:
    """A world choropleth of users per country (nationality codes mapped to ISO-3)."""
    title = "Users by country"
    codes = sorted(code for code in by_nationality if code in NATIONALITIES)
    if not codes:
        return empty(title, "No users in this selection")
    choropleth = {
        "type": "choropleth",
        "locations": [NATIONALITIES[code][0] for code in codes],
        "locationmode": "ISO-3",
        "z": [by_nationality[code] for code in codes],
        "colorscale": TEALGRN,
        "marker": {"line": {"color": "white", "width": 0.5}},
        "colorbar": {"title": {"text": "users"}, "thickness": 12},
        "customdata": [
            [label(country_name(code)), _age_text(age_by_nationality.get(code))] for code in codes
        ],
        "hovertemplate": "%{customdata[0]}<br>%{z:,} users<br>average age %{customdata[1]}<extra></extra>",
    }
    geo = {
        "projection": {"type": "natural earth"},
        "showframe": False,
        "showcoastlines": False,
        "showcountries": True,
        "countrycolor": "#d0d0d0",
        "showland": True,
        "landcolor": "#f2f2f2",
        "lataxis": {"range": [-58, 85]},
    }
    layout = _layout(title, geo=geo)
    layout["margin"] = {"l": 0, "r": 0, "t": 48, "b": 0}
    return {"data": [choropleth], "layout": layout}


def age_band_bar(bands: Mapping[str, int], note: str | None = None) -> Figure:
    """Users per age band (ages as of today, from birth months), in band order."""
    title = "Age bands"
    if not any(bands.values()):
        return empty(title, "No birth dates counted yet")
    labels = list(bands)
    counts = [bands[label] for label in labels]
    bar = {
        "type": "bar",
        "x": labels,
        "y": counts,
        "text": [f"{n:,}" for n in counts],
        "textposition": "outside",
        "cliponaxis": False,
        "marker": {"color": ACCENT},
        "hovertemplate": "aged %{x}<br>%{y:,} users<extra></extra>",
    }
    layout = _layout(
        title,
        note,
        xaxis=_axis(type="category", title={"text": "age (years)"}),
        yaxis=_axis(title={"text": "users"}, range=_headroom(counts)),
    )
    layout["margin"]["b"] = 56
    return {"data": [bar], "layout": layout}


def gender_split(by_gender: Mapping[str, int]) -> Figure:
    """A donut of users per gender (female, male, unknown, then anything else)."""
    title = "Gender split"
    if not any(by_gender.values()):
        return empty(title, "No users in this selection")
    order = {gender: i for i, gender in enumerate(GENDER_ORDER)}
    genders = sorted(by_gender, key=lambda g: (order.get(g, len(order)), g))
    pie = {
        "type": "pie",
        "labels": [label(g) for g in genders],
        "values": [by_gender[g] for g in genders],
        "hole": 0.55,
        "sort": False,
        "direction": "clockwise",
        "marker": {"colors": [GENDER_COLOURS.get(g, "#607d8b") for g in genders]},
        "texttemplate": "%{label}<br>%{value:,}",
        "insidetextorientation": "horizontal",
        "hovertemplate": "%{label}: %{value:,} users (%{percent})<extra></extra>",
    }
    return {"data": [pie], "layout": _layout(title)}


def email_domain_bar(
    domains: Sequence[Sequence[str | int]],
    domain_count: int,
    note: str | None = None,
    unrecognised: int = 0,
    complete: bool = True,
) -> Figure:
    """The most common email domains, largest on top; the title says how many there are
    ("+" when not all were read) and how many keys were not recognised as a domain."""
    junk = f"{unrecognised:,} unrecognised keys not counted" if unrecognised else None
    if not domains:
        return empty("Top email domains", _notes("No email domains counted yet", junk) or "")
    title = f"Top {len(domains)} email domains (of {format_count(domain_count, complete)})"
    rows = list(reversed([(str(d), int(n)) for d, n in domains]))  # horizontal bars draw bottom-up
    counts = [n for _, n in rows]
    bar = {
        "type": "bar",
        "orientation": "h",
        "x": counts,
        "y": [label(d, DOMAIN_CHARS) for d, _ in rows],
        "text": [f"{n:,}" for n in counts],
        "textposition": "outside",
        "cliponaxis": False,
        "marker": {"color": ACCENT},
        "hovertemplate": "%{y}<br>%{x:,} users<extra></extra>",
    }
    layout = _layout(
        title,
        _notes(note, junk),
        xaxis=_axis(title={"text": "users"}, range=_headroom(counts, 1.2)),
        # Long names are shortened on the axis only (the hover has them whole).
        yaxis=_axis(
            type="category",
            tickvals=[label(d, DOMAIN_CHARS) for d, _ in rows],
            ticktext=[label(d, DOMAIN_LABEL_CHARS) for d, _ in rows],
        ),
    )
    layout["margin"].update(l=8 + 7 * DOMAIN_LABEL_CHARS, b=56)
    return {"data": [bar], "layout": layout}


def registrations_over_time(
    months: Sequence[Sequence[str | int]], note: str | None = None, unrecognised_users: int = 0
) -> Figure:
    """Profiles by month of registration on randomuser.me (``YYYY-MM``); profiles under a
    key that is not such a month cannot be placed on the time axis: the title counts them."""
    title = "Profiles registered per month"
    junk = f"{unrecognised_users:,} under unrecognised months, not drawn" if unrecognised_users else None
    if not months:
        return empty(title, _notes("No registration dates counted yet", junk) or "")
    line = {
        "type": "scatter",
        "mode": "lines",
        "x": [str(month) for month, _ in months],
        "y": [int(n) for _, n in months],
        "line": {"color": ACCENT, "width": 2},
        "fill": "tozeroy",
        "fillcolor": "rgba(0, 105, 92, 0.15)",
        "hovertemplate": "%{x|%B %Y}<br>%{y:,} profiles<extra></extra>",
    }
    layout = _layout(
        title,
        _notes(note, junk),
        xaxis=_axis(type="date"),
        yaxis=_axis(title={"text": "profiles"}, rangemode="tozero"),
    )
    return {"data": [line], "layout": layout}


def format_count(value: int, complete: bool = True) -> str:
    """``1,234``; ``1,234+`` when only part of what there is was counted."""
    return f"{value:,}" if complete else f"{value:,}+"


def format_age(value: float | None) -> str:
    return ids.NO_VALUE if value is None else f"{value:.1f}"
