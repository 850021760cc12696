"""Lovig's figure: measured energy profiles against the formula, normalised to max 1."""

from __future__ import annotations

import numpy as np

from ._experiment import EnergyReport
from ._profiles import normalise
from ._theory import theorem_profile


def plot_report(report: EnergyReport, title: str = ""):
    """A 2 x 3 figure of an `EnergyReport`; returns the matplotlib `Figure`."""
    import matplotlib.pyplot as plt

    lam = report.pca.lambdas
    i = np.arange(1, lam.size + 1)
    fig, axes = plt.subplots(2, 3, figsize=(13, 7.5), constrained_layout=True)
    kind = "true" if "true" in report.small else "random"

    def panel(ax, heading):
        ax.set_title(heading, fontsize=10)
        ax.set_xlabel("PCA component i (decreasing $\\lambda_i$)")
        ax.set_ylabel("energy (max 1)")
        ax.grid(alpha=0.3)

    # (a) trained nonlinear CNN vs the fitted formula
    ax = axes[0, 0]
    fit = report.small_fits[kind]["learned"][0]
    ax.plot(i, normalise(report.small[kind]["learned"][0]), "o-", label="CNN layer 1, $W - W_0$")
    ax.plot(i, fit.profile, "k--", label=f"formula, t = {fit.t:.3g}")
    fit_raw = report.small_fits[kind]["raw"][0]
    ax.plot(
        i,
        normalise(report.small[kind]["raw"][0]),
        "s:",
        alpha=0.6,
        label=f"CNN layer 1, $W$ (r = {fit_raw.correlation:.2f})",
    )
    panel(ax, f"(a) nonlinear CNN ({kind} labels): r = {fit.correlation:.3f}")
    ax.legend(fontsize=8)

    # (b) the formula's evolution with t: proportional to lambda early, whitening late
    ax = axes[0, 1]
    eta = 0.5 / lam[0] ** 2
    # Directions without energy (lambda = 0, e.g. grey images stored in three channels) set
    # no time scale and have no whitened value: the range and 1/lambda use lambda > 0 only.
    smallest = lam[lam > 0][-1]
    # The limits are wide grey bands under the curves: the earliest and latest t lie on them
    # by design, and drawn on top the limits would hide those curves.
    band = dict(color="0.7", lw=5, zorder=1, solid_capstyle="round")
    ax.plot(i, normalise(lam), **band, label="$\\lambda_i$ (early limit, grey band)")
    inverse = np.divide(1.0, lam, out=np.full_like(lam, np.nan), where=lam > 0)
    ax.plot(i, inverse / np.nanmax(inverse), **band, ls="--", label="$1/\\lambda_i$ (whitening limit, grey band)")
    # Up to t = 10 / (eta lambda_min^2), where (1 - eta lambda^2)^t < e^-10 for every direction:
    # the last curve is whitened, and later ones would all lie on it.
    for t in np.geomspace(1, 10 / (eta * smallest**2), 5):
        ax.plot(i, normalise(theorem_profile(lam, t, eta)), lw=1.5, zorder=2, label=f"t = {t:.3g}")
    panel(ax, "(b) formula vs t ($\\eta = 1/2\\lambda_1^2$)")
    ax.legend(fontsize=7, framealpha=0.5)  # every region has a curve: let them show through

    # (c) linear CNN: mean over seeds vs exact expectation vs formula
    ax = axes[0, 2]
    S = report.config.linear_seeds
    ax.plot(i, normalise(report.linear_mean[-1]), "o-", label=f"linear CNN, mean of {S} seeds")
    ax.plot(i, normalise(report.linear_expected[-1]), "r-", lw=1, label="exact expectation")
    ax.plot(i, report.linear_fit.profile, "k--", label=f"formula, t = {report.linear_fit.t:.3g}")
    panel(ax, f"(c) linear CNN, random labels: r = {report.linear_fit.correlation:.3f}")
    ax.legend(fontsize=8)

    # (d) true vs random labels
    ax = axes[1, 0]
    for k, profiles in report.small.items():
        ax.plot(i, normalise(profiles["learned"].mean(0)), "o-", label=f"nonlinear CNN, {k} labels")
    if report.linear_true is not None:
        ax.plot(i, normalise(report.linear_true), "^:", label="linear CNN, true labels")
    ax.plot(i, normalise(report.linear_mean[-1]), "v:", label="linear CNN, random labels")
    panel(ax, "(d) true vs random labels ($W - W_0$)")
    ax.legend(fontsize=8)

    # (e) control: random initialisation
    ax = axes[1, 1]
    fit_c = report.control_fits[0]
    r = np.array([f.correlation for f in report.control_fits])
    ax.plot(i, normalise(report.control[0]), "o-", color="gray", label="He init (untrained)")
    ax.plot(i, fit_c.profile, "k--", label=f"best formula, t = {fit_c.t:.3g}")
    panel(ax, f"(e) control: r = {r.mean():.2f} ± {r.std():.2f}")
    ax.legend(fontsize=8)

    # (f) linear CNN profile along training
    ax = axes[1, 2]
    for t, prof in zip(report.linear_steps[1:], report.linear_mean[1:], strict=True):
        ax.plot(i, normalise(prof), "-", label=f"GD step {t}")
    panel(ax, "(f) linear CNN profile along training")
    ax.legend(fontsize=8)
    for ax in axes.flat:
        ax.set_ylim(0, 1.05)
    if title:
        fig.suptitle(title)
    return fig
