import pytest

from paysys.core.money import fee_for


@pytest.mark.parametrize(
    "amount,rate_bp,fee",
    [
        (1234, 60, 7),  # 7.404: down
        (1999, 60, 12),  # 11.994: up, where truncation would say 11
        (1250, 60, 8),  # 7.5: a half goes up
        (1750, 60, 11),  # 10.5: up too (banker's rounding would say 10)
        (1, 5000, 1),  # 0.5
        (1, 4999, 0),  # 0.4999
        (0, 60, 0),
        (10**15, 60, 6 * 10**12),  # no float anywhere
        (500, 0, 0),
        (500, 10_000, 500),  # the whole amount, never more
    ],
)
def test_fee_is_amount_times_rate_rounded_half_up(amount, rate_bp, fee):
    assert fee_for(amount, rate_bp) == fee


@pytest.mark.parametrize("amount,rate_bp", [(-1, 60), (100, -1), (100, 10_001)])
def test_fee_refuses_a_negative_amount_or_a_rate_outside_0_to_10000(amount, rate_bp):
    with pytest.raises(
        ValueError, match=r"^amount must be >= 0 and the rate within 0\.\.10000 basis points$"
    ):
        fee_for(amount, rate_bp)


@pytest.mark.parametrize("amount,rate_bp", [(0, 0), (0, 10_000)])
def test_fee_accepts_the_bounds(amount, rate_bp):
    assert fee_for(amount, rate_bp) == 0


def test_points_for_a_negative_amount_is_refused_with_its_reason():
    from paysys.core.money import points_for

    with pytest.raises(ValueError, match=r"^amount must be >= 0$"):
        points_for(-1, "CNY")
