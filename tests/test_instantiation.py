"""A class the config names that needs a package this environment lacks is answered in one line under its key."""

from __future__ import annotations

import pytest
from jsonargparse import Namespace
from lightning.pytorch import Callback

from linreg.instantiation import ConfigKeyError, KeyedInstantiator


class NeedsFancy(Callback):
    """A callback whose optional package is missing, refused at construction as Lightning's RichProgressBar is."""

    def __init__(self) -> None:
        raise ModuleNotFoundError("`NeedsFancy` requires `fancy` >= 1.0. Install it by running `pip install fancy`.")


CONFIG = Namespace(trainer=Namespace(callbacks=[Namespace(class_path=f"{__name__}.NeedsFancy", init_args=Namespace())]))


def test_a_missing_package_is_named_under_the_key_of_the_class_that_needs_it() -> None:
    with pytest.raises(ConfigKeyError) as raised:
        KeyedInstantiator(CONFIG, {})(NeedsFancy)
    assert str(raised.value) == (
        "trainer.callbacks[0]: NeedsFancy needs a package that is not installed: `NeedsFancy` requires `fancy` >= 1.0."
        " Install it by running `pip install fancy`."
    )
