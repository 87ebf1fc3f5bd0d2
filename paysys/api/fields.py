"""Strict input fields shared by the API serializers."""

import json
import re
from collections.abc import Mapping

from rest_framework import serializers

UNKNOWN_SHOWN, NAME_SHOWN = 20, 100  # unknown fields named in a 400, characters of each name


class StrictInputSerializer(serializers.Serializer):
    """The base of every request body's serializer: a field the API does not know is a 400
    naming it, never silently ignored (a client sending ``"status": "SUCCESS"`` or ``"fee": 0``
    must learn that it decides neither). The schema says so too (``additionalProperties: false``,
    paysys.api.schema.strict_request_bodies)."""

    def to_internal_value(self, data):
        if isinstance(data, Mapping):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                # named, up to a few: a body of thousands of made-up keys gets a short answer
                named = {
                    (name[:NAME_SHOWN] or "(empty name)"): "unknown field"
                    for name in unknown[:UNKNOWN_SHOWN]
                }
                if len(unknown) > UNKNOWN_SHOWN:
                    named["..."] = f"and {len(unknown) - UNKNOWN_SHOWN} more unknown fields"
                raise serializers.ValidationError(named)
        return super().to_internal_value(data)


def no_surrogates(value: str) -> None:
    # JSON may carry lone UTF-16 surrogates ("\ud800") that no database can store
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise serializers.ValidationError("must be valid Unicode text") from None


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer and nothing else: no "100", no 100.0, no true."""

    default_error_messages = {"invalid": "must be a JSON integer"}

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class QueryIntegerField(serializers.IntegerField):
    """An integer in a query string: ASCII digits only (int() would also take "١٢", " 1_0 " or 4,000
    digits), checked before it is converted."""

    default_error_messages = {"invalid": "must be a whole number written with the digits 0-9"}

    def to_internal_value(self, data):
        if not (isinstance(data, str) and data.isascii() and data.isdigit() and len(data) <= 19):
            self.fail("invalid")
        return super().to_internal_value(data)


# A decimal that could be a mistaken amount ("19.99", "1999", 19.99), bounded before anything parses
# it: a client may send "1e500000", whose conversion to an integer would hold the interpreter for
# minutes. Only text matching this, at most 18 digits, is ever turned into a number here.
_PLAIN_DECIMAL = re.compile(r"-?([0-9]{1,15})(?:\.([0-9]{1,3}))?")


class MinorUnitsField(StrictIntegerField):
    """An amount: an integer in minor units. "19.99" or 19.99 gets told what to send instead (1999)."""

    default_error_messages = {
        "invalid": "amounts are JSON integers in minor units (fen): 1999 for 19.99"
    }

    def to_internal_value(self, data):
        if isinstance(data, (str, float)):
            self._refuse_non_integer(data)
        return super().to_internal_value(data)

    def _refuse_non_integer(self, data: str | float):
        """Always raises. Text is matched against a bounded pattern before any conversion, and the
        message repeats the client's value only when that pattern (short, plain digits) matched."""
        text = repr(data) if isinstance(data, float) else data.strip()
        match = _PLAIN_DECIMAL.fullmatch(text) if len(text) <= 20 else None
        if match is None:
            self.fail("invalid")
        units, fraction = int(match[1]), (match[2] or "").rstrip("0")
        sign = "-" if text.startswith("-") else ""
        if not units and not fraction:  # "0", 0.0: no hint would make it a valid amount
            self.fail("invalid")
        if not fraction:  # "1999" or 1999.0: the amount is right, only its JSON type is not
            raise serializers.ValidationError(
                f"amounts are JSON integers in minor units (fen): send {sign}{units}, not {json.dumps(data)} "
                f"(or {sign}{units * 100} if you meant {sign}{units}.00)",
                code="invalid",
            )
        if len(fraction) <= 2:  # 19.99: major units
            minor = units * 100 + int(fraction.ljust(2, "0"))
            raise serializers.ValidationError(
                f"amounts are integers in minor units (fen): send {sign}{minor} for {text}, not {json.dumps(data)}",
                code="invalid",
            )
        self.fail("invalid")


class TextField(serializers.CharField):
    """A JSON string (not a number coerced to text) of valid Unicode."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.validators.append(no_surrogates)

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


def reject_unknown_params(params, allowed: set[str]) -> None:
    """A misspelled filter must fail loudly, not silently return everything."""
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise serializers.ValidationError(
            {name or "(empty name)": "unknown query parameter" for name in unknown}
        )
