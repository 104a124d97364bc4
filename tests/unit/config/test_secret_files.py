"""``SESSIONIZER__…_FILE`` variables: a key's value read from a file, as Docker and Kubernetes mount secrets.
The content is used, never shown: not in problems, not in ``check-config --print``, not in logs."""

from __future__ import annotations

import os

import pytest

from service.config.secrets import scrub, secret_values
from tests.helpers import MINIMAL_CONFIG, config_from_toml, config_problems, sessionizer

SECRET = "s3cret-from-a-file"


def test_the_files_content_less_its_trailing_newline_is_the_value(tmp_path):
    secret = tmp_path / "kafka"
    secret.write_text(SECRET + "\n")
    config = config_from_toml(MINIMAL_CONFIG, {"SESSIONIZER__KAFKA__SASL_PASSWORD_FILE": str(secret)})
    assert config.kafka["sasl.password"] == SECRET


@pytest.mark.parametrize("content,value", [("1e5", "1e5"), ("0x1F\r\n", "0x1F"), ("a\nb\n\n", "a\nb\n"), ("", "")])
def test_file_content_is_a_string_as_written(tmp_path, content, value):
    secret = tmp_path / "kafka"
    secret.write_bytes(content.encode())
    config = config_from_toml(MINIMAL_CONFIG, {"SESSIONIZER__KAFKA__SASL_PASSWORD_FILE": str(secret)})
    assert config.kafka["sasl.password"] == value


def test_any_key_can_come_from_a_file_and_is_read_as_its_kind(tmp_path):
    (tmp_path / "batch").write_text("250\n")
    (tmp_path / "id").write_text("7\n")
    env = {"SESSIONIZER__APP__POLL_BATCH_FILE": str(tmp_path / "batch"), "SESSIONIZER__APP__INSTANCE_ID_FILE": str(tmp_path / "id")}
    config = config_from_toml(MINIMAL_CONFIG, env)
    assert (config.poll_batch, config.instance_id) == (250, "7")


def test_a_missing_file_names_the_variable_and_the_path(tmp_path):
    missing = tmp_path / "nowhere"
    assert config_problems(MINIMAL_CONFIG, {"SESSIONIZER__KAFKA__SASL_PASSWORD_FILE": str(missing)}) == [
        f"environment variable SESSIONIZER__KAFKA__SASL_PASSWORD_FILE: cannot read '{missing}': No such file or directory"
    ]


def test_an_unreadable_file_names_the_variable_and_the_path(tmp_path):
    assert config_problems(MINIMAL_CONFIG, {"SESSIONIZER__KAFKA__SASL_PASSWORD_FILE": str(tmp_path)}) == [
        f"environment variable SESSIONIZER__KAFKA__SASL_PASSWORD_FILE: cannot read '{tmp_path}': Is a directory"
    ]
    binary = tmp_path / "key.der"
    binary.write_bytes(b"\xff\xfe" + SECRET.encode())
    (found,) = config_problems(MINIMAL_CONFIG, {"SESSIONIZER__KAFKA__SASL_PASSWORD_FILE": str(binary)})
    assert found == f"environment variable SESSIONIZER__KAFKA__SASL_PASSWORD_FILE: '{binary}' is not UTF-8 text"
    assert config_problems(MINIMAL_CONFIG, {"SESSIONIZER__KAFKA__SASL_PASSWORD_FILE": ""}) == [
        "environment variable SESSIONIZER__KAFKA__SASL_PASSWORD_FILE: expected the path of a file holding the value"
    ]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_a_file_without_permission_is_reported(tmp_path):
    secret = tmp_path / "kafka"
    secret.write_text(SECRET)
    secret.chmod(0)
    (found,) = config_problems(MINIMAL_CONFIG, {"SESSIONIZER__KAFKA__SASL_PASSWORD_FILE": str(secret)})
    assert found.endswith(f"cannot read '{secret}': Permission denied")


def test_a_bad_value_from_a_file_names_the_file_not_the_content(tmp_path):
    secret = tmp_path / "batch"
    secret.write_text(SECRET)
    assert config_problems(MINIMAL_CONFIG, {"SESSIONIZER__APP__POLL_BATCH_FILE": str(secret)}) == [
        f"environment variable SESSIONIZER__APP__POLL_BATCH_FILE (file '{secret}'): expected a whole number >= 1"
    ]


def test_a_key_set_both_ways_is_a_problem(tmp_path):
    secret = tmp_path / "kafka"
    secret.write_text(SECRET)
    env = {"SESSIONIZER__KAFKA__SASL_PASSWORD": "x", "SESSIONIZER__KAFKA__SASL_PASSWORD_FILE": str(secret)}
    assert config_problems(MINIMAL_CONFIG, env) == [
        "environment variable SESSIONIZER__KAFKA__SASL_PASSWORD_FILE: SESSIONIZER__KAFKA__SASL_PASSWORD sets kafka.sasl_password too; "
        "set one of them"
    ]


def test_a_secret_from_a_file_is_scrubbed_and_redacted(tmp_path):
    secret = tmp_path / "kafka"
    secret.write_text(SECRET + "\n")
    env = {"SESSIONIZER__KAFKA__SASL_PASSWORD_FILE": str(secret)}
    config = config_from_toml(MINIMAL_CONFIG, env)
    assert SECRET in secret_values(config)
    assert SECRET not in scrub(f"connecting with {SECRET}", secret_values(config))
    path = tmp_path / "c.toml"
    path.write_text(MINIMAL_CONFIG)
    result = sessionizer("check-config", str(path), "--print", env=env)
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout + result.stderr
    assert '"sasl.password" = "<redacted>"' in result.stdout
