"""``spike run`` reports against ``docs/report.schema.json`` (jsonschema, a test dependency)."""
from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import jsonschema

from helpers import ROOT


@lru_cache(maxsize=None)
def _validator() -> jsonschema.Draft202012Validator:
    schema = json.loads((ROOT / "docs" / "report.schema.json").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def validated(report: Any) -> dict[str, Any]:
    """``report`` (a dict or a path to its JSON) after checking it against the schema."""
    data = report if isinstance(report, dict) else json.loads(report.read_text(encoding="utf-8"))
    _validator().validate(data)
    return data
