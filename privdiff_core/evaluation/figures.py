"""The report's figures (PNG): privacy vs utility of all methods (paper Fig. 3), original vs
anonymized samples (Fig. 4), and t-SNE of attacker embeddings before/after anonymization coloured
by identity, sex and age (Fig. 5). Every file is written to a temporary name and renamed.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.manifold import TSNE  # noqa: E402
from sklearn.metrics import silhouette_score  # noqa: E402

from privdiff_core.attributes import AGE_GROUPS, SEXES  # noqa: E402


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.png")
    fig.savefig(tmp, dpi=130, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path


def privacy_utility_scatter(points: list[dict], path: Path) -> Path:
    """points: {label, reid, reid_std, reid_naive, diag, diag_std, kind}. Lower-right is better."""
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    markers = {"real": "*", "reference": "s", "baseline": "^", "model": "o"}
    for k, p in enumerate(points):
        color = f"C{k % 10}"
        ax.errorbar(
            p["reid"],
            p["diag"],
            xerr=p.get("reid_std") or 0,
            yerr=p.get("diag_std") or 0,
            fmt=markers.get(p["kind"], "o"),
            color=color,
            markersize=10 if p["kind"] == "real" else 7,
            capsize=3,
            label=p["label"],
        )
        if p.get("reid_naive") is not None:
            ax.plot([p["reid_naive"], p["reid"]], [p["diag"], p["diag"]], ":", color=color, lw=1)
            ax.plot(
                p["reid_naive"], p["diag"], markers.get(p["kind"], "o"), mfc="none", color=color, markersize=7
            )
    ax.axvline(0.5, color="grey", ls="--", lw=1)
    ax.axhline(0.5, color="grey", ls=":", lw=1)
    ax.text(0.5, ax.get_ylim()[0], " chance", color="grey", va="bottom", fontsize=8)
    ax.set_xlabel("re-identification AUC, attacker retrained on anonymized images (lower = more private)")
    ax.set_ylabel("diagnosis AUC on anonymized images (higher = more useful)")
    ax.set_title("Privacy vs utility (hollow: naive attacker, not retrained)")
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def frontier(points: list[dict], path: Path) -> Path:
    """Retrained re-ID AUC (x) against diagnosis AUC (y): real, the oracle (its floor and ceiling as
    dashed lines), and every method; the strengths of one model in one mode joined into a curve,
    each point marked with its strength. Up and left is better; the oracle is as far as any
    anonymizer can get on this data."""
    fig, ax = plt.subplots(figsize=(7.2, 5.4))
    markers = {"real": "*", "oracle": "D", "reference": "s", "baseline": "^", "model": "o"}
    curves: dict[str, list[dict]] = {}
    for p in points:
        curves.setdefault(p.get("curve") or p["label"], []).append(p)
    for k, members in enumerate(curves.values()):
        members.sort(key=lambda p: p.get("strength") or 0.0)
        kind, color = members[0]["kind"], f"C{k % 10}"
        label = members[0]["label"] if len(members) == 1 else members[0]["label"].split(", strength")[0]
        xs, ys = [p["reid"] for p in members], [p["diag"] for p in members]
        ax.plot(
            xs,
            ys,
            "-" if len(members) > 1 else "",
            marker=markers.get(kind, "o"),
            color=color,
            markersize=11 if kind in ("real", "oracle") else 6,
            label=label,
        )
        for p in members:
            if p.get("strength") is not None:
                ax.annotate(
                    f"{p['strength']:g}",
                    (p["reid"], p["diag"]),
                    fontsize=7,
                    xytext=(3, 3),
                    textcoords="offset points",
                    color=color,
                )
        if kind == "oracle":
            ax.axvline(xs[0], color=color, ls="--", lw=1)
            ax.axhline(ys[0], color=color, ls="--", lw=1)
            ax.text(
                xs[0], ax.get_ylim()[0], " privacy floor", color=color, fontsize=7, va="bottom", rotation=90
            )
        if kind == "real":
            ax.axhline(ys[0], color=color, ls=":", lw=1)
    ax.axvline(0.5, color="grey", ls="--", lw=0.8)
    ax.set_xlabel("re-identification AUC, attacker retrained on anonymized images (lower = more private)")
    ax.set_ylabel("diagnosis AUC on anonymized images (higher = more useful)")
    ax.set_title(
        "Privacy-utility frontier (dashed: the oracle's floor and ceiling; dotted: real diagnosis)",
        fontsize=8,
    )
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def sample_grid(original: np.ndarray, rows: list[tuple[str, np.ndarray]], path: Path) -> Path:
    """Row 0 the inputs, then one row per method, same test images in the same columns."""
    k = len(original)
    all_rows = [("input", original), *rows]
    fig, axes = plt.subplots(len(all_rows), k, figsize=(1.3 * k + 1.2, 1.35 * len(all_rows)), squeeze=False)
    for r, (label, images) in enumerate(all_rows):
        for c in range(k):
            ax = axes[r][c]
            ax.imshow(images[c], cmap="gray", vmin=-1, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle("Input test images and what each method makes of them", fontsize=9)
    return _save(fig, path)


def _tsne(x: np.ndarray, seed: int) -> np.ndarray:
    perplexity = float(max(2.0, min(30.0, (len(x) - 1) / 3)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)


def _silhouette(xy: np.ndarray, labels: np.ndarray) -> float | None:
    known = labels >= 0
    if len(set(labels[known].tolist())) < 2 or known.sum() <= len(set(labels[known].tolist())):
        return None
    return float(silhouette_score(xy[known], labels[known]))


def tsne_figure(arrays: dict, method_label: str, path: Path, seed: int = 0) -> tuple[Path, dict]:
    """2 x 3 panels: before (real-trained attackers on real images) / after (retrained attackers on
    anonymized images), coloured by identity, sex and age group. Returns silhouettes per panel
    (higher = attribute more separable in the attacker's feature space)."""
    panels = [("identity", "identity", arrays["identity_patient"], None)]
    panels += [
        ("sex", "attribute", arrays["attribute_sex"], SEXES),
        ("age group", "attribute", arrays["attribute_age"], AGE_GROUPS),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(11, 7))
    silhouettes: dict[str, float | None] = {}
    for row, when in enumerate(("before", "after")):
        cache: dict[str, np.ndarray] = {}
        for col, (title, source, labels, names) in enumerate(panels):
            ax = axes[row][col]
            key = f"{source}_{when}"
            if key not in arrays:
                ax.set_axis_off()
                continue
            if source not in cache:
                cache[source] = _tsne(arrays[key], seed)
            xy = cache[source]
            sil = _silhouette(xy, labels)
            silhouettes[f"{title}_{when}"] = sil
            known = labels >= 0
            ax.scatter(xy[~known, 0], xy[~known, 1], s=8, c="lightgrey")
            cmap = "tab10" if title != "identity" else "tab20"
            sc = ax.scatter(
                xy[known, 0],
                xy[known, 1],
                s=10,
                c=labels[known],
                cmap=cmap,
                vmin=0,
                vmax=max(9, labels.max()),
            )
            if names is not None:
                handles = [
                    plt.Line2D([], [], marker="o", ls="", color=sc.cmap(sc.norm(i)), label=n)
                    for i, n in enumerate(names)
                ]
                ax.legend(handles=handles, fontsize=7, loc="best")
            sil_text = "n/a" if sil is None else f"{sil:.2f}"
            ax.set_title(f"{title}, {when} (silhouette {sil_text})", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(
        f"t-SNE of attacker embeddings: real images, real-trained attackers (top) vs "
        f"{method_label}, retrained attackers (bottom)",
        fontsize=9,
    )
    return _save(fig, path), silhouettes
