from celery import shared_task

from paysys.tcc import phase_two, recovery


# sent with an explicit queue: the participant's own (phase_two.send)
@shared_task(name="tcc.phase_two")
def phase_two_batch(items: list[dict]) -> dict:
    return phase_two.execute(items)


@shared_task(name="tcc.recover_tcc")
def recover_tcc() -> dict:
    return recovery.recover_tcc()


@shared_task(name="tcc.purge_barriers")
def purge_barriers() -> int:
    return recovery.purge_barriers()
