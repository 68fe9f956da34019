"""FID / KID maths against reference formulas, and the offline feature extractors."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
import torchvision
from safetensors.torch import save_file
from torchvision.models.inception import InceptionA, InceptionC, InceptionE

from visionzoo.tasks.generative.features import (
    InceptionFeatures,
    ZooClassifierFeatures,
    _fid_inception_v3,
    _TFInceptionA,
    _TFInceptionC,
    _TFInceptionE,
    build_feature_extractor,
    extract_features,
)
from visionzoo.tasks.generative.fid import (
    feature_statistics,
    fid_from_features,
    frechet_distance,
    kid_from_features,
    sample_diversity,
)


def _scipy_frechet(mu1, s1, mu2, s2):
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def _random_features(rng, n, d, shift=0.0, scale=1.0):
    mixing = rng.normal(size=(d, d)) * scale
    return rng.normal(size=(n, d)) @ mixing + shift


# --- FID -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("d", [2, 8, 32])
def test_frechet_distance_matches_scipy_sqrtm(d):
    rng = np.random.default_rng(d)
    real = _random_features(rng, 4 * d + 10, d)
    fake = _random_features(rng, 3 * d + 20, d, shift=rng.normal(size=d), scale=0.5)
    mu1, s1 = feature_statistics(real)
    mu2, s2 = feature_statistics(fake)
    assert mu1.dtype == s1.dtype == np.float64 and s1.shape == (d, d)
    np.testing.assert_allclose(s1, np.cov(real, rowvar=False), rtol=1e-10, atol=1e-12)
    ours = frechet_distance(mu1, s1, mu2, s2)
    assert isinstance(ours, float)
    assert ours == pytest.approx(_scipy_frechet(mu1, s1, mu2, s2), rel=1e-7, abs=1e-9)
    assert fid_from_features(torch.from_numpy(real).float(), torch.from_numpy(fake).float()) == pytest.approx(
        ours, rel=1e-4
    )  # float32 input gives the same score up to float32 rounding of the features


def test_rank_deficient_covariances_give_finite_exact_values():
    rng = np.random.default_rng(3)
    d, k = 12, 5
    a = rng.normal(size=(k, k))
    s1 = np.zeros((d, d))
    s1[:k, :k] = a @ a.T  # rank k: Cholesky fails, the eigh square root is used
    b = rng.normal(size=(d, d))
    s2 = b @ b.T
    with pytest.raises(np.linalg.LinAlgError):
        np.linalg.cholesky(s1)
    # Reference written differently: eigenvalues of the non-symmetric product S1 S2.
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvals(s1 @ s2).real, 0, None)).sum()
    mu = rng.normal(size=d)
    expected = mu @ mu + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt
    assert frechet_distance(mu, s1, np.zeros(d), s2) == pytest.approx(expected, rel=1e-9)

    # A fully collapsed generator (every sample identical): FID = ||mu1 - mu2||^2 + Tr(S1), not NaN.
    real = rng.normal(size=(40, 8))
    fake = np.repeat(rng.normal(size=(1, 8)), 40, axis=0)
    collapsed = fid_from_features(real, fake)
    diff = real.mean(0) - fake[0]
    assert collapsed == pytest.approx(diff @ diff + np.trace(np.cov(real, rowvar=False)), rel=1e-9)


def test_fid_of_a_set_against_itself_is_zero():
    rng = np.random.default_rng(0)
    x = _random_features(rng, 200, 16, shift=3.0, scale=10.0)
    scale = np.trace(np.cov(x, rowvar=False))
    assert abs(fid_from_features(x, x)) < 1e-6 * scale


def test_too_few_samples_and_non_finite_features_are_rejected():
    x = np.random.default_rng(0).normal(size=(10, 10))
    with pytest.raises(ValueError, match=r"FID with toy \(10-dim features\) needs more samples than feature "
                                         r"dimensions: got 10; use at least 11"):
        feature_statistics(x, extractor_name="toy")
    feature_statistics(np.random.default_rng(1).normal(size=(11, 10)))  # D + 1 is enough
    x[3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        fid_from_features(x, x)


# --- KID -------------------------------------------------------------------------------------------------


def _naive_kid(x, y):
    m, d = x.shape

    def k(a, b):
        return (a @ b / d + 1.0) ** 3

    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_matches_naive_double_loop_with_one_full_subset():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(12, 5)), rng.normal(0.3, 1.2, size=(12, 5))
    mean, std = kid_from_features(x, y, subsets=1, subset_size=12)
    assert mean == pytest.approx(_naive_kid(x, y), rel=1e-10, abs=1e-12)
    assert std == 0.0


def test_kid_near_zero_for_same_distribution_and_positive_for_shifted():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(400, 16))
    same = rng.normal(size=(400, 16))
    shifted = rng.normal(0.5, 1.0, size=(400, 16))
    same_mean, _ = kid_from_features(real, same, subsets=10, subset_size=200)
    shifted_mean, shifted_std = kid_from_features(real, shifted, subsets=10, subset_size=200)
    assert shifted_mean > 0.1 and shifted_mean > 5 * shifted_std
    assert abs(same_mean) < 0.02 * shifted_mean
    assert kid_from_features(real, shifted, subsets=10, subset_size=200) == (shifted_mean, shifted_std)
    with pytest.raises(ValueError, match="at least 2 samples"):
        kid_from_features(real[:1], shifted, subset_size=1)


def test_sample_diversity():
    row = np.random.default_rng(0).normal(size=(1, 3, 8, 8)) * 100
    assert sample_diversity(np.repeat(row, 50, axis=0)) < 1e-9  # a collapsed generator
    pts = np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 8.0]])
    assert sample_diversity(pts) == pytest.approx((5 + 8 + 5) / 3)
    many = torch.randn(1500, 4, generator=torch.Generator().manual_seed(0))
    assert sample_diversity(many) == sample_diversity(many) > 1.0


# --- feature extractors ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torchvision_inception(tmp_path_factory):
    """A randomly initialised torchvision Inception-v3 in the IMAGENET1K_V1 configuration, and its file."""
    torch.manual_seed(0)
    model = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=True,
                                            transform_input=True).eval()
    path = tmp_path_factory.mktemp("inception") / "random_inception.safetensors"
    save_file(model.state_dict(), str(path))
    return model, path


def test_inception_features_match_torchvision(torchvision_inception):
    model, path = torchvision_inception
    extractor = InceptionFeatures(path)
    assert extractor.dim == 2048 and extractor.kind == "torchvision" and not extractor.comparable_to_published
    assert "inception_v3 pool3 2048-d" in extractor.name and path.name in extractor.name
    images = torch.rand(2, 3, 40, 48, generator=torch.Generator().manual_seed(1))
    features = extractor(images)
    assert features.shape == (2, 2048) and features.dtype == torch.float32

    # torchvision's own pipeline: resize, ImageNet normalisation, transform_input=True, pooled features.
    model.fc = torch.nn.Identity()
    x = F.interpolate(images, size=(299, 299), mode="bilinear", align_corners=False, antialias=True)
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(
        1, 3, 1, 1)
    with torch.no_grad():
        expected = model(x)
    torch.testing.assert_close(features, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


@pytest.mark.parametrize("block_kind", ["A", "C", "E_avg", "E_max"])
def test_tf_inception_blocks_change_only_the_pooling_branch(block_kind):
    torch.manual_seed(0)
    stock, tf_block, pool_channels = {
        "A": (InceptionA(16, pool_features=8), _TFInceptionA(16, pool_features=8), 8),
        "C": (InceptionC(16, channels_7x7=8), _TFInceptionC(16, channels_7x7=8), 192),
        "E_avg": (InceptionE(16), _TFInceptionE(16, max_pool=False), 192),
        "E_max": (InceptionE(16), _TFInceptionE(16, max_pool=True), 192),
    }[block_kind]
    tf_block.load_state_dict(stock.state_dict())
    stock.eval(), tf_block.eval()
    x = torch.randn(1, 16, 7, 7)
    with torch.no_grad():
        ours, theirs = tf_block(x), stock(x)
        if block_kind == "E_max":
            pooled = F.max_pool2d(x, 3, stride=1, padding=1)
        else:  # TF's average pooling divides by the number of real (unpadded) pixels
            pooled = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
        expected_pool = stock.branch_pool(pooled)
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours[:, :-pool_channels], theirs[:, :-pool_channels], rtol=0, atol=0)
    torch.testing.assert_close(ours[:, -pool_channels:], expected_pool)
    assert not torch.allclose(ours[:, -pool_channels:], theirs[:, -pool_channels:])


def test_pytorch_fid_layout_is_detected(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "fid_layout.pth"
    torch.save(_fid_inception_v3().state_dict(), path)
    extractor = InceptionFeatures(path)
    assert extractor.kind == "pytorch-fid" and "pytorch-fid" in extractor.name
    assert not extractor.comparable_to_published  # random weights, not the published file
    assert isinstance(extractor.model.Mixed_7c, _TFInceptionE) and extractor.model.Mixed_7c.max_pool
    features = extractor(torch.rand(1, 1, 32, 32))
    assert features.shape == (1, 2048) and torch.isfinite(features).all()


def test_missing_inception_file_names_path_and_expected_files(tmp_path):
    missing = tmp_path / "nowhere" / "inception.pth"
    for make in (lambda: InceptionFeatures(missing), lambda: build_feature_extractor(f"inception:{missing}")):
        with pytest.raises(FileNotFoundError) as info:
            make()
        message = str(info.value)
        assert str(missing) in message
        for expected in ("inception_v3_google-0cc3c7bd.pth", "pt_inception-2015-12-05-6726825d.pth",
                         "eval.fid_features", "VISIONZOO_INCEPTION_WEIGHTS"):
            assert expected in message


def test_zoo_classifier_features():
    extractor = ZooClassifierFeatures("resnet18", "shapes")
    assert "resnet18.shapes" in extractor.name and extractor.dim == 512
    images = torch.rand(3, 1, 50, 70, generator=torch.Generator().manual_seed(0))
    features = extractor(images)
    assert features.shape == (3, 512) and torch.isfinite(features).all()
    torch.testing.assert_close(extract_features(extractor, images, batch_size=2), features)
    torch.testing.assert_close(extract_features(extractor, [(images[:2], 0), (images[2:], 1)]), features)
    extractor.train()
    assert not extractor.training  # BatchNorm statistics stay frozen
    with pytest.raises(ValueError, match=r"\(x \+ 1\) / 2"):
        extractor(images * 2 - 1)


def test_build_feature_extractor_specs(torchvision_inception, monkeypatch):
    _, path = torchvision_inception
    monkeypatch.setenv("VISIONZOO_INCEPTION_WEIGHTS", str(path))
    assert isinstance(build_feature_extractor(), InceptionFeatures)
    monkeypatch.delenv("VISIONZOO_INCEPTION_WEIGHTS")
    fallback = build_feature_extractor()
    assert isinstance(fallback, ZooClassifierFeatures) and "resnet18.shapes" in fallback.name
    assert isinstance(build_feature_extractor(str(path)), InceptionFeatures)
    with pytest.raises(ValueError, match="accepted forms"):
        build_feature_extractor("vgg-features")
