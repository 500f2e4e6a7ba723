import pytest

from splitveil.errors import UnknownNameError
from splitveil.registry import Registry


def test_register_create_and_names():
    registry: Registry[int] = Registry("thing")
    registry.register("two")(lambda *, plus=0: 2 + plus)
    registry.register("three")(lambda: 3)
    assert registry.create("two", plus=1) == 3
    assert registry.names() == ["three", "two"]
    assert registry.names("t*o") == ["two"]
    assert "two" in registry and len(registry) == 2


def test_duplicate_name_is_an_error():
    registry: Registry[int] = Registry("thing")
    registry.register("one")(lambda: 1)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("one")(lambda: 1)


def test_unknown_name_lists_choices_and_suggests():
    registry: Registry[int] = Registry("model")
    registry.register("he-cnn")(lambda: 1)
    with pytest.raises(UnknownNameError, match=r"unknown model 'he-cn'.*he-cnn.*Did you mean 'he-cnn'"):
        registry.get("he-cn")
