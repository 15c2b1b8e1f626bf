"""The app module as gunicorn loads it, and the synthetic data the screenshot uses."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bdf.config import Settings, load_settings
from dashboard import data, demo

REPO = Path(__file__).resolve().parents[2]


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BDF")} | env
    return subprocess.run(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=environ,
        timeout=60,
        check=False,
    )


def test_importing_the_app_module_reads_no_configuration_and_connects_nowhere() -> None:
    result = _python("import dashboard.app", BDF_CONFIG="/nonexistent/dashboard.toml")
    assert result.returncode == 0, result.stderr


def test_a_missing_configuration_ends_the_worker_with_one_clear_line(tmp_path: Path) -> None:
    result = _python("import dashboard.app as m; m.server", BDF_CONFIG=str(tmp_path / "missing.toml"))
    assert result.returncode == 3  # gunicorn's "Worker failed to boot"
    assert "Traceback" not in result.stderr
    assert f"configuration file {tmp_path / 'missing.toml'} not found" in result.stderr


def test_an_unreachable_mongodb_still_gives_a_server(tmp_path: Path) -> None:
    config = demo.write_config(tmp_path, f"127.0.0.1:{demo.free_port()}", "user_profiles", "dashboard", "pw")
    result = _python(
        "import dashboard.app as m; print(type(m.server).__name__, m.app.title)", BDF_CONFIG=str(config)
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == "Flask"


def test_a_world_readable_credentials_file_is_refused_at_start(tmp_path: Path) -> None:
    from bdf.config import ConfigError
    from dashboard.app import create_app

    config = demo.write_config(tmp_path, "127.0.0.1:1", "user_profiles", "dashboard", "pw")
    (tmp_path / "mongodb-dashboard.toml").chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        create_app(load_settings(config))


def test_the_app_needs_a_mongodb_section() -> None:
    from bdf.config import ConfigError
    from dashboard.app import create_app

    with pytest.raises(ConfigError, match=r"\[mongodb\]"):
        create_app(Settings())


def test_dashboard_settings_have_safe_defaults() -> None:
    dashboard = Settings().dashboard
    assert (dashboard.port, dashboard.host, dashboard.refresh_seconds) == (8050, "127.0.0.1", 10)
    assert dashboard.mongodb_timeout_seconds == 3.0


def test_synthetic_aggregates_add_up_across_collections() -> None:
    documents = demo.synthetic_aggregates(profiles=10_000, domains=50, seed=3)

    def users(name: str) -> int:
        return sum(d["users"] for d in documents[name])

    assert documents[data.TOTALS][0]["users"] == 10_000
    for name in (data.NATIONALITY, data.GENDER, data.NATIONALITY_GENDER, data.EMAIL_DOMAINS,
                 data.BIRTH_MONTHS, data.REGISTRATIONS):  # fmt: skip
        assert users(name) == 10_000, name
    assert len(documents[data.NATIONALITY]) == 21
    assert len(documents[data.EMAIL_DOMAINS]) == 50
    births = sum(d["birth_epoch_day_sum"] for d in documents[data.NATIONALITY_GENDER])
    assert births == documents[data.TOTALS][0]["birth_epoch_day_sum"]
    snapshot = data.summarise(documents, dt.datetime.now(dt.UTC), dt.date.today())
    assert 30 < data.select(snapshot, None, None, dt.date.today()).average_age < 70


def test_a_mongodb_timeout_longer_than_the_refresh_is_refused(tmp_path: Path) -> None:
    from bdf.config import ConfigError

    config = demo.write_config(
        tmp_path,
        "127.0.0.1:1",
        "user_profiles",
        "dashboard",
        "pw",
        {"refresh_seconds": 2, "mongodb_timeout_seconds": 2},
    )
    with pytest.raises(ConfigError, match="dashboard: Value error, mongodb_timeout_seconds must be shorter"):
        load_settings(config)


def _counting_source(tmp_path: Path, reuse_seconds: float) -> tuple[data.AggregateSource, list[int]]:
    settings = load_settings(demo.write_config(tmp_path, "127.0.0.1:1", "user_profiles", "dashboard", "pw"))
    assert settings.mongodb is not None
    source = data.AggregateSource(settings.mongodb, timeout_seconds=1, reuse_seconds=reuse_seconds)
    calls: list[int] = []

    def read_now() -> data.Reading:
        calls.append(1)
        return data.Reading(problem=data.Problem("unreachable", "down"))

    source.read_now = read_now  # type: ignore[method-assign]
    return source, calls


def test_a_recent_reading_is_reused_instead_of_asking_mongodb_again(tmp_path: Path) -> None:
    source, calls = _counting_source(tmp_path, reuse_seconds=60)
    assert source.read() is source.read()
    assert len(calls) == 1


def test_without_reuse_every_refresh_asks_mongodb(tmp_path: Path) -> None:
    source, calls = _counting_source(tmp_path, reuse_seconds=0)
    source.read()
    source.read()
    assert len(calls) == 2
