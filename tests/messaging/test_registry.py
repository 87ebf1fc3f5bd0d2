"""Who consumes which topic: registered at import by the domains, looked up by the service."""

import pytest

from paysys.messaging import registry


@pytest.fixture
def fresh_registry(monkeypatch):
    monkeypatch.setattr(registry, "_consumers", {})
    monkeypatch.setattr(registry, "_check_backs", {})


def test_a_consumer_is_registered_under_its_topic_queue_and_name(fresh_registry):
    def book(message):
        pass

    assert registry.consumer("test.topic", queue="accounting")(book) is book
    registry.consumer("test.topic", queue="notifications", name="notifications.notify")(book)

    spec = registry.get_consumer("accounting.book")
    assert (spec.name, spec.topic, spec.queue, spec.handler, spec.alias) == (
        "accounting.book",
        "test.topic",
        "accounting",
        book,
        "accounting",
    )
    assert [c.name for c in registry.consumers_of("test.topic")] == [
        "accounting.book",
        "notifications.notify",
    ]
    assert registry.consumers_of("other.topic") == []


def test_a_consumer_name_belongs_to_one_handler(fresh_registry):
    def book(message):
        pass

    def other(message):
        pass

    registry.consumer("test.topic", queue="accounting", name="accounting.x")(book)
    registry.consumer("test.topic", queue="accounting", name="accounting.x")(
        book
    )  # re-import: fine
    with pytest.raises(ValueError, match="consumer name 'accounting.x' is already taken"):
        registry.consumer("test.topic", queue="accounting", name="accounting.x")(other)


def test_check_backs_are_found_by_name(fresh_registry):
    def resolve(business_key):
        return True

    assert registry.check_back("test.resolver")(resolve) is resolve
    assert registry.get_check_back("test.resolver") is resolve
    assert registry.get_check_back("nobody") is None


def test_queues_and_aliases_map_both_ways(settings):
    assert registry.alias_for_queue("core") == "default"
    assert registry.queue_for_alias("default") == "core"
    with pytest.raises(LookupError, match="no database alias for queue 'nowhere'"):
        registry.alias_for_queue("nowhere")
