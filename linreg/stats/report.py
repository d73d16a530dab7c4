"""The end-of-fit report: the trained model beside the exact optimum of its objective and the truth, scores per
split, a verdict (``linreg.stats.verdict``).

Plain functions; ``linreg.callbacks.report.FitReport`` prints it and writes ``report.json``. Coefficients are in
the data's own units (``RegressionData.to_original_units``), errors in the target's.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import Any, Protocol

import torch
from torch import Tensor
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection

from linreg.stats.ols import LeastSquaresFit, theta, transform
from linreg.stats.optimum import noise_floor
from linreg.stats.r2 import DefinedR2Score
from linreg.stats.reference import MSE, Objective, Reference
from linreg.stats.verdict import SE_LIMIT, largest_z, verdict

Row = dict[str, Any]


class RegressionData(Protocol):
    """What the report reads of a data module (``linreg.data.RegressionData``), so stats import nothing from data."""

    true_w: Tensor | None
    true_b: float | None
    target_scale: float
    feature_names: list[str]
    batch_size: int

    def reference(self, objective: Objective = MSE) -> Reference: ...
    def to_original_units(self, w: Tensor, b: Tensor) -> tuple[Tensor, Tensor]: ...
    def split_chunks(self, split: str) -> Iterator[tuple[Tensor, Tensor]] | None: ...


def estimator_names(optimizer: str, averaged: bool, swa: bool = False) -> dict[str, str]:
    """What the report calls the trained model: a long name (``averaged SGD``) and a column tag (``ASGD``).

    ``swa``: averaged by Lightning's ``StochasticWeightAveraging``, not ``AveragedSGD``.
    """
    if not averaged:
        return {"name": optimizer, "tag": optimizer}
    if swa:
        return {"name": f"{optimizer} with stochastic weight averaging", "tag": f"SWA {optimizer}"}
    return {"name": f"averaged {optimizer}", "tag": "ASGD" if optimizer == "SGD" else f"avg {optimizer}"}


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
        {"mse": MeanSquaredError(**local), "mae": MeanAbsoluteError(**local), "r2": DefinedR2Score(**local)}
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
    """One row per parameter, ``w[<feature>]`` then ``b``: the truth, the optimum (key ``ols``, whatever the objective)
    with its standard error (None where it has none) and, unless None, the model."""
    labels = [f"w[{name}]" for name in names] + ["b"]
    true = [None] * len(labels) if truth is None else [*truth[0].tolist(), truth[1]]
    ses = [None if math.isnan(se) else se for se in ols.standard_errors.tolist()]
    rows = [
        {"name": label, "true": t, "ols": o, "ols_se": se}
        for label, t, o, se in zip(labels, true, theta(ols.w, ols.b).tolist(), ses, strict=True)
    ]
    for row, s in zip(rows, [] if sgd is None else theta(*sgd).tolist(), strict=False):
        t, o, se = row["true"], row["ols"], row["ols_se"]
        row.update(sgd=s, sgd_minus_true=None if t is None else s - t)
        row["sgd_minus_ols_in_se"] = (s - o) / se if se else None  # se = 0: labels without noise
    return rows


def format_report(report: dict[str, Any], max_rows: int = 20, python: bool = False) -> str:
    """The text of a ``build_report`` report; the verdict's remedies as flags, or with ``python`` as arguments."""
    ols, name, tag, trained = report["ols"], report["estimator"]["name"], report["estimator"]["tag"], report["trained"]
    ref = report["reference"]
    models = {"sgd": tag, "ols": ref["tag"]} if trained else {"ols": ref["tag"]}
    truth, se = (report["parameters"][0][key] is not None for key in ("true", "ols_se"))  # known for all or none
    kind = ref["kind"] if ref["kind"] == ref["tag"] else f"{ref['kind']}, {ref['tag']}"
    what = f"the exact optimum of {ref['objective']} ({kind})"
    title = f"the {name} estimate against {what}" if trained else what
    noise = (
        f"OLS residual std: {ols['residual_std']:.4g} (the noise level of the training labels;"
        f" {ols['num_examples']} examples, {ols['degrees_of_freedom']} degrees of freedom)"
        if ols["residual_std"] is not None
        else f"{ols['num_examples']} training examples: {ref['why']}."
    )
    lines = [
        *(book_error_lines(report["parameters"]) if trained else []),
        *textwrap.wrap(f"Parameters (in the data's own units): {title} on the training data", width=110),
        "",
        *_parameter_table(report["parameters"], max_rows, tag, ref["tag"], truth, se),
        *([] if ols["residual_std"] is None or ref["why"] is None else [f"{ref['why']}."]),
        *textwrap.wrap(noise, width=110),
        f"L2 norm of w: {ref['w_norm']:.6g} ({ref['tag']})"
        + (f", {report['w_norm']:.6g} ({tag})" if trained else "")
        + " in the units the model trains in",
        "",
        f"{'metric (full split)':<22}" + "".join(f"{header:>13}" for header in models.values()),
    ]
    for split, scores in report["metrics"].items():
        for metric, style in (("mse", ".5g"), ("mae", ".5g"), ("r2", ".6f")):
            values = "".join(f"{scores[model][metric]:>13{style}}" for model in models)
            lines.append(f"{split + ' ' + metric:<22}{values}")
    return "\n".join([*lines, "", verdict(report, python), "", legend(name, tag, ref["tag"], truth, trained, se)])


def legend(name: str, tag: str, ref: str, truth_known: bool, trained: bool, has_se: bool) -> str:
    """The lines under the report that say what the columns it has mean."""
    sentences = {
        "true: the value the data were generated from.": truth_known,
        "true-{tag}: the error of the estimate, signed as in the book.": truth_known and trained,
        "{ref}: the exact optimum of the objective on the training data (for OLS, the best estimate they allow)"
        + (", ± its standard error." if has_se else "."): True,
        "{tag}: the trained model ({name}).": trained,
        "({tag}-{ref})/SE: how far the model is from the optimum, in standard errors. Up to {limit:g} (the verdict's"
        " limit), that distance is within what the noise in the data leaves uncertain in the optimum itself.": trained
        and has_se,
        "mse (the loss) and mae: mean squared and absolute error, lower is better; r2: 1 is a perfect fit.": True,
        "Both models are scored on every example of each split.": trained,
    }
    text = "  ".join(s for s, shown in sentences.items() if shown).format(name=name, tag=tag, ref=ref, limit=SE_LIMIT)
    return textwrap.fill(text, width=106, initial_indent="  ", subsequent_indent="  ")


def book_error_lines(rows: list[Row]) -> list[str]:
    """The book's last two lines, true minus estimate in float32 as the book prints them; none without the truth."""
    if not rows or rows[0]["true"] is None:
        return []
    true, sgd = (torch.tensor([row[key] for row in rows], dtype=torch.float32) for key in ("true", "sgd"))
    errors = true - sgd
    return [f"error in estimating w: {errors[:-1]}", f"error in estimating b: {errors[-1:]}", ""]


def _parameter_table(rows: list[Row], max_rows: int, tag: str, ref: str, truth: bool, se: bool) -> list[str]:
    """The parameter rows as text, at most ``max_rows`` of them, and the largest distance from the optimum."""
    columns: dict[str, Callable[[Row], str]] = {"parameter": lambda r: r["name"]}
    if truth:
        columns["true"] = lambda r: f"{r['true']:.6g}"
    if se:  # the optimum ± SE, not also the optimum alone
        columns[f"{ref} ± SE"] = lambda r: f"{r['ols']:.6g} ± {_two_digits(r['ols_se'])}"
    else:
        columns[ref] = lambda r: f"{r['ols']:.6g}"
    trained = "sgd" in rows[0]
    if trained:
        columns[tag] = lambda r: f"{r['sgd']:.6g}"
    if trained and truth:
        columns[f"true-{tag}"] = lambda r: f"{-r['sgd_minus_true']:.2e}"  # the book's sign
    if trained and se:
        columns[f"({tag}-{ref})/SE"] = lambda r: "-" if (z := r["sgd_minus_ols_in_se"]) is None else f"{z:+.2f}"
    z = [-1.0 if r.get("sgd_minus_ols_in_se") is None else abs(r["sgd_minus_ols_in_se"]) for r in rows]
    shown = sorted(sorted(range(len(rows)), key=lambda i: -z[i])[:max_rows])  # farthest from OLS, in order
    table = [list(columns)] + [[cell(rows[i]) for cell in columns.values()] for i in shown]
    widths = [max(len(line[c]) for line in table) for c in range(len(columns))]
    # The first column left-aligned, the others right-aligned.
    lines = ["  ".join([line[0].ljust(widths[0]), *map(str.rjust, line[1:], widths[1:])]) for line in table]
    if len(shown) < len(rows):
        which = f", those farthest from {ref}" if trained else ""
        lines.append(f"({len(shown)} of {len(rows)} parameters shown{which}; all in report.json)")
    lines.append("")
    if trained and (largest := largest_z(rows)):
        lines.append(f"largest |{tag}-{ref}|/SE: {largest[0]:.2f} ({largest[1]})")
    elif trained and se:
        lines.append(f"({tag}-{ref})/SE is undefined: the standard errors are 0, the training labels have no noise")
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
    training: dict[str, Any] | None = None,
    trained: bool = True,
    objective: Objective = MSE,
) -> dict[str, Any]:
    """The report's facts as plain values (``report.json``): parameters, the optimum, metrics per split, the run.

    ``predict`` ``(rows, d) -> (rows, 1)`` and ``coefficients`` are in the units the model trains in; the reference is
    the optimum of ``objective`` on ``data``'s training split. ``estimator``: as ``_PLAIN_SGD``; ``training``: how the
    run went (``gap_by_epoch`` in the model's units) and what would end it; an untrained model is left out.
    """
    truth = None if data.true_w is None or data.true_b is None else (data.true_w.double(), data.true_b)
    reference, s = data.reference(objective), data.target_scale  # s: target units per unit of the model's output
    covariance = torch.full_like(reference.hessian, math.nan) if reference.covariance is None else reference.covariance
    optimum = replace(reference.least_squares, w=reference.w, b=reference.b, covariance=covariance)
    w, b = reference.w.to(device), reference.b.to(device)
    models = {"sgd": predict} if trained else {}
    models["ols"] = lambda x: x.double() @ w + b  # (rows, d) @ (d,) -> (rows,)
    metrics = {}
    for split in ("train", "val"):
        chunks = data.split_chunks(split)  # read once per split, for both models
        if chunks is not None:
            scores = score(models, chunks, device).items()
            metrics[split] = {m: {"mse": v["mse"] * s**2, "mae": v["mae"] * s, "r2": v["r2"]} for m, v in scores}
    est = {**_PLAIN_SGD, **(estimator or {})}
    run = {"mse_by_epoch": [], "gap_by_epoch": [], "epochs": 0, "steps": 0, **(training or {})}
    sgd = learned_coefficients(*coefficients, data) if trained else None
    report = {
        "estimator": est,
        "trained": trained,
        "parameters": parameter_rows(data.feature_names, sgd, transform(optimum, data.to_original_units), truth),
        "reference": _reference_facts(reference, est, data.batch_size),
        "ols": _noise_facts(reference.least_squares, s),
        "metrics": metrics,
        "training": {**run, "mse_by_epoch": [mse * s**2 for mse in run["mse_by_epoch"]]},
        "units": "the data's own: parameters in target units per feature unit, errors in target units;"
        " the objective, its gap and curvature in the units the model trains in",
    }
    if trained:
        model = theta(*coefficients)
        gap = reference.gap(model[:-1], model[-1], lambda: data.split_chunks("train") or iter(()))
        report["training"]["gap_by_epoch"] = [*run["gap_by_epoch"][:-1], gap]  # the reported weights' own gap
        report["distance"] = float((model - theta(reference.w, reference.b)).abs().max())
        report["w_norm"] = float(model[:-1].norm())
    return report


_PLAIN_SGD = {"name": "SGD", "tag": "SGD", "optimizer": "SGD", "averaged": False, "averaging_configured": False}
_PLAIN_SGD |= {"lr": None, "momentum": 0.0, "precision": "32-true"}


def _reference_facts(reference: Reference, estimator: dict[str, Any], batch_size: int) -> dict[str, Any]:
    """What the verdict needs of the optimum, in the model's units: its value, curvature and SGD's noise floor."""
    o, c, least = reference.objective, reference.curvature, reference.least_squares
    lr, momentum = estimator.get("lr"), estimator.get("momentum") or 0.0
    floor = 0.0
    if lr and o.quadratic and batch_size < least.num_examples:  # a full batch has no sampling noise
        floor = noise_floor(lr, momentum, batch_size, least.training_mse(reference.w, reference.b), c.trace)
    return {
        "kind": reference.kind,
        "tag": reference.tag,
        "objective": o.describe(),
        "loss": o.loss,
        "delta": o.delta if o.loss == "huber" else None,
        "weight_decay": o.weight_decay,
        "value": reference.value,
        "why": reference.why,
        "w_norm": float(reference.w.norm()),
        "target_variance": least.target_variance,
        "curvature": {"largest": c.largest, "smallest": c.smallest_nonzero, "condition": c.condition, "trace": c.trace},
        "noise_floor": floor,
    }


def _noise_facts(least: LeastSquaresFit, s: float) -> dict[str, Any]:
    """Least squares' noise estimate, in the target's units; None where no degrees of freedom are left."""
    variance = least.residual_variance * s**2 if least.degrees_of_freedom > 0 else None
    return {
        "num_examples": least.num_examples,
        "degrees_of_freedom": max(least.degrees_of_freedom, 0),
        "residual_variance": variance,
        "residual_std": None if variance is None else variance**0.5,
        "target_variance": least.target_variance * s**2,
    }
