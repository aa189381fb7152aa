"""Validating `-o json` documents against docs/schema/, for tests of every tier.

The published schemas stay open (SPEC §3: "new keys may be added"), so they alone
would pass a key that no schema and no page of docs/json.md names. Tests therefore
also validate against a closed copy, where every object that lists its properties
takes no others: a key the code prints must be declared, with what it means, before
scripts are told to rely on it.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any, Union

import jsonschema

SCHEMAS = Path(__file__).resolve().parents[1] / "docs" / "schema"


def published(command: str) -> dict:
    return json.loads((SCHEMAS / f"{command}.json").read_text())


@cache
def _closed(command: str) -> str:
    return json.dumps(closed(published(command)))


def closed(schema: Any) -> Any:
    """`schema` with `additionalProperties: false` on every object schema that lists
    `properties` and says nothing of others (the schemas compose no properties across
    allOf/oneOf, so each object's keys are in one place)."""
    schema = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "properties" in node and "additionalProperties" not in node:
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


def validated(command: str, document: Union[str, dict]) -> dict:
    """`document` (text or parsed) checked against `command`'s published schema and its
    closed copy; returned parsed."""
    if isinstance(document, str):
        document = json.loads(document)
    jsonschema.validate(document, published(command))
    jsonschema.validate(document, json.loads(_closed(command)))
    return document
