"""JSON input that can never become a 500.

Python's ``json`` takes ``NaN``, ``Infinity`` and numbers like ``1e999`` (parsed as infinity, which
no database column stores), and recurses once per nesting level (``[[[[...`` 30,000 deep within
the body size limit raises RecursionError). :func:`loads_strict` refuses all three with a
ValueError; the API's parser and every view reading JSON by hand use it.
"""

from __future__ import annotations

import json
import math

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def loads_strict(data: str | bytes):
    """``json.loads`` refusing NaN, infinities and absurd nesting; raises ValueError."""
    try:
        return json.loads(data, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise ValueError("the JSON is nested too deeply") from None


class StrictJSONParser(JSONParser):
    """DRF's JSON parser on :func:`loads_strict`: any bad JSON is a 400 ``parse_error``."""

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = stream.read().decode(encoding)
        except LookupError:  # charset=rot13, zlib, hex: codecs Python has, but not text encodings
            raise ParseError("JSON parse error - unsupported charset: send UTF-8 JSON") from None
        except ValueError as exc:  # UnicodeDecodeError
            raise ParseError(f"JSON parse error - {exc}") from None
        try:
            return loads_strict(text)
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
