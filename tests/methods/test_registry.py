"""The method registry: new names, nameless classes, unknown names."""

import pytest

import corekd.methods.registry as registry
from corekd.errors import CorekdError
from corekd.methods import Method, method_class, register
from corekd.methods.no_kd import NoKD


def test_registry_adds_new_names_and_rejects_nameless_classes(monkeypatch):
    monkeypatch.setattr(registry, "_METHODS", dict(registry._METHODS))

    class Fresh(Method):
        name = "fresh_method_for_a_test"

    assert register(Fresh) is Fresh
    assert method_class("fresh_method_for_a_test") is Fresh
    assert register(Fresh) is Fresh  # registering the same class again is harmless

    class Nameless(Method):
        pass

    with pytest.raises(TypeError, match="Nameless has no name"):
        register(Nameless)


def test_unknown_method_names_the_registered_ones():
    with pytest.raises(CorekdError) as err:
        method_class("nope")
    text = str(err.value)
    from corekd.methods.registry import registered

    assert text == f"unknown method 'nope' (registered: {', '.join(registered())})" and "no_kd" in text
    assert method_class("no_kd") is NoKD
