"""Energy-profile benchmark (Chowers & Weiss, ICML 2023): correlation table on every bundled data set, and patch-PCA timing.

    python benchmarks/energy_profile.py

Prints a table and writes `benchmarks/results/energy_profile.json` (+ one PNG figure per data set).
Paper (Chowers & Weiss 2023): 0.94 +- 0.01 (VGG11 / CIFAR-10), 0.10 +- 0.15 (random init).
"""

from __future__ import annotations

import dataclasses
import json
import platform
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import cnntheory  # noqa: F401
from cnntheory import energy as E

RESULTS = Path(__file__).parent / "results"
PAPER = {"nonlinear_vs_formula": "0.94 +- 0.01 (VGG11, CIFAR-10)", "random_init_control": "0.10 +- 0.15"}
DATASETS = {
    "photos": dict(num_images=1024, size=24, classes=2),
    "digits": dict(num_images=1797, size=8, classes=10),
    "powerlaw": dict(num_images=1024, size=24, classes=10),
}


def pca_timing(num_patches: int = 10**7, size: int = 32, chunk: int = 256) -> dict:
    """Time the streaming PCA of `num_patches` 3x3x3 patches of 1/f colour fields (generated chunk by chunk)."""
    per_image = (size - 2) ** 2
    n_images = -(-num_patches // per_image)
    chunks = [min(chunk, n_images - s) for s in range(0, n_images, chunk)]
    gen_start = time.perf_counter()
    # a pool of 8 pre-generated chunks, cycled: memory stays ~16 MB and the timing is the PCA's alone
    pool = [E.power_law_images(chunk, size, channels=3, key=i) for i in range(8)]
    gen = time.perf_counter() - gen_start
    start = time.perf_counter()
    pca = E.patch_pca((pool[i % 8][:c] for i, c in enumerate(chunks)), 3)
    elapsed = time.perf_counter() - start
    return {
        "patches": pca.count,
        "patch_dim": 27,
        "seconds": elapsed,
        "patches_per_second": pca.count / elapsed,
        "image_generation_seconds": gen,
    }


def main() -> None:
    config = E.EnergyConfig()
    results = {"paper": PAPER, "config": dataclasses.asdict(config), "machine": platform.platform(), "datasets": {}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name, spec in DATASETS.items():
        start = time.perf_counter()
        images, labels = E.load_dataset(name, spec["num_images"], spec["size"], key=0)
        report = E.run_experiment(images, labels, classes=spec["classes"], config=config, progress=False)
        corr = report.correlations()
        corr["seconds"] = time.perf_counter() - start
        corr["images"] = list(images.shape)
        results["datasets"][name] = corr
        E.plot_report(report, title=f"{name}: {images.shape[0]} images {images.shape[1:]}").savefig(
            RESULTS / f"energy_profile_{name}.png", dpi=110
        )
        print(f"{name}: done in {corr['seconds']:.0f} s", flush=True)
    results["pca_timing"] = pca_timing()

    def pm(d):
        return f"{d['mean']:.2f} ± {d['std']:.2f}"

    rows = [
        ("linear CNN (mean of seeds) vs exact expectation", lambda c: f"{c['linear_vs_exact_expectation']:.3f}", "-"),
        ("linear CNN, random labels vs formula", lambda c: f"{c['linear_vs_formula']['r']:.2f}", "-"),
        (
            "linear CNN, true labels vs formula",
            lambda c: (
                f"{c['linear_true_labels_vs_formula']['r']:.2f}" if "linear_true_labels_vs_formula" in c else "n/a"
            ),
            "-",
        ),
        (
            "nonlinear CNN, true labels, W - W0",
            lambda c: (
                pm(c["nonlinear_true_labels_learned_vs_formula"])
                if "nonlinear_true_labels_learned_vs_formula" in c
                else "n/a"
            ),
            PAPER["nonlinear_vs_formula"],
        ),
        (
            "nonlinear CNN, true labels, W",
            lambda c: (
                pm(c["nonlinear_true_labels_raw_vs_formula"]) if "nonlinear_true_labels_raw_vs_formula" in c else "n/a"
            ),
            PAPER["nonlinear_vs_formula"],
        ),
        ("nonlinear CNN, random labels, W - W0", lambda c: pm(c["nonlinear_random_labels_learned_vs_formula"]), "-"),
        ("nonlinear CNN, random labels, W", lambda c: pm(c["nonlinear_random_labels_raw_vs_formula"]), "-"),
        ("random init control", lambda c: pm(c["random_init_control"]), PAPER["random_init_control"]),
    ]
    names = list(DATASETS)
    print(f"\n{'Pearson r':42s}" + "".join(f"{n:>14s}" for n in names) + "   paper")
    for label, get, paper in rows:
        print(f"{label:42s}" + "".join(f"{get(results['datasets'][n]):>14s}" for n in names) + f"   {paper}")
    t = results["pca_timing"]
    print(
        f"\npatch PCA: {t['patches']:.3g} patches (D = 27) in {t['seconds']:.2f} s ({t['patches_per_second']:.3g} patches/s)"
    )
    (RESULTS / "energy_profile.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {RESULTS / 'energy_profile.json'}")


if __name__ == "__main__":
    main()
