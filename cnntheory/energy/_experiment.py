r"""One energy-profile experiment, from images to correlations (used by the CLI, benchmark, notebook).

1. Patch PCA of the training images: `u_i`, `lambda_i`.
2. The linear CNN of the theorem, `S` seeds of random labels `N(0, 1)` (and the true labels
   when there are any), full-batch GD with `2 eta K alpha_max = 1`: the mean over seeds of the
   learned part's profile `|Delta(t) . u_i|` against the exact expectation
   (`ExactLinearCNN.expected_energy`) and against the theorem's formula with fitted `t`.
3. The small nonlinear CNN (SGD, cross-entropy), true and random labels: its first layer's
   profile, raw and with the initial filters subtracted, fitted by the formula.
4. The control: the profile of He-initialised filters (no training) fitted the same way.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from tqdm.auto import tqdm

from .._deprecate import renamed_attribute, renamed_keywords
from .._validate import require
from ._patches import PatchPCA, as_images, patch_pca, pooled_patches
from ._profiles import StepFit, energy_profile, fit_steps, pearson
from ._simulate import train_linear_cnn, train_small_cnn
from ._theory import ExactLinearCNN


@dataclasses.dataclass(frozen=True)
class EnergyConfig:
    """Every parameter of `run_experiment` (defaults: the CLI's)."""

    k: int = 3
    linear_filters: int = 4
    linear_steps: int = 200
    linear_records: int = 4
    linear_seeds: int = 32
    linear_images: int = 128
    small_steps: int = 1000
    small_seeds: int = 2
    small_widths: tuple[int, int] = (32, 16)
    small_lr: float = 0.1
    small_batch: int = 32
    control_draws: int = 20
    key: int = 0

    def __post_init__(self):
        if not (self.linear_records >= 1 and self.linear_steps % self.linear_records == 0):
            raise ValueError(
                f"linear_steps={self.linear_steps} must be a multiple of linear_records={self.linear_records} "
                "(the linear CNN is recorded every linear_steps / linear_records steps)"
            )

    seed = renamed_attribute("seed", "key")


EnergyConfig.__init__ = renamed_keywords(seed="key")(EnergyConfig.__init__)  # type: ignore[method-assign]


@dataclasses.dataclass(frozen=True)
class EnergyReport:
    """Profiles and fits of one experiment. Profiles are `(..., D)` in the order of `pca.lambdas`.

    - `linear_steps` `(T,)`, `linear_mean` `(T, D)` mean over seeds of the learned part (random
      labels), `linear_expected` `(T, D)` its exact expectation, `linear_fit` the formula fitted
      to the last step; `linear_true`/`linear_true_fit` the same with the true labels (or `None`).
    - `small[kind]` for `kind` in `("true", "random")`: `{"raw": (S, D), "learned": (S, D)}`
      first-layer profiles at the end of training; `small_fits[kind][part]` a list of `StepFit`.
    - `control` `(draws, D)` profiles of untrained He-initialised filters, `control_fits`.
    """

    config: EnergyConfig
    pca: PatchPCA
    linear_steps: np.ndarray
    linear_mean: np.ndarray
    linear_expected: np.ndarray
    linear_fit: StepFit
    linear_true: np.ndarray | None
    linear_true_fit: StepFit | None
    small: dict
    small_fits: dict
    control: np.ndarray
    control_fits: list

    def correlations(self) -> dict:
        """Summary: each comparison's Pearson correlation (mean and std over seeds where there are several)."""

        def stats(fits):
            r = np.array([f.correlation for f in fits])
            return {"mean": float(r.mean()), "std": float(r.std()), "n": int(r.size), "t": [f.t for f in fits]}

        out = {
            "linear_vs_exact_expectation": float(pearson(self.linear_mean[-1], self.linear_expected[-1])),
            "linear_vs_formula": {"r": self.linear_fit.correlation, "t": self.linear_fit.t},
            "random_init_control": stats(self.control_fits),
        }
        if self.linear_true_fit is not None:
            out["linear_true_labels_vs_formula"] = {"r": self.linear_true_fit.correlation, "t": self.linear_true_fit.t}
        for kind, fits in self.small_fits.items():
            for part, f in fits.items():
                out[f"nonlinear_{kind}_labels_{part}_vs_formula"] = stats(f)
        if {"true", "random"} <= set(self.small):
            out["nonlinear_true_vs_random_labels"] = float(
                pearson(self.small["true"]["learned"].mean(0), self.small["random"]["learned"].mean(0))
            )
        return out


def run_experiment(
    images, labels=None, *, classes: int = 10, config: EnergyConfig = EnergyConfig(), progress: bool = True
) -> EnergyReport:
    """Run the pipeline of this module's docstring on `images` `(n, C, H, W)` (labels optional)."""
    images = as_images(images)
    cfg = config
    require(images.shape[0] >= 2, "need at least 2 images")
    steps_bar = tqdm(total=4 + (labels is not None) * 2, desc="energy", disable=not progress)
    pca = patch_pca(images, cfg.k)
    steps_bar.update()

    # linear CNN: a subset of the images keeps the S K-channel convolution cheap
    lin_images = images[: cfg.linear_images]
    pooled = pooled_patches(lin_images, cfg.k)
    exact = ExactLinearCNN(pooled, np.zeros(len(lin_images)), cfg.linear_filters)
    eta = 0.5 / (cfg.linear_filters * exact.alphas[0])
    every = cfg.linear_steps // cfg.linear_records
    lin_kwargs = dict(
        k=cfg.k,
        num_filters=cfg.linear_filters,
        lr=eta,
        steps=cfg.linear_steps,
        num_seeds=cfg.linear_seeds,
        record_every=every,
        key=cfg.key,
    )
    run = train_linear_cnn(lin_images, None, **lin_kwargs)
    learned = energy_profile(run.filters, pca.basis, run.initial[:, None])  # (S, T, D)
    linear_mean = learned.mean(axis=0)
    linear_expected = exact.expected_energy(run.steps, eta, pca.basis, init_std=1e-3)
    linear_fit = fit_steps(linear_mean[-1], pca.lambdas)
    steps_bar.update()
    linear_true = linear_true_fit = None
    if labels is not None:
        y = np.asarray(labels, dtype=float)[: cfg.linear_images]
        run_true = train_linear_cnn(lin_images, y - y.mean(), **lin_kwargs)
        linear_true = energy_profile(run_true.filters[:, -1], pca.basis, run_true.initial).mean(axis=0)
        linear_true_fit = fit_steps(linear_true, pca.lambdas)
        steps_bar.update()

    small, small_fits = {}, {}
    kinds = (["true"] if labels is not None else []) + ["random"]
    for kind in kinds:
        sr = train_small_cnn(
            images, labels if kind == "true" else None, k=cfg.k, widths=cfg.small_widths, classes=classes, lr=cfg.small_lr,
            batch_size=cfg.small_batch, steps=cfg.small_steps, num_seeds=cfg.small_seeds, record_every=cfg.small_steps, key=cfg.key,
        )  # fmt: skip
        small[kind] = {
            "raw": energy_profile(sr.filters[:, -1], pca.basis),
            "learned": energy_profile(sr.filters[:, -1], pca.basis, sr.initial),
        }
        small_fits[kind] = {
            part: [fit_steps(p, pca.lambdas) for p in profiles] for part, profiles in small[kind].items()
        }
        steps_bar.update()

    # control: He-normal first layers (std sqrt(2 / D)), untrained
    rng = np.random.default_rng(cfg.key + 1)
    D, K1 = pca.lambdas.size, cfg.small_widths[0]
    control = energy_profile(rng.standard_normal((cfg.control_draws, K1, D)) * np.sqrt(2 / D), pca.basis)
    control_fits = [fit_steps(p, pca.lambdas) for p in control]
    steps_bar.update()
    steps_bar.close()
    return EnergyReport(
        cfg,
        pca,
        run.steps,
        linear_mean,
        linear_expected,
        linear_fit,
        linear_true,
        linear_true_fit,
        small,
        small_fits,
        control,
        control_fits,
    )
