r"""Theory versus simulation: a `Simulation` and a `Trajectory` on one time grid.

For every compared quantity `x` (an order parameter `m_lp`, a head weight `v_l`, a loss,
the mean prediction per label value) with simulated seeds `x_s(t)` and theory `x(t)`:

- per seed, `max_t |x_s(t) - x(t)|` and `sqrt(mean_t (x_s(t) - x(t))^2)`;
- the seed mean `xbar(t) = mean_s x_s(t)`: its error `max_t |xbar - x|`, RMS over time
  (the **bias**, `O(lr)` for online SGD);
- the spread `std_s x_s(t)` and its RMS over time (the **fluctuation**,
  `O(sqrt(lr / B))`).

All per component (e.g. `(L, P)` for `m`), with scalar summaries for tables and JSON.
`matching_solve` produces the theory for a simulation: the population ODE, or for
`fullbatch` the finite-data ODE with each seed's `C_hat`.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float
from typing_extensions import Unpack

from ._config import SolverConfig, SolverOptions, resolve_config
from ._problem import TeacherStudent
from ._solve import solve
from ._trajectory import Status, Trajectory
from ._typing import AnyArray
from ._validate import require
from .simulate import Simulation

__all__ = ["Comparison", "FieldError", "compare", "matching_solve", "plot_comparison", "theory_predictions"]

#: The loss the theory's `loss` describes, per simulation mode (see `compare`).
_DEFAULT_FIELDS = {
    "population": ("m", "v", "train_loss"),
    "fullbatch": ("m", "v", "train_loss"),
    "online": ("m", "v", "loss"),
}
_THEORY_OF = {"m": "m", "v": "v", "loss": "loss", "train_loss": "loss", "test_loss": "loss"}


class FieldError(eqx.Module):
    """Errors of one simulated quantity against theory (shapes: `S` seeds, `T` times).

    - `error`: `(S, T, ...)` signed `sim - theory`.
    - `max`, `rms`: `(S, ...)` per seed, over time.
    - `mean_error`: `(T, ...)` seed mean minus theory; `mean_max`, `mean_rms`: `(...)`.
    - `spread`: `(T, ...)` std over seeds (`ddof=1`); `spread_rms`: `(...)` RMS over time.
    """

    name: str = eqx.field(static=True)
    error: Float[Array, "S T ..."]
    max: Float[Array, "S ..."]
    rms: Float[Array, "S ..."]
    mean_error: Float[Array, "T ..."]
    mean_max: Float[Array, "..."]  # noqa: UP037 (a jaxtyping shape string, not a forward reference)
    mean_rms: Float[Array, "..."]  # noqa: UP037 (a jaxtyping shape string, not a forward reference)
    spread: Float[Array, "T ..."]
    spread_rms: Float[Array, "..."]  # noqa: UP037 (a jaxtyping shape string, not a forward reference)

    def summary(self) -> dict:
        """Scalars (worst component): `max`, `rms`, `seed_mean_max`, `seed_mean_rms`, `spread_rms`,
        and the per-component `max` / `rms` over seeds and time as nested lists."""
        e = np.asarray(self.error)
        return {
            "max": float(np.max(np.abs(e))),
            "rms": float(np.sqrt(np.mean(e**2))),
            "seed_mean_max": float(np.max(self.mean_max)),
            "seed_mean_rms": float(np.max(self.mean_rms)),
            "spread_rms": float(np.max(self.spread_rms)),
            "per_component_max": np.max(np.asarray(self.max), axis=0).tolist(),
            "per_component_rms": np.sqrt(np.mean(e**2, axis=(0, 1))).tolist(),
        }


def _field_error(name: str, sim_x, theory_x) -> FieldError:
    err = sim_x - theory_x
    S = err.shape[0]
    mean_error = jnp.mean(err, axis=0)
    spread = jnp.std(sim_x, axis=0, ddof=1) if S > 1 else jnp.zeros_like(mean_error)
    return FieldError(
        name=name,
        error=err,
        max=jnp.max(jnp.abs(err), axis=1),
        rms=jnp.sqrt(jnp.mean(err**2, axis=1)),
        mean_error=mean_error,
        mean_max=jnp.max(jnp.abs(mean_error), axis=0),
        mean_rms=jnp.sqrt(jnp.mean(mean_error**2, axis=0)),
        spread=spread,
        spread_rms=jnp.sqrt(jnp.mean(spread**2, axis=0)),
    )


class Comparison(eqx.Module):
    """Errors of a simulation against theory on the simulation's time grid `t`.

    `fields` maps names (`"m"`, `"v"`, `"loss"`, `"train_loss"`, `"test_loss"`,
    `"predictions"`) to `FieldError`s; `num_seeds` counts the seeds used (diverged seeds
    are left out), `mode` and `lr` come from the simulation.
    """

    t: Float[Array, " T"]
    fields: dict
    num_seeds: int = eqx.field(static=True)
    mode: str = eqx.field(static=True)
    lr: float = eqx.field(static=True)

    def __getitem__(self, name: str) -> FieldError:
        return self.fields[name]

    def summary(self) -> dict:
        """JSON-ready: `{field: FieldError.summary()}` plus `num_seeds`, `mode`, `lr`."""
        out = {name: f.summary() for name, f in self.fields.items()}
        return {"mode": self.mode, "lr": self.lr, "num_seeds": self.num_seeds, "fields": out}

    def table(self) -> str:
        """A plain-text table, one row per field."""
        head = f"{'field':<12} {'max':>10} {'rms':>10} {'mean max':>10} {'mean rms':>10} {'spread':>10}"
        rows = [head, "-" * len(head)]
        for name, f in self.fields.items():
            s = f.summary()
            rows.append(
                f"{name:<12} {s['max']:10.3e} {s['rms']:10.3e} {s['seed_mean_max']:10.3e} "
                f"{s['seed_mean_rms']:10.3e} {s['spread_rms']:10.3e}"
            )
        return "\n".join(rows)


def theory_predictions(
    problem: TeacherStudent, traj: Trajectory, label_counts: Float[AnyArray, "V P"]
) -> Float[Array, "*B T V"]:
    """Predicted mean output per label value: `label_counts @ a(t)`, `a_p = sum_l v_l sigma(m_lp)`.

    The student's output on an image is `n~ . a` (every patch is an atom), so the mean over
    the images with one label value is exactly their mean pooled counts times `a`.
    """
    a = jnp.einsum("...l,...lp->...p", traj.v, problem.sigma(traj.m))
    return a @ jnp.asarray(label_counts).T


def compare(
    sim: Simulation,
    traj: Trajectory,
    *,
    problem: TeacherStudent | None = None,
    fields: tuple[str, ...] | None = None,
) -> Comparison:
    """Compare a `Simulation` with a `Trajectory` (same times, e.g. `ts=sim.t`).

    **Arguments:**

    - `sim`: the simulation (seeds `S`).
    - `traj`: the theory, either one trajectory (`m` is `(T, L, P)`) shared by every seed,
      or one per seed (`(S, T, L, P)`, e.g. the `C_hat` ODEs of `fullbatch` from
      `matching_solve`). Its times must be the simulation's (solve with `ts=sim.t`).
    - `problem`: needed for `"predictions"` (added by default when given and the
      simulation has a test set).
    - `fields`: which quantities; default `m`, `v` and the loss the theory's `loss`
      describes: the descended loss `train_loss` for `population` and `fullbatch`, the
      exact population loss `loss` at the measured state for `online`. Add `"test_loss"`
      to check the population ODE's prediction of the held-out loss.

    **Returns:** a `Comparison` (diverged seeds are left out; at least one must remain).
    """
    require(isinstance(sim, Simulation), f"sim must be a Simulation, got {type(sim).__name__}")
    require(isinstance(traj, Trajectory), f"traj must be a Trajectory, got {type(traj).__name__}")
    t_sim, t_th = np.asarray(sim.t), np.asarray(traj.t)
    require(
        t_th.shape == t_sim.shape and np.allclose(t_th, t_sim, rtol=1e-10, atol=1e-12),
        f"the trajectory's times (T={t_th.size}, [{t_th[0]:g}, {t_th[-1]:g}]) differ from the simulation's "
        f"(T={t_sim.size}, [{t_sim[0]:g}, {t_sim[-1]:g}]): solve with ts=sim.t",
    )
    per_seed = traj.m.ndim == 4
    require(
        not per_seed or traj.m.shape[0] == sim.num_seeds,
        f"a per-seed trajectory needs one solve per seed ({sim.num_seeds}), got {traj.m.shape[0]}",
    )
    ok = np.flatnonzero(np.asarray(sim.status) == Status.SUCCESS)
    require(ok.size >= 1, f"every seed of the simulation diverged ({sim.message}); nothing to compare")
    if fields is None:
        fields = _DEFAULT_FIELDS[sim.mode]
        if problem is not None and sim.predictions is not None:
            fields = fields + ("predictions",)
    out = {}
    for name in fields:
        if name == "predictions":
            if problem is None:
                raise ValueError("comparing predictions needs problem=...")
            if sim.predictions is None or sim.label_counts is None:
                raise ValueError("the simulation has no test set (num_test=0): no predictions")
            theory = theory_predictions(problem, traj, sim.label_counts)
        else:
            require(name in _THEORY_OF, f"unknown field {name!r}; choose from {sorted(_THEORY_OF) + ['predictions']}")
            require(getattr(sim, name) is not None, f"the simulation has no {name} (num_test=0?)")
            theory = getattr(traj, _THEORY_OF[name])
        x = jnp.asarray(getattr(sim, name))[ok]
        theory = jnp.asarray(theory)[ok] if per_seed else theory[None]
        out[name] = _field_error(name, x, theory)
    return Comparison(t=sim.t, fields=out, num_seeds=int(ok.size), mode=sim.mode, lr=sim.lr)


def matching_solve(
    problem: TeacherStudent,
    sim: Simulation,
    m0: Float[AnyArray, "L P"],
    v0: Float[AnyArray, " L"],
    *,
    finite_data: bool = True,
    config: SolverConfig | None = None,
    **options: Unpack[SolverOptions],
) -> Trajectory:
    """The theory for `sim`, saved at `sim.t`.

    The population ODE of `problem`, except for a `fullbatch` simulation with
    `finite_data=True`: then one finite-data ODE per seed, with that seed's `C_hat`
    (`sim.train_moments`), stacked on a leading seed axis. The solver options (`config`
    or its fields as keywords) are as in `cnntheory.solve`, e.g. `method="euler",
    dt0=sim.lr` for the exact gradient-descent map.
    """
    config = resolve_config(config, options, caller="matching_solve")
    ts = sim.t
    t1 = float(ts[-1])
    if sim.mode == "fullbatch" and finite_data and sim.train_moments is not None:
        # One solve per seed (the problems share their structure, so one compilation).
        return Trajectory.stack(
            [solve(problem.with_moments(C), m0, v0, t1, ts=ts, config=config) for C in sim.train_moments]
        )
    return solve(problem, m0, v0, t1, ts=ts, config=config)


def plot_comparison(
    sim: Simulation, traj: Trajectory, problem: TeacherStudent | None = None, *, title: str | None = None
):
    """Theory lines over simulated seeds (mean, dashed, and a +-1 std band).

    Panels: the order parameters `m_lp`, the head `v_l`, the losses (population loss at
    the measured state, test loss) and, with `problem` and a test set, the mean prediction
    per label value (theory lines, simulation dots). A per-seed `traj` (`fullbatch`'s
    `C_hat` ODEs) is drawn through its seed mean. Returns the matplotlib figure.
    """
    import matplotlib.pyplot as plt

    fan = problem is not None and sim.predictions is not None
    fig, axes = plt.subplots(1, 4 if fan else 3, figsize=(17 if fan else 13, 3.8))
    t = np.asarray(sim.t)
    theory_mean = (lambda x: np.asarray(x).mean(axis=0)) if traj.m.ndim == 4 else np.asarray

    def band(ax, x, color, label):
        x = np.asarray(x)
        mean, std = x.mean(axis=0), (x.std(axis=0, ddof=1) if x.shape[0] > 1 else 0 * x[0])
        ax.plot(t, mean, "--", color=color, lw=1.2, label=label)
        ax.fill_between(t, mean - std, mean + std, color=color, alpha=0.2, lw=0)

    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    L, P = sim.m.shape[2:]
    for i, (l, p) in enumerate(np.ndindex(L, P)):
        c = colors[i % len(colors)]
        axes[0].plot(t, theory_mean(traj.m)[:, l, p], color=c, lw=1.5, label=f"$m_{{{l + 1}{p + 1}}}$")
        band(axes[0], sim.m[:, :, l, p], c, None)
    for l in range(L):
        c = colors[l % len(colors)]
        axes[1].plot(t, theory_mean(traj.v)[:, l], color=c, lw=1.5, label=f"$v_{{{l + 1}}}$")
        band(axes[1], sim.v[:, :, l], c, None)
    axes[2].plot(t, theory_mean(traj.loss), color="k", lw=1.5, label="theory")
    band(axes[2], sim.train_loss, colors[0], "train")
    if sim.test_loss is not None:
        band(axes[2], sim.test_loss, colors[1], "test")
    axes[2].set_yscale("log")
    for ax, name in zip(axes, ("order parameters $m$", "head $v$", "loss"), strict=False):
        ax.set(xlabel="$t$ (= lr x steps)", title=name)
        ax.legend(fontsize=7, ncol=2)
    if problem is not None and sim.predictions is not None and sim.label_counts is not None:  # fan
        pred = np.asarray(theory_predictions(problem, traj, sim.label_counts))
        pred = pred.mean(axis=0) if pred.ndim == 3 else pred
        values = np.asarray(sim.label_values)
        cmap = plt.get_cmap("coolwarm")
        span = max(np.ptp(values), 1e-12)
        for j, y in enumerate(values):
            c = cmap((y - values.min()) / span)
            axes[3].plot(t, pred[:, j], color=c, lw=1.2)
            axes[3].plot(t, np.asarray(sim.predictions[:, :, j]).mean(axis=0), "o", color=c, ms=2.5)
        axes[3].set(xlabel="$t$", title="mean prediction per label (lines: theory)")
    fig.suptitle(
        title
        or f"{sim.mode}: theory (lines) vs {sim.num_seeds} simulated seeds (dashed mean, band +-1 std), lr={sim.lr:g}"
    )
    fig.tight_layout()
    return fig
