from celery import shared_task
from django.conf import settings
from django.core.cache import cache

from paysys.tcc import phase_two, recovery


# both sent with an explicit queue: the participant's own
@shared_task(name="tcc.phase_two_pass")
def phase_two_pass(queue: str) -> int:
    # clear the kick first: a decision committed while this pass runs kicks the next one
    cache.delete(phase_two.kick_key(queue))
    claimed = phase_two.run_pass(queue)
    if claimed >= settings.TCC_PHASE_TWO_BATCH:  # more may be waiting: continue in a fresh task
        phase_two.kick(queue)
    return claimed


@shared_task(name="tcc.phase_two")
def phase_two_batch(items: list[dict]) -> dict:
    return phase_two.execute(items)


@shared_task(name="tcc.recover_tcc")
def recover_tcc() -> dict:
    return recovery.recover_tcc()


@shared_task(name="tcc.purge_barriers")
def purge_barriers() -> int:
    return recovery.purge_barriers()
