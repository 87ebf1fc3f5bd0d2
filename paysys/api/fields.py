"""Strict input fields shared by the API serializers."""

import json
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation

from rest_framework import serializers


class StrictInputSerializer(serializers.Serializer):
    """The base of every request body's serializer: a field the API does not know is a 400
    naming it, never silently ignored (a client sending ``"status": "SUCCESS"`` or ``"fee": 0``
    must learn that it decides neither). The schema says so too (``additionalProperties: false``,
    paysys.api.schema.strict_request_bodies)."""

    def to_internal_value(self, data):
        if isinstance(data, Mapping):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name or "(empty name)": "unknown field" for name in unknown})
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


class MinorUnitsField(StrictIntegerField):
    """An amount: an integer in minor units. "19.99" or 19.99 gets told what to send instead (1999)."""

    default_error_messages = {"invalid": "amounts are integers in minor units (fen): 1999 for 19.99"}

    def to_internal_value(self, data):
        if isinstance(data, (str, float)) and not isinstance(data, bool):
            try:
                minor = Decimal(str(data).strip()) * 100
            except InvalidOperation:
                minor = None
            whole = minor is not None and (minor / 100) == (minor / 100).to_integral_value()
            if whole:  # "1999" or 1999.0: the amount is right, only its JSON type is not
                units = int(minor / 100)
                raise serializers.ValidationError(
                    f"amounts are JSON integers in minor units (fen): send {units}, not {json.dumps(data)} "
                    f"(or {units * 100} if you meant {units}.00)",
                    code="invalid",
                )
            if minor is not None and minor == minor.to_integral_value():  # 19.99: major units
                raise serializers.ValidationError(
                    f"amounts are integers in minor units (fen): send {int(minor)} for {data}, not {json.dumps(data)}",
                    code="invalid",
                )
        return super().to_internal_value(data)


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
        raise serializers.ValidationError({name or "(empty name)": "unknown query parameter" for name in unknown})
