"""Every path under /api/ answers JSON errors, whatever DEBUG is (Django's debug 404 page lists
every URL of the site; its error pages are HTML)."""

import pytest
from django.test import Client, override_settings

pytestmark = pytest.mark.django_db(databases="__all__")


@pytest.mark.parametrize("debug", [True, False])
@pytest.mark.parametrize("path", ["/api/v1/orders/", "/api/v1/nope", "/api/", "/api/v2/orders"])
def test_an_unknown_api_path_is_a_json_404(path, debug):
    with override_settings(DEBUG=debug):
        response = Client().get(path, headers={"Authorization": "Bearer x"})

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == "not_found"
    assert "urlpatterns" not in response.content.decode()


def test_a_trailing_slash_is_pointed_out():
    response = Client().get("/api/v1/orders/")

    assert (
        "did you mean /api/v1/orders (without the trailing slash)?"
        in response.json()["error"]["message"]
    )


def test_a_refused_method_on_a_plain_view_is_json():
    response = Client().delete("/api/schema/")

    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_the_docs_and_schema_are_not_errors_and_pass_as_they_are():
    assert Client().get("/api/docs/")["Content-Type"].startswith("text/html")
    assert Client().get("/api/schema/").status_code == 200
