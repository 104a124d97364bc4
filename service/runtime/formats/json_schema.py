"""JSON Schema: the body after the header is JSON, parsed with orjson; validated only when asked.

Without ``validate`` the registry is not asked at all: the schema id is read
past, and the body is read as any JSON event. With it, each schema is fetched
once and compiled with ``jsonschema`` (the draft its ``$schema`` names), and a
body that breaks it goes to the dead-letter topic (``bad_body``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from service.core.reasons import BAD_BODY, NOT_AN_OBJECT, UNKNOWN_SCHEMA
from service.errors import BadRecord
from service.runtime.formats.framing import HEADER_SIZE, header, schema_id
from service.runtime.formats.registry import Registry


def decoder(
    registry: Registry | None, records_only: bool = True, what: str = "value", validate: bool = False
) -> Callable[[bytes | None], Any]:
    loads = orjson.loads
    validators: dict[bytes, Any] = {}
    if registry is not None:
        registry.on_evict(lambda sid: validators.pop(header(sid), None))  # bounded as the registry's cache is

    def validator(raw: bytes) -> Any:
        found = validators.get(raw[:HEADER_SIZE])
        if found is not None:
            return found
        assert registry is not None
        sid = int.from_bytes(raw[1:HEADER_SIZE], "big")
        fetched = registry.schema(sid)
        if fetched.schema_type != "JSON":
            raise BadRecord(
                f"schema id {sid} is a {fetched.schema_type} schema; this topic's {what}s are read as JSON Schema", UNKNOWN_SCHEMA
            )
        import jsonschema

        schema = orjson.loads(fetched.text)
        found = validators[raw[:HEADER_SIZE]] = jsonschema.validators.validator_for(schema)(schema)
        return found

    def decode(raw: bytes | None) -> Any:
        if raw is None or len(raw) < HEADER_SIZE or raw[0] != 0:
            schema_id(raw, what)  # raises bad_framing, saying what is wrong
        assert raw is not None
        try:
            value = loads(memoryview(raw)[HEADER_SIZE:])
        except orjson.JSONDecodeError as exc:
            raise BadRecord(f"{what} body is not JSON: {exc}", BAD_BODY) from None
        if records_only and type(value) is not dict:
            raise BadRecord(f"expected a JSON object, got {type(value).__name__}", NOT_AN_OBJECT)
        if validate:
            error = next(iter(validator(raw).iter_errors(value)), None)
            if error is not None:
                where = "/".join(str(p) for p in error.absolute_path)
                raise BadRecord(f"{what} breaks JSON schema {int.from_bytes(raw[1:5], 'big')} at /{where}: {error.message}", BAD_BODY)
        return value

    return decode
