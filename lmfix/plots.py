"""The report figures, drawn headless and written atomically.

The functions take plain series (label, colour, numbers) rather than run directories, so the
drawing code knows nothing about the file formats; :mod:`lmfix.report` does the extraction.

We draw on a bare :class:`~matplotlib.figure.Figure` with the Agg canvas instead of going
through ``pyplot``: that is the Agg backend without ``matplotlib.use`` flipping the backend
of a host process (a notebook calling ``write_report`` keeps its own), and without pyplot's
global figure registry, which leaks memory when figures are not closed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

from .fsutil import atomic_open

# tab10: distinguishable and colour-blind tolerant; index = the run's row in the table, so a
# variant keeps its colour in every figure.
_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
            "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
_LINESTYLES = ["-", "--", "-.", ":"]  # beyond 10 variants colours repeat; the dash tells them apart


def color(i: int) -> str:
    return _PALETTE[i % len(_PALETTE)]


def _linestyle(i: int) -> str:
    return _LINESTYLES[(i // len(_PALETTE)) % len(_LINESTYLES)]


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")


def _finite_pairs(xs: Sequence, ys: Sequence, positive_x: bool = False) -> tuple[list, list]:
    """Keep points a plot can show: finite numbers, and x > 0 where the x-axis is logarithmic."""
    out_x, out_y = [], []
    for x, y in zip(xs, ys):
        if x is None or y is None or not (math.isfinite(x) and math.isfinite(y)):
            continue
        if positive_x and x <= 0:
            continue
        out_x.append(x)
        out_y.append(y)
    return out_x, out_y


def _readable_log_y(ax, values: list[float]) -> None:
    """Log y-axis with plain numbers ("150", not "1.5x10^2").

    Perplexities of comparable runs usually sit within one decade, where a log axis has no
    major tick at all; label the minor ticks then, otherwise only the decades.
    """
    from matplotlib import ticker

    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    positive = [v for v in values if v > 0]
    if positive and max(positive) / min(positive) < 10:
        ax.yaxis.set_minor_formatter(ticker.FormatStrFormatter("%g"))
    else:
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())


def plot_val_ppl(series: list[dict], path: Path) -> None:
    """Validation perplexity per epoch, every variant on one log axis.

    ``series``: dicts with ``label``, ``index`` (colour), ``epochs`` and ``val_ppl`` lists,
    and optionally ``lo``/``hi`` (the range over seeds: a band, or an error bar at a single
    epoch). Every point gets a marker so that a one-epoch run still shows up (a line needs two).
    """
    from matplotlib import ticker

    fig = _new_figure(8, 5)
    ax = fig.add_subplot()
    values, last_epoch = [], 1
    for s in series:
        xs, ys = _finite_pairs(s["epochs"], s["val_ppl"])
        if not xs:
            continue
        values += ys
        last_epoch = max(last_epoch, *xs)
        ax.plot(xs, ys, marker="o", markersize=7 if len(xs) == 1 else 4,
                color=color(s["index"]), linestyle=_linestyle(s["index"]), label=s["label"])
        lo, hi = s.get("lo"), s.get("hi")
        if lo and hi and len(lo) == len(s["epochs"]) and any(a != b for a, b in zip(lo, hi)):
            bx, blo = _finite_pairs(s["epochs"], lo)
            _, bhi = _finite_pairs(s["epochs"], hi)
            if len(bx) > 1:
                ax.fill_between(bx, blo, bhi, color=color(s["index"]), alpha=0.15, linewidth=0)
            elif bx:
                ax.errorbar(bx, ys[:1], yerr=[[ys[0] - blo[0]], [bhi[0] - ys[0]]],
                            color=color(s["index"]), capsize=4, linewidth=1)
            values += blo + bhi
    if values:
        _readable_log_y(ax, values)
    else:  # every run diverged (inf/nan): still write the figure, saying so
        ax.text(0.5, 0.5, "no finite validation perplexity to plot", ha="center",
                transform=ax.transAxes)
    ax.set_xlim(0.5, last_epoch + 0.5)  # whole epochs, also when there is only one
    if last_epoch <= 12:
        ax.set_xticks(range(1, int(last_epoch) + 1))
    else:
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation perplexity (log scale, lower is better)")
    ax.set_title("Validation perplexity per epoch (mean over seeds; band: their range)")
    ax.grid(True, which="both", alpha=0.3)
    if values:
        ax.legend(title="variant", fontsize="small")
    _save(fig, path)


def plot_scale(series: list[dict], path: Path) -> bool:
    """The learned global logit scale against tokens seen (log x), fixed variants only.

    ``series``: dicts with ``label``, ``index``, ``steps`` and ``epochs``, each a list of
    ``(tokens_seen, scale)``. Returns False and writes nothing when there is no point to plot.
    """
    from matplotlib.lines import Line2D

    fig = _new_figure(8, 5)
    ax = fig.add_subplot()
    plotted = any_epoch = False
    for s in series:
        c, ls = color(s["index"]), _linestyle(s["index"])
        sx, sy = _finite_pairs([p[0] for p in s["steps"]], [p[1] for p in s["steps"]], True)
        ex, ey = _finite_pairs([p[0] for p in s["epochs"]], [p[1] for p in s["epochs"]], True)
        if not sx and not ex:
            continue
        if sx:
            ax.plot(sx, sy, color=c, linestyle=ls, linewidth=1.5,
                    marker="o" if len(sx) == 1 else None, label=s["label"])
        if ex:
            # Epoch-end values as squares on the same colour; labelled only when there is no
            # step curve to carry the variant's name.
            ax.plot(ex, ey, linestyle="none", marker="s", markersize=6, color=c,
                    markeredgecolor="black", label="_nolegend_" if sx else s["label"])
            any_epoch = True
        plotted = True
    if not plotted:
        return False
    ax.set_xscale("log")
    ax.set_xlabel("tokens seen (log scale)")
    ax.set_ylabel("learned global scale on the logits")
    ax.set_title("Learned logit scale of the fixed-embedding variants")
    ax.grid(True, which="both", alpha=0.3)
    handles, _ = ax.get_legend_handles_labels()
    if any_epoch:
        handles.append(Line2D([], [], linestyle="none", marker="s", color="white",
                              markeredgecolor="black", label="end of epoch"))
    ax.legend(handles=handles, title="variant", fontsize="small")
    _save(fig, path)
    return True


def plot_params(bars: list[dict], path: Path) -> None:
    """Stacked horizontal bars: trainable + fixed parameters per variant.

    ``bars``: dicts with ``label``, ``trainable``, ``fixed`` and ``pct`` (% of the baseline's
    trainable parameters, or None). Horizontal, so long variant names stay readable.
    """
    fig = _new_figure(9, max(3.0, 0.55 * len(bars) + 1.6))
    ax = fig.add_subplot()
    labels = [b["label"] for b in bars]
    trainable = [b["trainable"] / 1e6 for b in bars]
    fixed = [b["fixed"] / 1e6 for b in bars]
    ys = list(range(len(bars)))
    ax.barh(ys, trainable, color="#1f77b4", label="trainable")
    ax.barh(ys, fixed, left=trainable, color="#d9d9d9", hatch="//", edgecolor="#7f7f7f",
            label="fixed (frozen)")
    widest = max([t + f for t, f in zip(trainable, fixed)] + [1e-9])
    for y, b, t, f in zip(ys, bars, trainable, fixed):
        note = f"{t:.2f}M trainable"
        if b["pct"] is not None:
            note += f" ({b['pct']:.1f}% of baseline)"
        ax.text(t + f + widest * 0.01, y, note, va="center", fontsize="small")
    ax.set_yticks(ys)
    ax.set_yticklabels(labels)
    ax.invert_yaxis()  # first table row on top, as in the table
    ax.set_xlim(0, widest * 1.5)  # room for the annotations
    ax.set_xlabel("parameters (millions)")
    ax.set_title("Trainable vs fixed parameters per variant")
    ax.legend(loc="lower right", fontsize="small")
    ax.grid(True, axis="x", alpha=0.3)
    _save(fig, path)


def plot_frontier(points: list[dict], path: Path) -> None:
    """Validation perplexity against trainable parameters (both log), the Pareto front drawn.

    ``points``: dicts with ``label``, ``index`` (colour), ``trainable``, ``val_ppl``, ``err``
    (± sd over seeds, an error bar; None: none) and
    ``front`` (True for a point on the Pareto front: no other point has as few trainable
    parameters and a lower perplexity). Every point is labelled with its variant; the front's
    points are joined by a staircase (the best perplexity reachable with at most x trainable
    parameters) and their labels are bold.
    """
    from matplotlib import ticker

    fig = _new_figure(10, 6.5)
    ax = fig.add_subplot()
    pts = [p for p in points if _finite_pairs([p["trainable"]], [p["val_ppl"]], True)[0]]
    if not pts:  # every run diverged: still write the figure, saying so
        ax.text(0.5, 0.5, "no finite validation perplexity to plot", ha="center",
                transform=ax.transAxes)
        _save(fig, path)
        return
    for p in pts:
        ax.scatter([p["trainable"]], [p["val_ppl"]], s=70 if p["front"] else 40, zorder=3,
                   color=color(p["index"]), edgecolors="black" if p["front"] else "none",
                   linewidths=1.2)
        err = p.get("err")
        if err is not None and math.isfinite(err) and err > 0:
            ax.errorbar([p["trainable"]], [p["val_ppl"]], yerr=[[min(err, p["val_ppl"] * 0.99)],
                        [err]], color=color(p["index"]), capsize=3, linewidth=1, zorder=2)
    front = sorted((p for p in pts if p["front"]), key=lambda p: p["trainable"])
    if front:
        xs = [p["trainable"] for p in front]
        ys = [p["val_ppl"] for p in front]
        right = max(p["trainable"] for p in pts)
        ax.step(xs + [right], ys + [ys[-1]], where="post", color="black", linestyle="--",
                linewidth=1.2, zorder=2, label="Pareto front: the lowest perplexity reached "
                "with at most that many trainable parameters")
        # below the axes, where it can cover no point or label
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.11), fontsize="small",
                  frameon=False)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(_count_label))
    values = [p["val_ppl"] for p in pts]
    _readable_log_y(ax, values)
    if 10 <= max(values) / min(values) < 100:  # a decade or two: label 2, 3, 5 in each too
        ax.yaxis.set_minor_formatter(ticker.FuncFormatter(
            lambda y, _pos: f"{y:g}" if f"{y:.0e}"[0] in "235" else ""))
    ax.set_ylim(min(values) / 1.15, max(values) * 1.25)  # room for the top point's label
    xs = [p["trainable"] for p in pts]
    ax.set_xlim(min(xs) / 1.6, max(xs) * 2.2)  # room for the labels on the right
    ax.set_xlabel("trainable parameters (log scale)")
    ax.set_ylabel("validation perplexity (log scale, lower is better)")
    ax.set_title("Which parts of the embedding are worth training: perplexity vs trainable "
                 "parameters")
    ax.grid(True, which="both", alpha=0.3)
    # Labelled last, once the axes are final: variants with the same parameter count (every
    # --fix side of a d = 64 model) sit in one column, and their labels must not overprint.
    fig.tight_layout()
    labels = [ax.annotate(p["label"], (p["trainable"], p["val_ppl"]), xytext=(5, 4),
                          textcoords="offset points", fontsize="small",
                          fontweight="bold" if p["front"] else "normal",
                          color="black" if p["front"] else "#555555") for p in pts]
    separate_labels(fig, labels)
    _save(fig, path)


def separate_labels(fig, labels: list, gap: float = 1.0) -> None:
    """Move annotations up or down until no two overlap; a moved one gets a leader line.

    Greedy, top to bottom: each label keeps its place unless it overlaps one placed before
    it, then takes the nearest free place, one label height at a time, below or above.
    Works in display units, so call it after the axes' limits and layout are final.
    ``labels``: annotations whose ``xytext`` is in offset points. ``gap``: points of space
    between labels.
    """
    renderer = fig.canvas.get_renderer()
    px_per_pt = fig.dpi / 72
    placed = []
    for label in sorted(labels, key=lambda a: -a.get_window_extent(renderer).y1):
        start = label.xyann
        step = label.get_window_extent(renderer).height / px_per_pt + gap
        for k in range(400):  # 0, -1, +1, -2, +2 … steps: the nearest free place
            shift = (k + 1) // 2 * (-1 if k % 2 else 1) * step
            label.xyann = (start[0], start[1] + shift)
            box = label.get_window_extent(renderer)
            if not any(box.overlaps(other) for other in placed):
                break
        placed.append(box)
        if label.xyann != start:  # an empty annotation draws only its line: point to label
            mid = label.xyann[1] + 0.3 * box.height / px_per_pt
            label.axes.annotate("", label.xy, xytext=(label.xyann[0] - 1, mid),
                                textcoords="offset points", arrowprops=dict(
                                    arrowstyle="-", color="#777777", linewidth=0.7,
                                    shrinkA=0, shrinkB=3))


def _count_label(x: float, _pos=None) -> str:
    """Tick text for a parameter count: 30k, 2M."""
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= div:
            return f"{x / div:g}{unit}"
    return f"{x:g}"
