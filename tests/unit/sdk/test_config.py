"""`ember.sdk._config`: arguments, then EMBER_URL/EMBER_TOKEN, then a client.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ember.sdk import Client, Config, EmberConfigError, _config

VARIABLES = ("EMBER_URL", "EMBER_TOKEN", "EMBER_CONFIG", "EMBER_TEAM_ID", "EMBER_PROJECT_ID")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No ambient configuration: the variables are unset and the default files are
    paths in `tmp_path` that the tests may write."""
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    defaults = (tmp_path / "system" / "client.json", tmp_path / "user" / "client.json")
    monkeypatch.setattr(_config, "DEFAULT_CONFIG_PATHS", defaults)
    return tmp_path


def write_config(path: Path, **values: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(values))
    return path


def test_arguments() -> None:
    config = Config.resolve("http://127.0.0.1:7000/", "ember_abc")
    assert config == Config("http://127.0.0.1:7000", "ember_abc", None, None)


def test_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBER_URL", "http://env.test:1")
    monkeypatch.setenv("EMBER_TOKEN", "ember_env")
    monkeypatch.setenv("EMBER_TEAM_ID", "team_env")
    monkeypatch.setenv("EMBER_PROJECT_ID", "prj_env")
    assert Config.resolve() == Config("http://env.test:1", "ember_env", "team_env", "prj_env")


def test_arguments_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBER_URL", "http://env.test:1")
    monkeypatch.setenv("EMBER_TOKEN", "ember_env")
    assert Config.resolve("http://arg.test:2", None) == Config("http://arg.test:2", "ember_env")
    assert Config.resolve(None, "ember_arg") == Config("http://env.test:1", "ember_arg")


def test_a_config_file(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "c.json",
        url="http://file.test:3/",
        token="ember_file",
        teamId="team_f",
        projectId="prj_f",
    )
    config = Config.resolve(config_path=path)
    assert config == Config("http://file.test:3", "ember_file", "team_f", "prj_f")
    assert Config.resolve(config_path=str(path)) == config


def test_the_file_fills_what_arguments_and_variables_leave_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(tmp_path / "c.json", url="http://file.test:3", token="ember_file")
    assert Config.resolve("http://arg.test:2", config_path=path).url == "http://arg.test:2"
    assert Config.resolve("http://arg.test:2", config_path=path).token == "ember_file"
    monkeypatch.setenv("EMBER_TOKEN", "ember_env")
    assert Config.resolve(config_path=path) == Config("http://file.test:3", "ember_env")


def test_ember_config_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(tmp_path / "elsewhere.json", url="http://var.test:4", token="ember_var")
    monkeypatch.setenv("EMBER_CONFIG", str(path))
    assert Config.resolve() == Config("http://var.test:4", "ember_var")


def test_the_file_ember_serve_writes_is_found_by_default(tmp_path: Path) -> None:
    write_config(tmp_path / "user" / "client.json", url="http://user.test:5", token="ember_u")
    assert Config.resolve() == Config("http://user.test:5", "ember_u")
    write_config(tmp_path / "system" / "client.json", url="http://sys.test:6", token="ember_s")
    assert Config.resolve() == Config("http://sys.test:6", "ember_s")


def test_an_explicit_path_comes_before_the_defaults(tmp_path: Path) -> None:
    write_config(tmp_path / "system" / "client.json", url="http://sys.test:6", token="ember_s")
    path = write_config(tmp_path / "mine.json", url="http://mine.test:7", token="ember_m")
    assert Config.resolve(config_path=path).url == "http://mine.test:7"


def test_unreadable_files_are_skipped(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    write_config(tmp_path / "user" / "client.json", url="http://user.test:5", token="ember_u")
    assert Config.resolve(config_path=broken).url == "http://user.test:5"
    assert Config.resolve(config_path=tmp_path / "missing.json").url == "http://user.test:5"


def test_nothing_configured_names_ember_serve() -> None:
    with pytest.raises(EmberConfigError) as raised:
        Config.resolve()
    message = str(raised.value)
    assert "ember serve" in message
    assert "EMBER_URL" in message and "EMBER_TOKEN" in message


def test_a_url_alone_is_not_enough(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBER_URL", "http://env.test:1")
    with pytest.raises(EmberConfigError):
        Config.resolve()


def test_a_file_missing_a_key_is_a_config_error(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.json", url="http://file.test:3")
    with pytest.raises(EmberConfigError) as raised:
        Config.resolve(config_path=path)
    assert str(path) in str(raised.value) and "token" in str(raised.value)
    path.write_text("[1, 2]")
    with pytest.raises(EmberConfigError, match="JSON object"):
        Config.resolve(config_path=path)


def test_clients_use_the_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBER_URL", "http://env.test:1")
    monkeypatch.setenv("EMBER_TOKEN", "ember_env")
    with Client() as client:
        assert client.config == Config("http://env.test:1", "ember_env")
    monkeypatch.delenv("EMBER_TOKEN")
    with pytest.raises(EmberConfigError):
        Client()
