"""``[sources."<topic>"]`` from the environment, for any topic name: ``SESSIONIZER__SOURCES`` holds entries as an
inline TOML table whose keys are topic names spelt exactly; the per-key spelling, whose name is lower-cased and
has no room for '.' or '-', says why it cannot reach a topic and gives the spelling that does."""

from __future__ import annotations

import pytest

from tests.helpers import config_from_toml, config_problems

TOPICS = ["Web.Events", "clicks-v2", "Mobile__Events", "backend_events"]
BASE = f"""
[pipelines.s]
sources = {TOPICS!r}
key = "user_id"
output = "out"
[pipelines.s.window]
type = "session"
gap = "30m"
[schema_registry]
url = "http://registry:8081"
""".replace("'", '"')


@pytest.mark.parametrize("topic", TOPICS)
def test_the_sources_variable_reaches_any_topic_name(topic):
    config = config_from_toml(BASE, {"SESSIONIZER__SOURCES": f'{{ "{topic}" = {{ format = "avro", key_format = "protobuf" }} }}'})
    assert config.source_config(topic).format == "avro" and config.source_config(topic).key_format == "protobuf"
    assert set(config.sources) == {topic}


def test_it_sets_keys_over_the_file_and_leaves_the_rest():
    text = BASE + '[sources."Web.Events"]\nformat = "protobuf"\nkey_format = "avro"\n[sources.clicks-v2]\nformat = "json_schema"\n'
    env = {"SESSIONIZER__SOURCES": '{ "Web.Events" = { format = "avro" }, "Mobile__Events" = { format = "json_schema", validate = true } }'}
    config = config_from_toml(text, env)
    assert (config.source_config("Web.Events").format, config.source_config("Web.Events").key_format) == ("avro", "avro")
    assert config.source_config("clicks-v2").format == "json_schema"  # only in the file
    assert config.source_config("Mobile__Events").validate is True


def test_it_can_come_from_a_file(tmp_path):
    (tmp_path / "sources").write_text('{ "Web.Events" = { format = "avro" } }\n')
    config = config_from_toml(BASE, {"SESSIONIZER__SOURCES_FILE": str(tmp_path / "sources")})
    assert config.source_config("Web.Events").format == "avro"


def test_the_lower_case_spelling_still_reaches_lower_case_topics():
    config = config_from_toml(BASE, {"SESSIONIZER__SOURCES__BACKEND_EVENTS__FORMAT": "avro"})
    assert config.source_config("backend_events").format == "avro"


@pytest.mark.parametrize(
    "variable,meant",
    [
        ("SESSIONIZER__SOURCES__WEB_EVENTS__FORMAT", "Web.Events"),  # '.' and capitals
        ("SESSIONIZER__SOURCES__CLICKS_V2__FORMAT", "clicks-v2"),  # '-'
        ("SESSIONIZER__SOURCES__NOWHERE__FORMAT", "<topic>"),  # nothing alike
    ],
)
def test_the_per_key_spelling_says_why_it_cannot_reach_a_topic_and_what_does(variable, meant):
    (problem,) = config_problems(BASE, {variable: "avro"})
    topic = variable.split("__")[2].lower()
    assert problem == (
        f"environment variable {variable}: no pipeline reads topic {topic!r} (its sources are {sorted(TOPICS)}); "
        "variable names are read in lower case and a shell allows no '.' or '-' in them, "
        f"so set SESSIONIZER__SOURCES='{{ \"{meant}\" = {{ format = \"avro\" }} }}' instead"
    )


def test_the_suggested_spelling_works():
    (problem,) = config_problems(BASE, {"SESSIONIZER__SOURCES__WEB_EVENTS__KEY_FORMAT": "avro"})
    suggested = problem.split("so set SESSIONIZER__SOURCES='", 1)[1].removesuffix("' instead")
    assert suggested == '{ "Web.Events" = { key_format = "avro" } }'
    assert config_from_toml(BASE, {"SESSIONIZER__SOURCES": suggested}).source_config("Web.Events").key_format == "avro"


@pytest.mark.parametrize(
    "environ,message",
    [
        (
            {"SESSIONIZER__SOURCES": "avro"},
            "environment variable SESSIONIZER__SOURCES = 'avro': expected an inline TOML table of source topics, "
            'such as { "Web.Events" = { format = "avro" } }',
        ),
        (
            {"SESSIONIZER__SOURCES": '{ "Web.Events" = "avro" }'},
            "environment variable SESSIONIZER__SOURCES = '{ \"Web.Events\" = \"avro\" }': expected an inline TOML table",
        ),
        (
            {"SESSIONIZER__SOURCES": '{ "Web.Event" = { format = "avro" } }'},
            "environment variable SESSIONIZER__SOURCES: no pipeline reads topic 'Web.Event'",
        ),
        (
            {"SESSIONIZER__SOURCES": '{ "Web.Events" = { format = "xml" } }'},
            "environment variable SESSIONIZER__SOURCES = '{ \"Web.Events\" = { format = \"xml\" } }': expected one of 'json'",
        ),
        (
            {"SESSIONIZER__SOURCES": '{ "Web.Events" = { formatt = "avro" } }'},
            "environment variable SESSIONIZER__SOURCES: unknown key sources.Web.Events.formatt",
        ),
        (
            {"SESSIONIZER__SOURCES": '{ "backend_events" = { format = "avro" } }', "SESSIONIZER__SOURCES__BACKEND_EVENTS__FORMAT": "json"},
            "environment variable SESSIONIZER__SOURCES__BACKEND_EVENTS__FORMAT: SESSIONIZER__SOURCES sets sources.backend_events.format too",
        ),
    ],
)
def test_problems_name_the_variable(environ, message):
    (problem,) = config_problems(BASE, environ)
    assert problem.startswith(message), problem
