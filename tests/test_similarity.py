"""repkernel.similarity: invariances, identity values, closed forms and independent references
(scipy, sklearn, U-statistics), batching, DataArray plumbing and compare()."""

import itertools
import warnings

import numpy as np
import pytest
import scipy.linalg
import scipy.spatial.distance
import scipy.stats
import sklearn.metrics
import torch
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from repkernel import similarity
from repkernel.similarity import (
    METRICS,
    adjusted_rand_index,
    angular_shape_distance,
    cca_similarity,
    change_alignment,
    cka_similarity,
    compare,
    kmeans_groups,
    procrustes_distance,
    rdm,
    rsa,
    rsm,
    silhouette,
    svcca_similarity,
    task_similarity,
    task_similarity_summary,
)

PROPERTY = settings(max_examples=25, deadline=None)
seeds = st.integers(0, 2**31)  # seed + k stays a valid numpy seed


def random(seed, *shape):
    return np.random.default_rng(seed).normal(size=shape)


def orthogonal(seed, n):
    return scipy.stats.ortho_group.rvs(n, random_state=seed) if n > 1 else np.array([[-1.0]])


def transformed(x, seed):
    """x Q s + t: a random orthogonal map (reflections included), scale and translation."""
    rng = np.random.default_rng(seed)
    return x @ orthogonal(seed, x.shape[-1]) * rng.uniform(0.1, 10) + rng.normal(size=x.shape[-1])


# One entry per two-representation metric: (function, identity value, invariant to x Q s + t).
PAIR_METRICS = {
    "rsa_pearson": (lambda a, b: rsa(a, b), 1.0, False),
    "rsa_spearman": (lambda a, b: rsa(a, b, "spearman"), 1.0, False),
    "rsa_kendall": (lambda a, b: rsa(a, b, "kendall_tau_a"), 1.0, False),
    "rsa_cosine_rsm": (lambda a, b: rsa(a, b, rsm_method="cosine"), 1.0, False),
    "cka_linear": (lambda a, b: cka_similarity(a, b), 1.0, True),
    "cka_debiased": (lambda a, b: cka_similarity(a, b, debiased=True), 1.0, True),
    "cka_rbf": (lambda a, b: cka_similarity(a, b, "rbf"), 1.0, True),
    "cka_rbf_debiased": (lambda a, b: cka_similarity(a, b, "rbf", True, bandwidth=2.0), 1.0,
                         True),
    "procrustes": (procrustes_distance, 0.0, True),
    "angular_shape": (angular_shape_distance, 0.0, True),
    "cca": (cca_similarity, 1.0, True),
    "svcca": (lambda a, b: svcca_similarity(a, b, keep=0.9), 1.0, True),
}


# -- identity values and invariances -----------------------------------------------------------

@PROPERTY
@given(seed=seeds, items=st.integers(12, 20), units=st.integers(1, 5))
def test_every_metric_of_x_with_itself_is_its_identity_value(seed, items, units):
    x = random(seed, items, units)
    for name, (metric, identity, _) in PAIR_METRICS.items():
        if name.startswith("rsa") and units < 3:
            continue  # RSMs over 1-2 units are all +-1 (or nan): ties keep tau-a below 1
        assert metric(x, x) == pytest.approx(identity, abs=1e-6), name


@PROPERTY
@given(seed=seeds, items=st.integers(12, 20), units_a=st.integers(1, 5),
       units_b=st.integers(1, 5))
def test_shape_cka_and_cca_invariant_to_rotation_translation_scaling(seed, items, units_a,
                                                                     units_b):
    a, b = random(seed, items, units_a), random(seed + 1, items, units_b)
    for name, (metric, _, invariant) in PAIR_METRICS.items():
        if invariant:
            expected = metric(a, b)
            assert metric(transformed(a, seed), b) == pytest.approx(expected, abs=1e-7), name
            assert metric(a, transformed(b, seed + 2)) == pytest.approx(expected, abs=1e-7), name


@PROPERTY
@given(seed=seeds)
def test_cca_invariant_to_any_invertible_linear_map(seed):
    a, b = random(seed, 20, 4), random(seed + 1, 20, 3)
    invertible = random(seed + 2, 4, 4) + 4 * np.eye(4)
    assert cca_similarity(a @ invertible, b) == pytest.approx(cca_similarity(a, b), abs=1e-8)


@PROPERTY
@given(seed=seeds, units=st.integers(2, 6))
def test_rsa_of_cosine_rsms_invariant_to_rotating_units(seed, units):
    a, b = random(seed, 10, units), random(seed + 1, 10, units)
    rotated = a @ orthogonal(seed, units) * 3.0
    for method in ("pearson", "spearman", "kendall_tau_a"):
        assert rsa(rotated, b, method, "cosine") == pytest.approx(
            rsa(a, b, method, "cosine"), abs=1e-9)


@PROPERTY
@given(seed=seeds, power=st.sampled_from([1, 3, 5]), scale=st.floats(0.5, 4))
def test_rank_rsa_invariant_to_monotone_transforms_of_the_matrix(seed, power, scale):
    a, b = rsm(random(seed, 9, 4)), rsm(random(seed + 1, 9, 6))
    monotone = np.exp(scale * a) ** power - 7.0
    for method in ("spearman", "kendall_tau_a"):
        assert rsa(monotone, b, method, precomputed=True) == pytest.approx(
            rsa(a, b, method, precomputed=True), abs=1e-12)


def test_debiased_cka_is_near_zero_on_independent_data_and_biased_is_not():
    a, b = random(0, 300, 10, 20), random(1, 300, 10, 20)  # 300 independent draws, batched
    debiased = cka_similarity(a, b, debiased=True)
    assert abs(debiased.mean()) < 3 * debiased.std() / np.sqrt(300)
    assert cka_similarity(a, b).mean() > 0.5


# -- closed forms and independent references -------------------------------------------------

def test_rsm_and_rdm_of_known_vectors():
    x = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0], [2.0, 4.0, 6.0]])
    np.testing.assert_allclose(rsm(x), [[1, -1, 1], [-1, 1, -1], [1, -1, 1]], atol=1e-12)
    np.testing.assert_allclose(rsm(x, "cosine")[0, 1], 10 / 14)
    np.testing.assert_allclose(rdm(x), 1 - np.corrcoef(x), atol=1e-12)
    np.testing.assert_allclose(rdm(x, "euclidean"), scipy.spatial.distance.cdist(x, x),
                               atol=1e-7)


@PROPERTY
@given(seed=seeds, items=st.integers(4, 12))
def test_rsa_against_scipy_correlations(seed, items):
    a, b = random(seed, items, 5), random(seed + 1, items, 3)
    rows, cols = np.triu_indices(items, 1)
    u, v = np.corrcoef(a)[rows, cols], np.corrcoef(b)[rows, cols]  # continuous: no ties
    assert rsa(a, b) == pytest.approx(scipy.stats.pearsonr(u, v)[0], abs=1e-10)
    assert rsa(a, b, "spearman") == pytest.approx(scipy.stats.spearmanr(u, v)[0], abs=1e-10)
    # without ties tau-b (scipy) equals tau-a
    assert rsa(a, b, "kendall_tau_a") == pytest.approx(scipy.stats.kendalltau(u, v)[0],
                                                       abs=1e-10)


def test_kendall_tau_a_counts_ties_as_zero_over_all_pairs():
    a = np.array([[0, 1, 2, 3], [1, 0, 1, 2], [2, 1, 0, 1], [3, 2, 1, 0]], dtype=float)
    b = np.array([[0, 1, 1, 2], [1, 0, 3, 4], [1, 3, 0, 5], [2, 4, 5, 0]], dtype=float)
    rows, cols = np.triu_indices(4, 1)
    u, v = a[rows, cols], b[rows, cols]
    pairs = list(itertools.combinations(range(len(u)), 2))
    expected = sum(np.sign(u[i] - u[j]) * np.sign(v[i] - v[j]) for i, j in pairs) / len(pairs)
    assert rsa(a, b, "kendall_tau_a", precomputed=True) == pytest.approx(expected)


def quadratic_kendall_tau_a(u, v):
    """The O(T^2) definition repkernel used before its O(T log^2 T) sort: every pair's signs."""
    su = np.sign(u[..., :, None] - u[..., None, :])
    sv = np.sign(v[..., :, None] - v[..., None, :])
    return (su * sv).sum((-2, -1)) / (u.shape[-1] * (u.shape[-1] - 1))


def tied_pairs(x):
    _, counts = np.unique(x, return_counts=True)
    return (counts * (counts - 1) // 2).sum()


@PROPERTY
@given(seed=seeds, count=st.integers(2, 70), levels=st.sampled_from([2, 5, 1000]))
def test_kendall_tau_a_equals_the_quadratic_definition_and_scipy(seed, count, levels):
    rng = np.random.default_rng(seed)
    u = rng.integers(0, levels, size=(3, count)).astype(float)  # few levels: many ties
    v = u + rng.integers(0, levels, size=(3, count))
    tau = similarity._kendall_tau_a(u, v)
    np.testing.assert_allclose(tau, quadratic_kendall_tau_a(u, v), rtol=0, atol=1e-14)
    pairs = count * (count - 1) / 2
    for row in range(3):
        tau_b = scipy.stats.kendalltau(u[row], v[row]).statistic  # S / sqrt((P - P_u)(P - P_v))
        if np.isfinite(tau_b):
            scale = np.sqrt((pairs - tied_pairs(u[row])) * (pairs - tied_pairs(v[row]))) / pairs
            assert tau[row] == pytest.approx(tau_b * scale, abs=1e-12)


def test_kendall_tau_a_broadcasts_and_gives_nan_for_nan_entries():
    u, v = random(0, 4, 1, 30), random(1, 5, 30)
    np.testing.assert_allclose(similarity._kendall_tau_a(u, v), quadratic_kendall_tau_a(
        *np.broadcast_arrays(u, v)), rtol=0, atol=1e-14)
    v[2, 7] = np.nan
    tau = similarity._kendall_tau_a(u, v)
    assert np.isnan(tau[:, 2]).all() and np.isfinite(np.delete(tau, 2, axis=1)).all()


def test_euclidean_distances_are_exact_far_from_the_origin():
    x = 1e4 + 0.01 * random(0, 12, 5)  # the |x|^2 + |y|^2 - 2 x.y form loses 4e-4 here
    exact = scipy.spatial.distance.cdist(x, x)
    np.testing.assert_allclose(rdm(x, "euclidean"), exact, rtol=1e-9)
    labels = np.arange(12) % 3
    assert silhouette(x, labels) == pytest.approx(
        sklearn.metrics.silhouette_score(exact, labels, metric="precomputed"), abs=1e-9)


def test_rsa_warns_when_given_rdms_without_precomputed():
    x, y = random(0, 8, 4), random(1, 8, 6)
    with pytest.warns(UserWarning, match="precomputed=True"):
        rsa(rdm(x), y)
    with pytest.warns(UserWarning, match="b is square, symmetric"):
        rsa(xr.DataArray(x, dims=("item", "unit")),
            xr.DataArray(rdm(y, "euclidean"), dims=("item", "unit")))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rsa(rdm(x), rdm(y), precomputed=True)
        rsa(x, random(2, 8, 8))  # square representations that are no RDM


@pytest.mark.parametrize("metric", [rsa, cka_similarity])
def test_rsa_and_cka_warn_when_a_constant_representation_makes_them_nan(metric):
    a, b = random(0, 3, 10, 4), random(1, 3, 10, 5)
    a[1] = 2.0  # every item alike at one of three checkpoints
    with pytest.warns(RuntimeWarning, match="nan for 1 of 3 comparison.*constant over"):
        result = metric(a, b)
    assert np.isnan(result[1]) and np.isfinite(result[[0, 2]]).all()


def test_linear_cka_matches_the_feature_space_formula():
    a, b = random(3, 15, 4), random(4, 15, 7)
    ac, bc = a - a.mean(0), b - b.mean(0)
    expected = (np.linalg.norm(bc.T @ ac) ** 2
                / (np.linalg.norm(ac.T @ ac) * np.linalg.norm(bc.T @ bc)))
    assert cka_similarity(a, b) == pytest.approx(expected, rel=1e-12)


def unbiased_hsic(k, g):
    """Song et al. 2012 U-statistic: mean over distinct ordered (i, j, q, r) of
    k_ij g_ij + k_ij g_qr - 2 k_ij g_iq."""
    terms = [k[i, j] * g[i, j] + k[i, j] * g[q, r] - 2 * k[i, j] * g[i, q]
             for i, j, q, r in itertools.permutations(range(len(k)), 4)]
    return np.mean(terms)


def test_debiased_cka_matches_the_hsic_u_statistic():
    a, b = random(5, 6, 3), random(6, 6, 2)
    k, g = a @ a.T, b @ b.T  # uncentred: the U-statistic is translation invariant
    expected = unbiased_hsic(k, g) / np.sqrt(unbiased_hsic(k, k) * unbiased_hsic(g, g))
    assert cka_similarity(a, b, debiased=True) == pytest.approx(expected, rel=1e-10)


def test_rbf_cka_matches_explicit_centring_and_median_bandwidth():
    a, b = random(7, 12, 3), random(8, 12, 5)

    def gram(x, factor):
        d = scipy.spatial.distance.squareform(scipy.spatial.distance.pdist(x))
        sigma = factor * np.median(scipy.spatial.distance.pdist(x))
        h = np.eye(len(x)) - 1 / len(x)
        return h @ np.exp(-(d**2) / (2 * sigma**2)) @ h

    for factor in (0.5, 1.0, 3.0):
        k, g = gram(a, factor), gram(b, factor)
        expected = np.sum(k * g) / np.sqrt(np.sum(k * k) * np.sum(g * g))
        assert cka_similarity(a, b, "rbf", bandwidth=factor) == pytest.approx(expected, rel=1e-9)


@PROPERTY
@given(seed=seeds, units=st.integers(1, 6))
def test_procrustes_of_a_reflected_set_is_zero_and_matches_scipy(seed, units):
    a = random(seed, 10, units)
    reflection = np.diag([-1.0] + [1.0] * (units - 1))
    assert procrustes_distance(a, a @ reflection * 2.0 + 1.0) == pytest.approx(0, abs=1e-6)
    b = random(seed + 1, 10, units)
    an, bn = a - a.mean(0), b - b.mean(0)
    an, bn = an / np.linalg.norm(an), bn / np.linalg.norm(bn)
    q, _ = scipy.linalg.orthogonal_procrustes(bn, an)
    expected = np.linalg.norm(an - bn @ q)
    assert procrustes_distance(a, b) == pytest.approx(expected, abs=1e-7)
    # the angle and the chord of the same two unit-norm shapes: cos(theta) = 1 - d^2 / 2
    assert np.cos(angular_shape_distance(a, b)) == pytest.approx(1 - expected**2 / 2, abs=1e-9)


def test_shape_distances_stay_in_range_and_pad_narrow_sides():
    a, b = random(9, 200, 8, 30), random(10, 200, 8, 2)  # more units than items, and fewer
    d, theta = procrustes_distance(a, b), angular_shape_distance(a, b)
    assert np.all((d >= 0) & (d <= np.sqrt(2))) and np.all((theta >= 0) & (theta <= np.pi / 2))
    padded = np.concatenate([b, np.zeros((200, 8, 28))], axis=-1)
    np.testing.assert_allclose(procrustes_distance(a, padded), d, atol=1e-10)


@PROPERTY
@given(seed=seeds, units_a=st.integers(1, 5), units_b=st.integers(1, 5))
def test_cca_is_the_mean_cosine_of_principal_angles(seed, units_a, units_b):
    a, b = random(seed, 20, units_a), random(seed + 1, 20, units_b)
    angles = scipy.linalg.subspace_angles(a - a.mean(0), b - b.mean(0))
    assert cca_similarity(a, b) == pytest.approx(np.mean(np.cos(angles)), abs=1e-10)


def test_svcca_reduces_to_the_components_explaining_keep_then_cca():
    rng = np.random.default_rng(11)
    a = rng.normal(size=(30, 6)) * [10, 5, 1, 0.1, 0.1, 0.1]
    b = rng.normal(size=(30, 4))
    u, s, _ = np.linalg.svd(a - a.mean(0), full_matrices=False)
    explained = np.cumsum(s**2) / np.sum(s**2)
    kept = int(np.searchsorted(explained, 0.95) + 1)
    assert kept < 6
    assert svcca_similarity(a, b, keep=0.95) == pytest.approx(
        cca_similarity(u[:, :kept] * s[:kept], b), abs=1e-10)
    assert svcca_similarity(a, b, keep=1.0) == pytest.approx(cca_similarity(a, b), abs=1e-10)


def test_cca_with_too_many_units_raises_unless_ridge():
    a, b = random(0, 10, 6), random(1, 10, 6)
    with pytest.raises(ValueError, match="ridge > 0"):
        cca_similarity(a, b)
    value = cca_similarity(a, b, ridge=0.1)
    assert 0 < value < 1 and cca_similarity(a, a, ridge=0.1) < 1


def test_change_alignment_closed_forms_and_zero_change():
    initial, change = random(0, 6, 4), random(1, 6, 4)
    result = change_alignment(initial + 2 * change, initial + change, initial)
    assert result["correlation"] == pytest.approx(1) and result["cosine"] == pytest.approx(1)
    assert result["relative_error"] == pytest.approx(1)
    result = change_alignment(initial - change, initial + change, initial)
    assert result["correlation"] == pytest.approx(-1) and result["relative_error"] == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        moved = change_alignment(initial + change, initial, initial)
        still = change_alignment(initial, initial, initial)
    assert np.isnan(moved["correlation"]) and np.isinf(moved["relative_error"])
    assert np.isnan(still["cosine"]) and np.isnan(still["relative_error"])


@PROPERTY
@given(labels=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 4)), min_size=2,
                       max_size=30))
def test_adjusted_rand_index_matches_sklearn(labels):
    a, b = (np.array(side) for side in zip(*labels))
    assert adjusted_rand_index(a, b) == pytest.approx(sklearn.metrics.adjusted_rand_score(a, b),
                                                      abs=1e-12)


@PROPERTY
@given(seed=seeds, items=st.integers(4, 20), groups=st.integers(2, 5))
def test_silhouette_matches_sklearn(seed, items, groups):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(items, 3))
    labels = rng.integers(0, groups, size=items)
    labels[:2] = [0, 1]  # at least two groups
    if len(np.unique(labels)) > items - 1:
        labels[-1] = labels[0]
    assert silhouette(x, labels) == pytest.approx(sklearn.metrics.silhouette_score(x, labels),
                                                  abs=1e-8)


def test_kmeans_finds_separated_groups():
    rng = np.random.default_rng(0)
    truth = np.repeat([0, 1, 2], 5)
    centres = np.array([[0, 0], [10, 0], [0, 10]])
    x = centres[truth] + 0.1 * rng.normal(size=(2, 15, 2))  # two matrices, one batched call
    labels = kmeans_groups(x, 3)
    assert labels.shape == (2, 15)
    np.testing.assert_allclose(adjusted_rand_index(labels, truth), [1, 1])
    assert np.all(silhouette(x, labels) > 0.9)


def test_task_similarity_of_hand_built_hidden():
    task = np.array([0, 0, 1, 1, 2, 2, -1])
    mean_a, mean_b = np.array([1.0, 2.0, 0.0, 5.0]), np.array([0.0, 1.0, 3.0, -1.0])
    offset = np.array([0.5, -0.5, 0.0, 0.0])
    hidden = np.stack([mean_a + offset, mean_a - offset,  # task 0 and 1: the same mean
                       mean_a - offset, mean_a + offset,
                       mean_b + offset, mean_b - offset,
                       np.full(4, 100.0)])  # a concurrent-task item, ignored
    matrix = task_similarity(hidden, task)
    assert matrix.shape == (3, 3)
    assert matrix[0, 1] == pytest.approx(1)
    assert matrix[0, 2] == pytest.approx(np.corrcoef(mean_a, mean_b)[0, 1])
    batched = task_similarity(np.stack([hidden, 2 * hidden + 1]), task)
    np.testing.assert_allclose(batched, [matrix, matrix], atol=1e-12)


def test_task_similarity_summary_groups_pairs_by_shared_dims():
    # tasks (input, output): (0, 0), (0, 1), (1, 0), (1, 1)
    inputs, outputs = np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])
    matrix = np.array([[1.0, 0.8, 0.3, 0.0],
                       [0.8, 1.0, 0.1, 0.2],
                       [0.3, 0.1, 1.0, 0.6],
                       [0.0, 0.2, 0.6, 1.0]])
    summary = task_similarity_summary(matrix, inputs, outputs)
    assert summary["shared_input"] == pytest.approx(0.7)
    assert summary["shared_output"] == pytest.approx(0.25)
    assert summary["shared_neither"] == pytest.approx(0.05)


# -- batching, broadcasting and DataArrays ----------------------------------------------------

@pytest.mark.parametrize("name", sorted(PAIR_METRICS))
def test_batched_call_equals_a_loop_of_single_calls(name):
    metric = PAIR_METRICS[name][0]
    a, b = random(0, 2, 3, 12, 4), random(1, 3, 12, 3)  # b broadcasts over a's first dim
    batched = metric(a, b)
    assert batched.shape == (2, 3)
    looped = [[metric(a[i, j], b[j]) for j in range(3)] for i in range(2)]
    np.testing.assert_allclose(batched, looped, atol=1e-12)


def test_batched_matrices_and_labels_equal_loops():
    x = random(2, 3, 10, 4)
    np.testing.assert_allclose(rsm(x), [rsm(one) for one in x], atol=1e-12)
    np.testing.assert_allclose(rdm(x, "euclidean"), [rdm(one, "euclidean") for one in x])
    labels = np.random.default_rng(0).integers(0, 3, size=(3, 10))
    labels[:, :3] = [0, 1, 2]
    np.testing.assert_allclose(silhouette(x, labels),
                               [silhouette(one, lab) for one, lab in zip(x, labels)])
    np.testing.assert_allclose(adjusted_rand_index(labels, labels[::-1]),
                               [adjusted_rand_index(p, q) for p, q in zip(labels, labels[::-1])])
    result = change_alignment(x, 2 * x, x[0])
    for key, values in result.items():
        np.testing.assert_allclose(values, [change_alignment(one, 2 * one, x[0])[key]
                                            for one in x])


@pytest.mark.parametrize("block", [1, 50, 1000])
def test_blocked_batches_equal_one_call(monkeypatch, block):
    """Large batches run in cache-sized blocks; force tiny blocks and compare."""
    a, b = random(0, 3, 4, 6, 3), random(1, 4, 6, 2)  # b broadcasts over a's first dim
    labels = np.random.default_rng(0).integers(0, 3, size=(3, 1, 6))
    labels[..., :3] = [0, 1, 2]
    calls = {
        "cka": lambda: cka_similarity(a, b),
        "procrustes": lambda: procrustes_distance(a, b),
        "rsa": lambda: rsa(a, b, "kendall_tau_a"),
        "rsm": lambda: rsm(a),
        "change": lambda: change_alignment(a, 2 * a, a[0, 0]),
        "silhouette": lambda: silhouette(a, labels),
        "ari": lambda: adjusted_rand_index(labels, labels[::-1, :, ::-1]),
        "task": lambda: task_similarity(a, [0, 0, 1, 1, 2, -1]),
    }
    whole = {name: call() for name, call in calls.items()}
    monkeypatch.setattr(similarity, "_BLOCK_ELEMENTS", block)
    for name, call in calls.items():
        blocked = call()
        if isinstance(blocked, dict):
            for key in blocked:
                np.testing.assert_array_equal(blocked[key], whole[name][key])
        else:
            assert blocked.shape == whole[name].shape, name
            np.testing.assert_allclose(blocked, whole[name], rtol=1e-12, atol=1e-12)


def hidden_array(seed=0, units=5, transpose=False):
    da = xr.DataArray(random(seed, 3, 2, 8, units), dims=("time", "seed", "item", "unit"),
                      coords={"time": [0, 5, 10], "seed": [1, 2], "item": np.arange(8),
                              "task": ("item", np.repeat([0, 1, 2, 3], 2)),
                              "input_dim": ("item", np.repeat([0, 0, 1, 1], 2)),
                              "output_dim": ("item", np.repeat([0, 1, 0, 1], 2))})
    return da.transpose("unit", "item", "seed", "time") if transpose else da


def test_dataarray_in_dataarray_out_keeps_leading_dims():
    a, b = hidden_array(0), hidden_array(1, units=3, transpose=True)  # any dim order
    for metric in (cka_similarity, procrustes_distance, rsa):
        out = metric(a, b)
        assert isinstance(out, xr.DataArray) and set(out.dims) == {"time", "seed"}
        np.testing.assert_allclose(out.transpose("time", "seed").values,
                                   metric(a.values, b.transpose(*a.dims).values))
    matrix = rsm(a)
    assert matrix.dims == ("time", "seed", "item", "item_b")
    assert list(matrix["task_b"].values) == list(a["task"].values)
    renamed = rsm(a.rename(item="stimulus", unit="neuron"), item_dim="stimulus",
                  unit_dim="neuron")
    np.testing.assert_allclose(renamed.values, matrix.values)
    result = change_alignment(a, 2 * a, a.isel(time=0, drop=True))
    assert isinstance(result, xr.Dataset) and set(result.data_vars) == {
        "correlation", "cosine", "relative_error"}
    assert result["correlation"].dims == ("time", "seed")
    groups = kmeans_groups(a, 2)
    assert groups.dims == ("time", "seed", "item")
    assert silhouette(a, groups).dims == ("time", "seed")


def test_task_similarity_reads_labels_from_coordinates():
    a = hidden_array(0)
    matrix = task_similarity(a)
    assert matrix.dims == ("time", "seed", "task", "task_b")
    assert list(matrix["input_dim"].values) == [0, 0, 1, 1]
    np.testing.assert_allclose(matrix.values, task_similarity(a.values, a["task"].values))
    summary = task_similarity_summary(matrix)
    assert isinstance(summary, xr.Dataset) and summary["shared_input"].dims == ("time", "seed")
    expected = task_similarity_summary(matrix.values, [0, 0, 1, 1], [0, 1, 0, 1])
    np.testing.assert_allclose(summary["shared_neither"].values, expected["shared_neither"])


def test_torch_input_gives_numpy():
    x = torch.randn(3, 8, 4, dtype=torch.float64)
    out = cka_similarity(x, x * 2)
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, 1.0)


@pytest.mark.parametrize("call, message", [
    (lambda: rsm(np.ones(4)), r"shape \(\.\.\., items, units\)"),
    (lambda: rsm(np.ones((3, 2)), "spearman"), "unknown rsm method 'spearman'"),
    (lambda: rsa(np.ones((5, 2)), np.ones((4, 2))), "5 items and b 4"),
    (lambda: rsa(np.ones((2, 2)), np.ones((2, 2))), "at least 3 items"),
    (lambda: rsa(np.ones((3, 2)), np.ones((3, 2)), precomputed=True), "must be square"),
    (lambda: cka_similarity(np.ones((5, 2)), np.ones((5, 2)), bandwidth=0), "bandwidth"),
    (lambda: cka_similarity(np.ones((3, 2)), np.ones((3, 2)), debiased=True), "at least 4"),
    (lambda: svcca_similarity(np.ones((5, 2)), np.ones((5, 2)), keep=0), "keep"),
    (lambda: silhouette(np.ones((4, 2)), [0, 0, 0, 0]), "between 2 and 3 groups"),
    (lambda: task_similarity(np.ones((4, 2))), "no task labels"),
    (lambda: task_similarity(np.ones((4, 2)), [0, 0, 1, 1], input_dim=[0, 0, 1, 1]),
     "label a DataArray result"),
    (lambda: cka_similarity(hidden_array(), hidden_array().rename(item="x")), "no 'item'"),
    (lambda: cka_similarity(hidden_array(), hidden_array().assign_coords(time=[0, 1, 2])),
     "different coordinates"),
])
def test_bad_input_raises_one_line_value_error(call, message):
    with pytest.raises(ValueError, match=message) as error:
        call()
    assert "\n" not in str(error.value)


# -- compare ----------------------------------------------------------------------------------

def result(seed, readout=False):
    """A small result in the repkernel.results layout."""
    rng = np.random.default_rng(seed)
    initial_rng = np.random.default_rng(0)  # both start from the same representation
    time = np.array([0, 10, 20])
    hidden0, output0 = initial_rng.normal(size=(6, 5)), initial_rng.normal(size=(6, 3))
    drift = np.array([0.0, 1.0, 2.0])[:, None, None]
    hidden = hidden0 + drift * rng.normal(size=(3, 6, 5))
    output = output0 + drift * rng.normal(size=(3, 6, 3))
    ds = xr.Dataset({"hidden": (("time", "item", "unit"), hidden),
                     "output": (("time", "item", "output_unit"), output),
                     "loss": ("time", rng.uniform(size=3))},
                    coords={"time": time, "stage": ("time", [0, 0, 1]), "item": np.arange(6),
                            "task": ("item", [0, 0, 1, 1, 2, 2])})
    if readout:
        ds = xr.concat([ds, ds.assign(hidden=ds.hidden * 1.5)], dim="readout")
        ds = ds.assign_coords(readout=["linear", "network"])
    return ds


def test_compare_of_hand_built_results():
    forecast, actual = result(1, readout=True), result(2)
    out = compare(forecast, actual)
    assert {"hidden_change_correlation", "hidden_change_cosine", "hidden_change_relative_error",
            "hidden_rsa", "hidden_cka_similarity", "hidden_procrustes_distance",
            "output_rsa", "output_procrustes_distance"} <= set(out.data_vars)
    assert set(out["hidden_cka_similarity"].dims) == {"time", "readout"}
    linear = forecast.sel(readout="linear")
    np.testing.assert_allclose(out["hidden_cka_similarity"].sel(readout="linear").values,
                               cka_similarity(linear.hidden.values, actual.hidden.values))
    expected = change_alignment(linear.output.values, actual.output.values,
                                actual.output.values[0])
    np.testing.assert_allclose(out["output_change_correlation"].sel(readout="linear")[1:],
                               expected["correlation"][1:])
    assert np.all(np.isnan(out["hidden_change_correlation"].sel(time=0)))

    same = compare(actual, actual, metrics=("rsa", "cka", "procrustes", "angular_shape"))
    np.testing.assert_allclose(same["hidden_rsa"], 1)
    np.testing.assert_allclose(same["hidden_cka_similarity"], 1)
    np.testing.assert_allclose(same["output_procrustes_distance"], 0, atol=1e-6)


@pytest.mark.parametrize("change, message", [
    (lambda ds: ds.assign_coords(time=[0, 10, 30]),
     r"checkpoints differ: a has steps \[0, 10, 30\], b has \[0, 10, 20\]"),
    (lambda ds: ds.isel(time=[0, 1]), "checkpoints differ"),
    (lambda ds: ds.assign_coords(item=np.arange(1, 7)), "items differ: coordinate 'item'"),
    (lambda ds: ds.assign_coords(task=("item", [0, 1, 1, 1, 2, 2])), "coordinate 'task'"),
    (lambda ds: ds.isel(unit=[0, 1]), "hidden has 2 units in a and 5 in b"),
    (lambda ds: ds.drop_vars("output"), "a has no variable 'output'"),
])
def test_compare_mismatch_errors(change, message):
    with pytest.raises(ValueError, match=message):
        compare(change(result(1)), result(2))


def test_compare_rejects_unknown_metrics_and_missing_step_zero():
    with pytest.raises(ValueError, match="unknown metric 'nope': choose from change_alignment"):
        compare(result(1), result(2), metrics=("nope",))
    late = result(1).isel(time=[1, 2])
    with pytest.raises(ValueError, match="step 0"):
        compare(late, result(2).isel(time=[1, 2]))
    out = compare(late, result(2).isel(time=[1, 2]), metrics=("cka",), variables=("hidden",))
    assert list(out.data_vars) == ["hidden_cka_similarity"]


def random_result(seed, items, units, steps=3, start=0):
    """hidden(time, item, unit) of a random walk from a random start, in the results layout."""
    walk = np.cumsum(random(seed, steps, items, units), axis=0)
    walk[0] = random(start, items, units)
    walk[1:] += walk[0]
    return xr.Dataset({"hidden": (("time", "item", "unit"), walk)},
                      coords={"time": np.arange(steps) * 10, "item": np.arange(items)})


@PROPERTY
@given(seed=seeds, items=st.integers(11, 16), units=st.integers(3, 5))  # CCA: 2 units < items
def test_every_registered_metric_of_a_result_with_itself_is_its_identity(seed, items, units):
    ds = random_result(seed, items, units)
    out = compare(ds, ds, metrics=tuple(METRICS), variables=("hidden",))
    expected = {f"hidden_{suffix}" for metric in METRICS.values() for suffix in metric.variables}
    assert set(out.data_vars) == expected
    for name, metric in METRICS.items():
        for suffix, variable in metric.variables.items():
            values = out[f"hidden_{suffix}"].isel(time=slice(1, None))  # step 0: no change yet
            np.testing.assert_allclose(values, variable.identity, atol=1e-6, err_msg=name)
            assert out[f"hidden_{suffix}"].attrs["long_name"] == f"hidden {variable.long_name}"


@PROPERTY
@given(seed=seeds, items=st.integers(11, 16), units=st.integers(3, 5))  # CCA: 2 units < items
def test_every_registered_metric_ignores_how_items_and_units_are_ordered(seed, items, units):
    a, b = random_result(seed, items, units, start=1), random_result(seed + 1, items, units)
    rng = np.random.default_rng(seed)
    order = {"item": rng.permutation(items), "unit": rng.permutation(units)}
    expected = compare(a, b, metrics=tuple(METRICS), variables=("hidden",))
    shuffled = compare(a.isel(order), b.isel(order), metrics=tuple(METRICS),
                       variables=("hidden",))
    xr.testing.assert_allclose(shuffled, expected, atol=1e-9)


def test_cli_compare_writes_netcdf_and_prints_the_last_checkpoint(tmp_path):
    import subprocess
    import sys

    from repkernel import results

    forecast_path, actual_path = tmp_path / "forecast.nc", tmp_path / "actual.nc"
    results.save(result(1, readout=True).assign_attrs(source="forecast"), forecast_path)
    results.save(result(2).assign_attrs(source="actual"), actual_path)
    out_path = tmp_path / "comparison.nc"

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "repkernel_cli", "compare", *args],
                              capture_output=True, text=True, timeout=300)

    done = cli(str(forecast_path), str(actual_path), "--metrics", "rsa,cka",
               "--out", str(out_path))
    assert done.returncode == 0, done.stderr
    assert "at step 20" in done.stdout and "hidden" in done.stdout
    written = results.load(out_path)
    expected = compare(result(1, readout=True), result(2), metrics=("rsa", "cka"))
    np.testing.assert_allclose(written["hidden_rsa"], expected["hidden_rsa"])
    assert f"{float(expected['output_rsa'].isel(time=-1).mean()):.4f}" in done.stdout
    assert written.attrs["a"] == "forecast" and written.attrs["version"]

    bad = cli(str(forecast_path), str(actual_path), "--metrics", "nope",
              "--out", str(tmp_path / "bad.nc"))
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "unknown metric 'nope'" in bad.stderr and not (tmp_path / "bad.nc").exists()
    missing = cli(str(tmp_path / "none.nc"), str(actual_path))
    assert missing.returncode == 1 and "no result file" in missing.stderr
