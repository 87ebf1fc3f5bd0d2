"""Money is integers in minor units (fen). Fees and points are computed here, once, by one rule."""

from django.conf import settings

BASIS_POINTS = 10_000
# the largest amount anything takes (orders, fund moves, agreement limits): 10^11 minor units
MAX_AMOUNT = 100_000_000_000


def fee_for(amount: int, fee_rate_bp: int) -> int:
    """The platform fee on ``amount``: ``amount * rate / 10000`` rounded half up, never above amount."""
    if amount < 0 or not 0 <= fee_rate_bp <= BASIS_POINTS:
        raise ValueError("amount must be >= 0 and the rate within 0..10000 basis points")
    return (amount * fee_rate_bp * 2 + BASIS_POINTS) // (2 * BASIS_POINTS)


# digits after the decimal point per ISO 4217 currency; anything not listed has 2
MINOR_UNIT_DIGITS = {"JPY": 0, "KRW": 0, "BHD": 3, "KWD": 3}


def points_for(amount: int, currency: str) -> int:
    """Loyalty points for paying ``amount`` minor units: ``POINTS_PER_UNIT`` per whole currency
    unit, rounded down (199 fen -> 1 point). Orders computes them once and passes them on."""
    if amount < 0:
        raise ValueError("amount must be >= 0")
    per_unit = getattr(settings, "POINTS_PER_UNIT", 1)
    return amount // 10 ** MINOR_UNIT_DIGITS.get(currency, 2) * per_unit
