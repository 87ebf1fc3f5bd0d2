"""``GET /api/schema/`` is open to anyone, so it must be cheap: built once per process and format,
one build at a time (concurrent first requests all get the schema, none a 500), and built again
only when a setting it depends on changes."""

from concurrent.futures import ThreadPoolExecutor

import pytest
from django.test import Client
from drf_spectacular.views import SpectacularAPIView

from tests.api.documented import documented_operations


@pytest.fixture
def builds(monkeypatch, settings):
    """The view's builds, counted. (The suite's check of every API answer builds the schema too,
    once per setting, under changed settings: done first, so it neither counts nor clears.)"""
    documented_operations(False), documented_operations(True)
    settings.MESSAGING_SERVICE_TOKEN = ""  # a changed setting: nothing built before counts
    counted = []
    build = SpectacularAPIView._get_schema_response

    def counting(self, *args, **kwargs):
        counted.append(1)
        return build(self, *args, **kwargs)

    monkeypatch.setattr(SpectacularAPIView, "_get_schema_response", counting)
    return counted


def get(accept: str = "application/vnd.oai.openapi"):
    return Client().get("/api/schema/", HTTP_ACCEPT=accept)


def test_concurrent_first_requests_share_one_build(builds):
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: get(), range(16)))

    assert {answer.status_code for answer in answers} == {200}
    assert len({answer.content for answer in answers}) == 1
    assert b"openapi:" in answers[0].content
    assert len(builds) == 1


def test_each_format_is_built_once_then_served_as_stored(builds):
    yaml_first, json_first = get(), get("application/json")
    yaml_again, json_again = get(), get("application/json")

    assert len(builds) == 2
    assert (yaml_again.content, json_again.content) == (yaml_first.content, json_first.content)
    assert json_again["Content-Type"] == "application/json"
    assert json_again["Content-Disposition"] == 'inline; filename="paysys API.json"'
    assert json_again["Vary"] == "Accept" and "X-Frame-Options" in json_again


def test_a_changed_setting_builds_it_again(builds, settings):
    assert b"/api/v1/messages" not in get().content

    settings.MESSAGING_SERVICE_TOKEN = "a-service-token-0123456789abcdef0123456789"

    assert b"/api/v1/messages" in get().content
    assert len(builds) == 2


def test_the_schema_is_the_same_for_everyone_whatever_the_query(builds):
    # a first request's ?version= or ?lang= would be built into the answer stored for all
    for query in ("?version=9.9%20DEPRECATED", "?lang=fr", "?version=%0a", "?format=json&x=1"):
        answer = Client().get(f"/api/schema/{query}")
        assert answer.status_code == 400 and "error" in answer.json(), query
    assert builds == []
    assert b"version: 1.0.0\n" in get().content
    assert Client().get("/api/schema/?format=json").status_code == 200
