from celery import shared_task
from django.conf import settings

from paysys.tcc import phase_two, recovery


# both sent with an explicit queue: the participant's own
@shared_task(name="tcc.phase_two_pass")
def phase_two_pass(queue: str) -> int:
    return phase_two.PHASE_TWO_PASS.run_pass(
        lambda: phase_two.run_queue_pass(queue),
        target=queue,
        full=lambda claimed: claimed >= settings.TCC_PHASE_TWO_BATCH,
    )


@shared_task(name="tcc.phase_two")
def phase_two_batch(items: list[dict]) -> dict:
    return phase_two.apply_and_report(items)


@shared_task(name="tcc.recover_tcc")
def recover_tcc() -> dict:
    return recovery.recover_tcc()


@shared_task(name="tcc.purge_barriers")
def purge_barriers() -> int:
    return recovery.purge_barriers()
