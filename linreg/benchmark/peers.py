"""What a practitioner would use instead: scikit-learn on the same table, timed in the same run.

Optional: scikit-learn is not a dependency of linreg (``pip install -e ".[benchmark]"`` brings it). Each
peer gets the data as scikit-learn users load it (pyarrow into numpy float64), and is scored against
the least-squares fit of the same rows, in its standard errors, as the linreg report scores SGD.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.dataset as pa_ds

# The script a scikit-learn user writes for a CSV file: read it, fit SGDRegressor with its defaults, which
# runs epochs until the training loss stops improving. Its whole process is timed against linreg's.
SKLEARN_CSV_SCRIPT = """
import sys
import numpy as np, pyarrow.csv as pa_csv
from sklearn.linear_model import SGDRegressor
table = pa_csv.read_csv(sys.argv[1])
y = table.column("y").to_numpy()
X = np.column_stack([table.column(name).to_numpy() for name in table.column_names if name != "y"])
SGDRegressor().fit(X, y)
"""

# The script a scikit-learn user writes for a Parquet data set larger than memory, doing the work a linreg fit
# does: one pass for the scaling statistics (StandardScaler.partial_fit), then EPOCHS passes of
# SGDRegressor.partial_fit over the record batches with every 20th row held out (in memory) and scored after each
# epoch, then MSE, MAE and R² of the training and held-out rows: all but the exact optimum, which linreg computes
# from its statistics pass. Its whole process is timed against linreg's for the same number of epochs.
SKLEARN_STREAM_SCRIPT = """
import sys
import numpy as np, pyarrow.dataset as pa_ds
from sklearn.linear_model import SGDRegressor
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from sklearn.preprocessing import StandardScaler
data, epochs = pa_ds.dataset(sys.argv[1], format="parquet"), int(sys.argv[2])
def batches():
    start = 0
    for batch in data.to_batches(batch_size=65_536):
        y = batch.column("y").to_numpy().astype(np.float64)
        X = np.column_stack([batch.column(n).to_numpy() for n in batch.schema.names if n != "y"]).astype(np.float64)
        held_out = (np.arange(start, start + len(y)) % 20) == 0
        start += len(y)
        yield X, y, held_out
scale_x, scale_y, val_x, val_y = StandardScaler(), StandardScaler(), [], []
for X, y, held_out in batches():  # the held-out rows are kept in memory, as linreg keeps a small split
    scale_x.partial_fit(X[~held_out]); scale_y.partial_fit(y[~held_out, None])
    val_x.append(X[held_out]); val_y.append(y[held_out])
val_x, val_y = np.concatenate(val_x), np.concatenate(val_y)
model = SGDRegressor(random_state=0)
def scored(pairs):
    true, predicted = [], []
    for X, y in pairs:
        predicted.append(scale_y.inverse_transform(model.predict(scale_x.transform(X))[:, None])[:, 0])
        true.append(y)
    true, predicted = np.concatenate(true), np.concatenate(predicted)
    return mean_squared_error(true, predicted), mean_absolute_error(true, predicted), r2_score(true, predicted)
for epoch in range(epochs):
    for X, y, held_out in batches():
        model.partial_fit(scale_x.transform(X[~held_out]), scale_y.transform(y[~held_out, None])[:, 0])
    scored([(val_x, val_y)])
print(scored((X[~held_out], y[~held_out]) for X, y, held_out in batches()), scored([(val_x, val_y)]))
"""


def available() -> bool:
    """Whether scikit-learn is installed."""
    return importlib.util.find_spec("sklearn") is not None


def _xy(table: object) -> tuple[np.ndarray, np.ndarray]:
    names = [name for name in table.column_names if name != "y"]  # type: ignore[attr-defined]
    X = np.column_stack([table.column(name).to_numpy().astype(np.float64) for name in names])  # type: ignore[attr-defined]
    return X, table.column("y").to_numpy().astype(np.float64)  # type: ignore[attr-defined]


def least_squares(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The least-squares coefficients ``(w, b)`` of ``y ~ X w + b`` as one vector, and their standard errors."""
    A = np.column_stack([X, np.ones(len(X))])
    gram = A.T @ A
    coefficients = np.linalg.solve(gram, A.T @ y)
    residual = y - A @ coefficients
    s2 = residual @ residual / (len(y) - A.shape[1])
    return coefficients, np.sqrt(s2 * np.diag(np.linalg.inv(gram)))


def _distance(model: object, ols: tuple[np.ndarray, np.ndarray]) -> float:
    """The largest |estimate - OLS| / SE over the coefficients of a fitted scikit-learn model."""
    estimate = np.append(model.coef_, model.intercept_)  # type: ignore[attr-defined]
    return float(np.max(np.abs(estimate - ols[0]) / ols[1]))


def sklearn_peers(data: Path) -> dict:
    """scikit-learn on the Parquet data set at ``data``: one SGD epoch in memory, one ``partial_fit`` pass over
    record batches with the read included, and the closed form; seconds, rows/s and distance from OLS."""
    from sklearn.linear_model import LinearRegression, SGDRegressor

    start = time.perf_counter()
    table = pa_ds.dataset(str(data), format="parquet").to_table()
    read = time.perf_counter() - start
    X, y = _xy(table)
    del table
    ols = least_squares(X, y)
    results: dict[str, dict] = {"read": {"seconds": read}}

    model = SGDRegressor(max_iter=1, tol=None, shuffle=True, random_state=0)
    start = time.perf_counter()
    model.fit(X, y)  # one epoch (scikit-learn warns that it has not converged: one epoch is what is timed)
    seconds = time.perf_counter() - start
    results["SGDRegressor one epoch, in memory"] = {
        "seconds": seconds, "rows_per_s": len(y) / seconds, "largest_se_from_ols": _distance(model, ols)
    }  # fmt: skip

    model = SGDRegressor(random_state=0)
    start = time.perf_counter()
    for batch in pa_ds.dataset(str(data), format="parquet").to_batches(batch_size=65_536):
        model.partial_fit(*_xy(batch))
    seconds = time.perf_counter() - start
    results["SGDRegressor.partial_fit one pass, read included"] = {
        "seconds": seconds, "rows_per_s": len(y) / seconds, "largest_se_from_ols": _distance(model, ols)
    }  # fmt: skip

    start = time.perf_counter()
    model = LinearRegression().fit(X, y)
    seconds = time.perf_counter() - start
    results["LinearRegression (closed form)"] = {"seconds": seconds, "largest_se_from_ols": _distance(model, ols)}
    return results


def sklearn_csv_process(csv: Path) -> float:
    """Wall seconds of the whole scikit-learn script on ``csv`` (read with pyarrow, ``SGDRegressor().fit``)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", SKLEARN_CSV_SCRIPT, str(csv)], check=True, capture_output=True)
    return time.perf_counter() - start


def sklearn_stream_process(data: Path, epochs: int) -> float:
    """Wall seconds of the whole scikit-learn streaming script on the Parquet data set ``data`` for ``epochs``."""
    start = time.perf_counter()
    command = [sys.executable, "-c", SKLEARN_STREAM_SCRIPT, str(data), str(epochs)]
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start
