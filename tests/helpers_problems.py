"""Shared inputs of the tests of the Dirac-mixture theory (`cnntheory.TeacherStudent`).

- `SEED_M0`, `SEED_V0`: the standard start of the shape-counting example (the seed's
  `m(0) = [[0.3, 0.25], [0.2, 0.28]]`, `v(0) = (0.01, -0.01)`), two students on two atoms.
- `random_gram_problem` / `random_gram_state`: a random problem on a random unit-diagonal atom
  Gram matrix (random Dirichlet alpha, teacher and learning rates), any activations and pooling.
- `random_sigmoid_problem` / `random_sigmoid_state`: a random sigmoid teacher and student on
  random unit-norm atoms (mean pooling, continuum moments), whose teacher overlaps matter.

Each factory draws from its own seeded generator, so a test's problem is the same wherever it is built.
"""

import jax.numpy as jnp
import numpy as np

import cnntheory
from cnntheory import PatchMixture, TeacherStudent

SEED_M0 = np.array([[0.3, 0.25], [0.2, 0.28]])
SEED_V0 = np.array([0.01, -0.01])
# Shared by many modules: read-only, so that no test can change another's start.
SEED_M0.setflags(write=False)
SEED_V0.setflags(write=False)


def random_gram_problem(P, Lstar, activation, teacher_activation="tanh", seed=0, pooling="sum"):
    """Random atoms, Dirichlet alpha, teacher and learning rates (unit-diagonal Gram)."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((P, P + 2))
    G = A @ A.T
    G /= np.sqrt(np.outer(np.diag(G), np.diag(G)))
    mixture = cnntheory.PatchMixture(cnntheory.atoms_from_gram(G, 3, key=seed), rng.uniform(0.5, 3.0, P), 2, pooling)
    overlaps = None if teacher_activation == "indicator" else rng.normal(size=(Lstar, P))
    return cnntheory.TeacherStudent(
        mixture,
        teacher_head=rng.normal(size=Lstar) if overlaps is not None else rng.normal(size=P),
        teacher_overlaps=overlaps,
        teacher_activation=teacher_activation,
        student_activation=activation,
        kernel_lr_multiplier=rng.uniform(0.5, 3.0),
        head_lr_multiplier=rng.uniform(0.5, 3.0),
    )


def random_gram_state(L, P, seed):
    rng = np.random.default_rng(1000 + seed)
    return jnp.asarray(rng.normal(size=(L, P))), jnp.asarray(rng.normal(size=L))


def random_sigmoid_problem(seed=0, L_star=3, P=3, k=3):
    rng = np.random.default_rng(seed)
    atoms = rng.normal(size=(P, k * k))
    atoms = np.sqrt(k * k) * atoms / np.linalg.norm(atoms, axis=1, keepdims=True)  # unit Gram diagonal
    mixture = PatchMixture(atoms, alpha=rng.uniform(0.5, 2.0, size=P), patches_per_side=None, pooling="mean")
    overlaps = 0.8 * rng.normal(size=(L_star, P))
    return TeacherStudent(
        mixture,
        rng.normal(size=L_star),
        overlaps,
        teacher_activation="sigmoid",
        student_activation="sigmoid",
        kernel_lr_multiplier=2.0,
        head_lr_multiplier=0.7,
    )


def random_sigmoid_state(seed, L=3, P=3):
    rng = np.random.default_rng(100 + seed)
    return rng.normal(scale=0.5, size=(L, P)), rng.normal(scale=0.5, size=L)
