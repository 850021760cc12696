"""Fixtures shared by the tests of `cnntheory.gaussian`."""

import numpy as np
import pytest

from cnntheory.gaussian import GaussianTeacherStudent


@pytest.fixture(scope="module")
def problem():
    """Two students, two teachers, four patches, trained head: the solve and online-SGD tests' problem."""
    return GaussianTeacherStudent(4, [1.0, 0.7], np.eye(2), lr=0.5, train_head=True)
