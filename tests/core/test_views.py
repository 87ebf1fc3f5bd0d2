import time

import pytest
from django.conf import settings
from django.db import OperationalError, connections

from paysys.core import heartbeats

pytestmark = pytest.mark.django_db(databases="__all__")


def test_healthz(client, every_worker_alive):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "databases": {alias: "ok" for alias in settings.DATABASES},
        "workers": "ok",
    }


def test_healthz_is_degraded_but_answers_200_while_a_worker_is_dead(client, every_worker_alive):
    # given: the accounting worker's last heartbeat is a minute old (killed: it stopped writing)
    heartbeats.record(["accounting"], now=time.time() - 60)

    response = client.get("/healthz")

    # then: degraded, but 200: the web process still takes payments (a load balancer keeps it)
    assert response.status_code == 200
    assert response.json()["status"] == "degraded"
    assert response.json()["workers"] == "degraded"
    assert set(response.json()) == {
        "status",
        "databases",
        "workers",
    }  # which one: /healthz/detail, for staff


def test_healthz_names_the_database_that_does_not_answer(client, monkeypatch):
    def refused():
        raise OperationalError("connection refused")

    monkeypatch.setattr(connections["accounting"], "cursor", refused)

    response = client.get("/healthz")

    assert response.status_code == 503
    assert response.json()["status"] == "degraded"
    assert response.json()["databases"]["accounting"] == "down: OperationalError"
    assert response.json()["databases"]["orders"] == "ok"


def test_healthz_asks_the_databases_at_most_once_per_cache_period(
    client, settings, monkeypatch, django_assert_max_num_queries
):
    from paysys.core import views

    monkeypatch.setattr(views, "_last_check", (float("-inf"), {}))  # no verdict of an earlier test
    settings.HEALTHZ_CACHE_SECONDS = 60
    client.get("/healthz")  # fills the cache

    with django_assert_max_num_queries(0):
        answers = [client.get("/healthz") for _ in range(20)]

    assert {answer.status_code for answer in answers} == {200}
