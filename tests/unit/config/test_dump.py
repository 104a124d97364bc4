"""The effective configuration (``check-config --print``): it loads back to the same configuration, with
secrets redacted, and Kafka properties set in the environment reach their dotted names."""

from __future__ import annotations

import pytest

from service.config import ConfigError
from service.config.dump import effective_config, to_toml
from service.config.secrets import is_secret, scrub, secret_values
from tests.helpers import CONFIG_SHAPES, FULL_CONFIG, MINIMAL_CONFIG, config_from_toml


def test_effective_config_loads_back_to_the_same_configuration(tmp_path):
    for text in [FULL_CONFIG, *CONFIG_SHAPES]:
        original = config_from_toml(text)
        dumped = to_toml(effective_config(original))
        again = config_from_toml(dumped)
        secrets = {k for k in original.kafka if is_secret(k)}
        assert {k: v for k, v in again.kafka.items() if k not in secrets} == {
            k: v for k, v in original.kafka.items() if k not in secrets
        }
        assert again.__class__(**{**again.__dict__, "kafka": original.kafka, "schema_registry": original.schema_registry}) == original
        if original.schema_registry is not None:  # its secrets are redacted too; everything else loads back
            assert again.schema_registry is not None
            public = {k: v for k, v in original.schema_registry.properties.items() if not is_secret(k)}
            assert {k: v for k, v in again.schema_registry.properties.items() if not is_secret(k)} == public
            assert again.schema_registry.url == original.schema_registry.url


def test_schema_registry_secrets_are_redacted():
    text = MINIMAL_CONFIG + '[schema_registry]\nurl = "https://u:url-pa55@registry:8081"\n"basic.auth.user.info" = "svc:info-pa55"\n'
    config = config_from_toml(text)
    dumped = to_toml(effective_config(config))
    assert "url-pa55" not in dumped and "info-pa55" not in dumped
    assert '"basic.auth.user.info" = "<redacted>"' in dumped
    assert 'url = "https://u:<redacted>@registry:8081"' in dumped
    assert {"svc:info-pa55", "info-pa55", "url-pa55"} <= set(secret_values(config))
    assert scrub("auth svc:info-pa55 at https://u:url-pa55@registry", secret_values(config)) == "auth <redacted> at https://u:<redacted>@registry"


def test_effective_config_redacts_secrets_and_keeps_the_rest():
    config = config_from_toml(FULL_CONFIG, {"SESSIONIZER__KAFKA__SASL_OAUTHBEARER_CLIENT_SECRET": "oauth-s3cret"})
    dumped = to_toml(effective_config(config))
    for secret in ("pa55-word", "key-pa55", "oauth-s3cret"):
        assert secret not in dumped
    assert '"sasl.password" = "<redacted>"' in dumped
    assert '"sasl.oauthbearer.client.secret" = "<redacted>"' in dumped
    assert '"sasl.username" = "svc"' in dumped
    assert sorted(secret_values(config)) == ["key-pa55", "oauth-s3cret", "pa55-word"]


@pytest.mark.parametrize(
    "name,secret",
    [
        ("sasl.password", True),
        ("ssl.key.password", True),
        ("ssl.keystore.password", True),
        ("ssl.key.pem", True),
        ("sasl.oauthbearer.client.secret", True),
        ("sasl.oauthbearer.config", True),
        ("sasl.oauthbearer.assertion.private.key.pem", True),
        ("sasl.username", False),
        ("ssl.ca.location", False),
        ("bootstrap.servers", False),
    ],
)
def test_secret_property_names(name, secret):
    assert is_secret(name) is secret


def test_underscores_in_kafka_properties_stand_for_dots():
    config = config_from_toml(MINIMAL_CONFIG, {"SESSIONIZER__KAFKA__SASL_PASSWORD": "x", "SESSIONIZER__KAFKA__PRODUCER__LINGER_MS": "7"})
    assert config.kafka["sasl.password"] == "x"
    assert config.producer["linger.ms"] == "7"


def test_sessions_token_and_port_parse_default_and_dump(tmp_path):
    config = config_from_toml(MINIMAL_CONFIG)
    assert (config.http.sessions_token, config.http.sessions_port) == (None, 0)
    assert "sessions_token" not in effective_config(config)["http"]
    config = config_from_toml(MINIMAL_CONFIG + '[http]\nsessions_token = "t0ken-1e5"\nsessions_port = 9109\n')
    assert (config.http.sessions_token, config.http.sessions_port) == ("t0ken-1e5", 9109)
    dumped = to_toml(effective_config(config))
    assert "t0ken-1e5" not in dumped
    assert 'sessions_token = "<redacted>"' in dumped and "sessions_port = 9109" in dumped
    again = config_from_toml(dumped)
    assert again.http.sessions_port == 9109


def test_sessions_token_is_a_secret_from_the_environment_or_a_file(tmp_path):
    config = config_from_toml(MINIMAL_CONFIG, {"SESSIONIZER__HTTP__SESSIONS_TOKEN": "1e5"})
    assert config.http.sessions_token == "1e5"  # a string as given, not 100000.0
    assert secret_values(config) == ["1e5"]
    (tmp_path / "token").write_text("from-a-f1le\n")
    config = config_from_toml(MINIMAL_CONFIG, {"SESSIONIZER__HTTP__SESSIONS_TOKEN_FILE": str(tmp_path / "token")})
    assert config.http.sessions_token == "from-a-f1le"
    assert scrub("GET /sessions/u?token=from-a-f1le", secret_values(config)) == "GET /sessions/u?token=<redacted>"
    assert is_secret("sessions_token")  # a log field so named is redacted too
    assert "from-a-f1le" not in to_toml(effective_config(config))


def test_sessions_token_and_port_problems():
    for text, message in [
        ('[http]\nsessions_token = ""\n', "http.sessions_token = '': expected a non-empty string"),
        ("[http]\nsessions_port = -1\n", "http.sessions_port = -1: expected a whole number >= 0"),
    ]:
        with pytest.raises(ConfigError) as info:
            config_from_toml(MINIMAL_CONFIG + text)
        assert info.value.problems == [message]
