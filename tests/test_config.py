"""Settings: every WORLDLOOP_* key in one place, coerced once, strings verbatim (issue 9)."""

from __future__ import annotations

import pytest

from worldloop import ConfigError, Settings
from worldloop.clock import OverrunPolicy
from worldloop.config import env_config


def test_defaults_cover_every_field_under_its_key() -> None:
    defaults = Settings.defaults()
    assert defaults["WORLDLOOP_RATE_HZ"] == 20.0
    assert defaults["WORLDLOOP_QUEUE_SIZE"] == 10_000
    assert len(defaults) == len(Settings.model_fields)
    assert Settings.from_config({}) == Settings()


def test_environment_strings_are_coerced_by_type() -> None:
    env = {
        "WORLDLOOP_RATE_HZ": "12.5",
        "WORLDLOOP_START_PAUSED": "true",
        "WORLDLOOP_QUEUE_SIZE": "7",
        "WORLDLOOP_OVERRUN": "skip",
        "WORLDLOOP_JOBS": '[{"name": "x", "func": "m:f", "every": 5}]',
        "OTHER": "ignored",
    }
    s = Settings.from_config(env_config(env))
    assert s.rate_hz == 12.5 and s.start_paused is True and s.queue_size == 7
    assert s.overrun is OverrunPolicy.SKIP
    assert s.jobs == [{"name": "x", "func": "m:f", "every": 5}]


@pytest.mark.parametrize(
    "word", ["1e500000000000000", "  spaced secret 0123  ", "null-null-null-null"]
)
def test_a_secret_is_taken_verbatim(word: str) -> None:
    assert Settings.from_config({"WORLDLOOP_ADMIN_TOKEN": word}).admin_token == word


@pytest.mark.parametrize("word", ["false", "null", "0", "1e5", "FALSE", " off ", "None", "short"])
def test_a_switch_word_or_a_short_token_is_refused_naming_the_key(word: str) -> None:
    # issue 10 finding 4: "false", "null", "0" used to turn the admin API on with that word as
    # its token; they are refused at start, and so is anything too short to be a secret
    with pytest.raises(ConfigError, match="WORLDLOOP_ADMIN_TOKEN") as err:
        Settings.from_config({"WORLDLOOP_ADMIN_TOKEN": word})
    assert "\n" not in err.value.message
    assert "unset or empty" in err.value.message


@pytest.mark.parametrize("value", [None, "", "   "])
def test_an_empty_admin_token_turns_the_admin_api_off(value: object) -> None:
    assert Settings.from_config({"WORLDLOOP_ADMIN_TOKEN": value}).admin_token is None


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("WORLDLOOP_RATE_HZ", 0.0),
        ("WORLDLOOP_RATE_HZ", float("nan")),
        ("WORLDLOOP_QUEUE_SIZE", "1e5"),
        ("WORLDLOOP_OVERRUN", "sometimes"),
        ("WORLDLOOP_AUTOSTART", "sometimes"),
        ("WORLDLOOP_ADMIN_TOKEN", 0),
        ("WORLDLOOP_JOBS", "[not json"),
        ("WORLDLOOP_WORLD", 42),
    ],
)
def test_a_bad_value_is_a_config_error_naming_the_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=key) as err:
        Settings.from_config({key: value})
    assert err.value.details["key"] == key


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(ValueError):
        s.rate_hz = 5.0  # type: ignore[misc]
