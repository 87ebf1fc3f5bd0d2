import time


def fresh_window(period: int, needed: float = 15) -> None:
    """Wait, if need be, so the next ``needed`` seconds lie in one fixed rate-limit window: a test
    counting against a limit must not see the counter start again half-way."""
    left = period - time.time() % period
    if left < needed:
        time.sleep(left + 0.05)
