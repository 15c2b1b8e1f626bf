"""Configuration: one validated file, environment overrides, clear errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from bdf.config import ConfigError, load_credentials, load_settings

MINIMAL = """
[kafka]
bootstrap_servers = ["broker-a:9092", "broker-b:9092"]
credentials_file = "/etc/bigdataflow/secrets/kafka.toml"
"""


def write(tmp_path: Path, text: str, name: str = "bdf.toml", mode: int = 0o600) -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(mode)
    return path


def test_example_configuration_shipped_in_the_repo_is_valid():
    settings = load_settings(Path(__file__).parents[2] / "config/bigdataflow.example.toml", environ={})
    settings.require("kafka", "cassandra", "mongodb", "keys", "stream")
    assert settings.kafka.topic == "user_profiles"


def test_defaults_fill_what_the_file_leaves_out(tmp_path):
    settings = load_settings(write(tmp_path, MINIMAL), environ={})
    assert settings.kafka.sasl_mechanism == "SCRAM-SHA-512"
    assert settings.kafka.dead_letter_topic == "user_profiles_dlq"
    assert settings.producer.api_version == "1.4"


def test_environment_overrides_nested_keys_with_json_values(tmp_path):
    environ = {
        "BDF__KAFKA__TOPIC": "other",
        "BDF__PRODUCER__BATCH_SIZE": "250",
        "BDF__PRODUCER__NATIONALITIES": '["FI"]',
    }
    settings = load_settings(write(tmp_path, MINIMAL), environ=environ)
    assert (settings.kafka.topic, settings.producer.batch_size, settings.producer.nationalities) == (
        "other",
        250,
        ["FI"],
    )


def test_config_path_comes_from_bdf_config_variable(tmp_path):
    path = write(tmp_path, MINIMAL)
    assert load_settings(environ={"BDF_CONFIG": str(path)}).source == path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[kafka]\ncredentials_file = 'x'\n", "kafka.bootstrap_servers: Field required"),
        (
            MINIMAL.replace("broker-a:9092", "broker-a"),
            "kafka.bootstrap_servers: Value error, 'broker-a' is not host:port",
        ),
        (
            MINIMAL + "[producer]\nbatch_size = 9000\n",
            "producer.batch_size: Input should be less than or equal to 5000",
        ),
        (MINIMAL + "[kafka_typo]\n", "kafka_typo: Extra inputs are not permitted"),
        (MINIMAL + "[producer]\nbatch_size = \n", "not valid TOML"),
    ],
    ids=["missing-key", "bad-server", "out-of-range", "unknown-section", "broken-toml"],
)
def test_bad_configuration_names_the_file_and_the_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_settings(path, environ={})
    assert str(path) in str(error.value)
    assert message in str(error.value)


def test_missing_file_says_how_to_point_at_one(tmp_path):
    with pytest.raises(ConfigError, match="BDF_CONFIG"):
        load_settings(tmp_path / "absent.toml", environ={})


def test_program_needing_a_missing_section_fails_at_start(tmp_path):
    settings = load_settings(write(tmp_path, MINIMAL), environ={})
    with pytest.raises(ConfigError, match=r"missing section\(s\) \[cassandra\], \[keys\]"):
        settings.require("kafka", "cassandra", "keys")


def test_credentials_file_must_be_private(tmp_path):
    path = write(tmp_path, 'username = "svc"\npassword = "generated"\n', "creds.toml", mode=0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_credentials(path)
    path.chmod(0o600)
    assert load_credentials(path).username == "svc"


def test_credentials_password_never_shows_in_repr(tmp_path):
    path = write(tmp_path, 'username = "svc"\npassword = "generated-secret"\n', "creds.toml")
    assert "generated-secret" not in repr(load_credentials(path))
