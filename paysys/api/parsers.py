"""JSON input that can never become a 500.

Python's ``json`` takes ``NaN``, ``Infinity`` and numbers like ``1e999`` (parsed as infinity, which
no database column stores), keeps the last of duplicate keys (``{"amount": 100, "amount": 200}``
would be an order of 200 to one reader and of 100 to another), and recurses once per nesting
level (``[[[[...`` 30,000 deep within the body size limit raises RecursionError). :func:`loads_strict` refuses all four with a
ValueError; the API's parser and every view reading JSON by hand use it.
"""

from __future__ import annotations

import codecs
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


def _object_without_duplicates(pairs: list[tuple[str, object]]) -> dict:
    obj = dict(pairs)
    if len(obj) != len(
        pairs
    ):  # {"amount": 100, "amount": 200}: which one a reader takes is undefined
        seen, repeated = set(), ""
        for key, _ in pairs:
            if key in seen:
                repeated = key
                break
            seen.add(key)
        raise ValueError(f"the key {json.dumps(repeated[:64])} appears twice in one object")
    return obj


def _bounded_int(text: str) -> int:
    # no integer the platform takes has more than 19 digits; Python's own limit (4300) would answer
    # with advice about sys.set_int_max_str_digits
    if len(text.lstrip("-")) > 40:
        raise ValueError(f"an integer of {len(text)} digits is out of range")
    return int(text)


def loads_strict(data: str | bytes):
    """``json.loads`` refusing NaN, infinities, duplicate keys and absurd nesting; raises ValueError."""
    try:
        return json.loads(
            data,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
            parse_int=_bounded_int,
            object_pairs_hook=_object_without_duplicates,
        )
    except RecursionError:
        raise ValueError("the JSON is nested too deeply") from None


def _is_utf8(charset: str) -> bool:
    try:
        return codecs.lookup(charset).name == "utf-8"  # utf-8, UTF8, utf_8, ...
    except LookupError:
        return False


class StrictJSONParser(JSONParser):
    """DRF's JSON parser on :func:`loads_strict`: any bad JSON is a 400 ``parse_error``."""

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        if not _is_utf8(encoding):
            # JSON between systems is UTF-8 (RFC 8259, 8.1). Any other codec Python knows would be
            # run on the body: rot13 or zlib are no text at all, utf-7 or idna let a body pass a
            # filter upstream as something else, and punycode decodes in quadratic time (one 64 KB
            # body held a web thread 0.4 s)
            raise ParseError("JSON parse error - unsupported charset: send UTF-8 JSON")
        try:
            text = stream.read().decode("utf-8")
        except ValueError as exc:  # UnicodeDecodeError
            raise ParseError(f"JSON parse error - {exc}") from None
        try:
            return loads_strict(text)
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
