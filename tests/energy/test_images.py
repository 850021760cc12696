"""The bundled image sets (`cnntheory.energy._images`): shapes, value ranges and labels of the photo
crops, digits and power-law images, the 1/f images' energy concentrating in the smoothest patch
component (a property of the field, checked with the patch PCA), and the dataset name check."""

import numpy as np
import pytest

import cnntheory.energy as E


def test_bundled_data_shapes():
    crops, labels = E.photo_crops(6, 10, key=1)
    assert crops.shape == (6, 3, 10, 10) and set(labels) == {0, 1} and 0 <= crops.min() and crops.max() <= 1
    d, y = E.digits(20)
    assert d.shape == (20, 1, 8, 8) and y.shape == (20,)
    f = E.power_law_images(3, 16, channels=3, key=0)
    assert f.shape == (3, 3, 16, 16) and np.all(np.isfinite(f))
    # a 1/f field concentrates its energy in the smooth (first) patch component
    pca = E.patch_pca(E.power_law_images(20, 16, key=0), 3)
    assert pca.lambdas[0] > 3 * pca.lambdas[-1]
    with pytest.raises(ValueError, match="dataset"):
        E.load_dataset("cifar", 3)
