"""The forecast: integrate the linearized training dynamics over a curriculum (DESIGN.md section 4).

Linear model around a center theta_c (theta_0 unless re-linearized):
    f_lin(x) = f_c(x) + J_c(x) (theta - theta_c),   h_lin(x) = h_c(x) + J_h,c(x) (theta - theta_c).
Expected update of one step of a stage (repkernel.curriculum): every pattern gradient enters with
weight rho = Stage.drift_rate / n (rho = eta / n for full-batch mean reduction, eta for sum), so
    theta_{k+1} = theta_k - rho J_s^T g(f_lin(X_s)),   g = grad_f l (repkernel.losses).
Minibatch and online stages are forecast by this full-batch drift (the expected update); their
fluctuations around it are not modelled.

MSE, closed form (g = r, the residual): with Theta_ss = J_s J_s^T = U diag(lam) U^T,
    r_k = U diag((1 - rho lam)^k) U^T r_0,   theta_k = theta_start - J_s^T U diag(c_k) U^T r_0,
    c_k = (1 - (1 - rho lam)^k) / lam   (-> rho k as lam -> 0; null directions do not move).
Discrete time is exact for gradient descent on the linear model and diverges iff rho lam_max > 2,
i.e. eta > 2n / lam_max for full-batch mean reduction (ValueError stating the bound). Continuous
time (gradient flow) replaces (1 - rho lam)^k by exp(-rho lam k). The time axis is always in
steps k; gradient-flow time is t = eta k.
One factorization per stage (or segment) serves every checkpoint. The space factorized is the
smaller of dual (Theta_ss, nO x nO) and primal (G = J_s^T J_s, P x P, theta_k = theta_start -
c_k(G) J_s^T r_0). Up to DENSE_LIMIT it is a dense eigendecomposition; above, Lanczos on the
starting vector factorizes Theta_ss on its Krylov space, which contains every c_k(Theta_ss) r_0,
to round-off (see _spectral_apply).
Other losses (bce) iterate the function-space system f_{k+1} = f_k - rho Theta_ss g(f_k)
(continuous: an adaptive ODE solver), accumulating the dual coefficients a = sum_k rho g(f_k), so
theta = theta_start - J_s^T a.

Stages run in order with the kernel frozen at theta_0 (relinearize=1, the published forecast):
stage s starts from the forecast weights at the end of stage s - 1. relinearize=R splits each
stage into R segments and recenters the linear model at the *forecast* weights at every segment
start: still nothing but the initial weights and the curriculum.

Readouts: "linear" = h_c + J_h,c (theta - theta_c) (h_0 + J_h d when frozen), "network" = the
network evaluated at the forecast weights. loss and probe_loss are computed per readout from that
readout's outputs, with the stage's loss, as the mean per-pattern loss (the trainer's definition).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import numpy as np
import torch
import xarray as xr
from scipy.integrate import solve_ivp

from repkernel.curriculum import Curriculum, Stage
from repkernel.kernels import (
    jacobian_product,
    jacobian_transpose_product,
    jacobians,
    ntk_matrix,
)
from repkernel.losses import loss_gradient, pattern_loss
from repkernel.networks import RepresentationNetwork, placed, represent_at
from repkernel.patterns import PatternSet
from repkernel.results import checkpoint_steps, finish_run, representation_dataset

READOUTS = ("linear", "network")
TIMES = ("discrete", "continuous")
# Spaces (nO or P) up to this size are factorized by a dense eigendecomposition; larger ones by
# Lanczos on the stage's starting vector (same equations, restricted to its Krylov space).
DENSE_LIMIT = 2048
CHECK_EVERY = 4  # Lanczos steps between convergence checks
LANCZOS_TOLERANCE = 1024  # relative change between checks, in units of the dtype's eps


def _coefficients(lam: torch.Tensor, rho: float, k: torch.Tensor, time: str) -> torch.Tensor:
    """c_k(lam) = (1 - decay_k(lam)) / lam for eigenvalues lam (N,) and steps k (m,): (N, m).

    decay_k = (1 - rho lam)^k (discrete) or exp(-rho lam k) (continuous); c_k -> rho k as
    lam -> 0 (null directions). expm1 / log1p keep small rho lam free of cancellation.
    """
    lam = lam.clamp_min(0)[:, None]
    x, k = rho * lam, k[None, :].to(lam)
    if time == "continuous":
        done = -torch.expm1(-x * k)
    else:
        done = torch.where(x < 0.5, -torch.expm1(k * torch.log1p(-x.clamp_max(0.5))),
                           1 - (1 - x) ** k)
    positive = lam > 0
    return torch.where(positive, done / torch.where(positive, lam, 1), rho * k)


def _check_stable(stage: Stage, index: int, rho: float, lam_max: float) -> None:
    """Discrete gradient descent on the linear model diverges iff rho lam_max > 2, i.e. iff
    eta > 2n / lam_max (mean loss) or 2 / lam_max (summed loss); in general 2 (eta / rho) /
    lam_max with rho the per-pattern drift rate."""
    if rho * lam_max > 2:
        per_rate = stage.lr / rho  # n for the full-batch mean loss, 1 for the summed loss
        bound = 2 * per_rate / lam_max
        raise ValueError(
            f"stage {index} ({stage.name or 'unnamed'}): learning rate {stage.lr:g} is above the "
            f"stability bound {bound:.4g} = 2 * {per_rate:g} / lam_max (2n / lam_max for the mean"
            f" loss, 2 / lam_max for the summed loss; lam_max = {lam_max:.4g}, the largest "
            f"eigenvalue of the stage's kernel), so the discrete forecast diverges; lower the "
            f"learning rate below {bound:.4g} or use time='continuous'")


def _spectral_apply(matrix: torch.Tensor, start: torch.Tensor, rho: float, k: torch.Tensor,
                    time: str, check: Callable[[float], None]) -> torch.Tensor:
    """c_k(M) v = U diag(c_k(lam)) U^T v for a PSD matrix M (N, N) = U diag(lam) U^T, a vector
    v (N,) and steps k (m,): (N, m). ``check(lam_max)`` may raise (stability).

    N <= DENSE_LIMIT: one dense eigendecomposition. Larger N: Lanczos with full
    reorthogonalization from v, M ~ Q T Q^T on the Krylov space span{v, Mv, M^2 v, ...}, which
    holds every c_k(M) v; it stops when the result changes by less than round-off between checks
    (or the space is invariant, where it is exact). lam_max comes from a second Lanczos run from a
    random vector, sharing the matrix products.
    """
    if len(start) <= DENSE_LIMIT:
        lam, vectors = torch.linalg.eigh(matrix)
        check(float(lam.max()))
        return vectors @ (_coefficients(lam, rho, k, time) * (vectors.T @ start)[:, None])
    return _lanczos_apply(matrix, start, rho, k, time, check)


class _LargestEigenvalue:
    """Plain Lanczos from a random vector (three-term recurrence, no reorthogonalization): its
    largest Ritz value converges to lam_max from below."""

    def __init__(self, n: int, dtype: torch.dtype, device) -> None:
        generator = torch.Generator(device=device).manual_seed(0)
        z = torch.randn(n, generator=generator, dtype=dtype, device=device)
        self.vector, self.previous = z / z.norm(), torch.zeros_like(z)
        self.alpha, self.beta = [], [0.0]
        self.estimate, self.settled = 0.0, False

    def step(self, product: torch.Tensor) -> None:
        """Advance with product = M @ self.vector."""
        w = product - self.beta[-1] * self.previous
        self.alpha.append(float(self.vector @ w))
        w = w - self.alpha[-1] * self.vector
        self.beta.append(float(w.norm()))
        self.previous, self.vector = self.vector, w / max(self.beta[-1],
                                                          torch.finfo(w.dtype).tiny)

    def update(self) -> float:
        t = _tridiagonal(self.alpha, self.beta[1:-1], self.vector.dtype, self.vector.device)
        estimate = float(torch.linalg.eigvalsh(t).max())
        self.settled = abs(estimate - self.estimate) <= 1e-10 * abs(estimate) or (
            self.beta[-1] <= torch.finfo(t.dtype).eps * abs(estimate))
        self.estimate = estimate
        return estimate


def _lanczos_apply(matrix, start, rho, k, time, check) -> torch.Tensor:
    """Krylov branch of _spectral_apply; see there."""
    n, dtype, device = len(start), start.dtype, start.device
    eps = torch.finfo(dtype).eps
    norm = float(start.norm())
    if norm == 0:  # a zero residual stays zero
        return torch.zeros(n, len(k), dtype=dtype, device=device)
    largest = _LargestEigenvalue(n, dtype, device)
    basis = torch.empty(min(n, 128), n, dtype=dtype, device=device)  # rows q_0, q_1, ...
    basis[0] = start / norm
    alpha, beta, previous, settled, m = [], [], None, 0, 0
    while True:
        q = basis[m]
        product = matrix @ torch.stack([q, largest.vector], dim=1)  # one pass over M for both
        largest.step(product[:, 1])
        w = product[:, 0]
        alpha.append(float(q @ w))
        m += 1
        for _ in range(2):  # full reorthogonalization, classical Gram-Schmidt twice
            w = w - basis[:m].T @ (basis[:m] @ w)
        beta.append(float(w.norm()))
        invariant = beta[-1] <= eps * n * max(abs(a) for a in alpha)
        if invariant or m == n or m % CHECK_EVERY == 0:
            theta, vectors = torch.linalg.eigh(_tridiagonal(alpha, beta[:-1], dtype, device))
            largest.update()
            if largest.settled:  # an unstable rate fails here, before the coefficients blow up
                check(largest.estimate)
            reduced = vectors @ (_coefficients(theta, rho, k, time) * (norm * vectors[0])[:, None])
            if previous is not None:  # change since the last check, per checkpoint
                padded = torch.zeros_like(reduced)
                padded[: len(previous)] = previous
                change = (reduced - padded).norm(dim=0)
                scale = reduced.norm(dim=0).clamp_min(torch.finfo(dtype).tiny)
                close = float((change / scale).max()) <= LANCZOS_TOLERANCE * eps
                settled = settled + 1 if close else 0
            previous = reduced
            if invariant or m == n or settled >= 2:
                break
        if m == len(basis):
            basis = torch.cat([basis, torch.empty_like(basis)])[:n]
        basis[m] = w / beta[-1]
    while not largest.settled:  # the stability bound needs lam_max to round-off
        for _ in range(CHECK_EVERY):
            largest.step(matrix @ largest.vector)
        largest.update()
    check(max(largest.estimate, float(theta.max())))
    return basis[:m].T @ reduced


def _tridiagonal(diagonal, off, dtype, device) -> torch.Tensor:
    t = torch.diag(torch.tensor(diagonal, dtype=dtype, device=device))
    if off:
        o = torch.tensor(off, dtype=dtype, device=device)
        t = t + torch.diag(o, 1) + torch.diag(o, -1)
    return t


class _Center:
    """A linearization point theta_c: the network there and its outputs on the stage patterns."""

    def __init__(self, net: RepresentationNetwork, theta: torch.Tensor) -> None:
        self.net = net
        self.theta = theta.clone()
        net.load_flat_parameters(theta)

    def linear_outputs(self, patterns: PatternSet, delta: torch.Tensor):
        """Linear model on ``patterns`` at theta_c + delta for delta (P, m):
        (one (n, H_l, m) per layer, (n, O, m))."""
        with torch.no_grad():
            hidden, output = self.net.represent(patterns)
        d_hidden, d_output = jacobian_product(self.net, patterns, delta)
        return (tuple(h[..., None] + dh for h, dh in zip(hidden, d_hidden)),
                output[..., None] + d_output)


def _distinct(patterns: PatternSet) -> tuple[PatternSet, np.ndarray]:
    """The distinct patterns (x, c, y) of a set and how often each occurs, (n_u,).

    Copies of a pattern have equal Jacobian rows and residuals for all time, so the dynamics
    only need the distinct ones, each weighted by its multiplicity w (sampled curricula repeat
    many patterns: 500 samples of the published environment hold about 400 distinct ones).
    """
    rows = torch.cat([patterns.x, patterns.y] + ([] if patterns.c is None else [patterns.c]), 1)
    _, first, counts = np.unique(rows.cpu().numpy(), axis=0, return_index=True,
                                 return_counts=True)
    if len(first) == len(patterns):
        return patterns, np.ones(len(patterns))
    order = np.argsort(first)  # keep the order of first occurrence
    return patterns[first[order]], counts[order].astype(float)


def _segment_weights(center: _Center, stage: Stage, index: int, theta_start: torch.Tensor,
                     local_steps: torch.Tensor, time: str) -> torch.Tensor:
    """Forecast weights theta_k (P, m) after ``local_steps`` (m,) steps of ``stage`` from
    theta_start under the linear model centered at ``center``.

    On the distinct patterns X_u with multiplicities W (repeated over outputs):
    J_s^T J_s = J_u^T W J_u and Theta_ss acts as W^1/2 Theta_uu W^1/2 on s = W^1/2 r, which has the
    same nonzero eigenvalues; dual coefficients a_u give theta = theta_start - J_u^T W a_u.
    """
    rho = stage.drift_rate / len(stage.patterns)
    if int(local_steps.max()) == 0:
        return theta_start[:, None].expand(-1, len(local_steps)).clone()
    patterns, counts = _distinct(stage.patterns)
    _, f_start = center.linear_outputs(patterns, (theta_start - center.theta)[:, None])
    f_start = f_start[..., 0]
    y = patterns.to(f_start.device, f_start.dtype)[2]
    n, n_out = f_start.shape
    weight = torch.as_tensor(counts, dtype=f_start.dtype, device=f_start.device)
    weight = weight[:, None].expand(n, n_out).reshape(-1)
    root = weight.sqrt()

    def check(lam_max: float) -> None:
        if time == "discrete":
            _check_stable(stage, index, rho, lam_max)

    if stage.loss == "mse":
        r0 = (f_start - y).reshape(-1)
        P, nO = center.theta.numel(), r0.numel()
        if P < nO:  # primal: G = J^T J (P x P), d_k = -c_k(G) J^T r_0
            jac = root[:, None] * jacobians(center.net, patterns).output.reshape(nO, P)
            delta = -_spectral_apply(jac.T @ jac, jac.T @ (root * r0), rho, local_steps, time,
                                     check)
            return theta_start[:, None] + delta
        theta_uu = ntk_matrix(center.net, patterns).reshape(nO, nO)
        theta_uu = root[:, None] * theta_uu * root[None, :]
        weighted = root[:, None] * _spectral_apply(theta_uu, root * r0, rho, local_steps, time,
                                                   check)  # = W a_u
    else:
        weighted = weight[:, None] * _function_space(center, patterns, weight, stage.loss,
                                                     f_start, y, rho, local_steps, time)
    delta = -jacobian_transpose_product(center.net, patterns,
                                        weighted.reshape(n, n_out, weighted.shape[-1]))
    return theta_start[:, None] + delta


def _function_space(center: _Center, patterns: PatternSet, weight: torch.Tensor, loss: str,
                    f_start: torch.Tensor, y: torch.Tensor, rho: float, local_steps: torch.Tensor,
                    time: str) -> torch.Tensor:
    """Dual coefficients a_k = sum_{j<k} rho g(f_j) (nO, m) for a loss with nonlinear gradient,
    f_{j+1} = f_j - rho Theta W g(f_j) (discrete) or df/dk = -rho Theta W g(f) (continuous), on
    distinct patterns with multiplicities W."""
    n, n_out = f_start.shape
    theta_uu = ntk_matrix(center.net, patterns).reshape(n * n_out, n * n_out) * weight[None, :]
    wanted = local_steps.long().tolist()
    if time == "discrete":
        f, a, out, record = f_start.reshape(-1), torch.zeros_like(weight), {}, set(wanted)
        for k in range(max(wanted) + 1):
            if k in record:
                out[k] = a.clone()
            g = rho * loss_gradient(f.reshape(n, n_out), y, loss).reshape(-1)
            f, a = f - theta_uu @ g, a + g
        return torch.stack([out[k] for k in wanted], dim=-1)
    theta_np = theta_uu.detach().cpu().numpy().astype(np.float64)

    def rhs(_, state):
        f = torch.as_tensor(state[: n * n_out]).to(y)
        g = rho * loss_gradient(f.reshape(n, n_out), y, loss).reshape(-1)
        g = g.cpu().numpy().astype(np.float64)
        return np.concatenate([-theta_np @ g, g])

    start = np.concatenate([f_start.reshape(-1).cpu().numpy(), np.zeros(n * n_out)])
    times = sorted(set(wanted))
    solution = solve_ivp(rhs, (0, max(wanted)), start, t_eval=times, method="LSODA", rtol=1e-10,
                         atol=1e-12)
    if not solution.success:
        raise ValueError(f"the gradient-flow ODE failed ({solution.message}); use "
                         f"time='discrete'")
    by_step = dict(zip(times, solution.y[n * n_out:].T))
    return torch.as_tensor(np.stack([by_step[k] for k in wanted], axis=-1)).to(f_start)


def forecast(
    network: RepresentationNetwork,
    curriculum: Curriculum,
    probes: PatternSet,
    checkpoints: int | Sequence[int] = 101,
    time: str = "discrete",
    readout: str | Sequence[str] = READOUTS,
    relinearize: int = 1,
    record_weights: bool = True,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    progress: Callable[[int], None] | None = None,
) -> xr.Dataset:
    """Forecast hidden representations and outputs on ``probes`` from the initial weights and the
    curriculum alone (equations in the module docstring), in the trainer's layout.

    Returns the layout of repkernel.train (same dims, coords and variables) with a ``readout``
    dim on the forecast quantities and attrs source="forecast":
      hidden(time, readout, item, unit), output(time, readout, item, output_unit),
      target(item, output_unit), loss(time, readout) (mean per-pattern loss on the patterns of
      the stage that produced the state), probe_loss(time, readout), and, with record_weights,
      weights(time, parameter) = theta_0 + d (coords parameter, parameter_group).
    readout "linear" = h_c + J_h,c (theta - theta_c) (h_0 + J_h d with the frozen kernel);
    "network" = the network evaluated at the forecast weights. ``time`` counts steps (parameter
    updates) for both time="discrete" (gradient descent on the linear model, exact) and
    time="continuous" (gradient flow, t = eta * steps). Minibatch and online stages are forecast
    by their full-batch drift (Stage.drift_rate); their fluctuations are not modelled.
    relinearize=R: R segments per stage, the linear model recentered at the forecast weights at
    each segment start (1 = frozen kernel at theta_0; R = steps reproduces gradient descent).
    checkpoints: a count spread over the curriculum or explicit steps (results.checkpoint_steps).
    Tensors follow ``device``/``dtype`` (default: the network's); the caller's network is not
    modified. ``progress(steps_done)`` is called after each segment.
    Raises ValueError for bad arguments, and when a discrete MSE stage's rate is above the
    stability bound 2n / lam_max of its linearized dynamics (the message states both).
    """
    readouts = (readout,) if isinstance(readout, str) else tuple(readout)
    if not readouts or any(r not in READOUTS for r in readouts):
        raise ValueError(f"readout must be drawn from {READOUTS}, got {readout!r}")
    if time not in TIMES:
        raise ValueError(f"time must be one of {TIMES}, got {time!r}")
    if not (isinstance(relinearize, (int, np.integer)) and relinearize >= 1):
        raise ValueError(f"relinearize must be a positive number of segments, got {relinearize!r}")
    net = placed(network, device, dtype)
    if net.n_parameters == 0:
        raise ValueError("the network has no trainable weights: call set_trainable first")
    center_net = copy.deepcopy(net)  # weights are loaded into it; the caller's stay untouched
    theta0 = net.flat_parameters()
    steps = checkpoint_steps(checkpoints, curriculum.total_steps)
    center = _Center(center_net, theta0)
    theta, records = theta0.clone(), []  # records: (global steps, theta (P, m), center, stage)
    global_start = 0
    for index, stage in enumerate(curriculum.stages):
        bounds = np.round(np.linspace(0, stage.steps, min(relinearize, max(stage.steps, 1)) + 1))
        for seg_start, seg_end in zip(bounds[:-1].astype(int), bounds[1:].astype(int)):
            if relinearize > 1:
                center = _Center(center_net, theta)
            first = global_start == 0 and index == 0 and seg_start == 0
            lo, hi = global_start + seg_start, global_start + seg_end
            wanted = steps[((steps > lo) | first) & (steps <= hi) & (steps >= lo)]
            local = torch.as_tensor(np.append(wanted - lo, seg_end - seg_start),
                                    dtype=theta.dtype, device=theta.device)
            weights = _segment_weights(center, stage, index, theta, local, time)
            if len(wanted):
                records.append((wanted, weights[:, :-1], center.theta, index))
            theta = weights[:, -1]
            if progress is not None:
                progress(hi)
        global_start += stage.steps
    return _dataset(net, curriculum, probes, steps, records, readouts, time, relinearize,
                    record_weights, center_net, theta0)


def _readout(kind: str, center: _Center, patterns: PatternSet, weights: torch.Tensor):
    """Hidden (one (m, n, H_l) per layer) and output (m, n, O) on ``patterns`` for forecast
    weights (P, m): the linear model around ``center`` or the network itself."""
    if kind == "linear":
        hidden, output = center.linear_outputs(patterns, weights - center.theta[:, None])
        return tuple(h.movedim(-1, 0) for h in hidden), output.movedim(-1, 0)
    x, c, _ = patterns.to(weights.device, weights.dtype)
    return represent_at(center.net, weights.T, x, c)


def _dataset(net, curriculum, probes, steps, records, readouts, time, relinearize,
             record_weights, center_net, theta0) -> xr.Dataset:
    """Evaluate the readouts at every checkpoint and assemble the trainer's layout."""
    like = theta0.new_empty(0)
    n_t, n_r, n_p = len(steps), len(readouts), len(probes)
    hidden = [like.new_empty(n_t, n_r, n_p, width) for width in net.hidden_sizes]
    output = like.new_empty(n_t, n_r, n_p, probes.n_outputs)
    loss, probe_loss = like.new_empty(n_t, n_r), like.new_empty(n_t, n_r)
    y_probe = probes.to(like.device, like.dtype)[2]
    row = 0
    for wanted, weights, center_theta, stage_index in records:
        stage = curriculum.stages[stage_index]
        rows = slice(row, row + len(wanted))
        row += len(wanted)
        center = _Center(center_net, center_theta)
        distinct, counts = _distinct(stage.patterns)  # the stage loss needs each pattern once
        y_stage = distinct.to(like.device, like.dtype)[2]
        share = torch.as_tensor(counts / counts.sum(), dtype=like.dtype, device=like.device)
        for r, kind in enumerate(readouts):
            layers, out = _readout(kind, center, probes, weights)
            for target, layer in zip(hidden, layers):
                target[rows, r] = layer
            output[rows, r] = out
            probe_loss[rows, r] = pattern_loss(out, y_probe, stage.loss).mean(-1)
            stage_output = _readout(kind, center, distinct, weights)[1]
            loss[rows, r] = pattern_loss(stage_output, y_stage, stage.loss) @ share
    ds = representation_dataset(hidden, output, steps, probes, leading_dims=("time", "readout"),
                                leading_coords={"readout": ("readout", list(readouts))})
    ds["loss"] = (("time", "readout"), loss.cpu().numpy())
    ds["probe_loss"] = (("time", "readout"), probe_loss.cpu().numpy())
    all_weights = (torch.cat([weights.T for _, weights, _, _ in records]) if record_weights
                   else None)
    return finish_run(ds, net, curriculum, probes, steps, all_weights, "forecast", theta0.device,
                      theta0.dtype, forecast={"time": time, "readout": list(readouts),
                                              "relinearize": relinearize})


def modes(network: RepresentationNetwork, stage: Stage, probes: PatternSet,
          n_modes: int | None = None, device=None, dtype=None) -> xr.Dataset:
    """Representational modes of a stage at initialization (DESIGN.md section 4, Modes).

    Eigenpairs (lam_m, u_m) of Theta_ss (nO x nO), largest first; timescale_m = 1 / (rho lam_m)
    steps (= n / (eta lam_m) for full-batch mean reduction); hidden_pattern_m = Pi(probes, X_s) u_m
    (item, unit) and output_pattern_m = Theta(probes, X_s) u_m: the direction in which each mode
    moves the representation, learned first when its timescale is short.
    """
    net = placed(network, device, dtype)
    patterns = stage.patterns
    n, n_out = len(patterns), patterns.n_outputs
    lam, u = torch.linalg.eigh(ntk_matrix(net, patterns).reshape(n * n_out, n * n_out))
    order = torch.argsort(lam, descending=True)[: n_modes or n * n_out]
    lam, u = lam[order].clamp_min(0), u[:, order]
    rho = stage.drift_rate / n
    direction = jacobian_transpose_product(net, patterns, u.reshape(n, n_out, -1))
    hidden, output = jacobian_product(net, probes, direction)
    ds = representation_dataset([h.movedim(-1, 0) for h in hidden], output.movedim(-1, 0),
                                np.arange(len(order)), probes, leading_dims=("time",))
    ds = ds.rename({"time": "mode", "hidden": "hidden_pattern", "output": "output_pattern"})
    ds = ds.drop_vars("target")
    ds["eigenvalue"] = ("mode", lam.cpu().numpy())
    with np.errstate(divide="ignore"):
        ds["timescale"] = ("mode", 1.0 / (rho * lam.cpu().numpy()))
    ds["train_pattern"] = (("mode", "train_item", "output_unit"),
                           u.T.reshape(-1, n, n_out).cpu().numpy())
    ds["timescale"].attrs["units"] = "steps"
    return ds
