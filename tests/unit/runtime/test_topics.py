"""Start-up's topic check, against a stand-in admin client: source topics are never created, a missing one
stops the service with its name; what the service writes is created, with the broker's replication by default."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from service.core.layout import Layout
from service.errors import ConfigError
from service.runtime.layout import inferred_layout
from service.runtime.topics import check_layout, ensure_topics, every_generation, missing_sources, prepare_topics
from tests.helpers import config_from_toml, config_toml, pipeline, session_window


@dataclass
class _Topic:
    partitions: dict[int, None]
    error: Any = None


@dataclass
class _Metadata:
    topics: dict[str, _Topic]


class _Done:
    def result(self, timeout: float | None = None) -> None:
        return None


@dataclass
class TopicAdmin:
    """What ``ensure_topics`` asks of an admin client: the topics there are, and creating more."""

    counts: dict[str, int]
    created: list[tuple[str, int, int]] = field(default_factory=list)

    def list_topics(self, timeout: float | None = None) -> _Metadata:
        return _Metadata({name: _Topic(dict.fromkeys(range(n))) for name, n in self.counts.items()})

    def create_topics(self, new_topics: list[Any], request_timeout: float | None = None) -> dict[str, _Done]:
        for topic in new_topics:
            self.created.append((topic.topic, topic.num_partitions, topic.replication_factor))
            self.counts[topic.topic] = topic.num_partitions
        return {topic.topic: _Done() for topic in new_topics}


def shop(topics: dict[str, Any] | None = None, **pipelines: dict[str, Any]):
    pipelines = pipelines or {"sessions": pipeline(["web", "mobile"], session_window("10m"))}
    return config_from_toml(config_toml(pipelines, app={"id": "shop"}, topics={"partitions": 2, **(topics or {})}))


def test_a_missing_source_topic_stops_start_up_with_its_name_and_nothing_is_created():
    admin = TopicAdmin({"web": 2})
    with pytest.raises(ConfigError) as info:
        ensure_topics(admin, shop())
    assert info.value.problems == ["source topic 'mobile' of pipeline 'sessions' does not exist"]
    assert info.value.exit_code == 2
    assert admin.created == []


def test_a_source_of_several_pipelines_is_named_once_with_each_of_them():
    config = shop(
        sessions=pipeline(["web"], session_window("10m")),
        rolling=pipeline(["web", "mobile"], {"type": "tumbling", "size": "1m"}, output="rolling"),
    )
    assert missing_sources(config, {}) == [
        "source topic 'web' of pipelines 'sessions', 'rolling' does not exist",
        "source topic 'mobile' of pipeline 'rolling' does not exist",
    ]


def test_sources_are_checked_even_when_nothing_may_be_created():
    with pytest.raises(ConfigError) as info:
        ensure_topics(TopicAdmin({}), shop({"create": False}))
    assert info.value.problems == [
        "source topic 'web' of pipeline 'sessions' does not exist",
        "source topic 'mobile' of pipeline 'sessions' does not exist",
    ]


def test_what_the_service_writes_is_created_with_the_brokers_replication_by_default():
    admin = TopicAdmin({"web": 2, "mobile": 2})
    partitions = ensure_topics(admin, shop())
    created = {name: (n, replication) for name, n, replication in admin.created}
    assert created == {
        "shop-sessions-repartition": (2, -1),
        "shop-sessions-changelog": (2, -1),
        "out": (2, -1),
        "shop-late": (2, -1),
        "shop-dead-letter": (2, -1),
    }
    assert partitions["web"] == 2 and partitions["shop-sessions-changelog"] == 2
    admin = TopicAdmin({"web": 2, "mobile": 2})
    ensure_topics(admin, shop({"replication_factor": 3}))
    assert {replication for _, _, replication in admin.created} == {3}


def test_a_source_the_service_writes_itself_is_created_first():
    config = shop(
        sessions=pipeline(["web"], session_window("10m"), output="visits"),
        visits=pipeline(["visits"], {"type": "tumbling", "size": "1h"}, output="hourly"),
    )
    admin = TopicAdmin({"web": 2})
    ensure_topics(admin, config)
    assert admin.created[0][0] == "visits"
    assert "web" not in [name for name, _, _ in admin.created]


def test_a_partition_count_other_than_the_states_stops_start_up_naming_the_rescale_command():
    """The state has 2 partitions (its changelogs say so, never rescaled); the config asks for 4."""
    admin = TopicAdmin({"web": 2, "mobile": 2, "shop-sessions-changelog": 2, "shop-sessions-repartition": 2})
    with pytest.raises(ConfigError) as info:
        prepare_topics(admin, shop({"partitions": 4}))  # type: ignore[arg-type]
    [problem] = info.value.problems
    assert problem.startswith("topics.partitions = 4, but the application's state has 2 partitions (its changelogs)")
    assert "'sessionizer rescale --config <file> --partitions 4'" in problem and "or set topics.partitions = 2" in problem


def test_the_layout_of_an_application_never_rescaled_is_read_from_its_changelogs():
    config = shop()
    assert inferred_layout(config, {"web": 2, "mobile": 2}) == Layout(0, 2, frozenset(), committed=False)
    assert inferred_layout(config, {"web": 2, "mobile": 2, "shop-sessions-changelog": 6}).partitions == 6
    keyed = shop(sessions=pipeline(["web", "mobile"], session_window("10m"), key="@key"))
    assert inferred_layout(keyed, {"web": 2, "mobile": 2}).direct == {"sessions"}
    # Once read through its repartition topic (its sources gained partitions), it stays so.
    assert inferred_layout(keyed, {"web": 2, "mobile": 2, "shop-sessions-repartition": 2}).direct == frozenset()


def test_a_committed_layout_names_the_generation_in_the_line():
    with pytest.raises(ConfigError, match=r"has 12 partitions \(layout generation 3\)"):
        check_layout(shop(), Layout(3, 12))


def test_reset_and_cleanup_find_the_internal_topics_of_every_generation():
    existing = [
        "web",
        "shop-sessions-changelog",
        "shop-sessions-changelog-g1",
        "shop-sessions-repartition-g2",
        "shop-sessions-changelog-gx",
        "shop-layout",
    ]
    assert every_generation(shop(), existing) == [
        "shop-sessions-changelog",
        "shop-sessions-changelog-g1",
        "shop-sessions-repartition-g2",
        "shop-layout",
    ]
