"""Kernels against independent ground truth: finite differences, per-example autograd, one step of
gradient descent; structured == generic; matrix-free == dense; memory and dtype behaviour."""

import copy
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import repkernel as rk
from repkernel import Curriculum, MultitaskEnvironment, MultitaskNetwork, Stage, kernels
from repkernel.eigen import (
    components_by,
    components_by_input_feature,
    group_agreement,
    kernel_groups,
)
from repkernel.kernels import kernel_eigenvectors, loss_kernel_matrices
from repkernel.networks import RepresentationNetwork

ENV = MultitaskEnvironment(3, 2)


class TwoPath(RepresentationNetwork):
    """A network the structured path does not know (a residual hidden layer): generic only."""

    def __init__(self, n_in=3, hidden=4, n_out=2, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w1 = torch.nn.Parameter(torch.randn(hidden, n_in, generator=g) / 2)
        self.w2 = torch.nn.Parameter(torch.randn(hidden, hidden, generator=g) / 2)
        self.w3 = torch.nn.Parameter(torch.randn(n_out, hidden, generator=g) / 2)
        self.config = {"kind": "two_path"}

    @property
    def hidden_sizes(self):
        return (self.w1.shape[0], self.w2.shape[0])

    def forward(self, x, c=None):
        h1 = torch.tanh(x @ self.w1.T)
        h2 = torch.sigmoid(h1 @ self.w2.T) + h1
        return (h1, h2), h2 @ self.w3.T


def multitask(**kwargs):
    return MultitaskNetwork(ENV, hidden=6, init_scale=0.5, **kwargs)


def dense_data(n, n_in=3, n_out=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return rk.pattern_set(torch.randn(n, n_in, generator=g), torch.randn(n, n_out, generator=g))


# name -> (network factory, probes, train); several hidden layers, partial training
CASES = {
    "multitask": (multitask, ENV.patterns(k=(1, 2), stimuli=3), ENV.sample(7, {1: .5, 2: .5})),
    "multitask-linear-out": (lambda: multitask(output_activation="linear"),
                             ENV.patterns(k=1, stimuli=2), ENV.sample(5, seed=2)),
    "multitask-readout": (lambda: multitask().set_trainable(["hidden_output", "task_output"]),
                          ENV.patterns(k=1, stimuli=2), ENV.sample(5, seed=3)),
    "multitask-first": (lambda: multitask().set_trainable(["stimulus_hidden"]),
                        ENV.patterns(k=1, stimuli=2), ENV.sample(5, seed=4)),
    "mlp-2-hidden": (lambda: rk.MLP([3, 5, 4, 2], activation="tanh"), dense_data(6),
                     dense_data(4, seed=1)),
    "mlp-sigmoid-out": (lambda: rk.MLP([3, 5, 4, 2], activation="sigmoid",
                                       output_activation="sigmoid"),
                        dense_data(5), dense_data(4, seed=1)),
    "mlp-relu": (lambda: rk.MLP([3, 6, 2], activation="relu"), dense_data(5),
                 dense_data(4, seed=1)),
    "mlp-partial": (lambda: rk.MLP([3, 5, 4, 2], activation="tanh").set_trainable(
        ["layers.1.weight", "layers.2.bias"]), dense_data(5), dense_data(4, seed=1)),
    "mlp-first-bias": (lambda: rk.MLP([3, 5, 4, 2], activation="tanh").set_trainable(
        ["layers.0.bias"]), dense_data(5), dense_data(4, seed=1)),
    "deep-linear": (lambda: rk.DeepLinear([3, 4, 5, 2], init_scale=1.0), dense_data(5),
                    dense_data(4, seed=1)),
}
STRUCTURED = list(CASES)


def loop_jacobians(net, patterns):
    """Ground truth: one torch.autograd.grad call per (pattern, output or hidden unit)."""
    params = list(net.trainable_parameters().values())
    x, c, _ = patterns.to(dtype=torch.float64)

    def row(value):
        grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
        return torch.cat([torch.zeros(p.numel()) if g is None else g.reshape(-1)
                          for g, p in zip(grads, params)])

    outputs, hidden = [], []
    for i in range(x.shape[0]):
        hs, f = net(x[i:i + 1], None if c is None else c[i:i + 1])
        outputs.append(torch.stack([row(f[0, o]) for o in range(f.shape[1])]))
        hidden.append([torch.stack([row(h[0, u]) if h.requires_grad else
                                    torch.zeros(net.n_parameters) for u in range(h.shape[1])])
                       for h in hs])
    return torch.stack(outputs), tuple(torch.stack(layer) for layer in zip(*hidden))


def close(a, b, rtol=1e-11):
    if isinstance(a, tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            close(x, y, rtol)
        return
    scale = max(float(b.abs().max()), 1e-300)
    assert a.shape == b.shape, (a.shape, b.shape)
    assert float((a - b).abs().max()) <= rtol * max(scale, 1.0), float((a - b).abs().max())


# -- ground truth -----------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["multitask", "mlp-2-hidden", "multitask-first"])
@pytest.mark.parametrize("method", ["structured", "generic"])
def test_jacobians_match_finite_differences(case, method):
    factory, probes, _ = CASES[case]
    net = factory()
    jac = kernels.jacobians(net, probes, method=method)
    fn, theta = kernels.network_function(net)
    x, c, _ = probes.to()
    eps = 1e-6
    steps = eps * torch.eye(theta.numel())
    with torch.no_grad():  # central differences, every parameter at once
        plus = torch.func.vmap(fn, in_dims=(0, None, None))(theta + steps, x, c)
        minus = torch.func.vmap(fn, in_dims=(0, None, None))(theta - steps, x, c)
    close(jac.output, ((plus[1] - minus[1]) / (2 * eps)).permute(1, 2, 0), rtol=1e-7)
    for layer, (hp, hm) in enumerate(zip(plus[0], minus[0])):
        close(jac.hidden[layer], ((hp - hm) / (2 * eps)).permute(1, 2, 0), rtol=1e-7)


@pytest.mark.parametrize("case", ["multitask", "mlp-2-hidden", "multitask-readout", "deep-linear"])
def test_kernels_match_a_per_example_autograd_loop(case):
    factory, probes, train = CASES[case]
    net = factory()
    jp_f, jp_h = loop_jacobians(net, probes)
    jt_f, _ = loop_jacobians(net, train)
    close(kernels.ntk_matrix(net, probes, train), torch.einsum("iop,jqp->iojq", jp_f, jt_f))
    close(kernels.pseudo_kernel_matrix(net, probes, train),
          tuple(torch.einsum("iup,jqp->iujq", jh, jt_f) for jh in jp_h))
    jac = kernels.jacobians(net, probes)
    close(jac.output, jp_f)
    close(jac.hidden, jp_h)
    assert kernels.jacobians(net, probes, hidden=False).hidden == ()


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("case", ["multitask", "mlp-2-hidden"])
def test_one_step_identity_is_first_order_in_the_learning_rate(case, reduction):
    """sum_j PNTK(x, x_j) = the change of f (and h) after one full-batch step, error O(lr^2)."""
    factory, probes, train = CASES[case]
    net = factory()
    base = 0.2 if reduction == "mean" else 0.05
    errors = {}
    for lr in (base, base / 2):
        stage = Stage(train, steps=1, lr=lr, reduction=reduction)
        actual = rk.train(net, Curriculum((stage,)), probes, checkpoints=[0, 1])
        change_f = actual.output.isel(time=1) - actual.output.isel(time=0)
        predicted_f = kernels.loss_weighted_kernel(net, probes, stage=stage).sum("train_item")
        predicted_h = kernels.loss_weighted_kernel(net, probes, stage=stage,
                                                   target="hidden").sum("train_item")
        change_h = actual.hidden.isel(time=1) - actual.hidden.isel(time=0)
        errors[lr] = [(float(np.nanmax(abs(p.values - a.values))),  # NaN: layer padding
                       float(np.nanmax(abs(a.values))))
                      for p, a in ((predicted_f, change_f), (predicted_h, change_h))]
    for (e_big, size), (e_small, _) in zip(errors[base], errors[base / 2]):
        assert e_big < 0.05 * size
        assert 3.5 < e_big / e_small < 4.5  # halving lr quarters the error: second order


def test_ntk_is_symmetric_positive_semidefinite():
    factory, probes, _ = CASES["multitask"]
    theta = kernels.ntk_matrix(factory(), probes)
    n, n_out = theta.shape[:2]
    flat = theta.reshape(n * n_out, n * n_out)
    close(flat, flat.T, rtol=1e-14)
    eigenvalues = torch.linalg.eigvalsh(flat)
    assert float(eigenvalues.min()) > -1e-12 * float(eigenvalues.max())


def test_pseudo_kernel_is_asymmetric_and_keeps_its_argument_order():
    factory, probes, train = CASES["multitask"]
    net = factory()
    (pi,) = kernels.pseudo_kernel_matrix(net, probes, train)
    (swapped,) = kernels.pseudo_kernel_matrix(net, train, probes)
    jp, jt = kernels.jacobians(net, probes), kernels.jacobians(net, train)
    close(pi, torch.einsum("iup,jqp->iujq", jp.hidden[0], jt.output))  # J_h(probes) J_f(train)^T
    close(swapped, torch.einsum("iup,jqp->iujq", jt.hidden[0], jp.output))
    (square,) = kernels.pseudo_kernel_matrix(net, probes, probes)
    assert not torch.allclose(square, square.permute(2, 1, 0, 3))  # Pi(x, x') != Pi(x', x)
    da = kernels.pseudo_kernel(net, probes, train)
    assert da.dims == ("item", "unit", "train_item", "output_unit")
    assert da.sizes == {"item": len(probes), "unit": 6, "train_item": len(train),
                        "output_unit": ENV.n_outputs}
    np.testing.assert_array_equal(da.train_task, train.labels["task"])
    np.testing.assert_array_equal(da.task, probes.labels["task"])


# -- implementations agree --------------------------------------------------------------------


@pytest.mark.parametrize("case", STRUCTURED)
def test_structured_equals_generic(case):
    factory, probes, train = CASES[case]
    net = factory()
    assert kernels.structured_supported(net)

    def both(fn, *args, **kwargs):
        return [fn(net, *args, method=m, **kwargs) for m in ("structured", "generic")]

    s, g = both(kernels.jacobians, probes)
    close(s.output, g.output)
    close(s.hidden, g.hidden)
    close(*both(kernels.ntk_matrix, probes, train))
    close(*both(kernels.ntk_matrix, probes))
    close(*both(kernels.pseudo_kernel_matrix, probes, train))
    a = torch.randn(len(train), train.n_outputs, 3, generator=torch.Generator().manual_seed(0))
    close(*both(kernels.jacobian_transpose_product, train, a))
    d = torch.randn(net.n_parameters, 2, generator=torch.Generator().manual_seed(1))
    (hs, fs), (hg, fg) = both(kernels.jacobian_product, probes, d)
    close(fs, fg)
    close(hs, hg)
    for target in ("output", "hidden"):
        close(*both(kernels.kernel_product, probes, train, a, target=target))
        close(*both(kernels.weighted_kernel_matrix, probes, train, a[..., 0], target=target))


def test_matrix_free_products_equal_the_dense_kernels():
    factory, probes, train = CASES["mlp-2-hidden"]
    net = factory()
    a = torch.randn(len(train), train.n_outputs, 5, generator=torch.Generator().manual_seed(2))
    dense_f = kernels.ntk_matrix(net, probes, train)
    dense_h = kernels.pseudo_kernel_matrix(net, probes, train)
    for block_size in (None, 1, 3):
        close(kernels.kernel_product(net, probes, train, a, block_size=block_size),
              torch.einsum("iojq,jqm->iom", dense_f, a))
        close(kernels.kernel_product(net, probes, train, a, target="hidden",
                                     block_size=block_size),
              tuple(torch.einsum("iujq,jqm->ium", pi, a) for pi in dense_h))
    jac = kernels.jacobians(net, train)
    close(kernels.jacobian_transpose_product(net, train, a, block_size=2),
          torch.einsum("iop,iom->pm", jac.output, a))
    d = torch.randn(net.n_parameters, 4, generator=torch.Generator().manual_seed(3))
    hidden, output = kernels.jacobian_product(net, train, d, block_size=3)
    close(output, jac.output @ d)
    close(hidden, tuple(j @ d for j in jac.hidden))


def test_unknown_networks_take_the_generic_path():
    net, probes, train = TwoPath(), dense_data(4), dense_data(3, seed=1)
    assert not kernels.structured_supported(net)
    jp_f, jp_h = loop_jacobians(net, probes)
    jt_f, _ = loop_jacobians(net, train)
    close(kernels.ntk_matrix(net, probes, train), torch.einsum("iop,jqp->iojq", jp_f, jt_f))
    close(kernels.pseudo_kernel_matrix(net, probes, train),
          tuple(torch.einsum("iup,jqp->iujq", jh, jt_f) for jh in jp_h))
    with pytest.raises(ValueError, match="method='generic'"):
        kernels.ntk_matrix(net, probes, method="structured")
    da = kernels.pseudo_kernel(net, probes, train)
    assert da.dims == ("layer", "item", "unit", "train_item", "output_unit")
    assert da.attrs["method"] == "generic"


def test_kernel_product_never_forms_a_dense_kernel_over_4_gb():
    """Dense Pi would be 1000 x 200 x 1000 x 9 x 8 bytes = 14.4 GB; the product runs in blocks
    within a small memory budget (peak resident memory growth measured in a fresh process)."""
    script = textwrap.dedent("""
        import json, resource, torch
        torch.set_num_threads(2)
        torch.set_default_dtype(torch.float64)
        import repkernel as rk
        from repkernel.kernels import kernel_product

        def peak_mb():  # resident-set high-water mark since the last reset
            with open("/proc/self/status") as status:
                line = next(l for l in status if l.startswith("VmHWM"))
            return int(line.split()[1]) / 1024

        env = rk.MultitaskEnvironment(4, 3, 3)
        net = rk.MultitaskNetwork(env, hidden=200)
        probes, train = env.sample(1000, seed=1), env.sample(1000, seed=2)
        a = torch.randn(1000, 9, 4)
        kernel_product(net, probes[:10], train[:10], a[:10], target="hidden")  # warm up
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # reset the high-water mark to the current resident set
        before = peak_mb()
        (out,) = kernel_product(net, probes, train, a, target="hidden", block_size=256)
        out_f = kernel_product(net, probes, train, a, block_size=256)
        print(json.dumps({"growth_mb": peak_mb() - before, "shape": list(out.shape),
                          "shape_f": list(out_f.shape), "finite": bool(out.isfinite().all())}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=True)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert 1000 * 200 * 1000 * 9 * 8 > 4e9
    assert report["shape"] == [1000, 200, 4] and report["shape_f"] == [1000, 9, 4]
    assert report["finite"]
    assert report["growth_mb"] < 100, report


# -- device, dtype, arguments -----------------------------------------------------------------


def test_float32_in_float32_out():
    factory, probes, train = CASES["multitask"]
    net64 = factory()
    net32 = copy.deepcopy(net64).to(torch.float32)
    a = torch.randn(len(train), train.n_outputs, 2)
    results = [
        kernels.jacobians(net32, probes).output, kernels.ntk_matrix(net32, probes, train),
        kernels.pseudo_kernel_matrix(net32, probes, train)[0],
        kernels.kernel_product(net32, probes, train, a),
        kernels.jacobian_transpose_product(net32, train, a),
        kernels.jacobian_product(net32, probes, torch.randn(net32.n_parameters, 2))[1],
    ]
    assert all(r.dtype == torch.float32 for r in results)
    asked = kernels.ntk_matrix(net64, probes, train, dtype=torch.float32)
    assert asked.dtype == torch.float32
    assert next(net64.parameters()).dtype == torch.float64  # the caller's network is untouched
    close(asked.double(), kernels.ntk_matrix(net64, probes, train), rtol=1e-5)
    assert kernels.ntk(net32, probes).dtype == np.float32
    assert kernels.loss_weighted_kernel(net32, probes, train, lr=0.1).dtype == np.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_results_stay_on_the_device():
    factory, probes, train = CASES["multitask"]
    net = factory().cuda()
    assert kernels.ntk_matrix(net, probes, train).is_cuda
    assert kernels.kernel_product(net, probes, train,
                                  torch.randn(len(train), train.n_outputs, 2)).is_cuda
    assert kernels.ntk_matrix(factory(), probes, device="cuda").is_cuda


def test_bad_arguments_raise_one_clear_value_error():
    factory, probes, train = CASES["multitask"]
    net = factory()
    with pytest.raises(ValueError, match="method must be one of"):
        kernels.ntk_matrix(net, probes, method="fast")
    with pytest.raises(ValueError, match="target must be one of"):
        kernels.kernel_product(net, probes, train, torch.zeros(len(train), 6, 1), target="h")
    with pytest.raises(ValueError, match=r"shape \(n, O, m\)"):
        kernels.kernel_product(net, probes, train, torch.zeros(len(train), 6))
    with pytest.raises(ValueError, match=r"shape \(P, m\)"):
        kernels.jacobian_product(net, probes, torch.zeros(3, 1))
    with pytest.raises(ValueError, match="block_size"):
        kernels.kernel_product(net, probes, train, torch.zeros(len(train), 6, 1), block_size=0)
    with pytest.raises(ValueError, match="not both"):
        kernels.loss_weighted_kernel(net, probes, stage=Stage(train, 1, 0.1), lr=0.1)
    with pytest.raises(ValueError, match="learning rate"):
        kernels.loss_weighted_kernel(net, probes, train)
    with pytest.raises(ValueError, match="no trainable"):
        kernels.ntk_matrix(copy.deepcopy(net).requires_grad_(False), probes)
    with pytest.raises(ValueError, match="PatternSet"):
        kernels.ntk_matrix(net, probes.x)


# -- xarray API -------------------------------------------------------------------------------


def test_ntk_dataarray_layout():
    factory, probes, train = CASES["multitask"]
    net = factory()
    da = kernels.ntk(net, probes, train)
    assert da.dims == ("item", "output_unit", "item_b", "output_unit_b")
    np.testing.assert_array_equal(da.task_b, train.labels["task"])
    np.testing.assert_allclose(da.values, kernels.ntk_matrix(net, probes, train).numpy())
    assert da.attrs["method"] == "structured"
    assert kernels.ntk(net, probes).sizes["item_b"] == len(probes)


def test_loss_weighted_kernel_forms():
    factory, probes, train = CASES["mlp-2-hidden"]
    net = factory()
    lw = kernels.loss_weighted_kernel(net, probes, train, lr=0.3, reduction="sum")
    assert lw.dims == ("item", "output_unit", "train_item")
    (_, f) = net.represent(train)
    g = (f - train.y).detach()
    theta = kernels.ntk_matrix(net, probes, train)
    np.testing.assert_allclose(lw.values, -0.3 * torch.einsum("iojq,jq->ioj", theta, g).numpy(),
                               rtol=1e-12, atol=1e-15)
    mean = kernels.loss_weighted_kernel(net, probes, train, lr=0.3)
    np.testing.assert_allclose(mean.values * len(train), lw.values, rtol=1e-12)
    hidden = kernels.loss_weighted_kernel(net, probes, train, lr=0.3, target="hidden")
    assert hidden.dims == ("layer", "item", "unit", "train_item")
    bce = kernels.loss_weighted_kernel(net, probes, train, lr=0.3, loss="bce")
    assert bce.attrs["loss"] == "bce"


# -- eigen-analysis ---------------------------------------------------------------------------


def test_kernel_eigenvectors_solve_the_eigenproblem_and_group():
    env = MultitaskEnvironment(2, 2)
    net = MultitaskNetwork(env, hidden=8, init_scale=1.0)
    train = env.sample(40, seed=0)
    eig = kernel_eigenvectors(net, train, n_eigenvectors=2)
    assert eig.dims == ("output_unit", "rank", "item")
    assert eig.attrs["decomposition"] == "eig"
    matrices = loss_kernel_matrices(net, train).numpy()
    for o in range(env.n_outputs):
        v = eig.isel(output_unit=o, rank=0).values
        lam = float(eig.eigenvalue.isel(output_unit=o, rank=0))
        if abs(float(eig.eigenvalue_imag.isel(output_unit=o, rank=0))) < 1e-12:
            np.testing.assert_allclose(matrices[o] @ v, lam * v, atol=1e-10 * abs(lam))
        assert np.isclose(np.linalg.norm(v), 1.0)
        assert v[np.abs(v).argmax()] > 0
    stage = Stage(train, 1, 0.1)
    np.testing.assert_allclose(kernel_eigenvectors(net, train, stage, n_eigenvectors=2), eig)
    by_task = components_by(eig, "task")
    assert by_task.dims == ("output_unit", "rank", "task")
    grid = components_by_input_feature(eig, train, by="task")
    assert grid.dims == ("output_unit", "rank", "task", "input_feature")
    assert list(grid.dimension.values) == [0, 0, 1, 1]
    groups = kernel_groups(eig, n_clusters=4)
    assert -1 <= groups.silhouette <= 1 and groups.labels.sizes["item"] == len(train)
    (h,), _ = net.represent(train)
    import xarray as xr
    ari = group_agreement(groups.labels, xr.DataArray(h.detach().numpy(), dims=("item", "unit")))
    assert -1 <= ari <= 1
    assert groups.labels.attrs["silhouette"] == groups.silhouette
    held_out = kernel_eigenvectors(net, env.sample(10, seed=5), train, n_eigenvectors=1)
    assert held_out.attrs["decomposition"] == "svd" and held_out.sizes["item"] == 10
    with pytest.raises(ValueError, match="decomposition='svd'"):
        kernel_eigenvectors(net, env.sample(10, seed=5), train, decomposition="eig")


def test_group_agreement_over_training_matches_the_recorded_hidden():
    """ARI of kernel groups vs k-means of the hidden at each checkpoint, recomputed from the
    recorded weights, equals the ARI on the hidden the trainer recorded itself."""

    from repkernel import Curriculum, train
    from repkernel.eigen import eigen_analysis, group_agreement_over_training

    env = MultitaskEnvironment(2, 2, 2)
    net = MultitaskNetwork(env, hidden=12, init_scale=0.3, seed=1)
    patterns = env.patterns(k=1)
    curriculum = Curriculum((Stage(patterns, 40, 0.5),))
    result = train(net, curriculum, patterns, checkpoints=3)
    labels = eigen_analysis(net, patterns, curriculum.stages[0], 1, clusters=4)["kernel_group"]
    over = group_agreement_over_training(net, result, patterns, labels)
    assert over.dims == ("time",) and list(over.time.values) == list(result.time.values)
    for t in range(3):
        expected = group_agreement(labels, result.hidden.isel(time=t).drop_vars(
            [c for c in result.hidden.coords if c not in ("item", "unit")]))
        np.testing.assert_allclose(float(over[t]), expected, atol=1e-12)
    with pytest.raises(ValueError, match="no weights"):
        group_agreement_over_training(net, result.drop_vars("weights"), patterns, labels)
    with pytest.raises(ValueError, match="kernel labels"):
        group_agreement_over_training(net, result, patterns, labels[:3])


# -- CLI --------------------------------------------------------------------------------------


def test_kernel_command_writes_netcdf(tmp_path):
    import xarray as xr

    cli = [sys.executable, "-m", "repkernel_cli", "kernel", "--hidden", "20", "--n-train", "60"]
    path = tmp_path / "eigen.nc"
    done = subprocess.run([*cli, "--clusters", "4", "-o", str(path)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    with xr.open_dataset(path) as ds:
        assert ds.eigenvector.dims == ("output_unit", "rank", "item")
        assert ds.by_input_feature.sizes["input_feature"] == 12
        assert ds.attrs["source"] == "kernel" and -1 <= ds.attrs["silhouette"] <= 1
    big = subprocess.run([*cli, "--what", "pseudo", "--max-gb", "0.001", "-o",
                          str(tmp_path / "pk.nc")], capture_output=True, text=True, timeout=120)
    assert big.returncode == 1 and "--max-gb" in big.stderr and "Traceback" not in big.stderr


def test_patterns_that_do_not_fit_the_network_are_named():
    factory, probes, _ = CASES["mlp-2-hidden"]
    net = factory()
    with pytest.raises(ValueError, match="probe patterns do not fit the network"):
        kernels.ntk_matrix(net, dense_data(3, n_in=5))
    with pytest.raises(ValueError, match="training patterns have 3 targets"):
        kernels.pseudo_kernel_matrix(net, probes, dense_data(3, n_out=3))
    with pytest.raises(ValueError, match="training patterns have 3 targets"):
        kernels.loss_weighted_kernel(net, probes, dense_data(3, n_out=3), lr=0.1)


@pytest.mark.parametrize("method", ["structured", "generic"])
@pytest.mark.parametrize("trainable", ["all", ["task_hidden"], ["hidden_output", "task_output"]])
def test_jacobian_operator_equals_explicit_jacobians(method, trainable):
    from repkernel.kernels import JacobianOperator

    env = rk.MultitaskEnvironment(3, 3)
    net = rk.MultitaskNetwork(env, hidden=9, init_scale=1.0).set_trainable(trainable)
    patterns = env.sample(23, {1: 0.5, 2: 0.5})
    operator = JacobianOperator(net, patterns, method=method, block_size=5)
    jac = rk.jacobians(net, patterns)
    d = torch.randn(net.n_parameters, 3, dtype=torch.float64)
    a = torch.randn(23, 9, 2, dtype=torch.float64)
    hidden, output = operator.forward(d, hidden=True)
    torch.testing.assert_close(output, torch.einsum("iop,pm->iom", jac.output, d))
    torch.testing.assert_close(hidden[0], torch.einsum("iup,pm->ium", jac.hidden[0], d))
    torch.testing.assert_close(operator.transpose(a), torch.einsum("iop,iom->pm", jac.output, a))
    kernel = rk.ntk_matrix(net, patterns)
    torch.testing.assert_close(operator.kernel(a), torch.einsum("iojq,jqm->iom", kernel, a))
    with torch.no_grad():  # the operator keeps the weights it was built at
        next(iter(net.parameters())).add_(1.0)
    torch.testing.assert_close(operator.forward(d)[1], output)


def test_jacobian_operator_on_deep_mlps_with_frozen_groups():
    from repkernel.kernels import JacobianOperator

    net = rk.MLP([3, 5, 4, 2], activation="tanh").set_trainable(["layers.0.bias",
                                                                  "layers.2.weight"])
    patterns = rk.pattern_set(torch.randn(17, 3), torch.randn(17, 2))
    operator = JacobianOperator(net, patterns, block_size=4)
    jac = rk.jacobians(net, patterns)
    d = torch.randn(net.n_parameters, 2, dtype=torch.float64)
    hidden, output = operator.forward(d, hidden=True)
    torch.testing.assert_close(output, torch.einsum("iop,pm->iom", jac.output, d))
    for h, j in zip(hidden, jac.hidden):
        torch.testing.assert_close(h, torch.einsum("iup,pm->ium", j, d))
    a = torch.randn(17, 2, 3, dtype=torch.float64)
    torch.testing.assert_close(operator.transpose(a), torch.einsum("iop,iom->pm", jac.output, a))


def test_generic_path_builds_hidden_jacobians_only_when_asked():
    net = rk.MLP([3, 6, 2], activation="tanh")
    patterns = rk.pattern_set(torch.randn(5, 3), torch.randn(5, 2))
    only_output = rk.jacobians(net, patterns, method="generic", hidden=False)
    both = rk.jacobians(net, patterns, method="generic")
    assert only_output.hidden == () and len(both.hidden) == 1
    torch.testing.assert_close(only_output.output, both.output)
    torch.testing.assert_close(rk.ntk_matrix(net, patterns, method="generic"),
                               rk.ntk_matrix(net, patterns, method="structured"))
