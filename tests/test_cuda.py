"""The GPU path: the data set placed in device memory once, or pinned batches when it does not fit.

The GPU tests run with ``python -m pytest -m cuda`` on a machine with a CUDA GPU (skipped elsewhere);
their CPU counterparts run everywhere, so the checks themselves are exercised on every machine.
"""

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from linreg.data import SyntheticRegressionData
from linreg.data import base as base_module
from linreg.model import LinearRegression
from tests.conftest import final_params, fit_d2l

CUDA = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

TRUE_W = torch.tensor([2.0, -3.4, 5.6, 3.2, -0.6])


class _BatchDevices(pl.Callback):
    """Records where each training batch lives when it reaches the model, and whether it was pinned."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: tuple, batch_idx: int
    ) -> None:
        self.seen.update(str(t.device.type) for t in batch)


def _fit(data: SyntheticRegressionData, accelerator: str = "gpu") -> tuple[LinearRegression, _BatchDevices, pl.Trainer]:
    model = LinearRegression(input_dim=data.input_dim)
    devices = _BatchDevices()
    trainer = pl.Trainer(
        accelerator=accelerator, devices=1, max_epochs=3, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[devices],
    )  # fmt: skip
    trainer.fit(model, data)
    return model, devices, trainer


@pytest.mark.parametrize(("accelerator", "device"), [("cpu", "cpu"), pytest.param("gpu", "cuda", marks=CUDA)])
def test_the_data_set_is_placed_on_the_training_device_once(accelerator: str, device: str) -> None:
    data = SyntheticRegressionData(num_train=1000, batch_size=10)
    model, devices, trainer = _fit(data, accelerator)
    loader = trainer.train_dataloader
    assert all(t.device.type == device for t in loader.dataset.tensors)
    assert not loader.pin_memory
    assert devices.seen == {device}
    assert (model.weight.cpu() - TRUE_W).abs().max() < 5e-3


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_data_set_too_big_for_the_gpu_streams_pinned_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base_module, "fits_on_device", lambda tensors, device: False)
    data = SyntheticRegressionData(num_train=1000, batch_size=10)
    model, devices, trainer = _fit(data)
    loader = trainer.train_dataloader
    assert all(t.device.type == "cpu" for t in loader.dataset.tensors)
    assert loader.pin_memory
    assert devices.seen == {"cuda"}  # Lightning moved each pinned batch to the GPU
    assert (model.weight.cpu() - TRUE_W).abs().max() < 5e-3


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_d2l_config_on_the_gpu_recovers_w_and_b_and_matches_the_cpu(tmp_path: Path) -> None:
    gpu_run = fit_d2l(tmp_path / "gpu", "--trainer.accelerator", "gpu")
    cpu_run = fit_d2l(tmp_path / "cpu", "--trainer.accelerator", "cpu")
    gpu, cpu = final_params(gpu_run), final_params(cpu_run)
    assert (gpu["net.0.weight"].reshape(-1) - TRUE_W).abs().max() < 5e-3
    assert abs(gpu["net.0.bias"].item() - 4.2) < 5e-3
    # Same data, same order, same initial weights: only floating-point rounding differs.
    torch.testing.assert_close(gpu["net.0.weight"], cpu["net.0.weight"], rtol=0, atol=1e-4)
