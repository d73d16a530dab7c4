"""A class named by the config that refuses its arguments is answered as that config key; a bug keeps its traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from jsonargparse import Namespace
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import EarlyStopping

from linreg.instantiation import ConfigKeyError, KeyedInstantiator, config_key
from tests.conftest import D2L_CONFIG, run_cli


class RefusesWindow(Callback):
    """A user's callback that checks its argument the way torch and Lightning do (ValueError)."""

    def __init__(self, window: int = 3) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")


class Buggy(Callback):
    """A callback with a bug: the exception is not about its argument."""

    def __init__(self, window: int = 3) -> None:
        self.window = window
        self.windwo.append(1)  # type: ignore[attr-defined]


CONFIG = Namespace(
    model=Namespace(class_path="linreg.model.LinearRegression", init_args=Namespace(optimizer=None)),
    trainer=Namespace(
        callbacks=[
            Namespace(class_path="lightning.pytorch.callbacks.EarlyStopping", init_args=Namespace()),
            Namespace(class_path=f"{__name__}.RefusesWindow", init_args=Namespace(window=0)),
        ]
    ),
)


def test_the_key_is_found_by_class_path_groups_first() -> None:
    assert config_key(CONFIG, RefusesWindow) == "trainer.callbacks[1]"
    assert config_key(CONFIG, EarlyStopping) == "trainer.callbacks[0]"
    assert config_key(CONFIG, EarlyStopping, {"checkpoint": EarlyStopping}) == "checkpoint"
    assert config_key(CONFIG, Buggy) == "Buggy"  # named by no key: the class


def test_a_refused_argument_is_named_under_its_key() -> None:
    with pytest.raises(ConfigKeyError, match=r"^trainer\.callbacks\[1\]: window must be >= 1, got 0$"):
        KeyedInstantiator(CONFIG, {})(RefusesWindow, window=0)


def test_a_bug_is_not_reported_as_input() -> None:
    with pytest.raises(AttributeError):
        KeyedInstantiator(CONFIG, {})(Buggy, window=0)


def test_a_value_error_from_a_class_of_ours_is_a_bug() -> None:
    # Ours raise UserInputError for a bad argument: a plain ValueError from one is a check we lack.
    ours = type("Ours", (RefusesWindow,), {"__module__": "linreg.callbacks"})
    with pytest.raises(ValueError, match="window") as raised:
        KeyedInstantiator(CONFIG, {})(ours, window=0)
    assert not isinstance(raised.value, ConfigKeyError)


def _fit(tmp_path: Path, *args: str) -> None:
    run_cli("fit", "--config", str(D2L_CONFIG), "--trainer.logger.init_args.save_dir", str(tmp_path), *args)


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--checkpoint.mode", "foo"], "checkpoint: `mode` can be min, max but got foo"),
        (
            [f"--trainer.callbacks+={__name__}.RefusesWindow", "--trainer.callbacks.window", "0"],
            "trainer.callbacks[0]: window must be >= 1, got 0",
        ),
        (["--data.eval_batch_size", "0"], "data: eval_batch_size must be an integer >= 1, got 0"),
        (["--model.optimizer.momentum", "-1"], "model.optimizer: Invalid momentum value: -1.0"),
    ],
)
def test_the_command_line_names_the_key(
    args: list[str], line: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _fit(tmp_path, *args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert [text.split(": error: ", 1)[1] for text in err.splitlines() if ": error: " in text] == [line]
    assert "Traceback" not in err
    assert not any(tmp_path.rglob("version_*"))


def test_the_command_line_keeps_a_bugs_traceback(tmp_path: Path) -> None:
    with pytest.raises(Exception) as raised:  # noqa: PT011 (any exception but SystemExit)
        _fit(tmp_path, f"--trainer.callbacks+={__name__}.Buggy")
    chain, error = [], raised.value
    while error is not None:
        chain.append(type(error))
        error = error.__cause__ or error.__context__
    assert AttributeError in chain
