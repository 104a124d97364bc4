"""An invalid config fails at start with one message per problem: key, value, what is allowed."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from service.config import load_config
from tests.helpers import config_problems

VALID = """
[app]
id = "app"
[pipelines.s]
sources = ["a", "b"]
key = ["user1", "user2"]
output = "out"
[pipelines.s.window]
type = "session"
gap = "30m"
grace = "1m"
"""


def write(tmp_path, text):
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_valid_config_and_defaults(tmp_path):
    config = load_config(write(tmp_path, VALID), {})
    (pipeline,) = config.pipelines
    assert pipeline.key == ("user1", "user2")
    assert pipeline.window.gap_ms == 1_800_000
    assert pipeline.repartition_topic == "app-s-repartition"
    assert pipeline.changelog_topic == "app-s-changelog"
    assert pipeline.late_topic == "app-late"
    assert config.commit_interval_ms == 100
    assert config.exactly_once
    assert config.source_topics() == ["a", "b"]


@pytest.mark.parametrize(
    "change,expected",
    [
        (("gap = \"30m\"", "gap = \"30x\""), "pipelines.s.window.gap = '30x': expected a duration"),
        (
            ("type = \"session\"", "type = \"sliding\""),
            "pipelines.s.window.type = 'sliding': expected one of 'session', 'tumbling', 'hopping'",
        ),
        (
            ("id = \"app\"", "id = \"app\"\nprocessing_guarantee = \"maybe\""),
            "app.processing_guarantee = 'maybe': expected one of 'exactly_once', 'at_least_once'",
        ),
        (("output = \"out\"", "output = \"bad topic!\""), "pipelines.s.output.topic = 'bad topic!': expected a topic name"),
        (("key = [\"user1\", \"user2\"]", "key = []"), "pipelines.s.key = []: expected a non-empty string or a list"),
        (("grace = \"1m\"", "grace = \"1m\"\ncolour = 3"), "pipelines.s.window.colour: unknown key"),
        (("gap = \"30m\"", "gap = \"0s\""), "pipelines.s.window.gap = '0s': expected a duration greater than zero"),
    ],
)
def test_each_problem_names_key_value_and_allowed(tmp_path, change, expected):
    text = VALID.replace(*change)
    assert any(p.startswith(expected) for p in config_problems(text)), config_problems(text)


def test_all_problems_are_reported_together(tmp_path):
    text = VALID.replace('gap = "30m"', 'gap = "soon"').replace('output = "out"', "")
    found = config_problems(text)
    assert len(found) == 2
    assert any("gap" in p for p in found) and any("output is missing" in p for p in found)


def test_replication_factor_defaults_to_the_brokers_default(tmp_path):
    assert load_config(write(tmp_path, VALID), {}).topics.replication_factor == -1
    for value in (-1, 1, 3):
        text = VALID + f"[topics]\nreplication_factor = {value}\n"
        assert load_config(write(tmp_path, text), {}).topics.replication_factor == value
    for value in ("0", "-2", '"3"'):
        assert config_problems(VALID + f"[topics]\nreplication_factor = {value}\n") == [
            f"topics.replication_factor = {tomllib.loads('v = ' + value)['v']!r}: "
            "expected -1 (the broker's default.replication.factor) or a whole number >= 1"
        ]


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[3] / "config").glob("*.toml")), ids=lambda p: p.name)
def test_local_configs_keep_one_replica_for_the_single_local_broker(path):
    assert load_config(path, {}).topics.replication_factor == 1


def test_missing_pipelines(tmp_path):
    assert config_problems('[app]\nid = "x"\n') == [
        "pipelines is missing: expected at least one [pipelines.<name>] table"
    ]


def test_hopping_advance_must_divide_size(tmp_path):
    text = VALID.replace('type = "session"\ngap = "30m"', 'type = "hopping"\nsize = "5m"\nadvance = "2m"')
    assert any("advance = '2m': expected a duration that divides" in p for p in config_problems(text))


def test_environment_overrides(tmp_path):
    env = {
        "SESSIONIZER__APP__INSTANCE_ID": "replica-2",
        "SESSIONIZER__KAFKA__BOOTSTRAP_SERVERS": "broker:29092",
        "SESSIONIZER__KAFKA__SASL.PASSWORD": "secret",
        "SESSIONIZER__APP__COMMIT_INTERVAL": "250ms",
        "SESSIONIZER__PIPELINES__S__WINDOW__GAP": "5m",
        "OTHER": "ignored",
    }
    config = load_config(write(tmp_path, VALID), env)
    assert config.instance_id == "replica-2"
    assert config.bootstrap_servers == "broker:29092"
    assert config.kafka["sasl.password"] == "secret"
    assert config.commit_interval_ms == 250
    assert config.pipelines[0].window.gap_ms == 300_000


def test_bad_environment_override_is_reported_like_a_file_value_naming_the_variable(tmp_path):
    found = config_problems(VALID, {"SESSIONIZER__APP__POLL_BATCH": "lots"})
    assert found == ["environment variable SESSIONIZER__APP__POLL_BATCH = 'lots': expected a whole number >= 1"]


AGGREGATES = VALID + "[pipelines.s.aggregates]\n"


@pytest.mark.parametrize(
    "line,expected",
    [
        ('f = { type = "any" }', "pipelines.s.aggregates.f.field is missing: expected a non-empty string"),
        (
            'f = { type = "all", field = "t", equals = "a", in = ["b"] }',
            "pipelines.s.aggregates.f.in = ['b']: expected either equals or in, not both",
        ),
        ('f = { type = "any", field = "t", equals = [1] }', "pipelines.s.aggregates.f.equals = [1]: expected a string, number or boolean"),
        ('f = { type = "any", field = "t", in = [] }', "pipelines.s.aggregates.f.in = []: expected a non-empty list"),
        ('c = { type = "custom" }', "pipelines.s.aggregates.c.class is missing: expected a non-empty string"),
        (
            'c = { type = "custom", class = "examples.nowhere:Top" }',
            "pipelines.s.aggregates.c.class = 'examples.nowhere:Top': expected an importable 'package.module:ClassName'",
        ),
        (
            'c = { type = "custom", class = "examples.aggregates" }',
            "pipelines.s.aggregates.c.class = 'examples.aggregates': expected an importable",
        ),
        (
            'c = { type = "custom", class = "pathlib:PurePath" }',
            "pipelines.s.aggregates.c.class = 'pathlib:PurePath': expected an importable 'package.module:ClassName' "
            "with methods init, add, merge, result (missing: init, add, merge, result)",
        ),
        (
            'c = { type = "custom", class = "examples.aggregates:TopValues", params = { n = 2 } }',
            "pipelines.s.aggregates.c.params = {'n': 2}: expected keyword arguments examples.aggregates:TopValues accepts (TypeError",
        ),
        (
            'c = { type = "custom", class = "examples.aggregates:TopValues", params = { field = "p", n = 0 } }',
            "pipelines.s.aggregates.c.params = {'field': 'p', 'n': 0}: expected keyword arguments",
        ),
        ('c = { type = "custom", class = "examples.aggregates:TopValues", field = "p" }', "pipelines.s.aggregates.c.field: unknown key"),
    ],
)
def test_flag_and_custom_aggregate_config_problems(line, expected):
    found = config_problems(AGGREGATES + line + "\n")
    assert any(p.startswith(expected) for p in found), found


def test_flags_and_custom_aggregates_parse(tmp_path):
    text = AGGREGATES + (
        'has_checkout = { type = "any", field = "type", equals = "checkout" }\n'
        'mobile_only = { type = "all", field = "platform", in = ["ios", "android"] }\n'
        'saw_coupon = { type = "any", field = "details.coupon" }\n'
        'top = { type = "custom", class = "examples.aggregates:TopValues", params = { field = "page", n = 2 } }\n'
    )
    aggregates = {a.name: a for a in load_config(write(tmp_path, text), {}).pipelines[0].aggregates}
    assert aggregates["has_checkout"].condition.equals == ("checkout",)
    assert aggregates["mobile_only"].condition.equals == ("ios", "android")
    assert aggregates["saw_coupon"].condition.equals is None
    assert aggregates["top"].class_path == "examples.aggregates:TopValues"
    assert aggregates["top"].params == {"field": "page", "n": 2}


RULE = VALID + """
[pipelines.s.rules.purchase]
type = "sequence"
first = { field = "type", equals = "cart" }
then = { field = "type", equals = "pay" }
within = "5m"
topic = "purchases"
"""


def test_rules_and_pairing_parse(tmp_path):
    text = RULE + """
[pipelines.s.rules.abandoned]
type = "absence"
first = { field = "type", in = ["cart", "wishlist"] }
then = { field = "type" }
topic = "coupons"
event = "cart_abandoned"
keep = ["event_id", "details.item_id"]

[pipelines.s.pairing]
lone_topic = "lonely"
"""
    (pipeline,) = load_config(write(tmp_path, text), {}).pipelines
    purchase, abandoned = pipeline.rules
    assert (purchase.type, purchase.within_ms, purchase.event, purchase.keep) == ("sequence", 300_000, "purchase", None)
    assert purchase.first.equals == ("cart",)
    assert (abandoned.type, abandoned.within_ms, abandoned.event) == ("absence", None, "cart_abandoned")
    assert abandoned.first.equals == ("cart", "wishlist") and abandoned.then.equals is None
    assert abandoned.keep == ("event_id", "details.item_id")
    assert pipeline.pairing.time_field == "ts" and pipeline.pairing.lone_topic == "lonely"
    assert pipeline.derived_topics() == ["purchases", "coupons", "lonely"]


@pytest.mark.parametrize(
    "change,expected",
    [
        (('type = "sequence"', 'type = "pattern"'), "pipelines.s.rules.purchase.type = 'pattern': expected one of 'sequence', 'absence'"),
        (('within = "5m"\n', ""), "pipelines.s.rules.purchase.within is missing: expected a duration"),
        (('within = "5m"', 'within = "soon"'), "pipelines.s.rules.purchase.within = 'soon': expected a duration"),
        (('first = { field = "type", equals = "cart" }\n', ""), "pipelines.s.rules.purchase.first is missing: expected a table such as"),
        (
            ('first = { field = "type", equals = "cart" }', 'first = "cart"'),
            "pipelines.s.rules.purchase.first = 'cart': expected a table such as",
        ),
        (('then = { field = "type", equals = "pay" }', 'then = { equals = "pay" }'), "pipelines.s.rules.purchase.then.field is missing"),
        (
            ('then = { field = "type", equals = "pay" }', 'then = { field = "type", is = "pay" }'),
            "pipelines.s.rules.purchase.then.is: unknown key",
        ),
        (('topic = "purchases"', 'topic = "no such topic"'), "pipelines.s.rules.purchase.topic = 'no such topic': expected a topic name"),
        (('topic = "purchases"', ""), "pipelines.s.rules.purchase.topic is missing"),
        (('topic = "purchases"', 'topic = "p"\nkeep = []'), "pipelines.s.rules.purchase.keep = []: expected a non-empty string or a list"),
        (('topic = "purchases"', 'topic = "p"\ncolour = 1'), "pipelines.s.rules.purchase.colour: unknown key"),
        (
            ('type = "session"\ngap = "30m"', 'type = "tumbling"\nsize = "1m"'),
            "pipelines.s.rules = ['purchase']: expected rules only in a pipeline whose window.type = \"session\"",
        ),
    ],
)
def test_each_rule_problem_names_key_value_and_allowed(tmp_path, change, expected):
    assert change[0] in RULE
    text = RULE.replace(*change)
    found = config_problems(text)
    assert any(p.startswith(expected) for p in found), found


@pytest.mark.parametrize(
    "text,expected",
    [
        (VALID + "[pipelines.s.pairing]\ncolour = 1\n", "pipelines.s.pairing.colour: unknown key"),
        (VALID + '[pipelines.s.pairing]\nlone_topic = "a b"\n', "pipelines.s.pairing.lone_topic = 'a b': expected a topic name"),
        (
            VALID.replace('sources = ["a", "b"]', 'sources = ["a"]') + "[pipelines.s.pairing]\n",
            "pipelines.s.sources = ['a']: expected at least two source topics with [pairing]",
        ),
        (
            VALID + '[pipelines.s.aggregates]\nn = { type = "count" }\n[pipelines.s.pairing]\n',
            "pipelines.s.aggregates = ['n']: expected no aggregates with [pairing]",
        ),
        (
            VALID.replace('type = "session"\ngap = "30m"', 'type = "tumbling"\nsize = "1m"') + "[pipelines.s.pairing]\n",
            "pipelines.s.pairing = {}: expected pairing only in a pipeline whose window.type = \"session\"",
        ),
    ],
)
def test_each_pairing_problem_names_key_value_and_allowed(tmp_path, text, expected):
    found = config_problems(text)
    assert any(p.startswith(expected) for p in found), found


def test_rule_topics_are_created_with_the_others(tmp_path):
    from service.runtime.topics import planned_topics

    config = load_config(write(tmp_path, RULE), {})
    assert "purchases" in [spec.name for spec in planned_topics(config)]


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[3] / "config").glob("*.toml")), ids=lambda p: p.name)
def test_example_configs_are_valid(path):
    assert load_config(path, {}).pipelines
