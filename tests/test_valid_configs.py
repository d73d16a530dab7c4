"""Valid configurations that Lightning would refuse or end in a traceback run as asked."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import D2L_CONFIG, run_cli


def test_progress_bar_off_drops_the_epoch_lines_and_fits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_cli(
        *("fit", "--config", str(D2L_CONFIG), "--trainer.logger.init_args.save_dir", str(tmp_path)),
        *("--data.num_train", "100", "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false"),
    )
    captured = capsys.readouterr()
    assert "epoch 1, loss" not in captured.out  # the bar's per-epoch line
    assert (tmp_path / "d2l" / "version_0" / "checkpoints" / "last.ckpt").is_file()
    assert "error" not in captured.err
