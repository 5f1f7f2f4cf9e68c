"""repkernel.similarity.participation_ratio and the dimensionality metric: closed forms
(isotropic, rank one), an independent reference (numpy's covariance eigenvalues), invariances
and bounds as hypothesis properties, DataArray plumbing and bad input."""

import numpy as np
import pytest
import scipy.stats
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from repkernel.similarity import compare, dimensionality_ratio, participation_ratio

PROPERTY = settings(max_examples=25, deadline=None)


def isotropic(items, units, rank, seed):
    """Centred items whose covariance has ``rank`` equal nonzero eigenvalues."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(np.c_[np.ones(items), rng.normal(size=(items, rank))])[0][:, 1:]
    rows = scipy.stats.ortho_group.rvs(units, random_state=seed)[:rank]
    return 3.0 * basis @ rows + rng.normal(size=units)  # plus a translation


@pytest.mark.parametrize("rank", [1, 2, 5, 10])
def test_isotropic_covariance_gives_its_rank(rank):
    x = isotropic(20, 12, rank, seed=rank)
    out = participation_ratio(x)
    np.testing.assert_allclose(out["participation_ratio"], rank, rtol=1e-10)
    assert out["components"] == np.ceil(0.9 * rank)  # 9 of 10 equal eigenvalues hold 90 %


def test_rank_one_gives_one():
    rng = np.random.default_rng(0)
    x = np.outer(rng.normal(size=15), rng.normal(size=7))
    out = participation_ratio(x, variance=0.99)
    np.testing.assert_allclose(out["participation_ratio"], 1.0, rtol=1e-10)
    assert out["components"] == 1


def test_matches_the_covariance_eigenvalues_of_numpy():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 30, 8)) @ np.diag([5.0, 3, 2, 1, 1, 0.5, 0.1, 0.01])
    out = participation_ratio(x, variance=0.8)
    for one, ratio, components in zip(x, out["participation_ratio"], out["components"]):
        lam = np.sort(np.linalg.eigvalsh(np.cov(one, rowvar=False)))[::-1]
        np.testing.assert_allclose(ratio, lam.sum() ** 2 / (lam**2).sum(), rtol=1e-10)
        assert components == 1 + np.searchsorted(np.cumsum(lam) / lam.sum(), 0.8)


@PROPERTY
@given(seed=st.integers(0, 2**31), items=st.integers(2, 12), units=st.integers(1, 12),
       scale=st.floats(1e-3, 1e3))
def test_bounds_and_invariance_to_rotation_scaling_and_translation(seed, items, units, scale):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(items, units))
    rotation = scipy.stats.ortho_group.rvs(units, random_state=seed) if units > 1 else -np.eye(1)
    moved = scale * x @ rotation + rng.normal(size=units)
    a, b = participation_ratio(x), participation_ratio(moved)
    np.testing.assert_allclose(a["participation_ratio"], b["participation_ratio"], rtol=1e-8)
    assert a["components"] == b["components"]
    assert 1 - 1e-9 <= a["participation_ratio"] <= min(items - 1, units) + 1e-9
    assert 1 <= a["components"] <= min(items - 1, units)


def test_identical_items_have_no_dimensionality():
    out = participation_ratio(np.ones((5, 3)))
    assert np.isnan(out["participation_ratio"]) and np.isnan(out["components"])


def test_dataarrays_keep_leading_dims_in_any_order():
    rng = np.random.default_rng(2)
    values = rng.normal(size=(3, 10, 6))
    da = xr.DataArray(values, dims=("time", "item", "unit"), coords={"time": [0, 5, 9]})
    out = participation_ratio(da.transpose("unit", "time", "item"))
    assert isinstance(out, xr.Dataset) and out["participation_ratio"].dims == ("time",)
    np.testing.assert_allclose(out["participation_ratio"], participation_ratio(values)[
        "participation_ratio"])


def test_dimensionality_ratio_in_compare():
    rng = np.random.default_rng(3)
    low = rng.normal(size=(2, 12, 1)) @ rng.normal(size=(1, 5)) + 0.01 * rng.normal(
        size=(2, 12, 5))
    high = rng.normal(size=(2, 12, 5))

    def result(hidden):
        return xr.Dataset({"hidden": (("time", "item", "unit"), hidden)},
                          coords={"time": [0, 1], "item": np.arange(12)})

    out = compare(result(low), result(high), metrics=("dimensionality",), variables=("hidden",))
    expected = dimensionality_ratio(low, high)
    np.testing.assert_allclose(out["hidden_participation_ratio_ratio"],
                               expected["participation_ratio_ratio"])
    assert (out["hidden_participation_ratio_ratio"] < 0.5).all()
    assert (out["hidden_components_difference"] < 0).all()


@pytest.mark.parametrize("variance", [0, 1.5, "all"])
def test_bad_variance_is_one_line(variance):
    with pytest.raises(ValueError, match="variance must be a fraction") as error:
        participation_ratio(np.zeros((4, 3)), variance=variance)
    assert "\n" not in str(error.value)


def test_too_few_dims_is_one_line():
    with pytest.raises(ValueError, match=r"\(\.\.\., items, units\)") as error:
        participation_ratio(np.zeros(4))
    assert "\n" not in str(error.value)


def test_padding_units_count_as_absent_and_other_nans_give_nan():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(9, 4))
    padded = np.c_[x, np.full((9, 2), np.nan)]
    np.testing.assert_allclose(participation_ratio(padded)["participation_ratio"],
                               participation_ratio(x)["participation_ratio"])
    padded[0, 0] = np.nan
    assert np.isnan(participation_ratio(padded)["participation_ratio"])
