"""Finite-data theory: the order-parameter problem that full-batch descent follows."""

from __future__ import annotations

from jaxtyping import Int

from .._data import empirical_moments
from .._problem import TeacherStudent
from .._typing import AnyArray


def empirical_problem(problem: TeacherStudent, counts: Int[AnyArray, "n P"]) -> TeacherStudent:
    """The finite-data problem: `problem` with `C_hat` of the training set `counts`.

    Its flow is what `fullbatch` gradient descent on those images follows (its Euler map
    with `dt = lr`, to round-off).
    """
    return problem.with_moments(empirical_moments(problem, counts))
