"""Money is integers in minor units (fen). Fees are computed here, once, by one rule."""

BASIS_POINTS = 10_000


def fee_for(amount: int, fee_rate_bp: int) -> int:
    """The platform fee on ``amount``: ``amount * rate / 10000`` rounded half up, never above amount."""
    if amount < 0 or not 0 <= fee_rate_bp <= BASIS_POINTS:
        raise ValueError("amount must be >= 0 and the rate within 0..10000 basis points")
    return (amount * fee_rate_bp * 2 + BASIS_POINTS) // (2 * BASIS_POINTS)
