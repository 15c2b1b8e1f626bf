"""Figure builders, summaries and filters on sample aggregate documents (no browser, no DB)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from dashboard import app as dashboard_app
from dashboard import data, figures, ids, layout
from jobs.aggregates import EPOCH, average_age

TODAY = dt.date(2026, 5, 1)
WRITTEN = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)
LATER = dt.datetime(2026, 5, 1, 12, 5, tzinfo=dt.UTC)
READ_AT = dt.datetime(2026, 5, 1, 12, 6, tzinfo=dt.UTC)


def _days(year: int, month: int = 1, day: int = 1) -> int:
    return (dt.date(year, month, day) - EPOCH).days


def _doc(key: str | None, users: int, born: int = 0, at: dt.datetime = WRITTEN) -> dict:
    return {"_id": key, "users": users, "birth_epoch_day_sum": users * born, "updated_at": at}


# Three nationalities, 100 users; everyone in FI born 1980, BR 1990, US 2000.
DOCUMENTS = {
    data.NATIONALITY: [_doc("FI", 40, _days(1980)), _doc("BR", 35, _days(1990)), _doc("US", 25, _days(2000))],
    data.NATIONALITY_GENDER: [
        _doc("FI|female", 22, _days(1980)),
        _doc("FI|male", 18, _days(1980)),
        _doc("BR|female", 15, _days(1990)),
        _doc("BR|male", 20, _days(1990)),
        _doc("US|female", 10, _days(2000)),
        _doc("US|male", 14, _days(2000)),
        _doc("US|unknown", 1, _days(2000)),
    ],
    data.GENDER: [
        _doc("female", 47, 0),
        _doc("male", 52, 0),
        _doc("unknown", 1, 0),
    ],
    data.EMAIL_DOMAINS: [_doc("example.org", 6), _doc("example.com", 90), _doc("example.net", 4)],
    data.BIRTH_MONTHS: [_doc("1990-05", 30), _doc("2010-01", 10), _doc("1950-12", 60), _doc("unknown", 0)],
    data.REGISTRATIONS: [_doc("2019-04", 60), _doc("2018-01", 40, at=LATER)],
    data.TOTALS: [
        {
            "_id": "all",
            "users": 100,
            "birth_epoch_day_sum": 40 * _days(1980) + 35 * _days(1990) + 25 * _days(2000),
            "updated_at": WRITTEN,
        }
    ],
}


@pytest.fixture()
def snapshot() -> dict:
    return data.summarise(DOCUMENTS, read_at=READ_AT, today=TODAY)


# --- summarise ------------------------------------------------------------------------------
def test_snapshot_keeps_each_collections_counts_and_is_json(snapshot: dict) -> None:
    assert json.loads(json.dumps(snapshot)) == snapshot
    assert snapshot["total"]["users"] == 100
    assert {k: v["users"] for k, v in snapshot["nationality"].items()} == {"FI": 40, "BR": 35, "US": 25}
    assert {k: v["users"] for k, v in snapshot["gender"].items()} == {"female": 47, "male": 52, "unknown": 1}
    assert snapshot["nationality_gender"]["US"]["unknown"]["users"] == 1
    assert snapshot["email_domain_count"] == 3


def test_snapshot_orders_domains_by_users_and_registrations_by_month(snapshot: dict) -> None:
    assert snapshot["email_domains"] == [["example.com", 90], ["example.org", 6], ["example.net", 4]]
    assert snapshot["registrations"] == [["2018-01", 40], ["2019-04", 60]]


def test_snapshot_derives_age_bands_from_birth_months_today(snapshot: dict) -> None:
    assert snapshot["age_bands"] == {
        "0-17": 10,
        "18-24": 0,
        "25-34": 0,
        "35-44": 30,
        "45-54": 0,
        "55-64": 0,
        "65+": 60,
    }


def test_snapshot_last_update_is_the_newest_write_in_utc(snapshot: dict) -> None:
    assert snapshot["updated_at"] == "2026-05-01T12:05:00+00:00"
    assert snapshot["read_at"] == "2026-05-01T12:06:00+00:00"


def test_naive_datetimes_from_a_client_without_tz_aware_are_read_as_utc() -> None:
    documents = {data.TOTALS: [{"_id": "all", "users": 1, "updated_at": dt.datetime(2026, 5, 1, 12)}]}
    assert data.summarise(documents, READ_AT, TODAY)["updated_at"] == "2026-05-01T12:00:00+00:00"


def test_an_empty_database_gives_an_empty_snapshot_not_an_error() -> None:
    snapshot = data.summarise({}, READ_AT, TODAY)
    assert data.is_empty(snapshot)
    assert snapshot["updated_at"] is None
    assert snapshot["total"] == {"users": 0, "birth_epoch_day_sum": 0}


@pytest.mark.parametrize(
    ("key", "expected"),
    [("FI|female", ("FI", "female")), ("female", ("unknown", "female")), ("FI", ("FI", "unknown"))],
)
def test_nationality_gender_keys_survive_a_missing_part(key: str, expected: tuple[str, str]) -> None:
    assert data._split_nationality_gender(key) == expected


def test_projection_reads_counts_only() -> None:
    assert set(data.PROJECTION) == {"users", "birth_epoch_day_sum", "updated_at"}


# --- select (filters) -------------------------------------------------------------------------
def test_without_filters_numbers_come_from_their_own_collections(snapshot: dict) -> None:
    selection = data.select(snapshot, None, [], TODAY)
    assert selection.users == 100
    assert selection.by_nationality == {"FI": 40, "BR": 35, "US": 25}
    assert selection.by_gender == {"female": 47, "male": 52, "unknown": 1}
    assert selection.average_age == pytest.approx(average_age(DOCUMENTS[data.TOTALS][0], TODAY))
    assert not selection.filtered


def test_nationality_filter_splits_genders_from_the_pairs(snapshot: dict) -> None:
    selection = data.select(snapshot, ["FI", "US"], None, TODAY)
    assert selection.users == 65
    assert selection.by_nationality == {"FI": 40, "US": 25}
    assert selection.by_gender == {"female": 32, "male": 32, "unknown": 1}
    assert selection.filtered


def test_gender_filter_counts_nationalities_from_the_pairs(snapshot: dict) -> None:
    selection = data.select(snapshot, [], ["female"], TODAY)
    assert selection.by_nationality == {"FI": 22, "BR": 15, "US": 10}
    assert selection.by_gender == {"female": 47}
    assert selection.users == 47


def test_both_filters_give_one_pair_and_its_average_age(snapshot: dict) -> None:
    selection = data.select(snapshot, ["FI"], ["female"], TODAY)
    assert selection.users == 22
    assert selection.by_gender == {"female": 22}
    born_1980 = (TODAY - dt.date(1980, 1, 1)).days / 365.2425
    assert selection.average_age == pytest.approx(born_1980)
    assert selection.age_by_nationality["FI"] == pytest.approx(born_1980)


def test_a_filter_matching_nobody_gives_zero_and_no_age(snapshot: dict) -> None:
    selection = data.select(snapshot, ["NO"], None, TODAY)
    assert (selection.users, selection.average_age, selection.by_nationality) == (0, None, {})


# --- figure builders ---------------------------------------------------------------------------
def trace(figure: dict, index: int = 0) -> dict:
    return figure["data"][index]


def title(figure: dict) -> str:
    return figure["layout"]["title"]["text"]


def test_nationality_bar_shows_each_count_largest_first() -> None:
    bar = trace(figures.nationality_bar({"BR": 35, "FI": 40, "US": 25}, {"FI": 46.3}))
    assert bar["x"] == ["FI", "BR", "US"]
    assert bar["y"] == [40, 35, 25]
    assert bar["customdata"][0] == ["Finland", "46.3 years"]
    assert bar["customdata"][1][1] == "n/a"


def test_world_map_uses_iso3_codes_and_the_counts() -> None:
    choropleth = trace(figures.nationality_map({"FI": 40, "GB": 7, "ZZ": 3}, {}))
    assert choropleth["locationmode"] == "ISO-3"
    assert dict(zip(choropleth["locations"], choropleth["z"], strict=True)) == {"FIN": 40, "GBR": 7}


def test_every_nationality_has_a_country_outline_in_the_served_map() -> None:
    topojson = Path(figures.__file__).parent / "assets" / ids.TOPOJSON_ASSET_DIR / "world_110m.json"
    countries = {g.get("id") for g in json.loads(topojson.read_text())["objects"]["countries"]["geometries"]}
    assert len(ids.NATIONALITIES) == 21
    assert {iso3 for iso3, _ in ids.NATIONALITIES.values()} <= countries


def test_age_band_bar_keeps_band_order_and_notes_it_is_unfiltered(snapshot: dict) -> None:
    figure = figures.age_band_bar(snapshot["age_bands"], figures.NOT_FILTERED)
    assert trace(figure)["x"] == ["0-17", "18-24", "25-34", "35-44", "45-54", "55-64", "65+"]
    assert trace(figure)["y"] == [10, 0, 0, 30, 0, 0, 60]
    assert trace(figure)["text"][-1] == "60"
    assert figures.NOT_FILTERED in title(figure)


def test_gender_split_orders_female_male_unknown() -> None:
    pie = trace(figures.gender_split({"unknown": 1, "male": 52, "female": 47}))
    assert pie["labels"] == ["female", "male", "unknown"]
    assert pie["values"] == [47, 52, 1]


def test_email_domains_bar_puts_the_largest_on_top_and_counts_all_domains(snapshot: dict) -> None:
    figure = figures.email_domain_bar(snapshot["email_domains"], 1234)
    assert trace(figure)["y"] == ["example.net", "example.org", "example.com"]  # drawn bottom-up
    assert trace(figure)["x"] == [4, 6, 90]
    assert title(figure) == "Top 3 email domains (of 1,234)"


def test_registrations_are_plotted_per_month(snapshot: dict) -> None:
    figure = figures.registrations_over_time(snapshot["registrations"])
    assert trace(figure)["x"] == ["2018-01", "2019-04"]
    assert trace(figure)["y"] == [40, 60]
    assert figure["layout"]["xaxis"]["type"] == "date"


EMPTY = [
    figures.nationality_bar({}, {}),
    figures.nationality_map({}, {}),
    figures.age_band_bar({"0-17": 0}),
    figures.gender_split({}),
    figures.email_domain_bar([], 0),
    figures.registrations_over_time([]),
]


@pytest.mark.parametrize("figure", EMPTY)
def test_no_data_draws_a_message_instead_of_an_empty_chart(figure: dict) -> None:
    assert figure["data"] == []
    assert figure["layout"]["annotations"][0]["text"]


def test_every_figure_is_a_valid_plotly_figure(snapshot: dict) -> None:
    """plotly validates every property name and value; the builders skip that for speed."""
    import plotly.graph_objects as go

    built = layout.render_page(snapshot, ["FI"], None, TODAY)[:6]
    for figure in [*built, *EMPTY]:
        go.Figure(figure)  # raises ValueError on an unknown or invalid property
        json.dumps(figure)


def test_kpi_formats() -> None:
    assert figures.format_count(1_000_000) == "1,000,000"
    assert figures.format_age(48.2345) == "48.2"
    assert figures.format_age(None) == ids.NO_VALUE


# --- the page's outputs ------------------------------------------------------------------------
def test_render_page_gives_every_output_in_order(snapshot: dict) -> None:
    outputs = layout.render_page(snapshot, None, None, TODAY)
    assert len(outputs) == len(dashboard_app.RENDERED)
    nationality, world, bands, gender, domains, registrations = outputs[:6]
    assert trace(nationality)["y"] == [40, 35, 25]
    assert trace(world)["z"] == [35, 40, 25]  # BRA, FIN, USA
    assert trace(gender)["values"] == [47, 52, 1]
    assert trace(domains)["x"] == [4, 6, 90]
    assert trace(registrations)["y"] == [40, 60]
    assert outputs[6:] == ["100", figures.format_age(average_age(DOCUMENTS[data.TOTALS][0], TODAY)), "3", "3",
                           "2026-05-01 12:05:00 UTC", ""]  # fmt: skip
    assert figures.NOT_FILTERED not in title(bands)


def test_render_page_with_a_filter_says_which_charts_ignore_it(snapshot: dict) -> None:
    outputs = layout.render_page(snapshot, ["BR"], ["male"], TODAY)
    assert outputs[6] == "20"
    assert trace(outputs[3])["values"] == [20]
    for unfiltered in (outputs[2], outputs[4], outputs[5]):
        assert figures.NOT_FILTERED in title(unfiltered)
    assert figures.NOT_FILTERED not in title(outputs[0])


def test_filter_options_list_what_the_aggregates_hold(snapshot: dict) -> None:
    nationalities, genders = layout.filter_options(snapshot)
    assert [o["value"] for o in nationalities] == ["BR", "FI", "US"]
    assert nationalities[1]["label"] == "Finland (FI)"
    assert [o["value"] for o in genders] == ["female", "male", "unknown"]


# --- status banner and failures --------------------------------------------------------------
def test_banner_is_hidden_when_data_is_there(snapshot: dict) -> None:
    assert layout.status_banner(None, snapshot, 10) == ("", "banner hidden")


def test_banner_says_the_database_is_empty() -> None:
    text, css = layout.status_banner(None, data.summarise({}, READ_AT, TODAY), 10)
    assert text.startswith("No aggregates in MongoDB yet")
    assert css == "banner banner-info"


def test_banner_names_the_problem_and_the_data_still_shown(snapshot: dict) -> None:
    problem = data.Problem("unreachable", "Cannot reach MongoDB: no server answered within 3 s.")
    text, css = layout.status_banner(problem, snapshot, 10)
    assert text == (
        "Cannot reach MongoDB: no server answered within 3 s. "
        "Showing the data read at 2026-05-01 12:06:00 UTC. Retrying every 10 s."
    )
    assert css == "banner banner-error"


def test_failures_become_one_sentence_each() -> None:
    from pymongo.errors import AutoReconnect, NetworkTimeout, OperationFailure, ServerSelectionTimeoutError

    from bdf.config import ConfigError

    def kind(error: Exception) -> str:
        return data.describe_failure(error, 3.0).kind

    assert kind(ServerSelectionTimeoutError("no servers")) == "unreachable"
    assert kind(NetworkTimeout("timed out")) == "slow"
    assert kind(OperationFailure("Authentication failed.", code=18)) == "refused"
    assert kind(AutoReconnect("connection reset")) == "error"
    assert kind(ConfigError("secret file /x not found")) == "config"
    assert "3 s" in data.describe_failure(ServerSelectionTimeoutError("x"), 3.0).message


# --- the page as served ----------------------------------------------------------------------
def find(component, component_id: str):
    """The component with this id in a Dash layout tree."""
    if getattr(component, "id", None) == component_id:
        return component
    children = getattr(component, "children", None)
    for child in children if isinstance(children, list) else [children]:
        if child is not None and not isinstance(child, str):
            found = find(child, component_id)
            if found is not None:
                return found
    return None


def test_a_page_opened_with_a_recent_reading_shows_its_data_at_once(snapshot: dict) -> None:
    page = layout.build(10, "/assets/topojson/", data.Reading(snapshot=snapshot), TODAY)
    assert find(page, ids.KPI_USERS).children == "100"
    assert find(page, ids.SNAPSHOT).data is snapshot
    assert trace(find(page, ids.GRAPH_NATIONALITY).figure)["y"] == [40, 35, 25]
    assert [o["value"] for o in find(page, ids.NATIONALITY_FILTER).options] == ["BR", "FI", "US"]
    assert find(page, ids.BANNER).className == "banner hidden"
    assert find(page, ids.GRAPH_MAP).config["topojsonURL"] == "/assets/topojson/"


def test_a_page_opened_without_a_reading_waits_for_the_first_refresh() -> None:
    page = layout.build(10, "/assets/topojson/")
    assert find(page, ids.KPI_USERS).children == ids.NO_VALUE
    assert find(page, ids.SNAPSHOT).data is None
    assert find(page, ids.GRAPH_NATIONALITY).figure["data"] == []
    assert find(page, ids.INTERVAL).interval == 10_000


def test_a_page_opened_while_mongodb_is_down_says_so_at_once() -> None:
    problem = data.Problem("unreachable", "Cannot reach MongoDB: no server answered within 3 s.")
    page = layout.build(10, "/assets/topojson/", data.Reading(problem=problem), TODAY)
    assert find(page, ids.BANNER).children.startswith("Cannot reach MongoDB")
    assert find(page, ids.BANNER).className == "banner banner-error"
