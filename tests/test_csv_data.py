"""CSVRegressionData: columns, the seeded split, training-split statistics, checkpointed state, predict rows."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch

from linreg.data import CSVRegressionData
from linreg.data.rows import TEST, TRAIN, VAL, SplitPlan
from linreg.validation import UserInputError

TRUE_W = {"a": 2.0, "b": -300.0, "c": 0.5}
TRUE_B = 7.0


def split_rows(num_rows: int, val_fraction: float, test_fraction: float, seed: int) -> tuple[torch.Tensor, ...]:
    """Row indices of the training, validation and test splits (ascending), as ``SplitPlan`` assigns them."""
    split = SplitPlan.of(num_rows, val_fraction, test_fraction, seed).of_rows(0, num_rows)
    return tuple(torch.from_numpy(np.flatnonzero(split == part)) for part in (TRAIN, VAL, TEST))


def write_linear_csv(path: Path, n: int = 50, seed: int = 0) -> Path:
    """Columns ``c, y, a, b`` (not the order of the features) with ``y = 2a - 300b + 0.5c + 7`` exactly."""
    rng = np.random.default_rng(seed)
    a, b, c = rng.normal(1e3, 1e2, n), rng.normal(0.0, 1e-2, n), rng.normal(-5.0, 1.0, n)
    y = TRUE_W["a"] * a + TRUE_W["b"] * b + TRUE_W["c"] * c + TRUE_B
    rows = np.column_stack([c, y, a, b]).tolist()  # Python floats: repr round-trips
    path.write_text("c,y,a,b\n" + "".join(",".join(map(repr, row)) + "\n" for row in rows))
    return path


@pytest.fixture
def linear_csv(tmp_path: Path) -> Path:
    return write_linear_csv(tmp_path / "linear.csv")


def test_input_dim_and_feature_names_are_known_before_setup(linear_csv: Path) -> None:
    dm = CSVRegressionData(str(linear_csv), target="y")
    assert dm.input_dim == 3
    assert dm.feature_names == ["c", "a", "b"]  # file order
    dm = CSVRegressionData(str(linear_csv), target="y", features=["a", "b"])
    assert dm.feature_names == ["a", "b"]


def test_split_sizes_follow_the_fractions_and_the_splits_are_disjoint() -> None:
    train, val, test = split_rows(100, 0.2, 0.1, seed=3)
    assert (len(train), len(val), len(test)) == (70, 20, 10)
    assert sorted(torch.cat([train, val, test]).tolist()) == list(range(100))


def test_the_split_depends_on_the_seed_only() -> None:
    assert all(torch.equal(p, q) for p, q in zip(split_rows(50, 0.1, 0.1, 1), split_rows(50, 0.1, 0.1, 1), strict=True))
    assert not torch.equal(split_rows(50, 0.1, 0.1, 1)[0], split_rows(50, 0.1, 0.1, 2)[0])


def test_small_fractions_still_get_a_row_and_a_zero_test_fraction_none() -> None:
    assert [len(p) for p in split_rows(5, 0.01, 0.0, seed=0)] == [4, 1, 0]


def test_splits_are_standardised_with_training_statistics(linear_csv: Path) -> None:
    dm = CSVRegressionData(str(linear_csv), target="y", features=["a", "b", "c"], val_fraction=0.2, test_fraction=0.2)
    dm.setup("fit")
    X, y = dm.train_data
    assert X.dtype == torch.float32
    assert (len(X), len(dm.val_data[0]), len(dm.test_data[0])) == (30, 10, 10)
    torch.testing.assert_close(X.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(X.std(0, correction=0), torch.ones(3), atol=1e-5, rtol=0)
    assert abs(y.mean().item()) < 1e-5
    assert abs(dm.val_data[0].mean().item()) > 1e-3  # held-out rows are not re-centred on themselves


def test_least_squares_on_the_training_split_in_original_units_recovers_the_exact_line(linear_csv: Path) -> None:
    dm = CSVRegressionData(str(linear_csv), target="y", features=["a", "b", "c"])
    dm.setup("fit")
    X, y = (t.double().numpy() for t in dm.train_data)
    solution, *_ = np.linalg.lstsq(np.column_stack([X, np.ones(len(X))]), y[:, 0], rcond=None)
    w, b = dm.to_original_units(torch.from_numpy(solution[:-1]), torch.tensor(solution[-1]))
    # float32 standardised data: relative precision ~1e-6 of each column's own scale
    np.testing.assert_allclose(w.numpy(), [TRUE_W["a"], TRUE_W["b"], TRUE_W["c"]], rtol=1e-3)
    assert b.item() == pytest.approx(TRUE_B, abs=0.05)


def test_state_dict_loads_with_weights_only_and_restores_the_statistics_over_a_changed_file(tmp_path: Path) -> None:
    path = write_linear_csv(tmp_path / "data.csv", seed=0)
    fitted = CSVRegressionData(str(path), target="y")
    fitted.setup("fit")
    buffer = io.BytesIO()
    torch.save(fitted.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)

    write_linear_csv(path, seed=1)  # the file changes: other rows, other statistics
    restored = CSVRegressionData(str(path), target="y")
    restored.setup("predict")
    restored.load_state_dict(state)  # the order Lightning uses: setup, then the checkpoint
    assert torch.equal(restored.standardizer.x_mean, fitted.standardizer.x_mean)
    assert restored.standardizer.y_std == fitted.standardizer.y_std
    a = torch.from_numpy(np.loadtxt(path, delimiter=",", skiprows=1)[:, 2])  # columns c, y, a, b
    expected = (a - fitted.standardizer.x_mean[1]) / fitted.standardizer.x_std[1]
    torch.testing.assert_close(restored.predict_dataloader().dataset.tensors[0][:, 1], expected.float())


def test_predict_runs_on_every_row_in_file_order(linear_csv: Path) -> None:
    rows = [[float(cell) for cell in line.split(",")] for line in linear_csv.read_text().splitlines()[1:]]
    dm = CSVRegressionData(str(linear_csv), target="y", features=["c", "a", "b"])
    dm.setup("predict")
    (X,) = next(iter(dm.predict_dataloader()))
    raw_x = torch.tensor([[c, a, b] for c, _, a, b in rows], dtype=torch.float64)
    torch.testing.assert_close(X, ((raw_x - dm.standardizer.x_mean) / dm.standardizer.x_std).float())
    columns = dm.prediction_columns(torch.zeros(50, 1))
    assert list(columns) == ["line", "y", "prediction"]
    assert columns["line"].tolist() == list(range(2, 52))
    assert columns["y"].tolist() == [y for _, y, _, _ in rows]
    # a standardised prediction of 0 is the training mean of the target
    assert torch.equal(columns["prediction"], torch.full((50,), dm.standardizer.y_mean, dtype=torch.float64))


def test_a_predict_file_needs_the_features_only(linear_csv: Path, tmp_path: Path) -> None:
    new_rows = tmp_path / "new.csv"
    new_rows.write_text("b,a,c\n0.01,1000,-5\n0,900,-4\n")
    dm = CSVRegressionData(str(linear_csv), target="y", predict_path=str(new_rows))
    dm.setup("predict")
    (X,) = next(iter(dm.predict_dataloader()))
    assert X.shape == (2, 3)
    assert list(dm.prediction_columns(torch.zeros(2))) == ["line", "prediction"]


def test_a_constant_column_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "flat.csv"
    path.write_text("x,k,y\n" + "".join(f"{i},3,{2 * i}\n" for i in range(20)))
    dm = CSVRegressionData(str(path), target="y")
    with pytest.raises(UserInputError, match=r"flat\.csv: column 'k' is constant on the training split \(every value"):
        dm.setup("fit")


@pytest.mark.parametrize("offset", [2**53, 10**12])
def test_a_column_that_varies_below_float32_resolution_for_its_size_is_refused(tmp_path: Path, offset: int) -> None:
    # Integers near 2**53 (ids, nanosecond times): standardised they look fine, but their coefficient and the
    # intercept in original units are beyond what the float32 model resolves. 10**12 + i: 1e-10 relative spread.
    path = tmp_path / "ids.csv"
    path.write_text("x,k,y\n" + "".join(f"{i},{offset + i},{2 * i}\n" for i in range(40)))
    with pytest.raises(UserInputError, match=r"ids\.csv: column 'k' varies too little for its size to be fitted"):
        CSVRegressionData(str(path), target="y").setup("fit")
    path.write_text("x,k,y\n" + "".join(f"{i},{2000 + i % 7},{2 * i}\n" for i in range(40)))  # years: fine
    CSVRegressionData(str(path), target="y").setup("fit")


def test_a_constant_target_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "flat.csv"
    path.write_text("x,y\n" + "".join(f"{i},1.5\n" for i in range(20)))
    with pytest.raises(UserInputError, match=r"column 'y' is constant on the training split.*nothing to predict"):
        CSVRegressionData(str(path), target="y").setup("fit")


def test_too_few_rows_for_the_split_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "tiny.csv"
    path.write_text("x,y\n1,2\n2,3\n3,5\n")
    with pytest.raises(UserInputError, match=r"tiny\.csv: 3 data rows are too few.*need at least 4"):
        CSVRegressionData(str(path), target="y").setup("fit")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"val_fraction": -0.1}, r"val_fraction must be a finite number >= 0, got -0.1"),
        ({"test_fraction": -0.1}, r"test_fraction must be a finite number >= 0, got -0.1"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, r"val_fraction \+ test_fraction must be < 1"),
        ({"batch_size": 0}, r"batch_size must be an integer >= 1, got 0"),
        ({"eval_batch_size": 0}, r"eval_batch_size must be an integer >= 1, got 0"),
        ({"target": "price"}, r"no column 'price' \(target\); the columns are 'c', 'y', 'a', 'b'"),
        ({"path": "missing.csv"}, r"missing\.csv: no such file"),
    ],
)
def test_bad_arguments_are_refused_with_the_field_and_value(linear_csv: Path, kwargs: dict, match: str) -> None:
    arguments = {"path": str(linear_csv), "target": "y", **kwargs}
    with pytest.raises(UserInputError, match=match):
        CSVRegressionData(**arguments)


def test_training_batches_are_shuffled_and_cover_the_split(linear_csv: Path) -> None:
    dm = CSVRegressionData(str(linear_csv), target="y", batch_size=4, test_fraction=0.0)
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert len(batches[0][0]) == 4
    X = torch.cat([x for x, _ in batches])
    train = dm.train_data[0]
    assert not torch.equal(X, train)
    assert torch.equal(X[X[:, 0].argsort()], train[train[:, 0].argsort()])


@pytest.mark.parametrize(("rows", "batch"), [(50, 16), (1000, 40), (100_000, 4000), (110_000, 4096)])
def test_batch_size_auto_is_a_twentieth_of_the_training_rows_from_16_to_4096(
    tmp_path: Path, rows: int, batch: int
) -> None:
    path = write_linear_csv(tmp_path / "t.csv", n=rows)
    dm = CSVRegressionData(str(path), target="y", val_fraction=0.1, test_fraction=0.1)  # batch_size auto
    dm.setup("fit")
    train_rows = len(dm.train_data[0])
    assert train_rows == round(0.8 * rows)
    assert dm.batch_size == batch
    assert len(dm.train_dataloader()) == -(-train_rows // batch)  # every training row, in batches of that size


@pytest.mark.parametrize(("scale", "column"), [(1e-160, "y"), (1e-200, "x")])
def test_a_column_whose_squares_underflow_float64_is_refused_as_too_small_not_constant(
    tmp_path: Path, scale: float, column: str
) -> None:
    # 1e-160 has a subnormal square (its variance loses digits); 1e-200's square is 0, so its spread computes as 0.
    path = tmp_path / "tiny.csv"
    for factor, refused in ((scale, True), (1.0, False)):  # then rescaled: fine
        x, y = (factor if column == "x" else 1.0), (factor if column == "y" else 1.0)
        path.write_text("x,y\n" + "".join(f"{i * x!r},{(2 * i + 1) * y!r}\n" for i in range(40)))
        with (
            pytest.raises(UserInputError, match=rf"tiny\.csv: column '{column}' is too small for the statistics")
            if (refused)
            else contextlib.nullcontext()
        ):
            CSVRegressionData(str(path), target="y").setup("fit")


def test_a_predict_row_beyond_float32_once_standardised_is_refused_naming_line_and_column(
    linear_csv: Path, tmp_path: Path
) -> None:
    new_rows = tmp_path / "new.csv"
    new_rows.write_text("b,a,c\n0.01,1000,-5\n1e300,900,-4\n")  # (1e300 - mean) / std overflows float32
    dm = CSVRegressionData(str(linear_csv), target="y", predict_path=str(new_rows))
    with pytest.raises(UserInputError, match=r"new\.csv: line 3, column 'b': 1e\+300 is beyond float32 once"):
        dm.setup("predict")


def test_the_split_seed_is_saved_with_the_statistics(linear_csv: Path) -> None:
    dm = CSVRegressionData(str(linear_csv), target="y", seed=7)
    dm.setup("fit")
    assert dm.state_dict()["seed"] == 7
