"""Report figures: each writes a real PNG; PCA recovers the plane of rank-2 data."""

import sys

import numpy as np
import pytest

from wspace.reporting import plots

PNG = b"\x89PNG\r\n\x1a\n"


def assert_png(path, expected):
    assert path == expected
    data = expected.read_bytes()
    assert data[:8] == PNG and len(data) > 2000


def test_pca_recovers_rank_two_structure():
    rng = np.random.default_rng(0)
    basis, _ = np.linalg.qr(rng.normal(size=(10, 2)))  # (D, 2) orthonormal columns
    coeffs = rng.normal(size=(200, 2)) * [5.0, 1.0]  # first direction dominates
    x = coeffs @ basis.T + rng.normal(size=10) * 3  # (N, D) rank 2 plus an offset
    coords, components, explained = plots.pca(x, 2)
    assert coords.shape == (200, 2) and components.shape == (2, 10)
    np.testing.assert_allclose(components @ components.T, np.eye(2), atol=1e-10)
    # the components span the generating plane, and reconstruct the centred data exactly
    np.testing.assert_allclose(np.abs(np.linalg.svd(components @ basis)[1]), [1, 1], atol=1e-10)
    np.testing.assert_allclose(coords @ components, x - x.mean(0), atol=1e-9)
    assert explained.sum() == pytest.approx(1.0) and explained[0] > 0.9
    # PC1 is the dominant direction, up to the fixed sign
    assert abs(components[0] @ basis[:, 0]) > 0.99
    same, _, _ = plots.pca(x[::-1], 2)
    np.testing.assert_allclose(same[::-1], coords, atol=1e-9)  # deterministic signs


def test_pca_pads_when_data_has_fewer_dimensions():
    coords, components, explained = plots.pca(np.array([[0.0], [1.0], [3.0]]), 2)
    assert coords.shape == (3, 2) and np.all(coords[:, 1] == 0) and explained[1] == 0


def test_embedding_plot_labels_and_values(tmp_path):
    rng = np.random.default_rng(1)
    z = rng.normal(size=(60, 8))
    labels = np.array(["(-3, 1, 2)", "(0, 0, 0)", "(2, -1, 1)"])[rng.integers(0, 3, 60)]
    assert_png(plots.embedding_plot(z, labels, "z by task", tmp_path / "task.png", "task"), tmp_path / "task.png")
    perf = rng.uniform(size=60)
    out = tmp_path / "sub" / "perf.png"
    assert_png(plots.embedding_plot(z, perf, "z by performance", out, "performance"), out)


def test_tsne_and_pca_fallback(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    weights = rng.normal(size=(40, 3, 50))  # flattened inside
    colour = rng.integers(0, 4, 40)
    pytest.importorskip("sklearn")
    out = plots.tsne_or_pca_plot(weights, colour, "weights", tmp_path / "tsne.png", "task", categorical=True)
    assert_png(out, tmp_path / "tsne.png")
    monkeypatch.setitem(sys.modules, "sklearn.manifold", None)  # as if scikit-learn were missing
    assert plots._tsne(weights.reshape(40, -1), 0) is None
    out = plots.tsne_or_pca_plot(weights, colour, "weights", tmp_path / "pca.png", "task")
    assert_png(out, tmp_path / "pca.png")


def test_fidelity_plot(tmp_path):
    rng = np.random.default_rng(3)
    original = rng.uniform(0.5, 1.0, size=100)
    emulated = original + rng.normal(scale=0.02, size=100)
    out = plots.fidelity_plot(original, emulated, tmp_path / "fidelity.png", title="Fidelity")
    assert_png(out, tmp_path / "fidelity.png")
    with pytest.raises(ValueError):
        plots.fidelity_plot(original, emulated[:5], tmp_path / "bad.png")


def test_loss_curve_plot(tmp_path):
    out = plots.loss_curve_plot(
        {"train": np.exp(-np.linspace(0, 8, 200)), "validation": ([0, 50, 100, 199], [1.0, 0.1, 0.01, 0.002])},
        tmp_path / "loss.png", title="Pretraining")
    assert_png(out, tmp_path / "loss.png")


def test_plots_leave_pyplot_alone(tmp_path):
    import matplotlib

    backend = matplotlib.get_backend()
    plots.loss_curve_plot({"a": [1.0, 2.0]}, tmp_path / "a.png")
    assert matplotlib.get_backend() == backend
    if "matplotlib.pyplot" in sys.modules:
        assert sys.modules["matplotlib.pyplot"].get_fignums() == []
