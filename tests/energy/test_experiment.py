"""The energy-profile pipeline of `cnntheory.energy._experiment` (`EnergyConfig`, `run_experiment`,
`EnergyReport.correlations`) on a tiny configuration (the `tiny_report` fixture of
tests/energy/conftest.py): the config against the CLI's defaults; the report's PCA against
`numpy.linalg.eigh` of the patch covariance; the linear CNN's step size against its documented
rule `2 eta K alpha_max = 1` (alpha_max from numpy) and its learned profile against `|Delta . u_i|`
of GD filters; the expectation against `ExactLinearCNN`; the summary against `numpy.corrcoef`."""

import dataclasses

import numpy as np
import pytest

import cnntheory.energy as E
from cnntheory._cli import build_parser


def test_config_is_frozen_and_its_defaults_are_the_clis():
    cfg = E.EnergyConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.k = 5  # type: ignore[misc]
    assert dataclasses.replace(cfg, k=5).k == 5 and cfg == E.EnergyConfig() and hash(cfg) == hash(E.EnergyConfig())
    args = build_parser().parse_args(["energy"])
    assert (args.patch, args.linear_steps, args.linear_seeds, args.steps, args.seeds, args.seed) == (
        cfg.k,
        cfg.linear_steps,
        cfg.linear_seeds,
        cfg.small_steps,
        cfg.small_seeds,
        cfg.key,
    )


@pytest.mark.slow
def test_report_shapes_and_pca(tiny_report):
    images, _, cfg, rep = tiny_report
    D = images.shape[1] * cfg.k**2
    assert rep.config is cfg
    # the PCA of all images: numpy eigh of the biased covariance of every 3 x 3 patch
    patches = np.stack(
        [images[n, :, r : r + 3, c : c + 3].ravel() for n in range(images.shape[0]) for r in range(6) for c in range(6)]
    )
    evals = np.linalg.eigvalsh(np.cov(patches, rowvar=False, bias=True))[::-1]
    np.testing.assert_allclose(rep.pca.lambdas**2, evals, rtol=1e-10, atol=1e-12)  # round-off of a 9 x 9 eigh
    # records: linear_steps // linear_records steps apart, from 0
    np.testing.assert_array_equal(rep.linear_steps, [0, 4, 8])
    assert rep.linear_mean.shape == rep.linear_expected.shape == (3, D)
    # nothing is learned at step 0, exactly
    np.testing.assert_array_equal(rep.linear_mean[0], 0.0)
    np.testing.assert_array_equal(rep.linear_expected[0], 0.0)
    assert rep.linear_true is not None and rep.linear_true.shape == (D,) and rep.linear_true_fit is not None
    assert set(rep.small) == set(rep.small_fits) == {"true", "random"}
    for kind in rep.small:
        assert set(rep.small[kind]) == {"raw", "learned"}
        for part, profile in rep.small[kind].items():
            assert profile.shape == (cfg.small_seeds, D) and np.all(profile >= 0)
            assert len(rep.small_fits[kind][part]) == cfg.small_seeds
    assert rep.control.shape == (cfg.control_draws, D) and len(rep.control_fits) == cfg.control_draws


def test_linear_cnn_step_and_profiles(tiny_report):
    images, _, cfg, rep = tiny_report
    K, lin = cfg.linear_filters, images[: cfg.linear_images]
    # A = mean_x pbar pbar^T from per-image mean patches computed by slicing (not pooled_patches)
    per_image = np.stack(
        [np.mean([x[:, r : r + 3, c : c + 3].ravel() for r in range(6) for c in range(6)], axis=0) for x in lin]
    )
    pbar = per_image - per_image.mean(axis=0)
    alpha_max = np.linalg.eigvalsh(pbar.T @ pbar / len(lin))[-1]
    eta = 0.5 / (K * alpha_max)  # the documented rule 2 eta K alpha_max = 1
    run = E.train_linear_cnn(
        lin, None, k=3, num_filters=K, lr=eta, steps=8, num_seeds=cfg.linear_seeds, record_every=4, key=cfg.key
    )
    # every filter moves by the same Delta; its profile is |Delta . u_i|, averaged over seeds.
    # Same GD in float64 with an eta equal to ~1e-15: agreement to round-off.
    delta = run.filters[:, :, 0] - run.initial[:, None, 0]  # (S, T, D)
    np.testing.assert_allclose(rep.linear_mean, np.abs(delta @ rep.pca.basis).mean(axis=0), rtol=1e-9, atol=1e-14)
    exact = E.ExactLinearCNN(pbar, np.zeros(len(lin)), K)
    expected = exact.expected_energy(run.steps, eta, rep.pca.basis, label_std=1.0, init_std=1e-3)
    np.testing.assert_allclose(rep.linear_expected, expected, rtol=1e-9, atol=1e-14)


def test_correlations_summary(tiny_report):
    _, _, cfg, rep = tiny_report
    corr = rep.correlations()
    assert set(corr) == {
        "linear_vs_exact_expectation",
        "linear_vs_formula",
        "random_init_control",
        "linear_true_labels_vs_formula",
        "nonlinear_true_labels_raw_vs_formula",
        "nonlinear_true_labels_learned_vs_formula",
        "nonlinear_random_labels_raw_vs_formula",
        "nonlinear_random_labels_learned_vs_formula",
        "nonlinear_true_vs_random_labels",
    }
    r = np.corrcoef(rep.linear_mean[-1], rep.linear_expected[-1])[0, 1]
    assert corr["linear_vs_exact_expectation"] == pytest.approx(r, rel=1e-12)
    assert corr["linear_vs_formula"] == {"r": rep.linear_fit.correlation, "t": rep.linear_fit.t}
    control = np.array([f.correlation for f in rep.control_fits])
    assert corr["random_init_control"]["mean"] == pytest.approx(control.mean(), rel=1e-12)
    assert corr["random_init_control"]["std"] == pytest.approx(control.std(), rel=1e-12, abs=1e-15)
    assert corr["random_init_control"]["n"] == cfg.control_draws
    learned = corr["nonlinear_random_labels_learned_vs_formula"]
    assert learned["n"] == cfg.small_seeds and len(learned["t"]) == cfg.small_seeds
    r = np.corrcoef(rep.small["true"]["learned"].mean(0), rep.small["random"]["learned"].mean(0))[0, 1]
    assert corr["nonlinear_true_vs_random_labels"] == pytest.approx(r, rel=1e-12)
    # Pearson correlations (up to round-off), and a plain-float, JSON-able summary
    for value in (corr["linear_vs_exact_expectation"], corr["linear_true_labels_vs_formula"]["r"], learned["mean"]):
        assert isinstance(value, float) and -1 - 1e-12 <= value <= 1 + 1e-12


def test_without_labels_only_random_kinds(tiny_report):
    images, _, cfg, rep = tiny_report
    rep2 = E.run_experiment(images, None, config=cfg, progress=False)
    assert rep2.linear_true is None and rep2.linear_true_fit is None and set(rep2.small) == {"random"}
    assert set(rep2.correlations()) == {
        "linear_vs_exact_expectation",
        "linear_vs_formula",
        "random_init_control",
        "nonlinear_random_labels_raw_vs_formula",
        "nonlinear_random_labels_learned_vs_formula",
    }
    # the random-label parts do not depend on whether labels were given (same seeds)
    np.testing.assert_array_equal(rep2.linear_mean, rep.linear_mean)
    np.testing.assert_array_equal(rep2.control, rep.control)
    np.testing.assert_array_equal(rep2.small["random"]["learned"], rep.small["random"]["learned"])


def test_needs_two_images():
    with pytest.raises(ValueError, match="at least 2 images"):
        E.run_experiment(np.zeros((1, 1, 8, 8)), config=E.EnergyConfig(), progress=False)


@pytest.mark.parametrize("steps, records", [(10, 4), (3, 4)])
def test_linear_steps_must_be_whole_records(steps, records):
    """The linear CNN trains exactly `linear_steps` steps, recorded `linear_records` times."""
    with pytest.raises(ValueError, match=rf"linear_steps={steps} must be a multiple of linear_records={records}"):
        E.EnergyConfig(linear_steps=steps, linear_records=records)
