"""The register model (every GDPR Art. 30(1) item, internal consistency) and its rendering."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from gdpr.cli import main
from gdpr.model import DEFAULT_REGISTER, RegisterError, load_register, parse_register
from gdpr.render import render, time_limit

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "gdpr"


@pytest.fixture(scope="module")
def source() -> dict[str, Any]:
    return yaml.safe_load(DEFAULT_REGISTER.read_text(encoding="utf-8"))


def edited(source: dict[str, Any], change) -> dict[str, Any]:
    data = copy.deepcopy(source)
    change(data)
    return data


def test_register_holds_every_item_of_art_30_1():
    register = load_register()
    assert register.controller.name and register.dpo.email  # (a), placeholders until filled in
    assert register.purposes and all(p.lawful_basis.startswith("Art. 6(1)") for p in register.purposes)  # (b)
    assert register.data_subjects and register.data_categories  # (c)
    assert register.recipients  # (d)
    assert register.third_country_transfers.summary  # (e)
    assert all(c.retention in register.retention_by_id() for c in register.data_categories)  # (f)
    assert any(m.status == "in_place" for m in register.security_measures)  # (g)


@pytest.mark.parametrize(
    "item", ["controller", "dpo", "purposes", "data_subjects", "data_categories", "recipients",
             "third_country_transfers", "retention", "security_measures"],
)  # fmt: skip
def test_register_without_an_art_30_item_is_refused_naming_it(source, item):
    with pytest.raises(RegisterError, match=item):
        parse_register(edited(source, lambda data: data.pop(item)))


def test_dropped_field_that_names_a_column_is_refused(source):
    def change(data):
        entry = next(e for e in data["fields"] if "login.password" in e["fields"])
        entry["columns"] = [{"column": "password", "as": "kept"}]

    with pytest.raises(RegisterError, match=r"treatment 'dropped' of login\.password"):
        parse_register(edited(source, change))


def test_encrypted_field_without_an_encrypted_column_is_refused(source):
    def change(data):
        entry = next(e for e in data["fields"] if e["fields"] == ["phone"])
        entry["columns"] = [{"column": "phone_enc", "as": "kept"}]

    with pytest.raises(RegisterError, match="treatment 'encrypted' of phone"):
        parse_register(edited(source, change))


def test_reference_to_an_unknown_time_limit_is_refused(source):
    def change(data):
        data["stores"][0]["retention"] = "forever"

    with pytest.raises(RegisterError, match="unknown retention 'forever'"):
        parse_register(edited(source, change))


def test_field_listed_twice_is_refused(source):
    def change(data):
        data["fields"].append(copy.deepcopy(data["fields"][0]))

    with pytest.raises(RegisterError, match="field 'gender' is declared twice"):
        parse_register(edited(source, change))


def test_security_measure_claimed_without_evidence_is_refused(source):
    def change(data):
        data["security_measures"][0]["evidence"] = []

    with pytest.raises(RegisterError, match="in place but names no evidence"):
        parse_register(edited(source, change))


def test_unknown_key_is_refused_so_typos_do_not_vanish(source):
    def change(data):
        data["retension"] = []

    with pytest.raises(RegisterError, match="retension"):
        parse_register(edited(source, change))


def test_placeholders_are_listed_by_path_and_disappear_when_filled(source):
    register = load_register()
    assert "controller.name" in register.placeholders()
    assert "retention.erasure_log.enforced_by" in register.placeholders()

    def change(data):
        data["controller"]["name"] = "Example Controller Ltd"

    assert "controller.name" not in parse_register(edited(source, change)).placeholders()


def test_time_limits_read_as_years_and_days_with_the_exact_value():
    limits = load_register().retention_by_id()
    assert time_limit(limits["profile_store"]) == "3 years (94608000 s)"
    assert time_limit(limits["kafka_topic"]) == "7 days (604800000 ms)"
    assert time_limit(limits["kafka_dead_letter_topic"], exact=False) == "14 days"
    assert time_limit(limits["aggregates"]) == "no fixed time limit"


@pytest.mark.parametrize("fmt", ["md", "html"])
def test_rendered_register_names_every_field_store_and_time_limit(fmt):
    register = load_register()
    text = render(register, fmt)
    for path in register.field_entries():
        assert path in text
    for store in register.stores:
        assert store.name in text
    assert "3 years (94608000 s)" in text and "7 days (604800000 ms)" in text
    assert "Art. 30(1)(g)" in text


def test_markdown_shows_placeholders_instead_of_swallowing_them_as_html_tags():
    text = render(load_register(), "md")
    assert "\\<FILL IN: legal name of the controller>" in text
    assert "| <FILL" not in text


def test_html_escapes_the_text_and_is_one_complete_page():
    text = render(load_register(), "html")
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert "&lt;FILL IN: legal name of the controller&gt;" in text
    assert "<FILL IN" not in text


@pytest.mark.parametrize(("fmt", "name"), [("md", "register.md"), ("html", "register.html")])
def test_rendered_register_in_docs_is_current(fmt, name):
    rendered = render(load_register(), fmt)
    assert (DOCS / name).read_text(encoding="utf-8") == rendered, (
        f"docs/gdpr/{name} is stale: run make register"
    )


def test_render_command_writes_the_file_and_prints_to_stdout_without_output(tmp_path):
    runner = CliRunner()
    target = tmp_path / "out" / "register.html"
    result = runner.invoke(main, ["register", "render", "--format", "html", "--output", str(target)])
    assert result.exit_code == 0, result.output
    assert target.read_text(encoding="utf-8") == render(load_register(), "html")

    result = runner.invoke(main, ["register", "render"])
    assert result.exit_code == 0
    assert result.stdout.startswith("# Record of processing activities")


def test_render_command_reports_a_broken_register_in_one_message(tmp_path):
    broken = tmp_path / "register.yaml"
    broken.write_text("format: 1\ntitle: [unclosed\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["register", "render", "--register", str(broken)])
    assert result.exit_code == 1
    assert "not valid YAML" in result.output
    assert "Traceback" not in result.output
