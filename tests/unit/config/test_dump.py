"""The effective configuration (``check-config --print``): it loads back to the same configuration, with
secrets redacted, and Kafka properties set in the environment reach their dotted names."""

from __future__ import annotations

import pytest

from service.config.dump import effective_config, to_toml
from service.config.secrets import is_secret, secret_values
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
        assert again.__class__(**{**again.__dict__, "kafka": original.kafka}) == original


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
