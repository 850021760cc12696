"""Linear-CNN energy profiles (Chowers & Weiss, ICML 2023): patches, PCA, theory, simulations.

The namespace only re-exports; see the private modules for the mathematics.
"""

from ._experiment import EnergyConfig, EnergyReport, run_experiment
from ._flow import gradient_flow
from ._images import DATASETS, digits, load_dataset, photo_crops, power_law_images
from ._patches import PatchPCA, as_images, extract_all_patches, patch_pca, pca_from_covariance, pooled_patches
from ._plots import plot_report
from ._profiles import StepFit, energy_profile, fit_steps, normalise, pearson
from ._simulate import CNNRun, linear_cnn_loss, linear_cnn_output, small_cnn_logits, train_linear_cnn, train_small_cnn
from ._theory import ExactLinearCNN, early_limit, flow_profile, theorem_profile, whitening_limit

__all__ = [
    "CNNRun",
    "EnergyConfig",
    "EnergyReport",
    "DATASETS",
    "ExactLinearCNN",
    "PatchPCA",
    "StepFit",
    "as_images",
    "digits",
    "early_limit",
    "energy_profile",
    "extract_all_patches",
    "fit_steps",
    "flow_profile",
    "gradient_flow",
    "linear_cnn_loss",
    "linear_cnn_output",
    "load_dataset",
    "normalise",
    "patch_pca",
    "pca_from_covariance",
    "pearson",
    "photo_crops",
    "plot_report",
    "pooled_patches",
    "power_law_images",
    "run_experiment",
    "small_cnn_logits",
    "theorem_profile",
    "train_linear_cnn",
    "train_small_cnn",
    "whitening_limit",
]
