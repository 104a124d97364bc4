"""How a pipeline is read: directly when grouped by the record key over co-partitioned sources, else through its repartition topic."""

from __future__ import annotations

from service.core.topology import plan
from tests.helpers import config_from_toml, config_toml, pipeline, session_window


def pipelines(key: str):
    return config_from_toml(config_toml({"s": pipeline(["web", "mobile"], session_window("10s"), key=key)})).pipelines


def test_a_record_key_pipeline_over_sources_of_its_partition_count_is_read_directly():
    planned = plan(pipelines("@key"), 4, {"web": 4, "mobile": 4})["s"]
    assert planned.direct and planned.note is None


def test_a_source_of_another_partition_count_sends_the_pipeline_through_its_repartition_topic_and_says_why():
    planned = plan(pipelines("@key"), 4, {"web": 4, "mobile": 6})["s"]
    assert not planned.direct
    assert planned.note is not None and "mobile has 6" in planned.note and "repartition topic" in planned.note


def test_a_pipeline_grouped_by_a_field_goes_through_its_repartition_topic():
    planned = plan(pipelines("user_id"), 4, {"web": 4, "mobile": 4})["s"]
    assert not planned.direct and planned.note is None


def test_a_committed_layout_decides_which_record_key_pipelines_read_directly():
    """After a rescale a pipeline reads directly only when the layout says so, co-partitioned or not."""
    assert not plan(pipelines("@key"), 4, {"web": 4, "mobile": 4}, direct=frozenset())["s"].direct
    assert plan(pipelines("@key"), 4, {"web": 4, "mobile": 4}, direct={"s"})["s"].direct
    # The layout's word is not enough when the sources have since gained partitions.
    assert not plan(pipelines("@key"), 4, {"web": 8, "mobile": 8}, direct={"s"})["s"].direct
