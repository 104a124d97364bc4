"""``[schema_registry]``, ``[sources."<topic>"]`` and ``output.serialization``: what they accept and what they refuse."""

from __future__ import annotations

import pytest

from service.config import load_config
from tests.helpers import config_problems

BASE = """
[pipelines.s]
sources = ["a", "b"]
key = "user_id"
output = "out"
[pipelines.s.window]
type = "session"
gap = "30m"
"""
REGISTRY = '[schema_registry]\nurl = "http://registry:8081"\n'


def load(tmp_path, text, environ=None):
    path = tmp_path / "c.toml"
    path.write_text(text)
    return load_config(path, environ or {})


def test_defaults_are_json_without_a_registry(tmp_path):
    config = load(tmp_path, BASE)
    assert config.schema_registry is None
    assert config.sources == {}
    assert config.source_config("a").format == "json"
    assert config.source_config("a").key_format == "string"
    assert config.pipelines[0].output.serialization == "json"
    assert config.pipelines[0].output.subject_strategy == "topic"


def test_sources_registry_and_serialization_parse(tmp_path):
    text = BASE.replace('output = "out"', "") + REGISTRY + """
"max.retries" = 2
ssl_ca_location = "/ca.pem"
[sources.a]
format = "avro"
[sources."b"]
format = "protobuf"
[pipelines.s.output]
topic = "out"
serialization = "protobuf"
subject_strategy = "record"
"""
    config = load(tmp_path, text)
    assert config.source_config("a").format == "avro"
    assert config.source_config("b").format == "protobuf"
    registry = config.schema_registry
    assert registry is not None and registry.url == "http://registry:8081"
    assert registry.timeout_ms == 5000 and registry.retry_backoff_ms == 1000 and registry.retry_backoff_max_ms == 30000
    assert registry.properties == {"max.retries": 2, "ssl.ca.location": "/ca.pem"}
    assert config.pipelines[0].output.serialization == "protobuf"
    assert config.pipelines[0].output.subject_strategy == "record"


def test_environment_sets_a_source_format_and_a_registry_secret(tmp_path):
    config = load(
        tmp_path,
        BASE + REGISTRY,
        {"SESSIONIZER__SOURCES__A__FORMAT": "avro", "SESSIONIZER__SCHEMA_REGISTRY__BASIC_AUTH_USER_INFO": "u:p"},
    )
    assert config.source_config("a").format == "avro"
    assert config.schema_registry is not None
    assert config.schema_registry.properties == {"basic.auth.user.info": "u:p"}


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ('[sources.a]\nformat = "xml"\n', "sources.a.format = 'xml': expected one of 'json', 'avro', 'protobuf', 'json_schema'"),
        ('[sources.a]\nkey_format = "bytes"\n', "sources.a.key_format = 'bytes': expected one of 'string', 'avro'"),
        ('[sources.a]\nformat = "avro"\nvalidate = true\n', 'sources.a.validate = True: expected true only with format = "json_schema"'),
        ('[sources.a]\nformaat = "avro"\n', "sources.a.formaat: unknown key"),
        ('[sources.c]\nformat = "avro"\n', "sources.c: no pipeline reads topic 'c'"),
        ('[sources.a]\nformat = "avro"\n', 'schema_registry is missing: expected a [schema_registry] table with url: sources."a" use schemas'),
        ('[schema_registry]\ntimeout = "1s"\n', "schema_registry.url is missing"),
        ('[schema_registry]\nurl = "registry:8081"\n', "schema_registry.url = 'registry:8081': expected an http:// or https:// URL"),
        ('[schema_registry]\nurl = "http://r"\nretry_backoff = "10s"\nretry_backoff_max = "1s"\n', "schema_registry.retry_backoff_max = '1s'"),
        ('[schema_registry]\nurl = "http://r"\nnested = { a = 1 }\n', "schema_registry.nested = {'a': 1}: expected a string, number or boolean"),
    ],
)
def test_format_config_problems(extra, expected):
    found = config_problems(BASE + extra)
    assert any(p.startswith(expected) for p in found), found


def test_json_schema_without_validation_needs_no_registry(tmp_path):
    config = load(tmp_path, BASE + '[sources.a]\nformat = "json_schema"\n')
    assert config.source_config("a").format == "json_schema"


def test_output_serialization_needs_a_registry_and_no_pairing(tmp_path):
    text = BASE.replace('output = "out"', "") + '[pipelines.s.output]\ntopic = "out"\nserialization = "avro"\n'
    assert any(p.startswith("schema_registry is missing") and "pipelines.s.output" in p for p in config_problems(text))
    paired = text + REGISTRY + "[pipelines.s.pairing]\n"
    assert any(p.startswith("pipelines.s.output.serialization = 'avro': expected \"json\" with [pairing]") for p in config_problems(paired))


def test_record_key_pipelines_need_one_key_format(tmp_path):
    text = BASE.replace('key = "user_id"', 'key = "@key"') + REGISTRY + '[sources.a]\nkey_format = "avro"\n'
    assert any("its sources' key_format differ (avro, string)" in p for p in config_problems(text))
    same = text + '[sources.b]\nkey_format = "avro"\n'
    assert load(tmp_path, same).source_config("b").key_format == "avro"
