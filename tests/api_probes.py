"""Bad calls of the Python API: each must raise a `ValueError` that names the argument.

Shared by `tests/test_validate.py` and by a count (`python tests/api_probes.py`, run from
a checkout's root: a call that is accepted, or fails with another error or with a message
that does not name the argument, counts as a miss). A wrong result counts as a miss too:
`method="euler", dt0=50` must come back `DIVERGED` (with `throw=False`).
"""

from __future__ import annotations

import numpy as np

M0 = np.array([[0.3, 0.25], [0.2, 0.28]])
V0 = np.array([0.01, -0.01])


def _with(array, index, value, dtype=None):
    out = np.array(array, dtype=dtype or np.asarray(array).dtype)
    out[index] = value
    return out


def probes():
    """`(label, fragment the message must contain, call)` for every bad call."""
    import jax

    import cnntheory as ct
    from cnntheory import simulate as sim

    sc = ct.shape_counting
    p = sc(activation="sigmoid")
    mix = p.mixture
    finite = sc(activation="sigmoid", patches_per_side=2)  # images to sample

    def solve(**kw):
        args = {"problem": p, "m0": M0, "v0": V0, "t1": 1.0, **kw}
        return lambda: ct.solve(args.pop("problem"), args.pop("m0"), args.pop("v0"), args.pop("t1"), **args)

    def teacher(**kw):
        return lambda: ct.TeacherStudent(mix, **{"teacher_head": [1.0, -1.0], **kw})

    def simulate(**kw):
        args = {"mode": "population", "lr": 0.1, "steps": 2, "key": jax.random.key(0), **kw}
        m0, v0 = args.pop("m0", M0), args.pop("v0", V0)
        return lambda: sim.simulate(finite, m0, v0, **args)

    return [
        ("solve m0 NaN", "m0", solve(m0=_with(M0, (0, 1), np.nan))),
        ("solve m0 inf", "m0", solve(m0=_with(M0, (1, 1), np.inf))),
        ("solve m0 complex", "m0", solve(m0=M0 + 1j)),
        ("solve m0 bool", "m0", solve(m0=M0 > 0.26)),
        ("solve m0 shape", "m0", solve(m0=np.zeros((3, 2)))),
        ("solve m0 strings", "m0", solve(m0=[["a", "b"], ["c", "d"]])),
        ("solve v0 NaN", "v0", solve(v0=_with(V0, 0, np.nan))),
        ("solve v0 complex", "v0", solve(v0=V0 * 1j)),
        ("solve v0 bool", "v0", solve(v0=np.array([True, False]))),
        ("solve v0 shape", "v0", solve(v0=np.zeros(3))),
        ("solve t1 NaN", "t1", solve(t1=float("nan"))),
        ("solve t1 inf", "t1", solve(t1=float("inf"))),
        ("solve t1 = 0", "t1", solve(t1=0.0)),
        ("solve t1 < t0", "t1", solve(t1=-1.0)),
        ("solve ts NaN", "ts", solve(ts=[0.0, float("nan"), 1.0])),
        ("solve ts unsorted", "ts", solve(ts=[0.0, 0.6, 0.5])),
        ("solve ts outside", "ts", solve(ts=[0.0, 2.0])),
        ("solve ts empty", "ts", solve(ts=[])),
        ("solve ts 2-D", "ts", solve(ts=np.zeros((2, 2)))),
        ("solve ts complex", "ts", solve(ts=np.array([0.0, 1.0]) + 0j)),
        ("solve method", "method", solve(method="nope")),
        ("solve rtol 0", "rtol", solve(rtol=0.0)),
        ("solve rtol NaN", "rtol", solve(rtol=float("nan"))),
        ("solve atol < 0", "atol", solve(atol=-1.0)),
        ("solve euler no dt0", "dt0", solve(method="euler")),
        ("solve euler dt0 < 0", "dt0", solve(method="euler", dt0=-0.1)),
        ("solve max_steps 0", "max_steps", solve(max_steps=0)),
        ("solve repulsive", "repulsive", solve(repulsive="nope")),
        ("solve problem", "problem", solve(problem="shape counting")),
        ("solve_batch m0s shape", "m0", lambda: ct.solve_batch(p, M0, V0[None], 1.0)),
        ("solve_batch m0s NaN", "m0", lambda: ct.solve_batch(p, _with(M0[None], (0, 0, 0), np.nan), V0[None], 1.0)),
        ("shape_counting overlap 1.5", "overlap", lambda: sc(overlap=1.5)),
        ("shape_counting overlap NaN", "overlap", lambda: sc(overlap=float("nan"))),
        ("shape_counting alpha 0", "alpha", lambda: sc(alpha=(0.0, 1.0))),
        ("shape_counting alpha NaN", "alpha", lambda: sc(alpha=(float("nan"), 1.0))),
        ("shape_counting alpha length", "alpha", lambda: sc(alpha=(1.0, 1.0, 1.0))),
        ("shape_counting alpha complex", "alpha", lambda: sc(alpha=(1.0 + 1j, 1.0))),
        ("shape_counting activation", "activation", lambda: sc(activation="nope")),
        ("shape_counting patches_per_side 0", "patches_per_side", lambda: sc(patches_per_side=0)),
        ("shape_counting pooling", "pooling", lambda: sc(pooling="max")),
        ("shape_counting k 0", "k", lambda: sc(k=0)),
        ("shape_counting sum continuum", "pooling", lambda: sc(pooling="sum")),
        ("TeacherStudent teacher_head NaN", "teacher_head", teacher(teacher_head=[np.nan, -1.0])),
        ("TeacherStudent teacher_head complex", "teacher_head", teacher(teacher_head=[1.0 + 2j, -1.0])),
        ("TeacherStudent teacher_head bool", "teacher_head", teacher(teacher_head=[True, False])),
        ("TeacherStudent teacher_head shape", "teacher_head", teacher(teacher_head=[1.0, -1.0, 2.0])),
        (
            "TeacherStudent teacher_overlaps NaN",
            "teacher_overlaps",
            teacher(teacher_overlaps=[[1.0, np.nan], [0.8, 1.0]]),
        ),
        (
            "TeacherStudent teacher_overlaps complex",
            "teacher_overlaps",
            teacher(teacher_overlaps=np.eye(2) + 1j),
        ),
        ("TeacherStudent teacher_overlaps shape", "teacher_overlaps", teacher(teacher_overlaps=np.eye(3))),
        ("TeacherStudent kernel_lr_multiplier 0", "kernel_lr_multiplier", teacher(kernel_lr_multiplier=0.0)),
        ("TeacherStudent kernel_lr_multiplier NaN", "kernel_lr_multiplier", teacher(kernel_lr_multiplier=float("nan"))),
        ("TeacherStudent head_lr_multiplier < 0", "head_lr_multiplier", teacher(head_lr_multiplier=-1.0)),
        ("TeacherStudent head_lr_multiplier complex", "head_lr_multiplier", teacher(head_lr_multiplier=1j)),
        ("TeacherStudent moments NaN", "moments", teacher(moments=[[np.nan, 0.0], [0.0, 1.0]])),
        ("TeacherStudent student_activation", "activation", teacher(student_activation="nope")),
        ("TeacherStudent mixture", "mixture", lambda: ct.TeacherStudent("atoms", [1.0, -1.0])),
        ("PatchMixture alpha < 0", "alpha", lambda: ct.PatchMixture(mix.atoms, [-1.0, 1.0], 4)),
        ("PatchMixture alpha NaN", "alpha", lambda: ct.PatchMixture(mix.atoms, [np.nan, 1.0], 4)),
        ("PatchMixture patches_per_side 0", "patches_per_side", lambda: ct.PatchMixture(mix.atoms, [1.0, 1.0], 0)),
        ("PatchMixture pooling", "pooling", lambda: ct.PatchMixture(mix.atoms, [1.0, 1.0], 4, pooling="max")),
        ("PatchMixture atoms NaN", "atoms", lambda: ct.PatchMixture(_with(mix.atoms, (0, 0), np.nan), [1.0, 1.0], 4)),
        ("atoms_from_gram not PSD", "gram", lambda: ct.atoms_from_gram([[1.0, 2.0], [2.0, 1.0]], k=3)),
        ("atoms_from_gram NaN", "gram", lambda: ct.atoms_from_gram([[1.0, np.nan], [np.nan, 1.0]], k=3)),
        ("atoms_from_gram k 0", "k", lambda: ct.atoms_from_gram(np.eye(2), k=0)),
        ("dirichlet_moments alpha < 0", "alpha", lambda: ct.dirichlet_moments(np.array([-1.0, 1.0]))),
        ("get_activation", "activation", lambda: ct.get_activation("nope")),
        ("simulate lr 0", "lr", simulate(lr=0.0)),
        ("simulate lr NaN", "lr", simulate(lr=float("nan"))),
        ("simulate steps 0", "steps", simulate(steps=0)),
        ("simulate num_seeds 0", "num_seeds", simulate(num_seeds=0)),
        ("simulate mode", "mode", simulate(mode="nope")),
        ("simulate batch_size 0", "batch_size", simulate(mode="online", batch_size=0)),
        ("simulate m0 NaN", "m0", simulate(m0=_with(M0, (0, 0), np.nan))),
        ("simulate m0 complex", "m0", simulate(m0=M0 + 1j)),
        ("simulate v0 bool", "v0", simulate(v0=np.array([True, False]))),
        ("simulate record_every 0", "record_every", simulate(record_every=0)),
        (
            "fluctuations.moments relu, continuous equations",
            "relu",
            lambda: ct.fluctuations.moments(sc(), M0, V0, 1.0, lr=0.01, batch_size=4, discrete=False),
        ),
        ("euler dt0=50 diverges", "DIVERGED", lambda: _euler_diverges(ct, sc)),
    ]


def _euler_diverges(ct, sc):
    """Raise a ValueError saying DIVERGED when the status is right (the probe's 'refusal')."""
    p = sc(activation="sigmoid", patches_per_side=4)
    traj = ct.solve(p, M0, V0, 500.0, method="euler", dt0=50.0, ts=np.linspace(0, 500, 11), throw=False)
    if int(traj.status) == int(ct.Status.DIVERGED):
        raise ValueError(f"DIVERGED: {traj.message}")
    loss = np.asarray(traj.loss)
    return f"status {ct.Status(int(traj.status)).name}, loss {loss[0]:.3g} -> {np.nanmax(loss):.3g}"


def count() -> int:
    good, all_probes = 0, probes()
    for label, fragment, call in all_probes:
        try:
            result = call()
            ok, what = False, f"accepted ({str(result)[:80]})"
        except ValueError as err:
            message = " ".join(str(err).split())
            ok, what = fragment in message, message[:150]
        except Exception as err:  # noqa: BLE001 - any other error is a miss
            ok, what = False, f"{type(err).__name__}: {' '.join(str(err).split())[:150]}"
        good += ok
        print(f"{'ok  ' if ok else 'MISS'} {label}: {what}", flush=True)
    print(f"{good} of {len(all_probes)} bad API calls raise a ValueError naming the argument")
    return good


if __name__ == "__main__":
    import warnings

    warnings.simplefilter("ignore")
    count()
