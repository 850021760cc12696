"""`cnntheory.energy._plots.plot_report` on the tiny report of tests/energy/conftest.py (Agg):
six panels, the lines each panel promises, profiles normalised to maximum 1, the title."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest

import cnntheory.energy as E


@pytest.fixture
def figure(tiny_report):
    fig = E.plot_report(tiny_report[3], title="tiny digits")
    yield fig
    plt.close(fig)


@pytest.mark.slow
def test_six_panels_and_their_lines(tiny_report, figure):
    _, _, cfg, rep = tiny_report
    axes = figure.axes
    assert len(axes) == 6 and figure._suptitle is not None and figure._suptitle.get_text() == "tiny digits"
    counts = [len(ax.get_lines()) for ax in axes]
    # (a) learned, formula, raw; (b) 6 times + lambda + 1/lambda; (c) mean, expectation, formula;
    # (d) one per label kind + linear true + linear random; (e) control, formula; (f) one per record after 0
    # (b): the two limits (lambda, 1/lambda) as bands under five times of the formula
    assert counts == [3, 7, 3, len(rep.small) + 2, 2, cfg.linear_records]
    for ax in axes:
        assert ax.get_ylim() == (0, 1.05)
        assert ax.get_title()


def test_profiles_are_normalised_to_one(tiny_report, figure):
    rep = tiny_report[3]
    a = figure.axes[0]
    learned = rep.small["true"]["learned"][0]
    np.testing.assert_allclose(a.get_lines()[0].get_ydata(), learned / learned.max(), rtol=1e-15)
    for ax in figure.axes:
        for line in ax.get_lines():
            y = np.asarray(line.get_ydata(), dtype=float)
            assert np.max(np.abs(y)) == pytest.approx(1.0, rel=1e-12)  # every curve: max 1
            np.testing.assert_array_equal(line.get_xdata(), np.arange(1, rep.pca.lambdas.size + 1))


def test_zero_energy_directions_do_not_break_panel_b(tiny_report):
    """Grey images stored in three channels have patch energies exactly 0: panel (b)'s time
    range comes from the smallest positive energy and 1/lambda is drawn where lambda > 0, with
    no division warnings and only those entries missing."""
    import dataclasses
    import warnings

    rep = tiny_report[3]
    lam = np.array(rep.pca.lambdas, dtype=float)
    lam[-2:] = 0.0
    zeroed = dataclasses.replace(rep, pca=dataclasses.replace(rep.pca, lambdas=lam))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = E.plot_report(zeroed)
    b = fig.axes[1].get_lines()
    limit, whitened, times = b[0], b[1], b[2:]  # the limits are drawn first, under the curves
    for line in [limit, *times]:  # lambda and the five times: finite everywhere
        assert np.isfinite(line.get_ydata()).all(), line.get_label()
    assert "inf" not in " ".join(line.get_label() for line in b)
    inverse = whitened.get_ydata()
    assert np.isnan(inverse[-2:]).all() and np.isfinite(inverse[:-2]).all() and np.nanmax(inverse) == 1.0
    plt.close(fig)
