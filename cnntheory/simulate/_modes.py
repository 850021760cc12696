"""The three simulation modes: what gradient descent descends (`Population`, `FullBatch`, `Online`)."""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import numpy as np

from .._validate import require

MODES = ("population", "fullbatch", "online")


class Mode(eqx.Module):
    """What gradient descent descends: `Population()`, `FullBatch(num_train)` or `Online(batch_size)`.

    A mode owns its objective, the loss of one step (`objective`); `name` is its entry in
    `MODES`, the string `simulate(mode=...)` also accepts; `samples` says whether it
    draws images (and so needs a finite `patches_per_side`).
    """

    name: ClassVar[str]
    samples: ClassVar[bool] = True

    def training_images(self) -> int:
        """Images per seed drawn once before training (a training set): 0 but for `FullBatch`."""
        return 0

    def draw(self, setup, key):
        """This step's random data from its `key` (`None`: the mode draws nothing).

        Called for many steps at once (`vmap` over keys), outside the step loop: the
        sampler then runs once per block of steps, not once per step.
        """
        return None

    def objective(self, setup, params, data, train):
        """The loss gradient descent follows at this step (`data`: what `draw` gave for
        this step; `train`: the seed's training set, or `None`)."""
        raise NotImplementedError


class Population(Mode):
    """Descent on the exact population loss `1/2 (a - b)^T C (a - b)` (no images)."""

    name: ClassVar[str] = "population"
    samples: ClassVar[bool] = False

    def objective(self, setup, params, data, train):
        return setup.population_loss(params)


class FullBatch(Mode):
    """Descent on a training set of `num_train` images per seed, drawn once."""

    num_train: int = eqx.field(static=True)
    name: ClassVar[str] = "fullbatch"

    def __check_init__(self):
        require(
            isinstance(self.num_train, (int, np.integer))
            and not isinstance(self.num_train, bool)
            and self.num_train >= 1,
            f"fullbatch mode needs num_train >= 1 (training images), got {self.num_train!r}",
        )

    def training_images(self) -> int:
        return int(self.num_train)

    def objective(self, setup, params, data, train):
        return setup.image_loss(params, *train)


class Online(Mode):
    """SGD with a fresh batch of `batch_size` images every step."""

    batch_size: int = eqx.field(static=True)
    name: ClassVar[str] = "online"

    def __check_init__(self):
        require(
            isinstance(self.batch_size, (int, np.integer))
            and not isinstance(self.batch_size, bool)
            and self.batch_size >= 1,
            f"online mode needs batch_size >= 1 (images per SGD step), got {self.batch_size!r}",
        )

    def draw(self, setup, key):
        patches, _ = setup.problem.mixture.sample_counts(key, int(self.batch_size))
        return patches

    def objective(self, setup, params, data, train):
        return setup.image_loss(params, data, setup.labels(data))


def _plain_int(x):
    """A numpy integer as a Python `int` (the modes' fields are ints); anything else as it is, for their checks."""
    return int(x) if isinstance(x, np.integer) else x


def _as_mode(mode, batch_size, num_train) -> Mode:
    """The `Mode` of `simulate(mode=..., batch_size=..., num_train=...)`.

    A name takes its number from the keywords (the other one is ignored, as it always
    was); a `Mode` object carries its own, and a keyword that contradicts it is an error.
    """
    if isinstance(mode, Mode):
        for name, value in (("batch_size", batch_size), ("num_train", num_train)):
            if value is not None and getattr(mode, name, None) != value:
                require(
                    False,
                    f"{name}={value!r} contradicts mode={mode!r}: a Mode object carries its own numbers "
                    f"(Online(batch_size), FullBatch(num_train)); drop the {name} keyword",
                )
        return mode
    if not (isinstance(mode, str) and mode in MODES):
        require(
            False,
            f"mode must be one of {MODES} or a Mode (Population(), FullBatch(num_train), Online(batch_size)), got {mode!r}",
        )
    if mode == "online":
        return Online(_plain_int(batch_size))
    if mode == "fullbatch":
        return FullBatch(_plain_int(num_train))
    return Population()
