"""The end-of-fit report: the trained model beside least squares and the truth, scores per split, a verdict.

Plain functions; ``linreg.callbacks.report.FitReport`` prints it and writes ``report.json``. Coefficients are in
the data's own units (``RegressionData.to_original_units``), errors in the target's.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

import torch
from torch import Tensor
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection, R2Score

from linreg.stats.ols import LeastSquaresFit, transform

# Short of least squares: training MSE more than 1% above OLS's, or a coefficient more than 3 SE from OLS's.
MSE_RATIO_LIMIT = 1.01
SE_LIMIT = 3.0
# Still closing in (more or larger steps help) when the last epoch took more than a quarter off the training
# MSE's excess over OLS's; otherwise the steps jitter around the solution (smaller steps or their average help).
STILL_CLOSING = 0.75
# With unit roundoff u, an excess MSE over least squares up to (10 u)² var(y) is rounding, not distance.
ROUNDING_UNITS = 10.0

Row = dict[str, Any]


class RegressionData(Protocol):
    """What the report reads of a data module (``linreg.data.RegressionData``): declared here, so that the
    statistics import nothing from the data package, which builds on them."""

    true_w: Tensor | None
    true_b: float | None
    target_scale: float
    feature_names: list[str]

    def least_squares(self, device: torch.device | None = None) -> LeastSquaresFit: ...
    def to_original_units(self, w: Tensor, b: Tensor) -> tuple[Tensor, Tensor]: ...
    def split_chunks(self, split: str) -> Iterator[tuple[Tensor, Tensor]] | None: ...


def estimator_names(optimizer: str, averaged: bool) -> dict[str, str]:
    """What the report calls the trained model: a long name (``averaged SGD``) and a column tag (``ASGD``)."""
    if not averaged:
        return {"name": optimizer, "tag": optimizer}
    return {"name": f"averaged {optimizer}", "tag": "ASGD" if optimizer == "SGD" else f"avg {optimizer}"}


def _columns(tag: str) -> list[tuple[str, Callable[[Row], str], tuple[str, ...]]]:
    """(header, cell, the row keys it needs)."""
    return [
        ("parameter", lambda r: r["name"], ()),
        ("true", lambda r: f"{r['true']:.6g}", ("true",)),
        ("OLS ± SE", lambda r: f"{r['ols']:.6g} ± {_two_digits(r['ols_se'])}", ()),
        (tag, lambda r: f"{r['sgd']:.6g}", ("sgd",)),
        (f"true-{tag}", lambda r: f"{-r['sgd_minus_true']:.2e}", ("true", "sgd")),  # the book's sign
        (f"({tag}-OLS)/SE", lambda r: "-" if (z := r["sgd_minus_ols_in_se"]) is None else f"{z:+.2f}", ("sgd",)),
    ]


def _two_digits(x: float) -> str:
    """``x`` to two significant digits, in plain notation where that stays short (1400, 49, 0.00031)."""
    rounded = float(f"{x:.2g}")
    return f"{rounded:.12g}" if rounded == 0 or 1e-5 <= abs(rounded) < 1e7 else f"{rounded:.2g}"


def score(
    models: dict[str, Callable[[Tensor], Tensor]], chunks: Iterable[tuple[Tensor, Tensor]], device: torch.device
) -> dict[str, dict[str, float]]:
    """``{model: {metric: value}}``: MSE, MAE and R² in float64 on the ``(X, y)`` blocks, read once for all models."""
    local = {"sync_on_compute": False}  # one process scores the whole split; the others are not computing
    scores = MetricCollection(
        {"mse": MeanSquaredError(**local), "mae": MeanAbsoluteError(**local), "r2": R2Score(**local)}
    )
    metrics = {name: scores.clone().set_dtype(torch.float64).to(device) for name in models}
    with torch.no_grad():
        for x, t in chunks:  # x in the model's dtype
            x, t = x.to(device), t.to(device).view(-1).double()
            for name, predict in models.items():
                metrics[name].update(predict(x).view(-1).double(), t)  # (rows,) each
    return {name: {k: v.item() for k, v in m.compute().items()} for name, m in metrics.items()}


def parameter_rows(
    names: list[str], sgd: tuple[Tensor, Tensor] | None, ols: LeastSquaresFit, truth: tuple[Tensor, float] | None
) -> list[Row]:
    """One row per parameter, ``w[<feature>]`` then ``b``: truth, least squares and (unless None) the model."""
    labels = [f"w[{name}]" for name in names] + ["b"]
    true = [None] * len(labels) if truth is None else [*truth[0].tolist(), truth[1]]
    ols_all, ses = torch.cat([ols.w, ols.b.view(1)]).tolist(), ols.standard_errors.tolist()
    rows = [
        {"name": label, "true": t, "ols": o, "ols_se": se}
        for label, t, o, se in zip(labels, true, ols_all, ses, strict=True)
    ]
    for row, s in zip(rows, [] if sgd is None else torch.cat([sgd[0], sgd[1].view(1)]).tolist(), strict=False):
        t, o, se = row["true"], row["ols"], row["ols_se"]
        row.update(sgd=s, sgd_minus_true=None if t is None else s - t)
        row["sgd_minus_ols_in_se"] = (s - o) / se if se > 0 else None  # se = 0: labels without noise
    return rows


def format_report(report: dict[str, Any], max_rows: int = 20) -> str:
    """The text of a report built by ``build_report``; an untrained model is left out (no estimate)."""
    ols, name, tag, trained = report["ols"], report["estimator"]["name"], report["estimator"]["tag"], report["trained"]
    models = {"sgd": tag, "ols": "OLS"} if trained else {"ols": "OLS"}
    title = f"the {name} estimate against least squares (OLS)" if trained else "least squares (OLS)"
    lines = [
        *(book_error_lines(report["parameters"]) if trained else []),
        f"Parameters (in the data's own units): {title} on the training data",
        "",
        *_parameter_table(report["parameters"], max_rows, tag),
        f"OLS residual std: {ols['residual_std']:.4g} (the noise level of the training labels;"
        f" {ols['num_examples']} examples, {ols['degrees_of_freedom']} degrees of freedom)",
        "",
        f"{'metric (full split)':<22}" + "".join(f"{header:>13}" for header in models.values()),
    ]
    for split, scores in report["metrics"].items():
        for metric, style in (("mse", ".5g"), ("mae", ".5g"), ("r2", ".6f")):
            values = "".join(f"{scores[model][metric]:>13{style}}" for model in models)
            lines.append(f"{split + ' ' + metric:<22}{values}")
    truth_known = bool(report["parameters"]) and report["parameters"][0]["true"] is not None
    return "\n".join([*lines, "", verdict(report), "", legend(name, tag, truth_known, trained)])


def legend(name: str, tag: str, truth_known: bool, trained: bool) -> str:
    """The lines under the report that say what the columns it has mean."""
    sentences = {
        "true: the value the data were generated from.": truth_known,
        "true-{tag}: the error of the estimate, signed as in the book.": truth_known and trained,
        "OLS ± SE: the exact least-squares fit to the training data (the best estimate they allow) and its standard"
        " error.": True,
        "{tag}: the trained model ({name}).": trained,
        "({tag}-OLS)/SE: how far the model is from OLS, in standard errors. Up to {limit:g} (the verdict's limit),"
        " that distance is within what the noise in the data leaves uncertain in OLS itself.": trained,
        "mse (the loss) and mae: mean squared and absolute error, lower is better; r2: 1 is a perfect fit.": True,
        "Both models are scored on every example of each split.": trained,
    }
    text = "  ".join(s for s, shown in sentences.items() if shown).format(name=name, tag=tag, limit=SE_LIMIT)
    return textwrap.fill(text, width=106, initial_indent="  ", subsequent_indent="  ")


def book_error_lines(rows: list[Row]) -> list[str]:
    """The book's last two lines, true minus estimate in float32 as the book prints them; none without the truth.

    Example:
        >>> rows = [{"true": 2.0, "sgd": 1.9995}, {"true": 4.2, "sgd": 4.2}]
        >>> book_error_lines(rows)
        ['error in estimating w: tensor([0.0005])', 'error in estimating b: tensor([0.])', '']
    """
    if not rows or rows[0]["true"] is None:
        return []
    true, sgd = (torch.tensor([row[key] for row in rows], dtype=torch.float32) for key in ("true", "sgd"))
    errors = true - sgd
    return [f"error in estimating w: {errors[:-1]}", f"error in estimating b: {errors[-1:]}", ""]


def resolution(precision: str) -> float:
    """``(10 u)²``: the least excess MSE over OLS, in units of var(y), resolved at ``precision`` (roundoff ``u``)."""
    return (ROUNDING_UNITS * torch.finfo(_compute_type(precision)).eps / 2) ** 2


def _compute_type(precision: str) -> torch.dtype:
    kind = precision.split("-")[0]  # "16-mixed" -> "16"
    return {"64": torch.float64, "16": torch.float16, "bf16": torch.bfloat16}.get(kind, torch.float32)


def verdict(report: dict[str, Any]) -> str:
    """One line: whether the model reached least squares and, if not, what to change (by the last epoch's MSE)."""
    name = report["estimator"]["name"]
    if not report["trained"]:
        return (
            f"verdict: the model was not trained (0 {name} steps, as with --trainer.max_epochs 0 or"
            " --trainer.limit_train_batches 0): its weights are no estimate; least squares is shown alone."
        )
    facts, line = _judgement(report)
    if line is not None:
        return line
    history = report["training"]["mse_by_epoch"]
    closing = still_closing(history, report["metrics"]["train"]["ols"]["mse"])
    lr = report["estimator"].get("lr")
    larger = f"a learning rate larger than {lr:g}" if lr is not None else "a larger learning rate"
    steps = f"more epochs (--trainer.max_epochs) or {larger} (--model.optimizer.lr)"
    calmer = ["a smaller or decaying learning rate (--model.scheduler)"]
    if not report["estimator"]["averaged"]:
        calmer.insert(0, "averaging the iterates (--trainer.callbacks+=AveragedSGD)")
    short = f"verdict: {name} stopped short of the least-squares fit ({facts})"
    if closing is None:  # one epoch: no telling which
        return f"{short}; try {steps}, or, if it stalls, {', '.join(calmer)}."
    moved = f"training MSE {history[-2]:.4g} -> {history[-1]:.4g} in the last epoch"
    if closing:
        return f"{short} and was still closing in ({moved}); try {steps}."
    return f"{short} and had stalled ({moved}): its steps jitter around the solution; try {', '.join(calmer)}."


def _judgement(report: dict[str, Any]) -> tuple[str, str | None]:
    """The verdict's facts, and its line where the model reached least squares or nothing can be told.

    Where the precision cannot resolve 1% of OLS's MSE (nearly noise-free labels, 16-bit arithmetic) the excess
    MSE is judged against var(y) and what that precision resolves.
    """
    name, tag, precision = (report["estimator"][key] for key in ("name", "tag", "precision"))
    train = report["metrics"]["train"]
    sgd_mse, ols_mse = train["sgd"]["mse"], train["ols"]["mse"]
    ratio = sgd_mse / ols_mse if ols_mse > 0 else (math.inf if sgd_mse > 0 else 1.0)  # OLS exact: any excess counts
    z = [abs(r["sgd_minus_ols_in_se"]) for r in report["parameters"] if r["sgd_minus_ols_in_se"] is not None]
    largest = max(z, default=0.0)
    facts = f"train MSE {ratio:.4f}x OLS's, largest |{tag}-OLS|/SE {largest:.2f}"
    if ratio <= MSE_RATIO_LIMIT and largest <= SE_LIMIT:
        return facts, f"verdict: {name} reached the least-squares fit, within the noise ({facts})."
    variance, finest = report["ols"]["target_variance"], resolution(precision)
    if finest * variance <= (MSE_RATIO_LIMIT - 1) * ols_mse:  # the noise sets the scale, and the precision resolves it
        return facts, None
    excess = (sgd_mse - ols_mse) / variance
    within = excess <= finest
    scale = (
        f"excess train MSE {excess:.2g} of var(y), {'within' if within else 'more than'} the {finest:.2g}"
        f" that {precision} resolves"
    )
    if torch.finfo(_compute_type(precision)).bits < 32:
        cannot = f"verdict: at precision {precision} the comparison with least squares cannot resolve the difference"
        return scale, (f"{cannot} ({facts}; {scale}); train at 32-true to judge {name}." if within else None)
    floor = f"OLS's train MSE {ols_mse / variance:.2g} of var(y)"
    if within:
        return scale, (
            f"verdict: the labels are nearly noise-free ({floor}), so the MSE ratio and standard errors say nothing;"
            f" judged against var(y), {name} reached the least-squares fit ({scale})."
        )
    return f"the labels are nearly noise-free, {floor}; {scale}", None


def still_closing(mse_by_epoch: list[float], floor: float) -> bool | None:
    """Whether the last epoch took more than a quarter off the MSE's excess over ``floor``; None before two epochs.

    Example:
        >>> still_closing([51.4, 33.1, 20.8], 1e-4), still_closing([3.5e-4, 9.53e-5, 9.54e-5], 9.42e-5)
        (True, False)
    """
    if len(mse_by_epoch) < 2:
        return None
    before, last = (mse - floor for mse in mse_by_epoch[-2:])
    return last < STILL_CLOSING * before


def _parameter_table(rows: list[Row], max_rows: int, tag: str) -> list[str]:
    """The parameter rows as text, at most ``max_rows`` of them, and the largest distance from OLS."""
    columns = [c for c in _columns(tag) if all(rows[0].get(key) is not None for key in c[2])]
    trained = "sgd" in rows[0]
    z = [-1.0 if r.get("sgd_minus_ols_in_se") is None else abs(r["sgd_minus_ols_in_se"]) for r in rows]
    shown = sorted(sorted(range(len(rows)), key=lambda i: -z[i])[:max_rows])  # farthest from OLS, in order
    table = [[header for header, _, _ in columns]] + [[cell(rows[i]) for _, cell, _ in columns] for i in shown]
    widths = [max(len(line[c]) for line in table) for c in range(len(columns))]
    # The first column left-aligned, the others right-aligned.
    lines = ["  ".join([line[0].ljust(widths[0]), *map(str.rjust, line[1:], widths[1:])]) for line in table]
    if len(shown) < len(rows):
        which = ", those farthest from OLS" if trained else ""
        lines.append(f"({len(shown)} of {len(rows)} parameters shown{which}; all in report.json)")
    lines.append("")
    worst = max(range(len(rows)), key=lambda i: z[i])
    if trained and z[worst] >= 0:
        lines.append(f"largest |{tag}-OLS|/SE: {z[worst]:.2f} ({rows[worst]['name']})")
    elif trained:
        lines.append(f"({tag}-OLS)/SE is undefined: the standard errors are 0, the training labels have no noise")
    return lines


def learned_coefficients(w: Tensor, b: Tensor, data: RegressionData) -> tuple[Tensor, Tensor]:
    """A model's ``(w, b)`` in the data's own units, float64 on the CPU: shapes ``(d,)`` and ``()``."""
    return data.to_original_units(w.to("cpu", torch.float64), b.to("cpu", torch.float64))


def build_report(
    predict: Callable[[Tensor], Tensor],
    coefficients: tuple[Tensor, Tensor],
    data: RegressionData,
    device: torch.device,
    estimator: dict[str, Any] | None = None,
    mse_by_epoch: list[float] | None = None,
    trained: bool = True,
) -> dict[str, Any]:
    """The report's facts as plain values (``report.json``): parameters, OLS's noise estimate, metrics per split.

    Args:
        predict: the model, ``(rows, d) -> (rows, 1)``, in the units it is trained in (as are ``coefficients``
            ``(d,)`` and ``()`` and ``mse_by_epoch``).
        data: the data module, set up; its least squares (``data.least_squares()``) is the reference.
        estimator: ``name``, ``tag`` (``estimator_names``), ``averaged``, ``lr``, ``precision``; plain SGD if None.
        trained: whether the model took any step; an untrained one is left out.
    """
    truth = None if data.true_w is None or data.true_b is None else (data.true_w.double(), data.true_b)
    reference, s = data.least_squares(), data.target_scale  # s: target units per unit of the model's output
    ols = transform(reference, data.to_original_units)
    w, b = reference.w.to(device), reference.b.to(device)

    def ols_predict(x: Tensor) -> Tensor:
        return x.double() @ w + b  # (rows, d) @ (d,) -> (rows,)

    metrics = {}
    for split in ("train", "val"):
        chunks = data.split_chunks(split)  # read once per split, for both models
        if chunks is not None:
            scores = score({"sgd": predict, "ols": ols_predict} if trained else {"ols": ols_predict}, chunks, device)
            metrics[split] = {
                m: {"mse": v["mse"] * s**2, "mae": v["mae"] * s, "r2": v["r2"]} for m, v in scores.items()
            }
    residual_variance = reference.residual_variance * s**2
    sgd = learned_coefficients(*coefficients, data) if trained else None
    return {
        "estimator": estimator or {**estimator_names("SGD", averaged=False), "averaged": False, "precision": "32-true"},
        "trained": trained,
        "parameters": parameter_rows(data.feature_names, sgd, ols, truth),
        "ols": {
            "num_examples": reference.num_examples,
            "degrees_of_freedom": reference.degrees_of_freedom,
            "residual_variance": residual_variance,
            "residual_std": residual_variance**0.5,
            "target_variance": reference.target_variance * s**2,
        },
        "metrics": metrics,
        "training": {"mse_by_epoch": [mse * s**2 for mse in mse_by_epoch or []]},
        "units": "the data's own: parameters in target units per feature unit, errors in target units",
    }
