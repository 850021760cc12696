r"""The classic committee-machine figure, and the same learning curve with `N` patches.

Left: the soft committee machine (`N = 1`, `g = erf(x / sqrt 2)`, `K = M`, `T = I`, unit
heads) from small overlaps, for `K = 2, 3, 4`: the error falls onto the symmetric plateau
`eps* = (K / pi)(pi / 6 - K arcsin(1 / 2K))` (Saad & Solla 1995), stays there while the
specialisation grows from the small asymmetry, then escapes to zero. Right: the same problem
(`K = M = 2`) on `N = 1, 4, 16` Gaussian patches with sum pooling and learning rate `eta_p / N`
(`eta_p = 1` by default, large enough for the `eta^2` terms to matter),
so that the first-order flow is the committee's exactly; the curves differ only through the
second-order term in which the other `N - 1` patches act as label noise.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._problem import GaussianTeacherStudent
from ._solve import solve


def plateau_height(K: int) -> float:
    """Saad & Solla's symmetric-plateau error for `K = M`, `T = I`, unit heads, `eta -> 0`."""
    return K / np.pi * (np.pi / 6 - K * np.arcsin(1 / (2 * K)))


def initial_overlaps(K: int, M: int, *, q0: float = 0.2, r0: float = 1e-3, asymmetry: float = 1e-6, seed: int = 0):
    """Small initial overlaps: `Q = q0 I`, `R = r0 + asymmetry * U(0, 1)` (a seeded draw)."""
    rng = np.random.default_rng(seed)
    return q0 * np.eye(K), r0 + asymmetry * rng.uniform(size=(K, M))


def committee_curves(
    Ks=(2, 3, 4),
    patches=(1, 4, 16),
    *,
    lr: float = 0.1,
    patch_lr: float = 1.0,
    t1: float = 8000.0,
    num_saves: int = 801,
    seed: int = 0,
) -> dict:
    """Solve the figure's flows; returns the arrays (times, errors, plateau heights)."""
    out: dict[str, Any] = {"t": np.linspace(0.0, t1, num_saves), "K": np.asarray(Ks), "patches": np.asarray(patches)}
    errors = []
    for K in Ks:
        p = GaussianTeacherStudent(1, np.ones(K), np.eye(K), lr=lr)
        Q0, R0 = initial_overlaps(K, K, seed=seed)
        errors.append(np.asarray(solve(p, Q0, R0, np.ones(K), t1, ts=out["t"]).error))
    out["committee_error"] = np.stack(errors)
    out["plateau_height"] = np.array([plateau_height(K) for K in Ks])
    K = 2
    Q0, R0 = initial_overlaps(K, K, seed=seed)
    errors = []
    for N in patches:
        p = GaussianTeacherStudent(int(N), np.ones(K), np.eye(K), lr=patch_lr / N, pooling="sum")
        # Per patch: the sum-pooled error is N times the committee error at the same overlaps.
        errors.append(np.asarray(solve(p, Q0, R0, np.ones(K), t1, ts=out["t"]).error) / N)
    out["patch_error_per_patch"] = np.stack(errors)
    out["lr"], out["patch_lr"] = lr, patch_lr
    return out


def committee_figure(curves: dict):
    """Two panels: the classic plateaus (left), the `N`-patch learning curves (right)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    t = curves["t"]
    for K, err, h in zip(curves["K"], curves["committee_error"], curves["plateau_height"], strict=True):
        (line,) = axes[0].semilogy(t, np.maximum(err, 1e-16), label=f"K = M = {K}")
        axes[0].axhline(h, color=line.get_color(), ls=":", lw=1)
    axes[0].set_title("soft committee machine (N = 1), dotted: Saad-Solla plateau")
    for N, err in zip(curves["patches"], curves["patch_error_per_patch"], strict=True):
        axes[1].semilogy(t, np.maximum(err, 1e-16), label=f"N = {N} patches")
    axes[1].set_title(rf"K = M = 2 on N Gaussian patches, sum pooling, $\eta$ = {curves['patch_lr']:g} / N")
    below = np.flatnonzero(np.max(curves["patch_error_per_patch"], axis=0) < 1e-8)
    if below.size:
        axes[1].set_xlim(0, 1.3 * t[below[0]])
    for ax in axes:
        ax.set_xlabel(r"$\alpha$ = steps / D")
        ax.set_ylabel(r"generalisation error $\epsilon$ (per patch)")
        ax.set_ylim(1e-8, 1.0)
        ax.legend()
    fig.tight_layout()
    return fig
