"""Data from arrays and labelled data: pattern_set from numpy / torch / xarray, a model's
representation compared with measured responses listed in another order, bootstrap RSA."""

import numpy as np
import pytest
import torch
import xarray as xr

import repkernel as rk
from repkernel.similarity import align_items

RNG = np.random.default_rng(0)
STIMULI = np.array([f"s{i}" for i in range(8)])


def _stimuli():
    values = RNG.normal(size=(8, 2, 2))
    return xr.DataArray(values, dims=("stimulus", "row", "column"),
                        coords={"stimulus": STIMULI, "category": ("stimulus", np.arange(8) % 3)})


def test_pattern_set_takes_numpy_torch_and_xarray_alike():
    x = _stimuli()
    y = RNG.normal(size=(8, 2))
    sets = [rk.pattern_set(x, y), rk.pattern_set(x.values, torch.as_tensor(y)),
            rk.pattern_set(torch.as_tensor(x.values.reshape(8, 4)), xr.DataArray(y))]
    for patterns in sets[1:]:
        assert torch.equal(patterns.x, sets[0].x) and torch.equal(patterns.y, sets[0].y)
    assert sets[0].x.shape == (8, 4) and sets[0].description["item_shape"] == [2, 2]
    np.testing.assert_array_equal(sets[0].labels["stimulus"], STIMULI)


def test_dataarray_item_coordinates_become_result_coordinates():
    patterns = rk.pattern_set(_stimuli(), RNG.normal(size=(8, 2)))
    net = rk.MLP([4, 5, 2], seed=0, dtype=torch.float64)
    actual = rk.train(net, rk.Curriculum((rk.Stage(patterns, 3, 0.1),)), patterns,
                      checkpoints=2)
    np.testing.assert_array_equal(actual.stimulus.values, STIMULI)
    np.testing.assert_array_equal(actual.category.values, np.arange(8) % 3)
    with pytest.raises(ValueError, match="label 'stimulus' of y differs"):
        rk.pattern_set(_stimuli(), _stimuli().isel(stimulus=slice(None, None, -1)).isel(row=0))


def _model_and_measured():
    patterns = rk.pattern_set(_stimuli(), RNG.normal(size=(8, 2)))
    net = rk.MLP([4, 6, 2], seed=1, dtype=torch.float64)
    model = rk.train(net, rk.Curriculum((rk.Stage(patterns, 1, 0.1),)), patterns,
                     checkpoints=[0]).hidden.isel(time=0, drop=True)
    order = RNG.permutation(8)
    units = RNG.permutation(6)  # other units, scaled and shifted: the same Pearson RSM
    measured = xr.DataArray(model.values[order][:, units] * 3.0 + 1.0,
                            dims=("stimulus", "neuron"), coords={"stimulus": STIMULI[order]})
    return model, measured


def test_measured_responses_in_another_order_are_aligned_by_the_shared_coordinate():
    model, measured = _model_and_measured()
    aligned = align_items(model, measured, "stimulus")[1].rename(neuron="unit")
    np.testing.assert_array_equal(aligned.stimulus.values, STIMULI)
    np.testing.assert_array_equal(aligned.category.values, np.arange(8) % 3)
    assert float(rk.rsa(model, aligned)) == pytest.approx(1.0)
    # the same measured data on the item dim, in its own order: rsa aligns it by itself
    reordered = measured.rename(stimulus="item", neuron="unit").assign_coords(
        item=np.arange(8), stimulus=("item", measured.stimulus.values))
    assert float(rk.rsa(model, reordered)) == pytest.approx(1.0)
    unaligned = rk.rsa(model.values, reordered.values)
    assert unaligned < 0.99  # the plain arrays are compared in their given order


@pytest.mark.parametrize("change, message", [
    (lambda m: m.isel(stimulus=slice(1, None)), r"only in a: \['s"),
    (lambda m: m.assign_coords(stimulus=["x"] + list(m.stimulus.values[1:])), "only in b"),
    (lambda m: m.assign_coords(stimulus=["s0"] * 8), "'stimulus' labels repeat"),
])
def test_measured_items_that_do_not_match_are_refused_in_one_line(change, message):
    model, measured = _model_and_measured()
    with pytest.raises(ValueError, match=message) as error:
        align_items(model, change(measured), "stimulus")
    assert "\n" not in str(error.value)
    item_dim = change(measured).rename(stimulus="item", neuron="unit").assign_coords(
        stimulus=("item", change(measured).stimulus.values))
    item_dim = item_dim.drop_vars("item").assign_coords(item=np.arange(item_dim.sizes["item"]))
    with pytest.raises(ValueError, match=message):
        rk.rsa(model, item_dim)


def test_rsa_bootstrap_is_a_percentile_interval_over_redrawn_items():
    a, b = RNG.normal(size=(10, 4)), RNG.normal(size=(10, 5))
    b[:, :4] += 2 * a
    result = rk.rsa(a, b, bootstrap=60, confidence=0.9, seed=3)
    # ground truth: redraw the items, recompute both RSMs on them, leave out pairs of copies
    generator, draws = np.random.default_rng(3), []
    rows, columns = np.triu_indices(10, 1)
    for _ in range(60):
        items = generator.integers(0, 10, 10)
        keep = items[rows] != items[columns]
        u = rk.rsm(a[items])[rows, columns][keep]
        v = rk.rsm(b[items])[rows, columns][keep]
        draws.append(np.corrcoef(u, v)[0, 1])
    np.testing.assert_allclose([result["rsa_low"], result["rsa_high"]],
                               np.quantile(draws, [0.05, 0.95]), rtol=1e-10)
    assert result["rsa"] == pytest.approx(rk.rsa(a, b))
    assert result["rsa_low"] <= result["rsa"] <= result["rsa_high"]
    model, measured = _model_and_measured()
    labelled = rk.rsa(model, align_items(model, measured, "stimulus")[1].rename(neuron="unit"),
                      bootstrap=20)
    assert set(labelled.data_vars) == {"rsa", "rsa_low", "rsa_high"}
    assert labelled.attrs["bootstrap"] == 20
    with pytest.raises(ValueError, match="bootstrap must be a number of draws"):
        rk.rsa(a, b, bootstrap=0)
