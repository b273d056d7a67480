"""The OpenAPI 3.1 document of the v1 API, built from the methods' declared parameters.

Generated rather than written so that it cannot drift from what the server accepts; served at
``/api/v1/openapi.json`` for client generators, API explorers and fuzzers.
"""

from __future__ import annotations

from typing import Any

from pandawms import __version__
from pandawms.api import authz, v1
from pandawms.api.params import REQUIRED, Param

_INT64 = {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1}


def _schema(param: Param) -> dict[str, Any]:
    kind = param.kind
    if kind == "int":
        return dict(_INT64)
    if kind == "float":
        return {"type": "number"}
    if kind == "bool":
        return {"type": "boolean"}
    if kind == "str":
        return {"type": "string"}
    if kind == "int_list":
        return {"type": "array", "items": dict(_INT64), "maxItems": param.max_items}
    if kind == "str_list":
        return {"type": "array", "items": {"type": "string"}, "maxItems": param.max_items}
    if kind == "dict":
        return {"type": "object"}
    if kind == "list":
        return {"type": "array", "maxItems": param.max_items}
    if kind == "file":
        return {"type": "string", "format": "binary"}
    if kind == "json":
        return {"description": "JSON value, or a string holding JSON text"}
    return {}


_ENVELOPE = {
    "type": "object",
    "required": ["success", "message", "data"],
    "properties": {"success": {"type": "boolean"}, "message": {"type": "string"}, "data": {}},
}


def _responses() -> dict[str, Any]:
    content = {"application/json": {"schema": {"$ref": "#/components/schemas/Envelope"}}}
    described = {
        "200": (
            "the call was handled; success says whether it did what was asked (a wrong verb, "
            "argument or type is success false with the reason, as on the PanDA server)"
        ),
        "400": "the request body cannot be read (bad JSON, gzip or form encoding)",
        "401": "a secure identity is needed (strict mode) or the token was rejected",
        "403": "the caller may not do this, or is banned",
        "404": "no such method",
        "413": "request too large",
        "503": "database unavailable; retry later",
    }
    return {code: {"description": text, "content": content} for code, text in described.items()}


def document() -> dict[str, Any]:
    """The whole OpenAPI document."""
    paths: dict[str, Any] = {}
    for (module, name), method in sorted(v1.METHODS.items()):
        rule = method.rule
        access: dict[str, Any] = {"secure": rule.secure, "roles": sorted(rule.roles)}
        if rule is authz.NO_RULE:
            access = {"refused": "no access rule"}
        operation: dict[str, Any] = {
            "operationId": f"{module}_{name}",
            "tags": [module],
            "summary": ((method.handler.__doc__ or "").strip().splitlines() or [""])[0],
            "responses": _responses(),
            "x-pandawms-access": access,
        }
        declared = {p: spec for p, spec in method.params.items() if spec.kind != "extra"}
        required = [p for p, spec in declared.items() if spec.default is REQUIRED]
        if method.verb == "GET":
            operation["parameters"] = [
                {
                    "name": p,
                    "in": "query",
                    "required": p in required,
                    "schema": _schema(spec),
                    "style": "form",
                    "explode": False,
                }
                for p, spec in declared.items()
            ]
        else:
            body: dict[str, Any] = {
                "type": "object",
                "properties": {p: _schema(spec) for p, spec in declared.items()},
                "additionalProperties": len(declared) != len(method.params),
            }
            if required:
                body["required"] = required
            operation["requestBody"] = {
                "required": bool(required),
                "content": {"application/json": {"schema": body}},
            }
        verb = "post" if method.verb == "ANY" else method.verb.lower()
        paths[f"/api/v1/{module}/{name}"] = {verb: operation}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "pandawms PanDA server API",
            "version": __version__,
            "description": "The v1 API of the PanDA server as panda-client and Harvester use it.",
        },
        "paths": paths,
        "components": {"schemas": {"Envelope": _ENVELOPE}},
    }
