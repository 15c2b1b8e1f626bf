"""Every component id and every constant the dashboard shares, in one place."""

from __future__ import annotations

from typing import Final

# --- Component ids -------------------------------------------------------------------------
INTERVAL: Final = "refresh-interval"
SNAPSHOT: Final = "aggregates-snapshot"
BANNER: Final = "status-banner"
LAST_UPDATE: Final = "last-update"
LAST_READ: Final = "last-read"
DATA_NOTE: Final = "data-note"

NATIONALITY_FILTER: Final = "nationality-filter"
GENDER_FILTER: Final = "gender-filter"

KPI_USERS: Final = "kpi-users"
KPI_AVERAGE_AGE: Final = "kpi-average-age"
KPI_NATIONALITIES: Final = "kpi-nationalities"
KPI_DOMAINS: Final = "kpi-email-domains"

GRAPH_NATIONALITY: Final = "graph-nationality"
GRAPH_MAP: Final = "graph-map"
GRAPH_AGE_BANDS: Final = "graph-age-bands"
GRAPH_GENDER: Final = "graph-gender"
GRAPH_DOMAINS: Final = "graph-email-domains"
GRAPH_REGISTRATIONS: Final = "graph-registrations"

GRAPHS: Final = (
    GRAPH_NATIONALITY,
    GRAPH_MAP,
    GRAPH_AGE_BANDS,
    GRAPH_GENDER,
    GRAPH_DOMAINS,
    GRAPH_REGISTRATIONS,
)

# --- Data ------------------------------------------------------------------------------------
# The nationalities randomuser.me serves (`nat`), as ISO 3166-1 alpha-3 for the world map
# (plotly's "ISO-3" location mode) and a readable name.
NATIONALITIES: Final[dict[str, tuple[str, str]]] = {
    "AU": ("AUS", "Australia"),
    "BR": ("BRA", "Brazil"),
    "CA": ("CAN", "Canada"),
    "CH": ("CHE", "Switzerland"),
    "DE": ("DEU", "Germany"),
    "DK": ("DNK", "Denmark"),
    "ES": ("ESP", "Spain"),
    "FI": ("FIN", "Finland"),
    "FR": ("FRA", "France"),
    "GB": ("GBR", "United Kingdom"),
    "IE": ("IRL", "Ireland"),
    "IN": ("IND", "India"),
    "IR": ("IRN", "Iran"),
    "MX": ("MEX", "Mexico"),
    "NL": ("NLD", "Netherlands"),
    "NO": ("NOR", "Norway"),
    "NZ": ("NZL", "New Zealand"),
    "RS": ("SRB", "Serbia"),
    "TR": ("TUR", "Türkiye"),
    "UA": ("UKR", "Ukraine"),
    "US": ("USA", "United States"),
}
# Where the page counts every aggregate key that the stream job cannot have written for a
# valid profile (a 20,000-character nationality, a month in 2999, markup): one bucket each.
OTHER: Final = "other"
GENDER_ORDER: Final = ("female", "male", "unknown", OTHER)
GENDER_COLOURS: Final = {"female": "#c2185b", "male": "#1565c0", "unknown": "#9e9e9e", OTHER: "#607d8b"}
ACCENT: Final = "#00695c"
NO_VALUE: Final = "\u2013"  # an en dash: shown where there is no number yet

# Where the browser loads the world map's outlines from: served by the dashboard itself
# (dashboard/assets/topojson), so the map works without internet and no viewer's address
# is sent to a third-party CDN.
TOPOJSON_ASSET_DIR: Final = "topojson/"
