"""The committee-machine figure of `cnntheory.gaussian._committee`: `plateau_height` against the
closed form written out in tests/helpers_gaussian.py, the paper's numbers and Saad & Solla's
error formula at the symmetric point; `initial_overlaps` (shapes, symmetry, the seeded
asymmetry); `committee_curves` against Saad & Solla's error formula at the start, the plateau
at small eta, and the patch panel's per-patch normalisation; `committee_figure` (panels, lines)."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest
from helpers_gaussian import plateau_height as reference_height
from helpers_gaussian import symmetric_point

from cnntheory.gaussian._committee import (
    committee_curves,
    committee_figure,
    initial_overlaps,
    plateau_height,
)


def saad_solla_error(Q, R, T):
    """`eps = (1/pi) [sum_ik asin(Q_ik / sqrt((1+Q_ii)(1+Q_kk))) + sum_nm asin(T ...) - 2 sum_in asin(R_in ...)]`:
    erf(x / sqrt 2) committee, unit heads (Saad & Solla 1995, eq. (5) of the PRE), in numpy."""
    Q, R, T = (np.asarray(a, dtype=float) for a in (Q, R, T))
    q, t = 1 + np.diag(Q), 1 + np.diag(T)
    return (
        np.arcsin(Q / np.sqrt(np.outer(q, q))).sum()
        + np.arcsin(T / np.sqrt(np.outer(t, t))).sum()
        - 2 * np.arcsin(R / np.sqrt(np.outer(q, t))).sum()
    ) / np.pi


@pytest.mark.parametrize("K", [1, 2, 3, 4, 7])
def test_plateau_height_is_the_closed_form_and_the_error_at_the_symmetric_point(K):
    # same closed form, written twice: agreement to round-off
    assert plateau_height(K) == pytest.approx(reference_height(K), rel=1e-14)
    # and, independently, the committee error at the symmetric fixed point Q = 1/(2K-1), R = 1/sqrt(K(2K-1));
    # only arcsin identities separate the two (round-off ~1e-15 on O(0.01) values)
    Q, R = (np.asarray(a) for a in symmetric_point(K))
    assert plateau_height(K) == pytest.approx(saad_solla_error(Q, R, np.eye(K)), rel=1e-12, abs=1e-15)


def test_plateau_height_matches_the_papers_numbers():
    # Saad & Solla's plateaus, to the 5 significant digits quoted in tests/helpers_gaussian.py
    for K, value in [(2, 0.011611), (3, 0.020297), (4, 0.028377)]:
        assert plateau_height(K) == pytest.approx(value, abs=5e-7)
    assert plateau_height(1) == pytest.approx(0.0, abs=1e-15)  # K = 1: no plateau (arcsin(1/2) = pi/6)


@pytest.mark.parametrize("K, M", [(2, 2), (3, 5), (1, 4)])
def test_initial_overlaps_shapes_symmetry_and_asymmetry(K, M):
    q0, r0, asym = 0.3, 2e-3, 1e-4
    Q, R = initial_overlaps(K, M, q0=q0, r0=r0, asymmetry=asym, seed=5)
    assert Q.shape == (K, K) and R.shape == (K, M) and Q.dtype == R.dtype == np.float64
    np.testing.assert_array_equal(Q, Q.T)
    np.testing.assert_array_equal(Q, q0 * np.eye(K))
    assert np.all(np.linalg.eigvalsh(Q) > 0)  # a Gram matrix of K students: positive definite
    # R = r0 + asymmetry * U(0, 1): inside [r0, r0 + asymmetry), and not all equal (breaks the symmetry)
    assert np.all(R >= r0) and np.all(R < r0 + asym)
    assert np.ptp(R) > 0
    # joint PSD of the overlap matrix [[Q, R], [R^T, T]] with T = I: a realisable start
    C = np.block([[Q, R], [R.T, np.eye(M)]])
    assert np.linalg.eigvalsh(C).min() > 0


def test_initial_overlaps_are_seeded():
    a, b, c = (initial_overlaps(3, 3, seed=s) for s in (1, 1, 2))
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
    # without asymmetry R is exactly r0 whatever the seed
    for s in (0, 1):
        np.testing.assert_array_equal(initial_overlaps(2, 3, r0=0.01, asymmetry=0.0, seed=s)[1], np.full((2, 3), 0.01))


@pytest.fixture(scope="module")
def curves():
    # K = 2 only, two patch counts, short run through the plateau and the escape (~5 s)
    return committee_curves(Ks=(2,), patches=(1, 2), lr=0.1, patch_lr=0.1, t1=3000.0, num_saves=61)


@pytest.mark.slow
def test_committee_curves_shapes_and_start(curves):
    np.testing.assert_array_equal(curves["t"], np.linspace(0.0, 3000.0, 61))
    assert curves["committee_error"].shape == (1, 61) and curves["patch_error_per_patch"].shape == (2, 61)
    np.testing.assert_array_equal(curves["K"], [2])
    np.testing.assert_array_equal(curves["patches"], [1, 2])
    np.testing.assert_allclose(curves["plateau_height"], [reference_height(2)], rtol=1e-14)
    assert (curves["lr"], curves["patch_lr"]) == (0.1, 0.1)
    # the error at t = 0 is Saad & Solla's formula at the initial overlaps; for odd g the N sum-pooled
    # patches add N independent committee errors, so the per-patch error starts at the same value
    # (closed forms on both sides: round-off only)
    Q0, R0 = initial_overlaps(2, 2, seed=0)
    eps0 = saad_solla_error(Q0, R0, np.eye(2))
    assert curves["committee_error"][0, 0] == pytest.approx(eps0, rel=1e-12)
    np.testing.assert_allclose(curves["patch_error_per_patch"][:, 0], eps0, rtol=1e-12)


@pytest.mark.slow
def test_committee_curves_plateau_and_escape(curves):
    err = curves["committee_error"][0]
    h = reference_height(2)
    # on the plateau the error sits at Saad & Solla's eta -> 0 height, shifted by O(eta):
    # the same tolerance as tests/gaussian/test_literature.py (rel = 1.0 * eta)
    plateau = err[(curves["t"] > 200) & (curves["t"] < 1500)]
    assert np.all(np.abs(plateau / h - 1) < 0.1)
    assert err[-1] < 0.02 * h  # and the specialisation escapes it (1.5e-2 h at t = 3000)
    # N = 1 with sum pooling at the same learning rate is the committee machine itself
    np.testing.assert_allclose(curves["patch_error_per_patch"][0], err, rtol=1e-6, atol=1e-12)


def test_committee_figure_panels(curves):
    fig = committee_figure(curves)
    try:
        left, right = fig.axes
        # per K: the learning curve and the dotted plateau line; per N: one curve
        assert len(left.get_lines()) == 2 * len(curves["K"])
        assert len(right.get_lines()) == len(curves["patches"])
        np.testing.assert_allclose(left.get_lines()[1].get_ydata(), reference_height(2))
        assert left.get_yscale() == right.get_yscale() == "log"
    finally:
        plt.close(fig)
