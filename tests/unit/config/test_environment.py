"""Environment overrides are read as the kind of value their key holds, never guessed from their look:
strings stay exactly as given, numbers, booleans and lists are converted, and a problem names the variable."""

from __future__ import annotations

import pytest

from service.config import KEYS
from service.config.loading import key_kind
from service.config.schema import BOOLEAN, DURATION, INTEGER, LIST, SIZE, TABLE, TEXT, VALUE
from tests.helpers import MINIMAL_CONFIG, config_from_toml, config_problems


def test_an_instance_id_that_looks_like_a_number_is_a_string():
    assert config_from_toml(MINIMAL_CONFIG, {"SESSIONIZER__APP__INSTANCE_ID": "1"}).instance_id == "1"
    assert config_from_toml(MINIMAL_CONFIG, {"SESSIONIZER__APP__ID": "007"}).app_id == "007"


@pytest.mark.parametrize("password", ["1e5", "0x1F", "true", "1_000", "[1]", '"quoted"', " padded ", "inf"])
def test_kafka_properties_are_kept_exactly_as_given(password):
    config = config_from_toml(MINIMAL_CONFIG, {"SESSIONIZER__KAFKA__SASL_PASSWORD": password})
    assert config.kafka["sasl.password"] == password


def test_client_properties_are_strings_too():
    env = {"SESSIONIZER__KAFKA__CONSUMER__FETCH_MAX_BYTES": "1e6", "SESSIONIZER__KAFKA__PRODUCER__LINGER_MS": "0x10"}
    config = config_from_toml(MINIMAL_CONFIG, env)
    assert config.consumer["fetch.max.bytes"] == "1e6" and config.producer["linger.ms"] == "0x10"


def test_numbers_booleans_durations_and_sizes_are_converted_per_key():
    env = {
        "SESSIONIZER__APP__POLL_BATCH": "500",
        "SESSIONIZER__TOPICS__PARTITIONS": " 12 ",
        "SESSIONIZER__TOPICS__CREATE": "false",
        "SESSIONIZER__APP__COMMIT_INTERVAL": "250",
        "SESSIONIZER__APP__PUNCTUATE_INTERVAL": "2s",
        "SESSIONIZER__STATE__CACHE_BYTES": "32MiB",
        "SESSIONIZER__PIPELINES__P__WINDOW__MAX_EVENTS": "7",
    }
    config = config_from_toml(MINIMAL_CONFIG, env)
    assert (config.poll_batch, config.topics.partitions, config.topics.create) == (500, 12, False)
    assert (config.commit_interval_ms, config.punctuate_interval_ms) == (250, 2000)
    assert config.state.cache_bytes == 32 * 2**20
    assert config.pipelines[0].window.max_events == 7


@pytest.mark.parametrize(
    "text,expected",
    [
        ('["web", "mobile"]', ("web", "mobile")),
        ("web,mobile", ("web", "mobile")),
        ("web, mobile ,backend", ("web", "mobile", "backend")),
        ("web", ("web",)),
    ],
)
def test_lists_are_a_toml_list_or_comma_separated(text, expected):
    config = config_from_toml(MINIMAL_CONFIG, {"SESSIONIZER__PIPELINES__P__SOURCES": text})
    assert config.pipelines[0].sources == expected


def test_a_condition_value_and_a_table_of_params_are_read_as_toml():
    text = MINIMAL_CONFIG + '[pipelines.p.aggregates]\nbig = { type = "any", field = "n" }\n'
    env = {"SESSIONIZER__PIPELINES__P__AGGREGATES__BIG__EQUALS": "3"}
    (aggregate,) = config_from_toml(text, env).pipelines[0].aggregates
    assert aggregate.condition is not None and aggregate.condition.equals == (3,)
    env = {"SESSIONIZER__PIPELINES__P__AGGREGATES__BIG__EQUALS": "three"}
    (aggregate,) = config_from_toml(text, env).pipelines[0].aggregates
    assert aggregate.condition is not None and aggregate.condition.equals == ("three",)
    text = MINIMAL_CONFIG + '[pipelines.p.aggregates]\ntop = { type = "custom", class = "examples.aggregates:TopValues" }\n'
    env = {"SESSIONIZER__PIPELINES__P__AGGREGATES__TOP__PARAMS": '{ field = "page", n = 2 }'}
    (aggregate,) = config_from_toml(text, env).pipelines[0].aggregates
    assert aggregate.params == {"field": "page", "n": 2}


@pytest.mark.parametrize(
    "name,text,message",
    [
        ("SESSIONIZER__APP__POLL_BATCH", "abc", "environment variable SESSIONIZER__APP__POLL_BATCH = 'abc': expected a whole number >= 1"),
        ("SESSIONIZER__APP__POLL_BATCH", "1e3", "environment variable SESSIONIZER__APP__POLL_BATCH = '1e3': expected a whole number >= 1"),
        ("SESSIONIZER__APP__POLL_BATCH", "0", "environment variable SESSIONIZER__APP__POLL_BATCH = '0': expected a whole number >= 1"),
        ("SESSIONIZER__HTTP__PORT", "0x1F", "environment variable SESSIONIZER__HTTP__PORT = '0x1F': expected a whole number >= 0"),
        ("SESSIONIZER__TOPICS__CREATE", "no", "environment variable SESSIONIZER__TOPICS__CREATE = 'no': expected true or false"),
        ("SESSIONIZER__APP__COMMIT_INTERVAL", "soon", "environment variable SESSIONIZER__APP__COMMIT_INTERVAL = 'soon': expected a duration"),
        ("SESSIONIZER__STATE__CACHE_BYTES", "lots", "environment variable SESSIONIZER__STATE__CACHE_BYTES = 'lots': expected a size"),
        ("SESSIONIZER__LOG__LEVEL", "loud", "environment variable SESSIONIZER__LOG__LEVEL = 'loud': expected one of 'debug'"),
        ("SESSIONIZER__APP__INSTANCE_ID", "", "environment variable SESSIONIZER__APP__INSTANCE_ID = '': expected a non-empty string"),
        (
            "SESSIONIZER__PIPELINES__P__SOURCES",
            '["a", "b"',
            "environment variable SESSIONIZER__PIPELINES__P__SOURCES = '[\"a\", \"b\"': expected a TOML list such as",
        ),
        ("SESSIONIZER__PIPELINES__P__SOURCES", "a,,b", "environment variable SESSIONIZER__PIPELINES__P__SOURCES = 'a,,b': expected a non-empty"),
        ("SESSIONIZER__PIPELINES__P__OUTPUT", "a b", "environment variable SESSIONIZER__PIPELINES__P__OUTPUT = 'a b': expected a topic name"),
        ("SESSIONIZER__APP__POLLBATCH", "5", "environment variable SESSIONIZER__APP__POLLBATCH: unknown key app.pollbatch"),
        ("SESSIONIZER__HTTP__SESSION_TOKEN", "s3cret", "environment variable SESSIONIZER__HTTP__SESSION_TOKEN: unknown key http.session_token"),
        ("SESSIONIZER__APPS__ID", "x", "environment variable SESSIONIZER__APPS__ID: unknown key apps"),
        (
            "SESSIONIZER__PIPELINES__P__SOURCES",
            "a b,c d",
            "environment variable SESSIONIZER__PIPELINES__P__SOURCES = 'a b,c d': expected topic names of letters",
        ),
        ("SESSIONIZER__APP", "x", "environment variable SESSIONIZER__APP = 'x': expected a table"),
    ],
)
def test_a_bad_value_names_the_variable_it_came_from(name, text, message):
    (found,) = config_problems(MINIMAL_CONFIG, {name: text})
    assert found.startswith(message), found


def test_every_key_has_a_known_kind():
    assert set(KEYS.values()) <= {TEXT, INTEGER, BOOLEAN, DURATION, SIZE, LIST, VALUE, TABLE}


@pytest.mark.parametrize(
    "parts,kind",
    [
        (("app", "instance_id"), TEXT),
        (("app", "poll_batch"), INTEGER),
        (("kafka", "bootstrap_servers"), TEXT),
        (("kafka", "sasl.password"), TEXT),
        (("kafka", "consumer", "fetch_max_bytes"), TEXT),
        (("pipelines", "rolling.5m", "window", "gap"), DURATION),
        (("pipelines", "p", "rules", "r", "first", "in"), LIST),
        (("pipelines", "p", "colour"), None),
    ],
)
def test_key_kind_matches_placeholders(parts, kind):
    assert key_kind(parts) == kind


def test_instance_id_on_the_command_line_is_a_string(tmp_path):
    from service.cli import _load

    path = tmp_path / "c.toml"
    path.write_text(MINIMAL_CONFIG)
    assert _load(path, "1").instance_id == "1"
