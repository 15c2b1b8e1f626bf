"""The dashboard trusts nothing MongoDB holds: junk keys, junk counts, junk ids (no DB, no browser)."""

from __future__ import annotations

import datetime as dt
import json
import math

import pytest
from bson import Decimal128, ObjectId
from bson.datetime_ms import DatetimeMS

from dashboard import data, figures, ids, layout
from tests.unit.test_dashboard_figures import DOCUMENTS, READ_AT, TODAY, _days, _doc

OTHER = ids.OTHER
HOSTILE_KEYS = [
    "F" * 20_000,
    '{"a": 1}',
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "FI\u0000\u001b[31m",
    "",
]


def with_documents(extra: dict[str, list[dict]]) -> dict[str, list[dict]]:
    return {name: [*DOCUMENTS.get(name, []), *extra.get(name, [])] for name in data.AGGREGATE_COLLECTIONS}


def summarise(documents: dict[str, list[dict]], truncated: tuple[str, ...] = ()) -> dict:
    return data.summarise(documents, READ_AT, TODAY, truncated=truncated)


VALID = summarise(DOCUMENTS)


# --- counts ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (3, 3),
        (3.0, 3),
        (-2, -2),
        (2**53 - 1, 2**53 - 1),
        (2**53, None),
        (1e300, None),
        (math.nan, None),
        (math.inf, None),
        (2.5, None),
        (True, None),
        ("12", None),
        (None, None),
        (Decimal128("12"), None),
        ({"$numberLong": "1"}, None),
    ],
)
def test_only_finite_whole_numbers_a_browser_shows_exactly_are_counts(value, expected) -> None:
    assert data.whole_number(value) == expected


@pytest.mark.parametrize(
    "document",
    [
        {"users": -1},
        {"users": math.nan},
        {"users": "40"},
        {"birth_epoch_day_sum": 0},  # no users at all
        {"users": 10, "birth_epoch_day_sum": 10 * _days(2999)},  # born, on average, in 2999
        {"users": 10, "birth_epoch_day_sum": 10 * _days(1850)},
        {"users": 0, "birth_epoch_day_sum": 12_345},  # a birth sum for nobody
        {"users": 10, "birth_epoch_day_sum": "NaN"},
    ],
)
def test_counts_that_cannot_be_true_are_refused(document: dict) -> None:
    assert data.counts(document, TODAY) is None


def test_counts_keep_what_the_stream_job_writes() -> None:
    assert data.counts({"users": 4, "birth_epoch_day_sum": 4 * _days(1960)}, TODAY) == {
        "users": 4,
        "birth_epoch_day_sum": 4 * _days(1960),
    }
    assert data.counts({"users": 4}, TODAY) == {"users": 4, "birth_epoch_day_sum": 0}


# --- keys --------------------------------------------------------------------------------------
CHECKS = data.key_checks(TODAY)


@pytest.mark.parametrize(
    ("collection", "key"),
    [
        (data.NATIONALITY, "FI"),
        (data.NATIONALITY, "unknown"),
        (data.GENDER, "female"),
        (data.NATIONALITY_GENDER, "FI|male"),
        (data.EMAIL_DOMAINS, "example.com"),
        (data.EMAIL_DOMAINS, "mail-1.example.co.uk"),
        (data.EMAIL_DOMAINS, "bücher.example"),
        (data.EMAIL_DOMAINS, ".".join(["a" * 63] * 3) + ".example"),  # 199 characters
        (data.BIRTH_MONTHS, "1900-01"),
        (data.BIRTH_MONTHS, "2026-05"),
        (data.REGISTRATIONS, "2018-01"),
        (data.TOTALS, "all"),
    ],
)
def test_keys_the_stream_job_writes_are_recognised(collection: str, key: str) -> None:
    assert CHECKS[collection](key) == (key, True)


@pytest.mark.parametrize(
    ("collection", "key"),
    [
        *((data.NATIONALITY, key) for key in [*HOSTILE_KEYS, "fi", "XX", "FI "]),
        *((data.GENDER, key) for key in [*HOSTILE_KEYS, "Female", "other"]),
        *(
            (data.EMAIL_DOMAINS, key)
            for key in [
                *HOSTILE_KEYS,
                "example",
                "exa mple.com",
                "-a.example",
                "a..example",
                "example.com\n",
                "a" * 64 + ".example",
                ".".join(["a" * 63] * 4) + ".example",  # 263 characters
                "\u202eexample.com",
            ]
        ),
        *(
            (data.BIRTH_MONTHS, key)
            for key in ["2999-01", "1899-12", "2020-13", "2020-1", "2020-01\n", "20-01"]
        ),
        *((data.REGISTRATIONS, key) for key in ["2999-01", "2026-07", "<b>2020-01</b>"]),
        (data.TOTALS, "al"),
    ],
)
def test_keys_the_stream_job_cannot_write_are_other(collection: str, key: str) -> None:
    assert CHECKS[collection](key) == (OTHER, False)


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("FI|female", ("FI|female", True)),
        ("female", ("unknown|female", True)),
        ("FI", ("FI|unknown", True)),
        ('FI|{"a": 1}', ("FI|other", False)),
        ("F" * 20_000 + "|male", ("other|male", False)),
        ("<b>|<i>", ("other|other", False)),
        (None, ("other|other", False)),
    ],
)
def test_each_part_of_a_nationality_gender_key_is_checked_on_its_own(key, expected) -> None:
    assert CHECKS[data.NATIONALITY_GENDER](key) == expected


# --- a snapshot from hostile documents -----------------------------------------------------------
HOSTILE = {
    data.NATIONALITY: [
        *(_doc(key, 1, _days(1990)) for key in HOSTILE_KEYS),
        {"_id": {"nat": "FI"}, "users": 2},
        {"_id": ObjectId(), "users": 3},
        {"_id": None, "users": 4},
        {"_id": 7, "users": 5},
        _doc("FI", 0) | {"users": math.nan},
        _doc("BR", 0) | {"users": -5},
        _doc("US", 0) | {"users": "1000"},
        _doc("FI", 0) | {"users": 10**30 * 1.0},
        {"_id": "US"},  # no counts at all
    ],
    data.GENDER: [_doc('{"a": 1}', 6), _doc("<script>alert(1)</script>", 4)],
    data.NATIONALITY_GENDER: [_doc('FI|{"a": 1}', 6), _doc("F" * 20_000, 4)],
    data.BIRTH_MONTHS: [_doc("2999-01", 7), _doc("garbage", 3)],
    data.REGISTRATIONS: [_doc("2999-01", 9), _doc("<img src=x onerror=alert(1)>", 1)],
    data.EMAIL_DOMAINS: [_doc("<script>x</script>.com", 500)],
    data.TOTALS: [{"_id": "other-total", "users": 10**6}, {"_id": "all", "users": "lots"}],
}


@pytest.fixture()
def hostile() -> dict:
    return summarise(with_documents(HOSTILE), truncated=(data.EMAIL_DOMAINS,))


def test_hostile_documents_leave_every_valid_number_as_it_was(hostile: dict) -> None:
    def without_other(counts: dict) -> dict:
        return {k: v for k, v in counts.items() if k != OTHER}

    assert hostile["total"] == VALID["total"]
    assert without_other(hostile["nationality"]) == VALID["nationality"]
    assert without_other(hostile["gender"]) == VALID["gender"]
    assert without_other(hostile["age_bands"]) == VALID["age_bands"]
    assert hostile["registrations"] == VALID["registrations"]
    assert hostile["email_domains"] == VALID["email_domains"]
    assert hostile["updated_at"] == VALID["updated_at"]
    assert {k: without_other(v) for k, v in hostile["nationality_gender"].items() if k != OTHER} == (
        VALID["nationality_gender"]
    )


def test_hostile_keys_are_summed_in_one_other_bucket_per_aggregate(hostile: dict) -> None:
    assert hostile["nationality"][OTHER]["users"] == 6 + 2 + 3 + 4 + 5
    assert hostile["gender"][OTHER]["users"] == 10
    assert hostile["nationality_gender"]["FI"][OTHER]["users"] == 6
    assert hostile["nationality_gender"][OTHER]["unknown"]["users"] == 4
    assert hostile["age_bands"][OTHER] == 10
    assert hostile["registrations_other"] == 10
    assert hostile["unrecognised"] == {
        data.NATIONALITY: 10,
        data.GENDER: 2,
        data.NATIONALITY_GENDER: 2,
        data.BIRTH_MONTHS: 2,
        data.REGISTRATIONS: 2,
        data.EMAIL_DOMAINS: 1,
        data.TOTALS: 1,
    }
    assert hostile["ignored"] == {data.NATIONALITY: 5, data.TOTALS: 1}
    assert json.loads(json.dumps(hostile)) == hostile


def test_write_times_that_are_not_datetimes_are_ignored() -> None:
    documents = {
        data.TOTALS: [
            {"_id": "all", "users": 1, "updated_at": WRITTEN_LATER_AS_TEXT},
            {"_id": "all", "users": 1, "updated_at": DatetimeMS(2**62)},  # beyond year 9999
            {"_id": "all", "users": 1, "updated_at": dt.datetime(2026, 5, 1, 12, tzinfo=dt.UTC)},
        ]
    }
    assert data.summarise(documents, READ_AT, TODAY)["updated_at"] == "2026-05-01T12:00:00+00:00"


WRITTEN_LATER_AS_TEXT = "2099-01-01T00:00:00Z"


def test_the_page_draws_hostile_data_and_says_what_it_left_out(hostile: dict) -> None:
    import plotly.graph_objects as go

    outputs = layout.render_page(hostile, None, None, TODAY)
    nationality, _, bands, gender, domains, registrations = outputs[:6]
    assert nationality["data"][0]["x"][-1] == OTHER  # last, whatever its size
    assert nationality["data"][0]["customdata"][-1][0] == "unrecognised nationalities"
    assert gender["data"][0]["labels"] == ["female", "male", "unknown", OTHER]
    assert bands["data"][0]["x"][-1] == OTHER
    assert domains["layout"]["title"]["text"].startswith(
        "Top 3 email domains (of 3+)<br><sup>1 unrecognised keys"
    )
    assert outputs[9] == "3+"  # not every email domain read
    assert "10 under unrecognised months, not drawn" in registrations["layout"]["title"]["text"]
    assert outputs[8] == "3"  # nationalities: "other" is not one
    assert outputs[-1] == (
        " · 20 unrecognised aggregate keys counted as “other”; 6 documents with unreadable counts"
        " left out; not every document read of email_domains"
    )
    for figure in outputs[:6]:
        go.Figure(figure)
    nationalities, genders = layout.filter_options(hostile)
    assert OTHER not in [o["value"] for o in nationalities + genders]


def test_filters_still_work_beside_hostile_pairs(hostile: dict) -> None:
    selection = data.select(hostile, ["FI"], None, TODAY)
    assert selection.by_gender == {"female": 22, "male": 18, OTHER: 6}
    assert selection.by_nationality == {"FI": 40}


def test_a_flood_of_junk_keys_gives_a_small_page() -> None:
    flood = {name: [_doc(f"junk-{i}<b>", 1) for i in range(20_000)] for name in data.AGGREGATE_COLLECTIONS}
    snapshot = summarise(with_documents(flood))
    outputs = layout.render_page(snapshot, None, None, TODAY)
    assert len(json.dumps(snapshot)) < 10_000
    assert len(json.dumps(outputs)) < 50_000
    assert snapshot["nationality"][OTHER]["users"] == 20_000


# --- labels --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("FI", "FI"),
        ("example.com", "example.com"),
        ("<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;"),
        ("a&b", "a&amp;b"),
        ("tab\there\u0000\u202e", "tab\ufffdhere\ufffd\ufffd"),
        ("x" * 20_000, "x" * 63 + "\u2026"),
        ("x" * 64, "x" * 64),
        ({"a": 1}, "{'a': 1}"),
    ],
)
def test_labels_are_bounded_printable_and_escaped(text: object, expected: str) -> None:
    assert figures.label(text) == expected


# --- reading -----------------------------------------------------------------------------------
class FakeCollection:
    """As much of a pymongo collection as ``read_documents`` may use: find, then limit."""

    def __init__(self, size: int) -> None:
        self.documents = [{"_id": f"k{i}", "users": 1} for i in range(size)]
        self.calls: list = []

    def find(self, query: dict, projection: dict) -> FakeCollection:
        self.calls.append(("find", query, projection))
        return self

    def limit(self, n: int) -> list[dict]:
        self.calls.append(("limit", n))
        return self.documents[:n]


def test_every_read_is_projected_and_limited_and_says_which_collections_hold_more() -> None:
    db = {name: FakeCollection(3) for name in data.AGGREGATE_COLLECTIONS}
    db[data.EMAIL_DOMAINS] = FakeCollection(20_000)
    documents, truncated = data.read_documents(db)
    assert truncated == {data.EMAIL_DOMAINS}
    assert len(documents[data.EMAIL_DOMAINS]) == data.MAX_DOCUMENTS
    assert len(documents[data.NATIONALITY]) == 3
    for collection in db.values():
        assert collection.calls == [("find", {}, data.PROJECTION), ("limit", data.MAX_DOCUMENTS + 1)]


def test_only_the_largest_email_domains_are_kept() -> None:
    documents = {data.EMAIL_DOMAINS: [_doc(f"mail{i}.example", i) for i in range(50)]}
    snapshot = data.summarise(documents, READ_AT, TODAY, top_domains=3)
    assert snapshot["email_domains"] == [
        ["mail49.example", 49],
        ["mail48.example", 48],
        ["mail47.example", 47],
    ]
    assert snapshot["email_domain_count"] == 50
