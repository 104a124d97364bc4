"""The shape of every record a pipeline writes, for the schemas of Avro, Protobuf and JSON Schema output.

The envelope (``service.core.pipeline.Envelope``) renders a closed window, or
a rule's derived record, as a dict; this module says, from the configuration
alone, which fields that dict has and of what type, so a schema can be made
and registered before the first record exists. Each format turns a
``RecordShape`` into its own schema language (``service.runtime.formats``).

Types, by where the value comes from:

- key fields, ``event``, ``timestamp``: ``string``;
- window bounds, ``event_count``, ``duration_ms``, rules' times: ``long``;
- ``count``, ``count_distinct``: ``long``; ``count_by``: a map of ``long``;
- ``sum``: ``double``; ``min``, ``max``, ``avg``: ``double`` or null (a window
  may have no value for them);
- ``any``, ``all``: ``boolean``;
- ``first``, ``last``, ``custom``, and the events a rule keeps: free-form, so
  ``json``: the value's JSON text in Avro and Protobuf (null when absent), any
  JSON value in JSON Schema;
- ``user_attributes``: a map of strings (always empty today).
"""

from __future__ import annotations

from dataclasses import dataclass

from service.config import AggregateConfig, PipelineConfig, RuleConfig
from service.core.extract import RECORD_KEY, RECORD_KEY_FIELD

STRING = "string"
LONG = "long"
DOUBLE = "double"
BOOLEAN = "boolean"
#: Free-form JSON: a JSON text where the format has no "any value".
JSON = "json"
MAP_LONG = "map_long"
MAP_STRING = "map_string"
RECORD = "record"

#: Aggregate type -> (field type, nullable)
AGGREGATE_FIELDS: dict[str, tuple[str, bool]] = {
    "count": (LONG, False),
    "sum": (DOUBLE, False),
    "min": (DOUBLE, True),
    "max": (DOUBLE, True),
    "avg": (DOUBLE, True),
    "first": (JSON, True),
    "last": (JSON, True),
    "count_distinct": (LONG, False),
    "count_by": (MAP_LONG, False),
    "any": (BOOLEAN, False),
    "all": (BOOLEAN, False),
    "custom": (JSON, True),
}


@dataclass(frozen=True)
class FieldShape:
    #: The key in the rendered dict (an aggregate's name, a key path such as ``user.id``).
    name: str
    type: str
    nullable: bool = False
    #: ``record`` only: its fields, and the name its schema type gets.
    fields: tuple[FieldShape, ...] = ()
    type_name: str = ""


@dataclass(frozen=True)
class RecordShape:
    """One kind of record a pipeline writes to ``topic``: the summary, or one rule's derived records."""

    topic: str
    #: The record type's name (the ``event``, made a valid identifier) and namespace (``sessionizer.<pipeline>``).
    name: str
    namespace: str
    fields: tuple[FieldShape, ...]
    #: What makes it, for messages: ``output`` or ``rules.<name>``.
    origin: str

    @property
    def full_name(self) -> str:
        return f"{self.namespace}.{self.name}"


def identifier(name: str) -> str:
    """``name`` as an Avro or Protobuf identifier: letters, digits and ``_``, not starting with a digit."""
    out = "".join(c if c.isascii() and (c.isalnum() or c == "_") else "_" for c in name)
    return "_" + out if not out or out[0].isdigit() else out


def _key_fields(pipeline: PipelineConfig) -> list[FieldShape]:
    if pipeline.key == (RECORD_KEY,):
        return [FieldShape(RECORD_KEY_FIELD, STRING)]
    return [FieldShape(path, STRING) for path in pipeline.key]


def window_fields(pipeline: PipelineConfig) -> list[FieldShape]:
    """What a closed window reports (``WindowKind.values``): its own fields, then one per aggregate."""
    if pipeline.window.type == "session":
        names = ["session_start_ms", "session_end_ms", "event_count", "duration_ms"]
    else:
        names = ["window_start_ms", "window_end_ms", "event_count"]
    fields = {name: FieldShape(name, LONG) for name in names}
    for aggregate in pipeline.aggregates:
        fields[aggregate.name] = aggregate_field(aggregate)
    return list(fields.values())


def aggregate_field(aggregate: AggregateConfig) -> FieldShape:
    kind, nullable = AGGREGATE_FIELDS[aggregate.type]
    return FieldShape(aggregate.name, kind, nullable)


def rule_fields(rule: RuleConfig, pipeline: PipelineConfig, type_name: str) -> list[FieldShape]:
    """The values of a rule's derived record (``service.core.rules``)."""
    first = FieldShape("first", JSON, True)
    if rule.type == "sequence":
        return [first, FieldShape("then", JSON, True), FieldShape("first_time_ms", LONG), FieldShape("then_time_ms", LONG)]
    if rule.within_ms is None:  # absence until the session closes: it carries the session's summary
        session = FieldShape("session", RECORD, fields=tuple(window_fields(pipeline)), type_name=f"{type_name}_session")
        return [first, FieldShape("first_time_ms", LONG), session]
    return [first, FieldShape("first_time_ms", LONG), FieldShape("deadline_ms", LONG)]


def _envelope(pipeline: PipelineConfig, event: str, values: list[FieldShape], topic: str, origin: str) -> RecordShape:
    """The fields ``Envelope.render_event`` writes, in its order; ``flat`` merges values in as ``dict.update`` would."""
    name = identifier(event)
    fields: dict[str, FieldShape] = {"event": FieldShape("event", STRING)}
    for key in _key_fields(pipeline):
        fields[key.name] = key
    fields["timestamp"] = FieldShape("timestamp", STRING)
    if pipeline.output.format == "flat":
        for value in values:
            fields[value.name] = value
    else:
        fields["value"] = FieldShape("value", RECORD, fields=tuple(values), type_name=f"{name}_value")
        fields["user_attributes"] = FieldShape("user_attributes", MAP_STRING)
    return RecordShape(topic, name, f"sessionizer.{identifier(pipeline.name)}", tuple(fields.values()), origin)


def output_shapes(pipeline: PipelineConfig) -> list[RecordShape]:
    """Every kind of record the pipeline writes: its windows (unless it pairs), then each rule's."""
    shapes = []
    if pipeline.pairing is None:
        shapes.append(_envelope(pipeline, pipeline.output.event, window_fields(pipeline), pipeline.output.topic, "output"))
    for rule in pipeline.rules:
        type_name = identifier(rule.event)
        shapes.append(_envelope(pipeline, rule.event, rule_fields(rule, pipeline, type_name), rule.topic, f"rules.{rule.name}"))
    return shapes
