"""The offline randomuser source, mostly over real HTTP on 127.0.0.1."""

from __future__ import annotations

import calendar
import datetime as dt
import hashlib
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
from click.testing import CliRunner

from jobs.randomuser_data import NATIONALITIES
from jobs.randomuser_server import FAULT_KINDS, Faults, generate_users, main, running

REPO = Path(__file__).resolve().parents[2]
FIXED_NOW = calendar.timegm((2026, 6, 15, 12, 0, 0))


@pytest.fixture(scope="module")
def server():
    with running() as srv:
        yield srv


def get(server, path: str = "1.4/", **params: Any) -> requests.Response:
    return requests.get(server.url + path, params=params, timeout=30)


def users(server, **params: Any) -> list[dict[str, Any]]:
    response = get(server, **params)
    assert response.status_code == 200, response.text
    return response.json()["results"]


@pytest.fixture(scope="module")
def sample(server) -> list[dict[str, Any]]:
    """The largest page the API serves: every quirk must show up in it."""
    return users(server, results=5000, seed="quirk-sample")


def by_nat(sample: list[dict[str, Any]], nat: str) -> list[dict[str, Any]]:
    return [u for u in sample if u["nat"] == nat]


def text_of(users_: list[dict[str, Any]]) -> str:
    return " ".join(
        f"{u['name']['first']} {u['name']['last']} {u['location']['city']} {u['location']['street']['name']}"
        for u in users_
    )


# --- reproducibility and paging -------------------------------------------------------


def test_same_seed_and_page_return_identical_users(server):
    first = users(server, results=50, seed="repro", page=3)
    again = users(server, results=50, seed="repro", page=3)
    assert first == again


def test_next_page_returns_different_users(server):
    page1 = users(server, results=50, seed="repro", page=1)
    page2 = users(server, results=50, seed="repro", page=2)
    assert {u["login"]["uuid"] for u in page1}.isdisjoint(u["login"]["uuid"] for u in page2)


def test_other_seed_returns_different_users(server):
    one = users(server, results=20, seed="seed-one")
    two = users(server, results=20, seed="seed-two")
    assert {u["login"]["uuid"] for u in one}.isdisjoint(u["login"]["uuid"] for u in two)


def test_smaller_results_are_a_prefix_of_the_same_page(server):
    full = users(server, results=40, seed="prefix", page=2)
    short = users(server, results=15, seed="prefix", page=2)
    assert short == full[:15]


def test_http_answer_equals_in_process_generation(server):
    over_http = users(server, results=30, seed="same-path", page=4, nat="de,ir")
    in_process = generate_users(30, "same-path", page=4, nats=("DE", "IR"))
    assert over_http == in_process


def test_same_seed_gives_identical_users_in_a_fresh_process():
    code = (
        "import hashlib, orjson; from jobs.randomuser_server import generate_users;"
        f"print(hashlib.sha256(orjson.dumps(generate_users(200, 'restart', 7, now={FIXED_NOW}))).hexdigest())"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-c", code]  # our own interpreter and code: nothing untrusted
    out = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, check=True)  # noqa: S603
    here = hashlib.sha256(orjson.dumps(generate_users(200, "restart", 7, now=FIXED_NOW))).hexdigest()
    assert out.stdout.strip() == here


def test_without_seed_info_reports_a_seed_that_replays_the_page(server):
    body = get(server, results=10).json()
    replay = users(server, results=10, seed=body["info"]["seed"])
    assert body["info"]["seed"] and replay == body["results"]


def test_info_block_reports_seed_results_page_and_version(server):
    info = get(server, results=3, seed="info", page=9).json()["info"]
    assert info == {"seed": "info", "results": 3, "page": 9, "version": "1.4"}


# --- quirks of the real API that the pipeline must survive -----------------------------


def test_sample_covers_all_21_nationalities(sample):
    assert {u["nat"] for u in sample} == set(NATIONALITIES)


def test_postcodes_are_numbers_for_some_nationalities_and_strings_for_others(sample):
    kinds = {type(u["location"]["postcode"]) for u in sample}
    assert kinds == {int, str}
    assert all(isinstance(u["location"]["postcode"], int) for u in by_nat(sample, "US"))
    assert all(
        re.fullmatch(r"[A-Z]\d[A-Z] \d[A-Z]\d", u["location"]["postcode"]) for u in by_nat(sample, "CA")
    )
    assert all(re.fullmatch(r"\d{4} [A-Z]{2}", u["location"]["postcode"]) for u in by_nat(sample, "NL"))
    assert all(
        re.fullmatch(r"[A-Z0-9]{2,4} \d[A-Z]{2}", u["location"]["postcode"]) for u in by_nat(sample, "GB")
    )


def test_street_number_is_int_and_coordinates_are_decimal_strings(sample):
    for user in sample:
        location = user["location"]
        assert isinstance(location["street"]["number"], int)
        lat, lon = location["coordinates"]["latitude"], location["coordinates"]["longitude"]
        assert isinstance(lat, str) and isinstance(lon, str)
        assert -90 <= float(lat) <= 90 and -180 <= float(lon) <= 180


def test_timezone_offsets_use_the_api_format_including_half_and_quarter_hours(sample):
    offsets = {u["location"]["timezone"]["offset"] for u in sample}
    assert all(re.fullmatch(r"0:00|[+-](?:[1-9]|1[0-2]):(?:00|30|45)", o) for o in offsets)
    assert {"+9:30", "-3:30", "0:00", "+5:45"} <= offsets


def test_some_ids_have_empty_name_and_null_value_and_some_are_junk(sample):
    ids = [u["id"] for u in sample]
    assert {"name": "", "value": None} in ids
    assert any(i["value"] is not None for i in ids)
    assert all(u["id"] == {"name": "", "value": None} for u in by_nat(sample, "IR"))
    assert any(i["value"] and "undefined" in i["value"] for i in ids)


def test_titles_follow_the_language_of_the_nationality(sample):
    titles = Counter(u["name"]["title"] for u in sample)
    assert {"Mr", "Ms", "Mrs", "Miss", "Monsieur", "Madame", "Mademoiselle", "Herr", "Frau"} <= set(titles)
    assert {u["name"]["title"] for u in by_nat(sample, "DE")} == {"Herr", "Frau"}
    male = {"Mr", "Monsieur", "Herr"}
    assert all((u["name"]["title"] in male) == (u["gender"] == "male") for u in sample)


@pytest.mark.parametrize(
    ("nat", "letters"),
    [
        ("FI", r"[äöåÄÖÅ]"),
        ("TR", r"[ğşıİçĞŞÇ]"),
        ("IR", r"[\u0600-\u06ff]"),  # Persian (Arabic script)
        ("UA", r"[іїєґІЇЄҐ]"),  # Ukrainian-only Cyrillic letters
        ("IN", r"[\u0900-\u097f]"),  # Devanagari (Hindi)
        ("RS", r"[ђјљњћџЂЈЉЊЋЏ]"),  # Serbian-only Cyrillic letters
    ],
)
def test_names_and_places_carry_the_nationalitys_non_ascii_letters(sample, nat, letters):
    assert re.search(letters, text_of(by_nat(sample, nat)))


def test_dates_are_iso_utc_with_milliseconds_and_z(sample):
    pattern = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z"
    for user in sample:
        assert re.fullmatch(pattern, user["dob"]["date"])
        assert re.fullmatch(pattern, user["registered"]["date"])


def test_ages_are_whole_years_elapsed_at_generation_time():
    now = dt.datetime.fromtimestamp(FIXED_NOW, dt.UTC)
    for user in generate_users(500, "ages", now=FIXED_NOW):
        for block in (user["dob"], user["registered"]):
            born = dt.datetime.fromisoformat(block["date"])
            assert born < now
            assert block["age"] == now.year - born.year - ((now.month, now.day) < (born.month, born.day))


def test_login_hashes_are_digests_of_salt_and_password(sample):
    for user in sample[:300]:
        login = user["login"]
        salted = (login["salt"] + login["password"]).encode()
        assert login["md5"] == hashlib.md5(salted, usedforsecurity=False).hexdigest()
        assert login["sha1"] == hashlib.sha1(salted, usedforsecurity=False).hexdigest()
        assert login["sha256"] == hashlib.sha256(salted).hexdigest()
        assert re.fullmatch(r"[A-Za-z0-9]{8}", login["salt"])
        assert re.fullmatch(
            r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", login["uuid"]
        )


def test_uuids_are_unique_in_a_large_page(sample):
    assert len({u["login"]["uuid"] for u in sample}) == len(sample)


def test_emails_spread_over_many_domains_and_sometimes_example_com(sample):
    domains = Counter(u["email"].rpartition("@")[2] for u in sample)
    assert len(domains) >= 15
    assert 0 < domains["example.com"] < len(sample) / 2
    assert all(re.fullmatch(r"[a-z0-9._]+@[a-z0-9.-]+\.[a-z]+", u["email"]) for u in sample)


def test_picture_urls_match_the_gender(sample):
    for user in sample[:300]:
        folder = "men" if user["gender"] == "male" else "women"
        assert re.fullmatch(
            rf"https://randomuser\.me/api/portraits/{folder}/\d+\.jpg", user["picture"]["large"]
        )
        assert "/thumb/" in user["picture"]["thumbnail"] and "/med/" in user["picture"]["medium"]


# --- parameters and error answers --------------------------------------------------------


def test_results_accepts_1_and_5000(server, sample):
    assert len(users(server, results=1)) == 1
    assert len(sample) == 5000


@pytest.mark.parametrize("results", ["0", "5001", "-3", "ten", "1.5"])
def test_results_out_of_bounds_is_a_400_error_json(server, results):
    response = get(server, results=results)
    assert response.status_code == 400
    assert "results" in response.json()["error"]


def test_nat_filter_returns_only_those_nationalities_case_insensitively(server):
    got = users(server, results=200, seed="nat", nat="fi,TR")
    assert {u["nat"] for u in got} == {"FI", "TR"}


def test_unknown_nat_is_an_error_naming_it(server):
    response = get(server, results=5, nat="us,xx")
    assert response.status_code == 400
    assert "XX" in response.json()["error"]


def test_gender_filter_returns_only_that_gender(server):
    got = users(server, results=100, seed="gender", gender="female")
    assert {u["gender"] for u in got} == {"female"}
    assert get(server, gender="other").status_code == 400


def test_inc_and_exc_select_top_level_fields_without_changing_values(server):
    full = users(server, results=5, seed="fields")
    included = users(server, results=5, seed="fields", inc="name,nat")
    excluded = users(server, results=5, seed="fields", exc="login,id")
    assert included == [{"name": u["name"], "nat": u["nat"]} for u in full]
    assert all("login" not in u and "id" not in u and "email" in u for u in excluded)


def test_noinfo_drops_the_info_block(server):
    assert "info" not in get(server, results=2, noinfo="").json()


@pytest.mark.parametrize("fmt", ["csv", "xml", "yaml", "prettyjson"])
def test_formats_other_than_json_are_an_error_json(server, fmt):
    response = get(server, format=fmt)
    assert response.status_code == 400
    assert fmt in response.json()["error"]


@pytest.mark.parametrize("path", ["/api", "/api/", "/api/1.4", "/api/1.4/"])
def test_versioned_and_unversioned_paths_are_served(server, path):
    root = server.url.removesuffix("/api/")
    response = requests.get(root + path, params={"results": 2}, timeout=10)
    assert response.status_code == 200 and len(response.json()["results"]) == 2


def test_other_versions_and_paths_answer_404_error_json(server):
    assert get(server, path="1.3/").json() == {"error": "only API version 1.4 is served offline"}
    response = requests.get(server.url.replace("/api/", "/elsewhere"), timeout=10)
    assert response.status_code == 404 and "error" in response.json()


# --- fault injection ------------------------------------------------------------------------


def test_fault_injection_answers_each_kind_once_then_serves_normally():
    faults = Faults(first=len(FAULT_KINDS), delay_seconds=0.2, retry_after_seconds=3)
    with running(faults=faults) as srv:
        url = srv.url + "1.4/?results=20&seed=faults"
        seen = []
        for kind in FAULT_KINDS:
            try:
                response = requests.get(url, timeout=10)
                response.content  # noqa: B018 - reading the body is the point
            except requests.exceptions.ChunkedEncodingError:
                seen.append((kind, "cut short"))
                continue
            try:
                body = response.json()
            except requests.exceptions.JSONDecodeError:  # urllib3 1.x hands the short body over
                seen.append((kind, "cut short"))
                continue
            seen.append((kind, response.status_code, response.headers.get("Retry-After"), "error" in body))
        normal = requests.get(url, timeout=10)
    assert seen == [
        ("500", 500, None, True),
        ("503", 503, None, True),
        ("429", 429, "3", True),
        ("error", 200, None, True),
        ("delay", 200, None, False),
        ("truncate", "cut short"),
    ]
    assert normal.status_code == 200 and len(normal.json()["results"]) == 20
    assert faults.injected == dict.fromkeys(FAULT_KINDS, 1)


def test_fault_rate_injects_roughly_that_fraction():
    faults = Faults(rate=0.5, kinds=("error",), seed=3)
    decisions = [faults.next() for _ in range(400)]
    assert 150 < decisions.count("error") < 250


def test_unknown_fault_kind_is_rejected():
    with pytest.raises(ValueError, match="fault kinds"):
        Faults(kinds=("explode",))


def test_cli_help_lists_host_port_and_fault_options():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--fault-rate", "--fault-kinds", "--fault-delay"):
        assert option in result.output
