"""A runtime's overrides: how a test hands the deployed targets its fakes, without patching."""

from __future__ import annotations

from shared.runtime import Runtime, install, per_runtime
from shared.settings import Settings
from tests.fakes import FakeChat, FakeStateStore, FakeTaskQueue


class VendorChat:
    """Stands in for a vendor client: notes each time one is built."""

    built: list[Settings] = []

    def __init__(self, settings: Settings) -> None:
        VendorChat.built.append(settings)


def _runtime(**overrides: object) -> Runtime:
    queue = FakeTaskQueue()
    return Runtime(Settings(), FakeStateStore(queue), queue, overrides=overrides)


def test_the_override_is_handed_out_and_nothing_is_built_when_the_runtime_names_the_factory():
    VendorChat.built.clear()
    chat = per_runtime(VendorChat)
    fake = FakeChat()
    install(_runtime(VendorChat=fake))
    assert chat() is fake and chat() is fake
    assert VendorChat.built == []


def test_the_factory_builds_once_per_runtime_when_no_override_names_it():
    VendorChat.built.clear()
    chat = per_runtime(VendorChat)
    first = _runtime(SomethingElse=FakeChat())
    install(first)
    built = chat()
    assert isinstance(built, VendorChat) and chat() is built
    assert VendorChat.built == [first.settings]
    # Another runtime installed: built again for it; its override then wins over the cache.
    second = _runtime()
    install(second)
    assert chat() is not built and len(VendorChat.built) == 2
    fake = FakeChat()
    install(_runtime(VendorChat=fake))
    assert chat() is fake and len(VendorChat.built) == 2
