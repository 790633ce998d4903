"""The report's figures (matplotlib, Agg backend, PNG): per-vertebra Dice box plots, lesion precision–recall
curves, and heatmaps (conditions × domains, conditions × spinal regions)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from SpineSegLib.labels import load_label_table  # noqa: E402

COLORS = plt.get_cmap("tab10").colors


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def dice_boxplot(path, per_condition: dict[str, list[dict]], title: str = "Dice per vertebra") -> Path:
    """Box plots of per-vertebra Dice, vertebrae cranio-caudal on x, one box per condition side by side."""
    table = load_label_table()
    present = sorted({v["label"] for records in per_condition.values() for v in records}, key=table.order)
    names = [table.by_value(v).name for v in present]
    n = max(len(per_condition), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(present) * n + 2), 4.2))
    width = 0.8 / n
    handles = []
    for k, (condition, records) in enumerate(per_condition.items()):
        data = [[r["dice"] for r in records if r["label"] == v and not np.isnan(r["dice"])] or [np.nan]
                for v in present]
        positions = np.arange(len(present)) + (k - (n - 1) / 2) * width
        color = COLORS[k % len(COLORS)]
        box = ax.boxplot(data, positions=positions, widths=width * 0.9, patch_artist=True, showfliers=True,
                         manage_ticks=False, medianprops={"color": "black"}, flierprops={"markersize": 3})
        for patch in box["boxes"]:
            patch.set_facecolor(color)
            patch.set_alpha(0.75)
        handles.append(plt.Rectangle((0, 0), 1, 1, color=color, alpha=0.75, label=condition))
    ax.set_xticks(np.arange(len(present)), names)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("Dice")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    if not present:
        ax.text(0.5, 0.5, "no reference vertebrae", ha="center", va="center", transform=ax.transAxes)
    if handles:
        ax.legend(handles=handles, fontsize=8, loc="best", ncol=min(n, 4))
    return _save(fig, path)


def pr_curves(path, curves: dict[str, tuple[np.ndarray, np.ndarray, float]],
              title: str = "Lesion detection: precision-recall") -> Path:
    """One precision–recall curve per condition (``(precision, recall, AP)``): the interpolated (monotone)
    precision as steps, the raw points as dots."""
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    drawn = 0
    for k, (condition, (precision, recall, ap)) in enumerate(curves.items()):
        if precision.size == 0 or np.all(np.isnan(recall)):
            continue
        color = COLORS[k % len(COLORS)]
        envelope = np.maximum.accumulate(precision[::-1])[::-1]  # the interpolated precision AP integrates
        ax.step(np.r_[0.0, recall], np.r_[envelope[0], envelope], where="pre", color=color,
                label=f"{condition} (AP {ap:.2f})")
        ax.plot(recall, precision, ".", color=color, alpha=0.5, markersize=4)
        drawn += 1
    if not drawn:
        ax.text(0.5, 0.5, "no lesion predictions or no reference lesions", ha="center", va="center",
                transform=ax.transAxes, fontsize=9)
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(fontsize=8, loc="lower left")
    return _save(fig, path)


def heatmap(path, values: np.ndarray, rows: list[str], columns: list[str], title: str,
            label: str = "mean Dice", vmin: float = 0.0, vmax: float = 1.0) -> Path:
    """A matrix of values with its numbers written in (nan cells grey)."""
    values = np.asarray(values, dtype=float).reshape(len(rows), len(columns))
    fig, ax = plt.subplots(figsize=(max(4.5, 1.1 * len(columns) + 2.5), max(2.5, 0.45 * len(rows) + 1.5)))
    cmap = plt.get_cmap("viridis").with_extremes(bad="#cccccc")
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    for i in range(len(rows)):
        for j in range(len(columns)):
            text = "n/a" if np.isnan(values[i, j]) else f"{values[i, j]:.2f}"
            shade = "white" if np.isnan(values[i, j]) or values[i, j] < (vmin + vmax) / 2 else "black"
            ax.text(j, i, text, ha="center", va="center", color=shade, fontsize=8)
    fig.colorbar(image, ax=ax, label=label)
    ax.set_title(title)
    return _save(fig, path)
