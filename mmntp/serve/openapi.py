"""The HTTP API's OpenAPI document, generated from the proto descriptors (no hand-written
copy of a message): every message of mmntp/v1/generation.proto becomes a JSON Schema
component following protobuf's JSON mapping, which is what the API parses with
`json_format.ParseDict`.

The mapping: properties by their JSON (lowerCamelCase) name, with the proto name as an
alias where it differs (ParseDict accepts both); 64-bit integers as an integer or a
decimal string; bytes as a base64 string; floats as a number or "NaN" / "Infinity" /
"-Infinity"; enums by name or number; repeated fields as arrays; messages as `$ref`s.
A oneof (at most one member set; ParseDict refuses two) is listed under `x-oneof` and in
the description. Unknown properties are refused, as ParseDict refuses them.
"""

from __future__ import annotations

import functools
from typing import Any

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from mmntp import __version__
from mmntp.v1 import generation_pb2 as pb

F = FieldDescriptor
_INT32 = {F.TYPE_INT32, F.TYPE_SINT32, F.TYPE_SFIXED32, F.TYPE_UINT32, F.TYPE_FIXED32}
_INT64 = {F.TYPE_INT64, F.TYPE_SINT64, F.TYPE_SFIXED64, F.TYPE_UINT64, F.TYPE_FIXED64}
_UNSIGNED = {F.TYPE_UINT32, F.TYPE_FIXED32, F.TYPE_UINT64, F.TYPE_FIXED64}
_FLOAT = {F.TYPE_FLOAT, F.TYPE_DOUBLE}
REF = "#/components/schemas/"

# What /v1/generate takes besides a GenerateRequest (popped before parsing).
HTTP_EXTRAS = {
    "stream": {
        "type": "boolean",
        "default": False,
        "description": "answer text/event-stream: one event per GenerateResponse",
    },
    "timeout": {
        "type": "number",
        "exclusiveMinimum": 0,
        "description": "seconds until the call's deadline (else the X-Request-Timeout header)",
    },
}
ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "status", "message"],
            "properties": {
                "code": {"type": "string", "description": "the gRPC status name"},
                "status": {"type": "integer"},
                "message": {"type": "string"},
                "field": {"type": ["string", "null"], "description": "the field at fault"},
            },
        }
    },
}


def field_schema(field: FieldDescriptor) -> dict[str, Any]:
    """One field's schema (an array of the element's for a repeated field)."""
    one = _scalar(field)
    if field.is_repeated:
        return {"type": "array", "items": one}
    return one


def _scalar(field: FieldDescriptor) -> dict[str, Any]:
    if field.type == F.TYPE_MESSAGE:
        return {"$ref": REF + field.message_type.name}
    if field.type == F.TYPE_ENUM:
        return {"$ref": REF + field.enum_type.name}
    if field.type == F.TYPE_BOOL:
        return {"type": "boolean"}
    if field.type == F.TYPE_STRING:
        return {"type": "string"}
    if field.type == F.TYPE_BYTES:
        return {"type": "string", "format": "byte", "contentEncoding": "base64"}
    if field.type in _FLOAT:
        special = {"type": "string", "enum": ["NaN", "Infinity", "-Infinity"]}
        return {"oneOf": [{"type": "number"}, special]}
    if field.type in _INT32:
        return _bounded({"type": "integer"}, field)
    if field.type in _INT64:
        digits = "^[0-9]+$" if field.type in _UNSIGNED else "^-?[0-9]+$"
        number = _bounded({"type": "integer"}, field)
        return {"oneOf": [number, {"type": "string", "pattern": digits}], "format": "int64"}
    raise TypeError(f"no JSON mapping for field {field.full_name} of type {field.type}")


def _bounded(schema: dict[str, Any], field: FieldDescriptor) -> dict[str, Any]:
    return schema | {"minimum": 0} if field.type in _UNSIGNED else schema


def message_schema(message: Descriptor) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for field in message.fields:
        properties[field.json_name] = field_schema(field)
        if field.name != field.json_name:
            properties[field.name] = field_schema(field) | {
                "description": f"the proto name of {field.json_name}"
            }
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    oneofs = {
        o.name: [f.json_name for f in o.fields]
        for o in message.oneofs
        if not (len(o.fields) == 1 and o.name == "_" + o.fields[0].name)  # proto3 optional
    }
    if oneofs:
        schema["x-oneof"] = oneofs
        schema["description"] = "; ".join(
            f"at most one of {', '.join(members)} ({name})" for name, members in oneofs.items()
        )
    return schema


def enum_schema(enum: EnumDescriptor) -> dict[str, Any]:
    names = [v.name for v in enum.values]
    return {"oneOf": [{"type": "string", "enum": names}, {"type": "integer"}]}


def component_schemas() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for enum in pb.DESCRIPTOR.enum_types_by_name.values():
        schemas[enum.name] = enum_schema(enum)
    for message in pb.DESCRIPTOR.message_types_by_name.values():
        schemas[message.name] = message_schema(message)
    request = schemas["GenerateRequest"]
    schemas["HttpGenerateRequest"] = request | {
        "properties": request["properties"] | HTTP_EXTRAS,
        "description": "a GenerateRequest plus the HTTP call's stream and timeout",
    }
    schemas["GenerateResponses"] = {
        "type": "object",
        "required": ["responses"],
        "properties": {"responses": {"type": "array", "items": {"$ref": REF + "GenerateResponse"}}},
    }
    schemas["Error"] = ERROR
    schemas["Probe"] = {
        "type": "object",
        "properties": {"status": {"type": "string", "enum": ["SERVING", "NOT_SERVING"]}},
    }
    return schemas


def _json(name: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": REF + name}}}


_ERRORS = {
    str(status): {"description": what, "content": _json("Error")}
    for status, what in (
        (400, "invalid request (error.field names the field)"),
        (401, "missing or invalid API key"),
        (413, "body over max_message_bytes"),
        (429, "overloaded or over the key's quota (see Retry-After)"),
        (500, "internal error"),
        (503, "the engine failed or the server is not ready"),
        (504, "deadline exceeded"),
    )
}


def _post(summary: str, request: str, response: str, **extra: Any) -> dict[str, Any]:
    ok = {"description": "OK", "content": _json(response)} | extra
    return {
        "post": {
            "summary": summary,
            "requestBody": {"required": True, "content": _json(request)},
            "responses": {"200": ok} | _ERRORS,
        }
    }


def _probe(summary: str) -> dict[str, Any]:
    states = {"200": "SERVING", "503": "NOT_SERVING"}
    answers = {code: {"description": s, "content": _json("Probe")} for code, s in states.items()}
    return {"get": {"summary": summary, "security": [], "responses": answers}}


@functools.cache
def openapi_document() -> dict[str, Any]:
    sse = {"text/event-stream": {"schema": {"type": "string"}}}
    generate = _post(
        "Generate: every GenerateResponse in one object, or (stream) one SSE event each",
        "HttpGenerateRequest",
        "GenerateResponses",
    )
    generate["post"]["responses"]["200"]["content"] |= sse
    models = {"description": "OK", "content": _json("ListModelsResponse")}
    return {
        "openapi": "3.1.0",
        "info": {"title": "mmntp", "version": __version__},
        "security": [{"bearer": []}],
        "paths": {
            "/v1/generate": generate,
            "/v1/models": {"get": {"summary": "ListModels", "responses": {"200": models}}},
            "/v1/tokenize": _post("Tokenize", "TokenizeRequest", "TokenizeResponse"),
            "/v1/detokenize": _post("Detokenize", "DetokenizeRequest", "DetokenizeResponse"),
            "/healthz": _probe("liveness"),
            "/readyz": _probe("readiness"),
        },
        "components": {
            "schemas": component_schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
