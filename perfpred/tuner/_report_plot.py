"""The best-so-far plot of a tuning run (``best_so_far.png``) and the axis helpers it uses.

Each strategy's curve is the best value after each of ITS evaluations, drawn as far as it
went (an early-stopped run's curve ends where it stopped; a resumed study's shows every
evaluation the study holds), with a dot at its last evaluation. Where the curves are
first-pass timings and each strategy answers with a re-timed config (``perfpred demo``), the
re-timed answer is a hollow marker at the curve's end and the default config's re-timed time
a horizontal line, so the plot tells what the table tells.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from perfpred._plot_ticks import plain_number_ticks
from perfpred.tuner._scoring import best_so_far
from perfpred.units import metric_label

__all__ = ["evaluations_text", "matplotlib_missing", "metric_label", "plain_number_ticks", "plot_best_so_far"]


def _curve(values: Sequence[float | None], maximize: bool) -> np.ndarray:
    """The best value after each evaluation (inf, or -inf maximising, before any finite one)."""
    if maximize:  # the highest so far: the lowest of the negated values
        return -best_so_far([None if v is None or not np.isfinite(v) else -v for v in values], len(values))
    return best_so_far(list(values), len(values))


def matplotlib_missing(warn: Callable[[str], None], skipped: str = "") -> bool:
    """Whether matplotlib is missing, after ``warn`` says the plot is skipped (``skipped``: the
    file not written, as "; no pareto.png"): a report's data files are written either way."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        warn(f"plot skipped: matplotlib is not installed (pip install matplotlib){skipped}")
        return True
    return False


def evaluations_text(n: int, budget: int) -> str:
    """How many evaluations a plot shows, against the run's ``--budget`` where they differ."""
    if n == budget:
        return f"{n}"
    if n < budget:
        return f"{n} of budget {budget}"
    return f"{n} in the study, budget {budget}"


def _mark_this_run(ax: Any, this_run: Sequence[bool] | None) -> None:
    mine = np.asarray(this_run if this_run is not None else [], dtype=bool)
    if not mine.any() or mine.all():
        return
    first = int(np.argmax(mine))
    if mine[first:].all():  # a resumed study: this run's evaluations are the last ones
        ax.axvline(first + 0.5, color="0.6", lw=0.8, ls="-.", label="this run's evaluations from here")
        return
    import matplotlib.transforms as transforms

    x = np.flatnonzero(mine) + 1
    ax.plot(x, np.full(len(x), 0.0), "|", ms=8, color="0.35", label=f"this run's evaluations ({len(x)} of {len(mine)})",
            transform=transforms.blended_transform_factory(ax.transData, ax.transAxes), clip_on=False)


def plot_best_so_far(path: str | os.PathLike[str], curves: Mapping[str, Sequence[float | None]], *, objective: str,
                     maximize: bool, budget: int, title: str, optimum: float | None = None,
                     optimum_label: str = "optimum (recorded)", retimed: Mapping[str, float | None] | None = None,
                     reference: Mapping[str, float | None] | None = None, this_run: Sequence[bool] | None = None,
                     main: str = "perfpred") -> Path:
    """Save the best-so-far plot of ``curves`` (name -> each evaluation's value, None: failed) to
    ``path``; needs matplotlib (ImportError without it).

    ``retimed`` (curve name -> its re-timed answer) marks each curve's re-timed answer at its last
    evaluation and calls the curves first-pass timings; ``reference`` (label -> value) draws
    horizontal lines (the default config's re-timed time); ``this_run`` (one flag per evaluation of
    ``main``, where the study holds evaluations of other runs) marks this run's: a line where they
    begin when they are the last ones (a resumed study), else a tick under each (workers that
    shared the study interleave); ``main`` is the curve whose length the
    x label compares with ``budget``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    retimed = dict(retimed or {})
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    drawn: list[float] = []
    lengths = {name: len(values) for name, values in curves.items()}
    n_main = lengths.get(main, max(lengths.values(), default=0))
    n_max = max([1, *lengths.values()])
    for name, values in curves.items():
        if not len(values):
            continue
        curve = _curve(values, maximize)
        x = np.arange(1, len(curve) + 1)
        label = name + (", first-pass timings" if retimed else "")
        if len(curve) != n_main:
            label += f", {len(curve)} evaluations"
        finite = np.isfinite(curve)
        (line,) = ax.step(x, np.where(finite, curve, np.nan), where="post", label=label)
        if finite[-1]:  # where the curve ends: its last evaluation
            ax.plot(x[-1], curve[-1], "o", ms=4, color=line.get_color())
        drawn += curve[finite].tolist()
        answer = retimed.get(name)
        if answer is not None and np.isfinite(answer):
            ax.plot(x[-1], answer, "D", ms=7, mfc="none", mew=1.6, color=line.get_color(),
                    label=f"{name}, re-timed answer", zorder=5)
            drawn.append(float(answer))
    for label, value in (reference or {}).items():
        if value is not None and np.isfinite(value):
            ax.axhline(value, color="0.35", ls=":", lw=1.2, label=label)
            drawn.append(float(value))
    if optimum:
        ax.axhline(optimum, color="k", ls="--", lw=0.8, label=optimum_label)
        drawn.append(float(optimum))
    _mark_this_run(ax, this_run)
    positive = [v for v in drawn if v > 0]
    # Log only where the values span a decade or more: a narrower range on a log axis has no
    # labelled major tick and reads badly.
    if positive and len(positive) == len(drawn) and max(positive) / min(positive) >= 10:
        ax.set_yscale("log")
    if not drawn:
        ax.text(0.5, 0.5, "no successful evaluation", transform=ax.transAxes, ha="center", va="center")
    ax.set_xlim(0.5, n_max + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    plain_number_ticks(ax.yaxis)
    ax.set_xlabel(f"hardware evaluations ({evaluations_text(n_main, budget)})" if n_main != budget
                  else "hardware evaluations")
    ax.set_ylabel(f"best {metric_label(objective)}" + (", maximised" if maximize else ""))
    ax.set_title("\n".join(textwrap.wrap(title, 70)), fontsize=10)
    if ax.get_legend_handles_labels()[0]:  # an empty history draws no labelled line
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
