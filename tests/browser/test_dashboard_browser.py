"""The dashboard in headless Chromium (dash_duo) against a real FerretDB.

Each test ends with ``assert dash_duo.get_logs() == []``: no error in the browser console.
"""

from __future__ import annotations

import datetime as dt
import shutil
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from bson.datetime_ms import DatetimeMS

from dashboard import data, demo, figures, ids
from dashboard.app import create_app
from jobs.aggregates import age_bands, average_age
from tests.polling import eventually

pytest.importorskip("selenium", reason="needs dash[testing]")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.ferretdb,
    # dash_duo's threaded server stops by raising SystemExit in every thread started during
    # the test (pymongo's monitors, the proxy's pumps): expected, not a failure.
    pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning"),
    pytest.mark.skipif(
        demo.chromium() is None or shutil.which("chromedriver") is None,
        reason="needs Chromium and its driver: apt-get install -y chromium chromium-driver",
    ),
]

PROFILES = 5_000


@pytest.fixture()
def documents() -> dict[str, list[dict[str, Any]]]:
    return demo.synthetic_aggregates(profiles=PROFILES, domains=30, seed=11)


@pytest.fixture()
def start(dash_duo, mongo) -> Iterator[Callable[[], Any]]:
    """Serve the dashboard (reading through the test's proxy) and open it in the browser."""
    source = mongo.source()

    def _start() -> Any:
        dash_duo.start_server(create_app(mongo.settings, source), port=demo.free_port())
        return dash_duo

    yield _start
    source.close()


def graph_data(dash_duo, graph_id: str) -> list[dict[str, Any]]:
    """The traces plotly drew in the page (``gd.data``), as the browser has them."""
    return dash_duo.driver.execute_script(
        "const gd = document.querySelector(arguments[0] + ' .js-plotly-plot');"
        "return gd && gd.data ? gd.data : null;",
        f"#{graph_id}",
    )


def pairs(trace: dict[str, Any], keys: str, values: str) -> dict[Any, Any]:
    return dict(zip(trace[keys], trace[values], strict=True))


def users_of(documents: dict[str, list[dict[str, Any]]], collection: str) -> dict[str, int]:
    return {d["_id"]: d["users"] for d in documents[collection]}


def banner(dash_duo) -> tuple[str, str]:
    element = dash_duo.find_element(f"#{ids.BANNER}")
    return element.text, element.get_attribute("class")


def no_traceback(dash_duo) -> bool:
    return "Traceback" not in dash_duo.driver.page_source


def test_each_chart_shows_the_numbers_in_mongodb_and_the_refresh_picks_up_a_change(start, mongo, documents):
    demo.seed(mongo.db, documents)
    today = dt.datetime.now(dt.UTC).date()
    dash_duo = start()

    dash_duo.wait_for_text_to_equal(f"#{ids.KPI_USERS}", f"{PROFILES:,}")
    total = documents[data.TOTALS][0]
    assert dash_duo.find_element(f"#{ids.KPI_AVERAGE_AGE}").text == figures.format_age(
        average_age(total, today)
    )
    assert dash_duo.find_element(f"#{ids.KPI_NATIONALITIES}").text == "21"
    assert dash_duo.find_element(f"#{ids.KPI_DOMAINS}").text == "30"
    written = total["updated_at"].astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    assert dash_duo.find_element(f"#{ids.LAST_UPDATE}").text == written
    assert banner(dash_duo)[1] == "banner hidden"

    nationality = eventually(
        lambda: graph_data(dash_duo, ids.GRAPH_NATIONALITY), 15, "the nationality chart", interval=0.1
    )
    assert pairs(nationality[0], "x", "y") == users_of(documents, data.NATIONALITY)

    world = graph_data(dash_duo, ids.GRAPH_MAP)[0]
    expected_map = {
        ids.NATIONALITIES[code][0]: n for code, n in users_of(documents, data.NATIONALITY).items()
    }
    assert pairs(world, "locations", "z") == expected_map
    # The outlines come from the dashboard's own assets: every country is drawn and filled.
    eventually(
        lambda: len(dash_duo.find_elements(f"#{ids.GRAPH_MAP} path.choroplethlocation")) == 21,
        15,
        "21 countries drawn on the map",
        interval=0.1,
    )

    bands = graph_data(dash_duo, ids.GRAPH_AGE_BANDS)[0]
    assert pairs(bands, "x", "y") == age_bands(documents[data.BIRTH_MONTHS], today)
    drawn = [t.text for t in dash_duo.find_elements(f"#{ids.GRAPH_AGE_BANDS} .bartext")]
    assert drawn == [f"{n:,}" for n in age_bands(documents[data.BIRTH_MONTHS], today).values()]

    gender = graph_data(dash_duo, ids.GRAPH_GENDER)[0]
    assert pairs(gender, "labels", "values") == users_of(documents, data.GENDER)

    domains = graph_data(dash_duo, ids.GRAPH_DOMAINS)[0]
    top5 = sorted(users_of(documents, data.EMAIL_DOMAINS).items(), key=lambda kv: -kv[1])[:5]
    assert pairs(domains, "y", "x") == dict(top5)

    registrations = graph_data(dash_duo, ids.GRAPH_REGISTRATIONS)[0]
    assert pairs(registrations, "x", "y") == users_of(documents, data.REGISTRATIONS)

    # The stream job writes new absolute values: the page follows without a reload.
    later = dt.datetime.now(dt.UTC).replace(microsecond=0)
    mongo.db[data.NATIONALITY].update_one(
        {"_id": "FI"}, {"$inc": {"users": 1000}, "$set": {"updated_at": later}}
    )
    mongo.db[data.TOTALS].update_one({"_id": "all"}, {"$inc": {"users": 1000}, "$set": {"updated_at": later}})
    dash_duo.wait_for_text_to_equal(f"#{ids.KPI_USERS}", f"{PROFILES + 1000:,}")
    finland = users_of(documents, data.NATIONALITY)["FI"] + 1000
    eventually(
        lambda: pairs(graph_data(dash_duo, ids.GRAPH_NATIONALITY)[0], "x", "y")["FI"] == finland,
        15,
        "the FI bar to grow",
        interval=0.1,
    )
    assert dash_duo.find_element(f"#{ids.LAST_UPDATE}").text == later.strftime("%Y-%m-%d %H:%M:%S UTC")
    assert dash_duo.driver.execute_script("return performance.getEntriesByType('navigation').length") == 1

    assert dash_duo.get_logs() == []


def test_nationality_and_gender_filters_narrow_the_charts_they_apply_to(start, mongo, documents):
    demo.seed(mongo.db, documents)
    dash_duo = start()
    dash_duo.wait_for_text_to_equal(f"#{ids.KPI_USERS}", f"{PROFILES:,}")

    dash_duo.select_dcc_dropdown(f"#{ids.NATIONALITY_FILTER}", value="Finland (FI)")
    dash_duo.select_dcc_dropdown(f"#{ids.GENDER_FILTER}", value="female")

    finnish_women = users_of(documents, data.NATIONALITY_GENDER)["FI|female"]
    dash_duo.wait_for_text_to_equal(f"#{ids.KPI_USERS}", f"{finnish_women:,}")
    assert pairs(graph_data(dash_duo, ids.GRAPH_NATIONALITY)[0], "x", "y") == {"FI": finnish_women}
    assert pairs(graph_data(dash_duo, ids.GRAPH_GENDER)[0], "labels", "values") == {"female": finnish_women}
    assert dash_duo.find_element(f"#{ids.KPI_NATIONALITIES}").text == "1"
    # Birth months, domains and registrations are not split by nationality or gender: said so.
    title = dash_duo.find_element(f"#{ids.GRAPH_AGE_BANDS} .gtitle").text
    assert "not broken down by nationality or gender" in title

    assert dash_duo.get_logs() == []


def test_an_empty_database_shows_a_banner_then_the_data_once_it_arrives(start, mongo, documents):
    dash_duo = start()
    dash_duo.wait_for_contains_text(f"#{ids.BANNER}", "No aggregates in MongoDB yet")
    assert banner(dash_duo)[1] == "banner banner-info"
    assert dash_duo.find_element(f"#{ids.KPI_USERS}").text == "0"
    assert no_traceback(dash_duo)

    demo.seed(mongo.db, documents)
    dash_duo.wait_for_text_to_equal(f"#{ids.KPI_USERS}", f"{PROFILES:,}")
    eventually(lambda: banner(dash_duo)[1] == "banner hidden", 15, "the banner to go", interval=0.1)

    assert dash_duo.get_logs() == []


def test_an_unreachable_mongodb_shows_a_banner_and_the_page_recovers_by_itself(start, mongo, documents):
    demo.seed(mongo.db, documents)
    mongo.proxy.refuse()
    dash_duo = start()

    dash_duo.wait_for_contains_text(f"#{ids.BANNER}", "Cannot reach MongoDB", timeout=15)
    text, css = banner(dash_duo)
    assert css == "banner banner-error"
    assert "Retrying every 2 s" in text
    assert dash_duo.find_element(f"#{ids.KPI_USERS}").text == ids.NO_VALUE
    assert no_traceback(dash_duo)

    mongo.proxy.forward()
    dash_duo.wait_for_text_to_equal(f"#{ids.KPI_USERS}", f"{PROFILES:,}", timeout=20)
    eventually(lambda: banner(dash_duo)[1] == "banner hidden", 15, "the banner to go", interval=0.1)

    assert dash_duo.get_logs() == []


def test_a_slow_mongodb_shows_a_banner_keeps_the_last_data_and_recovers(start, mongo, documents):
    demo.seed(mongo.db, documents)
    dash_duo = start()
    dash_duo.wait_for_text_to_equal(f"#{ids.KPI_USERS}", f"{PROFILES:,}")

    mongo.proxy.slow(2.5)  # the dashboard waits 1 s
    dash_duo.wait_for_contains_text(f"#{ids.BANNER}", "Showing the data read at", timeout=20)
    text, css = banner(dash_duo)
    assert css == "banner banner-error"
    # A slow answer to a query says "slow"; a slow answer to the driver's own heartbeat makes
    # the server look gone ("Cannot reach"): which one comes first is a matter of timing.
    assert text.startswith(("MongoDB is slow", "Cannot reach MongoDB"))
    assert dash_duo.find_element(f"#{ids.KPI_USERS}").text == f"{PROFILES:,}"
    assert no_traceback(dash_duo)

    mongo.proxy.forward()
    eventually(lambda: banner(dash_duo)[1] == "banner hidden", 30, "the banner to go", interval=0.1)

    assert dash_duo.get_logs() == []


def hostile_documents(now: dt.datetime) -> dict[str, list[dict[str, Any]]]:
    """What a buggy or hostile writer could leave in the aggregate collections."""

    def junk(key: Any, users: Any) -> dict[str, Any]:
        return {"_id": key, "users": users, "birth_epoch_day_sum": 0, "updated_at": now}

    markup = '<img src=x onerror="window.injected = 1">'
    return {
        data.NATIONALITY: [
            junk("N" * 20_000, 7),
            junk('{"a": 1}', 2),
            junk("<script>window.injected = 1</script>", 3),
            junk(markup, 4),
            junk("FI\u0000\u001b[2J\u202e", 5),
            junk({"nat": "FI"}, 6),  # MongoDB allows any _id but an array
            # Valid keys with counts that cannot be true (FerretDB v1 refuses NaN and
            # infinities outright; the unit tests cover them).
            junk("unknown", -3),
        ],
        data.GENDER: [
            junk('{"a": 1}', 11),
            junk(markup, 9) | {"updated_at": DatetimeMS(2**62)},  # beyond what datetime can hold
            junk("unknown", "12"),
        ],
        data.NATIONALITY_GENDER: [junk('FI|{"a": 1}', 11), junk("FI|unknown", 2.0**80)],
        data.BIRTH_MONTHS: [junk("2999-01", 8), junk("unknown", 1.5)],
        data.REGISTRATIONS: [junk("2999-01", 8)],
        data.EMAIL_DOMAINS: [junk(f"junk-{i}<b>", 1) for i in range(20_000)],
    }


def test_hostile_documents_beside_valid_ones_render_as_other_without_a_browser_error(start, mongo, documents):
    demo.seed(mongo.db, documents)
    now = dt.datetime.now(dt.UTC)
    hostile = hostile_documents(now - dt.timedelta(days=1))  # the valid documents stay the latest write
    for name, junk in hostile.items():
        for first in range(0, len(junk), 2_000):
            mongo.db[name].insert_many(junk[first : first + 2_000])
    today = now.date()

    opened = time.monotonic()
    dash_duo = start()
    dash_duo.wait_for_text_to_equal(f"#{ids.KPI_USERS}", f"{PROFILES:,}", timeout=20)
    nationality = eventually(
        lambda: graph_data(dash_duo, ids.GRAPH_NATIONALITY), 15, "the nationality chart", interval=0.1
    )
    assert time.monotonic() - opened < 30

    # Valid numbers as without the junk; the junk in one "other" bucket per chart, drawn last.
    assert dash_duo.find_element(f"#{ids.KPI_NATIONALITIES}").text == "21"
    # 20,030 email-domain documents: the first MAX_DOCUMENTS are read (FerretDB returns them
    # in insertion order, the valid ones first), so the page knows of "30" and says "+".
    assert dash_duo.find_element(f"#{ids.KPI_DOMAINS}").text == "30+"
    assert dash_duo.find_element(f"#{ids.KPI_AVERAGE_AGE}").text == figures.format_age(
        average_age(documents[data.TOTALS][0], today)
    )
    assert pairs(nationality[0], "x", "y") == {**users_of(documents, data.NATIONALITY), ids.OTHER: 27}
    assert nationality[0]["x"][-1] == ids.OTHER
    gender = graph_data(dash_duo, ids.GRAPH_GENDER)[0]
    assert pairs(gender, "labels", "values") == {**users_of(documents, data.GENDER), ids.OTHER: 20}
    bands = graph_data(dash_duo, ids.GRAPH_AGE_BANDS)[0]
    assert pairs(bands, "x", "y") == {**age_bands(documents[data.BIRTH_MONTHS], today), ids.OTHER: 8}
    domains = graph_data(dash_duo, ids.GRAPH_DOMAINS)[0]
    top5 = sorted(users_of(documents, data.EMAIL_DOMAINS).items(), key=lambda kv: -kv[1])[:5]
    assert pairs(domains, "y", "x") == dict(top5)
    unread_junk = data.MAX_DOCUMENTS - 30
    domains_title = dash_duo.find_element(f"#{ids.GRAPH_DOMAINS} .gtitle").text
    assert domains_title.startswith("Top 5 email domains (of 30+)")
    assert f"{unread_junk:,} unrecognised keys not counted" in domains_title
    registrations = graph_data(dash_duo, ids.GRAPH_REGISTRATIONS)[0]
    assert pairs(registrations, "x", "y") == users_of(documents, data.REGISTRATIONS)
    assert "8 under unrecognised months" in dash_duo.find_element(f"#{ids.GRAPH_REGISTRATIONS} .gtitle").text
    assert dash_duo.find_element(f"#{ids.DATA_NOTE}").text == (
        f"· {6 + 2 + 1 + 1 + 1 + unread_junk:,} unrecognised aggregate keys counted as “other”;"
        " 4 documents with unreadable counts left out; not every document read of email_domains"
    )

    # Nothing of the junk reached the page: no markup ran, no huge label was drawn.
    assert dash_duo.driver.execute_script("return window.injected") is None
    assert "N" * 100 not in dash_duo.driver.page_source
    assert dash_duo.get_logs() == []
