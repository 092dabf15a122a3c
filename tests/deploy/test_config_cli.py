"""ServeConfig resolution and the `pruneguard serve` command line."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from pruneguard.deploy.cli import LAUNCHER, SERVICE, build_command, serve
from pruneguard.deploy.config import ENV, ServeConfig
from pruneguard.registry.errors import ConfigError


def test_env_round_trip() -> None:
    config = ServeConfig(
        model="digits",
        shadow_sample=0.25,
        poll_interval_s=1.5,
        max_batch=8,
        admin_token="zz-secret-zz",
        home=Path("/h"),
    )
    assert ServeConfig.from_env(config.to_env()) == config
    assert "zz-secret-zz" not in repr(config)  # the admin token never shows in logs


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({}, "PRUNEGUARD_SERVE_MODEL is not set"),
        ({ENV["model"]: "m", ENV["shadow_sample"]: "1.5"}, "shadow_sample is 1.5; allowed: 0..1"),
        (
            {ENV["model"]: "m", ENV["max_batch"]: "lots"},
            "PRUNEGUARD_MAX_BATCH='lots' is not a valid int",
        ),
        ({ENV["model"]: "m", ENV["poll_interval_s"]: "0"}, "poll_interval_s is 0.0"),
    ],
)
def test_bad_env_names_the_variable(env: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigError) as info:
        ServeConfig.from_env(env)
    assert words in str(info.value)


def test_command_runs_bentoml_serve_on_loopback_with_the_config_in_env(tmp_path: Path) -> None:
    config = ServeConfig(model="digits", home=tmp_path, shadow_sample=0.5)
    argv, env = build_command(config, host="127.0.0.1", port=3123)
    assert argv[:5] == [sys.executable, "-m", LAUNCHER, "serve", SERVICE]
    assert (
        argv[argv.index("--host") + 1] == "127.0.0.1" and argv[argv.index("--port") + 1] == "3123"
    )
    assert env[ENV["model"]] == "digits" and env[ENV["shadow_sample"]] == "0.5"
    assert ServeConfig.from_env(env).model == "digits"
    assert "BENTOML_HOME" in env


def test_cli_rejects_bad_options_before_starting(pruneguard_home: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(serve, ["digits", "--shadow-sample", "2"])
    assert result.exit_code == 2 and "shadow_sample is 2.0; allowed: 0..1" in result.output
    result = runner.invoke(serve, ["digits", "--admin-token-env", "NO_SUCH_VAR_XYZ"])
    assert result.exit_code == 2 and "NO_SUCH_VAR_XYZ" in result.output
    result = runner.invoke(serve, ["digits"])  # empty registry: one line naming the model
    assert result.exit_code == 1 and "no model named 'digits'" in result.output


def test_environment_only_knobs_reach_the_workers(
    pruneguard_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`pruneguard serve` must pass PRUNEGUARD_SHADOW_QUEUE & co. on, not reset them."""
    started: dict[str, dict[str, str]] = {}
    monkeypatch.setattr("pruneguard.deploy.cli._check_model", lambda config: None)
    monkeypatch.setattr("os.execve", lambda path, argv, env: started.setdefault("env", env))
    monkeypatch.setenv(ENV["shadow_queue"], "7")
    monkeypatch.setenv(ENV["shadow_nice"], "19")
    monkeypatch.setenv(ENV["shadow_sample"], "0.9")
    result = CliRunner().invoke(serve, ["digits", "--shadow-sample", "0.3"])
    assert result.exit_code == 0, result.output
    config = ServeConfig.from_env(started["env"])
    assert (config.shadow_queue, config.shadow_nice) == (7, 19)
    assert config.shadow_sample == 0.3  # an option given on the command line wins
    monkeypatch.setenv(ENV["shadow_mode"], "fork")
    result = CliRunner().invoke(serve, ["digits"])
    assert (
        result.exit_code == 2 and "shadow_mode is 'fork'; allowed: process, thread" in result.output
    )
    monkeypatch.setenv(ENV["shadow_mode"], "process")
    monkeypatch.setenv(ENV["shadow_sched"], "realtime")
    result = CliRunner().invoke(serve, ["digits"])
    assert result.exit_code == 2
    assert "shadow_sched is 'realtime'; allowed: idle, nice" in result.output


def test_host_defaults_to_loopback() -> None:
    host = next(p for p in serve.params if p.name == "host")
    assert host.default == "127.0.0.1"
