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

One factorization per segment serves every checkpoint in it, chosen by estimated cost
(``factorization="auto"``): a dense eigendecomposition of the dual kernel Theta_ss (nO x nO) or of
the primal G = J_s^T J_s (P x P) when one is small, otherwise Lanczos on the segment's starting
residual with *matrix-free* kernel products Theta v = J (J^T v) (repkernel.kernels.
JacobianOperator: no nO x nO matrix, memory linear in n). The Krylov space span{r_0, Theta r_0,
...} holds every c_k(Theta) r_0; Lanczos stops when the result at the segment's checkpoints stops
changing at round-off, so a short segment needs few vectors (about sqrt(rho lam_max L) for a
segment of L steps) and a long frozen stage more.
Other losses (bce, cross_entropy) iterate the function-space system
f_{k+1} = f_k - rho Theta_ss g(f_k) (continuous: an adaptive ODE solver), accumulating the dual
coefficients a = sum_k rho g(f_k), so theta = theta_start - J_s^T a.

Stages run in order with the kernel frozen at theta_0 (relinearize=1, the published forecast):
stage s starts from the forecast weights at the end of stage s - 1. relinearize=R splits each
stage into R equal segments and recenters the linear model at the *forecast* weights at every
segment start: still nothing but the initial weights and the curriculum.

relinearize="auto": error-controlled re-linearization (DESIGN.md section 4, adaptive). The
re-linearized forecast is an exponential integrator of the training dynamics (exponential Euler
with the Gauss-Newton linearization): each segment solves the linear model around its start
theta_c exactly and restarts there at its end theta_e. Its local error comes from the Jacobian
moving over the segment, which the forecast measures itself, from nothing but its own weights:
the second-order remainder of the linearization at the segment end,
    error = max over f and each hidden layer of
            |W^1/2 (h(theta_e) - h_lin(theta_e))| / |W^1/2 (h_lin(theta_e) - h(theta_c))|
on the stage's training patterns (W: pattern multiplicities), i.e. the relative deviation of the
network from its linear model along the segment (~ half the relative Jacobian change in the
direction of motion; first order in the segment length L). A segment is accepted when
error <= tolerance; otherwise its length shrinks and it is re-evaluated from the *same*
factorization (no new Jacobian: only one network evaluation), and the next segment's length is
L * clip(0.9 tolerance / error, 1/4, 4), as adaptive ODE solvers do. A segment never gets shorter
than one step, so a tight tolerance converges to gradient descent (discrete time) and the number
of Jacobian evaluations never exceeds the number of steps. The result records every segment's
start, length and error (``segment_*`` variables) and the Jacobian evaluations in its attributes.

Readouts: "linear" = h_c + J_h,c (theta - theta_c) (h_0 + J_h d when frozen), "network" = the
network evaluated at the forecast weights. loss and probe_loss are computed per readout from that
readout's outputs, with the stage's loss, as the mean per-pattern loss (the trainer's definition).
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
import xarray as xr
from scipy.integrate import solve_ivp

from repkernel import cpu_threads
from repkernel.curriculum import Curriculum, Stage
from repkernel.kernels import (
    JacobianOperator,
    jacobian_product,
    jacobian_transpose_product,
    jacobians,
    ntk_matrix,
)
from repkernel.losses import loss_gradient, pattern_loss
from repkernel.networks import RepresentationNetwork, check_run, placed, represent_at
from repkernel.patterns import PatternSet
from repkernel.results import (
    checkpoint_steps,
    describe,
    finish_run,
    representation_dataset,
    seed_labels,
    stack_runs,
)

READOUTS = ("linear", "network")
TIMES = ("discrete", "continuous")
FACTORIZATIONS = ("auto", "dense", "krylov")
# Spaces (nO or P) above this size are never factorized densely.
DENSE_LIMIT = 2048
CHECK_EVERY = 4  # Lanczos steps between convergence checks
LANCZOS_TOLERANCE = 1024  # relative change between checks, in units of the dtype's eps
KRYLOV_PRODUCTS = 80  # kernel-product columns a Krylov factorization is expected to need
GROWTH = (0.25, 4.0)  # bounds on the factor between consecutive adaptive segment lengths
SAFETY = 0.9
FUNCTION_SPACE_DENSE = 8192  # above this nO, function-space losses use matrix-free products


def _coefficients(lam: torch.Tensor, rho: float, k: torch.Tensor, time: str) -> torch.Tensor:
    """c_k(lam) = (1 - decay_k(lam)) / lam for eigenvalues lam (N,) and steps k (m,): (N, m).

    c_k -> rho k as lam -> 0 (null directions). expm1 / log1p keep small rho lam free of
    cancellation.
    """
    lam = lam.clamp_min(0)[:, None]
    done = -_decay_minus_one(lam, rho, k, time)
    positive = lam > 0
    return torch.where(positive, done / torch.where(positive, lam, 1), rho * k[None, :].to(lam))


def _decay_minus_one(lam: torch.Tensor, rho: float, k: torch.Tensor, time: str) -> torch.Tensor:
    """decay_k(lam) - 1 for lam (N, 1): decay = (1 - rho lam)^k (discrete) or exp(-rho lam k)."""
    x, k = rho * lam, k[None, :].to(lam)
    if time == "continuous":
        return torch.expm1(-x * k)
    return torch.where(x < 0.5, torch.expm1(k * torch.log1p(-x.clamp_max(0.5))),
                       (1 - x) ** k - 1)


def _check_stable(stage: Stage, index: int, rho: float, lam_max: float) -> None:
    """Discrete gradient descent on the linear model diverges iff rho lam_max > 2, i.e. iff
    eta > 2n / lam_max (mean loss) or 2 / lam_max (summed loss): Stage.stability_bound."""
    if rho * lam_max > 2:
        per_rate = stage.lr / rho  # n for the full-batch mean loss, 1 for the summed loss
        bound = stage.stability_bound(lam_max)
        raise ValueError(
            f"stage {index} ({stage.name or 'unnamed'}): learning rate {stage.lr:g} is above the "
            f"stability bound {bound:.4g} = 2 * {per_rate:g} / lam_max (2n / lam_max for the mean"
            f" loss, 2 / lam_max for the summed loss; lam_max = {lam_max:.4g}, the largest "
            f"eigenvalue of the stage's kernel), so the discrete forecast diverges; lower the "
            f"learning rate below {bound:.4g} or use time='continuous'")


# -- spectral functions of a PSD operator ---------------------------------------------------


class _Spectral:
    """c_k(M) v for a PSD operator M and one start vector v (N,), on a space holding v:
    M ~ B diag(lam) B^T with orthonormal B (N, r) and z = B^T v (r,), so
    c_k(M) v = B diag(c_k(lam)) z."""

    def __init__(self, basis: torch.Tensor, lam: torch.Tensor, z: torch.Tensor, rho: float,
                 time: str) -> None:
        self.basis, self.lam, self.z, self.rho, self.time = basis, lam, z, rho, time

    def coefficients(self, k: torch.Tensor) -> torch.Tensor:
        """c_k(M) v, (N, m)."""
        return self.basis @ (_coefficients(self.lam, self.rho, k, self.time) * self.z[:, None])


def _dense_spectral(matrix: torch.Tensor, start: torch.Tensor, rho: float, time: str,
                    check: Callable[[float], None]) -> _Spectral:
    """One dense eigendecomposition of a PSD matrix (N, N)."""
    lam, vectors = torch.linalg.eigh(matrix)
    check(float(lam.max()))
    return _Spectral(vectors, lam, vectors.T @ start, rho, time)


class _LargestEigenvalue:
    """Plain Lanczos from a random vector (three-term recurrence, no reorthogonalization): its
    largest Ritz value converges to lam_max from below."""

    def __init__(self, n: int, dtype: torch.dtype, device,
                 start: torch.Tensor | None = None) -> None:
        if start is None:
            generator = torch.Generator(device=device).manual_seed(0)
            start = torch.randn(n, generator=generator, dtype=dtype, device=device)
        self.vector, self.previous = start / start.norm(), torch.zeros_like(start)
        self.history: list[torch.Tensor] = []
        self.alpha, self.beta = [], [0.0]
        self.estimate, self.settled = 0.0, False

    def step(self, product: torch.Tensor) -> None:
        """Advance with product = M @ self.vector."""
        self.history.append(self.vector)
        w = product - self.beta[-1] * self.previous
        self.alpha.append(float(self.vector @ w))
        w = w - self.alpha[-1] * self.vector
        self.beta.append(float(w.norm()))
        self.previous, self.vector = self.vector, w / max(self.beta[-1],
                                                          torch.finfo(w.dtype).tiny)

    def update(self) -> float:
        t = _tridiagonal(self.alpha, self.beta[1:-1], self.vector.dtype, self.vector.device)
        values, vectors = torch.linalg.eigh(t)
        estimate = float(values[-1])
        self._ritz = vectors[:, -1]
        self.settled = abs(estimate - self.estimate) <= 1e-10 * abs(estimate) or (
            self.beta[-1] <= torch.finfo(t.dtype).eps * abs(estimate))
        self.estimate = estimate
        return estimate

    def ritz_vector(self) -> torch.Tensor:
        """The current approximation of the top eigenvector (a warm start for a nearby
        operator)."""
        return torch.stack(self.history[: len(self._ritz)]).T @ self._ritz


def _krylov_spectral(apply: Callable[[torch.Tensor], torch.Tensor], start: torch.Tensor,
                     rho: float, k: torch.Tensor, time: str,
                     check: Callable[[float], None] | None,
                     top: list[torch.Tensor | None] | None = None) -> _Spectral:
    """Lanczos with full reorthogonalization from v = ``start`` (N,) for a PSD operator given by
    ``apply(V)`` = M V (N, b): M ~ Q T Q^T on the Krylov space span{v, Mv, M^2 v, ...}, which holds
    every c_k(M) v. Stops when c_k(M) v at the steps ``k`` changes by less than round-off between
    checks (or the space is invariant, where it is exact). With ``check`` (discrete-time
    stability), lam_max comes from a second Lanczos run from a random vector, sharing the
    operator products, and ``check(lam_max)`` may raise; ``top`` ([vector or None]) holds the top
    eigenvector of a nearby operator to start it from, and receives this one's."""
    n, dtype, device = len(start), start.dtype, start.device
    eps = torch.finfo(dtype).eps
    norm = float(start.norm())
    if norm == 0:  # a zero residual stays zero
        empty = start.new_zeros(0)
        return _Spectral(start.new_zeros(n, 0), empty, empty, rho, time)
    largest = None
    if check is not None:
        largest = _LargestEigenvalue(n, dtype, device, None if top is None else top[0])
    basis = torch.empty(min(n, 64), n, dtype=dtype, device=device)  # rows q_0, q_1, ...
    basis[0] = start / norm
    alpha, beta, previous, settled, m = [], [], None, 0, 0
    while True:
        q = basis[m]
        columns = [q] if largest is None else [q, largest.vector]
        product = apply(torch.stack(columns, dim=1))  # one pass over M for both
        if largest is not None:
            largest.step(product[:, 1])
        w = product[:, 0]
        alpha.append(float(q @ w))
        m += 1
        for _ in range(2):  # full reorthogonalization, classical Gram-Schmidt twice
            w = w - basis[:m].T @ (basis[:m] @ w)
        beta.append(float(w.norm()))
        invariant = beta[-1] <= eps * n * max(abs(a) for a in alpha)
        if invariant or m == n or m <= CHECK_EVERY or m % CHECK_EVERY == 0:
            theta, vectors = torch.linalg.eigh(_tridiagonal(alpha, beta[:-1], dtype, device))
            if largest is not None:
                largest.update()
                if largest.settled:  # an unstable rate fails here, before anything blows up
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
    if largest is not None:
        while not largest.settled:  # the stability bound needs lam_max to round-off
            for _ in range(CHECK_EVERY):
                largest.step(apply(largest.vector[:, None])[:, 0])
            largest.update()
        check(max(largest.estimate, float(theta.max())))
        if top is not None:
            top[0] = largest.ritz_vector()
    return _Spectral(basis[:m].T @ vectors, theta, norm * vectors[0], rho, time)


def _tridiagonal(diagonal, off, dtype, device) -> torch.Tensor:
    t = torch.diag(torch.tensor(diagonal, dtype=dtype, device=device))
    if off:
        o = torch.tensor(off, dtype=dtype, device=device)
        t = t + torch.diag(o, 1) + torch.diag(o, -1)
    return t


# -- a stage's training patterns and the linear model around a center ----------------------


def _distinct(patterns: PatternSet) -> tuple[PatternSet, np.ndarray, np.ndarray]:
    """The distinct patterns (x, c, y) of a set, how often each occurs (n_u,), and which
    distinct pattern each of the set's patterns is (n,).

    Copies of a pattern have equal Jacobian rows and residuals for all time, so the dynamics
    only need the distinct ones, each weighted by its multiplicity w (sampled curricula repeat
    many patterns: 500 samples of the published environment hold about 400 distinct ones).
    """
    rows = torch.cat([patterns.x, patterns.y] + ([] if patterns.c is None else [patterns.c]), 1)
    _, first, inverse, counts = np.unique(rows.cpu().numpy(), axis=0, return_index=True,
                                          return_inverse=True, return_counts=True)
    if len(first) == len(patterns):
        return patterns, np.ones(len(patterns)), np.arange(len(patterns))
    order = np.argsort(first)  # keep the order of first occurrence
    rank = np.argsort(order)  # np.unique's index -> position in first-occurrence order
    return patterns[first[order]], counts[order].astype(float), rank[inverse.reshape(-1)]


class _StageData:
    """A stage's distinct training patterns X_u (n, O outputs) with multiplicities W, on the
    forecast's device and dtype: weight (nO,) repeats W over outputs, root = W^1/2; inverse
    (len(stage.patterns),) names the distinct pattern of each of the stage's patterns."""

    def __init__(self, stage: Stage, index: int, like: torch.Tensor) -> None:
        self.stage, self.index = stage, index
        self.patterns, counts, self.inverse = _distinct(stage.patterns)
        self.x, self.c, self.y = self.patterns.to(like.device, like.dtype)
        self.n, self.n_out = self.y.shape
        self.counts = torch.as_tensor(counts, dtype=like.dtype, device=like.device)
        self.weight = self.counts[:, None].expand(self.n, self.n_out).reshape(-1)
        self.root = self.weight.sqrt()
        self.rho = stage.drift_rate / len(stage.patterns)
        self.top: list[torch.Tensor | None] = [None]  # top eigenvector of the last kernel

    def check(self, time: str) -> Callable[[float], None] | None:
        """The discrete-time stability check of this stage (None in continuous time)."""
        if time != "discrete":
            return None
        return lambda lam_max: _check_stable(self.stage, self.index, self.rho, lam_max)

    def weighted_norm(self, values: torch.Tensor) -> float:
        """|W^1/2 v| for v (n, U): every pattern counted with its multiplicity."""
        return float((self.counts[:, None] * values.reshape(self.n, -1) ** 2).sum().sqrt())


class _Linearization:
    """The linear model around theta_c on a stage's distinct patterns: the network's hidden
    layers and outputs there and the Jacobian J_c as a matrix-free operator (one Jacobian
    evaluation)."""

    def __init__(self, net: RepresentationNetwork, theta: torch.Tensor, data: _StageData) -> None:
        self.net, self.data, self.theta = net, data, theta.clone()
        net.load_flat_parameters(theta)
        with torch.no_grad():
            self.hidden, self.output = net(data.x, data.c)
        self.operator = JacobianOperator(net, data.patterns)

    def dense_kernel(self) -> torch.Tensor:
        """Theta_uu (nO, nO) at theta_c."""
        size = self.data.n * self.data.n_out
        self.net.load_flat_parameters(self.theta)
        return ntk_matrix(self.net, self.data.patterns).reshape(size, size)

    def dense_jacobian(self) -> torch.Tensor:
        """J_u (nO, P) at theta_c."""
        self.net.load_flat_parameters(self.theta)
        jac = jacobians(self.net, self.data.patterns, hidden=False).output
        return jac.reshape(-1, jac.shape[-1])

    def outputs_at(self, theta: torch.Tensor) -> torch.Tensor:
        """f_lin(theta) on the stage patterns, (n, O)."""
        if torch.equal(theta, self.theta):
            return self.output
        return self.output + self.operator.forward((theta - self.theta)[:, None])[1][..., 0]

    def error(self, theta: torch.Tensor) -> float:
        """The relative deviation of the network from this linear model at theta (module
        docstring): max over the output and each hidden layer."""
        d_hidden, d_output = self.operator.forward((theta - self.theta)[:, None], hidden=True)
        hidden, output = represent_at(self.net, theta[None], self.data.x, self.data.c)
        worst = 0.0
        for value, center, change in zip((*hidden, output), (*self.hidden, self.output),
                                         (*d_hidden, d_output)):
            size = self.data.weighted_norm(change[..., 0])
            if size > 0:
                gap = self.data.weighted_norm(value[0] - center - change[..., 0])
                worst = max(worst, gap / size)
        return worst


# -- one segment: the linear dynamics from theta_start ---------------------------------------


class _MeanSquaredSegment:
    """MSE dynamics of the linear model from theta_start in closed form: weights(k) (P, m) at
    steps k (m,) of the segment.

    Dual: on s = W^1/2 r with M = W^1/2 Theta_uu W^1/2 (same nonzero spectrum as Theta_ss),
    theta_k = theta_start - J_u^T W^1/2 c_k(M) s_0 and r_k = W^-1/2 decay_k(M) s_0. Primal (dense
    only): G = J^T W J (P x P), theta_k = theta_start - c_k(G) J^T W r_0. ``dual=True`` never
    takes the primal space, so that ``dual(k)`` (the coefficients) is available.
    """

    def __init__(self, lin: _Linearization, theta_start: torch.Tensor, k: torch.Tensor,
                 time: str, factorization: str, stability: bool = True,
                 dual: bool = False) -> None:
        data, op = lin.data, lin.operator
        self.lin, self.theta_start = lin, theta_start
        f_start = lin.outputs_at(theta_start)
        self.residual = (f_start - data.y).reshape(-1)
        start = data.root * self.residual
        size, n_params = len(start), op.n_parameters
        space = _choose_factorization(factorization, size, n_params, op.product_cost())
        if dual and space == "primal":
            space = "dual" if factorization == "dense" or size <= DENSE_LIMIT else "krylov"
        check = data.check(time) if stability else None
        if check is None and space != "krylov":
            check = lambda lam_max: None  # noqa: E731 (no stability bound in continuous time)
        self.primal = space == "primal"
        if self.primal:
            jac = data.root[:, None] * lin.dense_jacobian()
            self.spectral = _dense_spectral(jac.T @ jac, jac.T @ start, data.rho, time, check)
        elif space == "dual":
            matrix = data.root[:, None] * lin.dense_kernel() * data.root[None, :]
            self.spectral = _dense_spectral(matrix, start, data.rho, time, check)
        else:
            self.spectral = _krylov_spectral(self._apply, start, data.rho, k, time, check,
                                             data.top)

    def _apply(self, v: torch.Tensor) -> torch.Tensor:
        """M v = W^1/2 Theta_uu W^1/2 v for v (nO, b), matrix-free."""
        data = self.lin.data
        scaled = (data.root[:, None] * v).reshape(data.n, data.n_out, -1)
        return data.root[:, None] * self.lin.operator.kernel(scaled).reshape(len(v), -1)

    def dual(self, k: torch.Tensor) -> torch.Tensor:
        """W a_k (n, O, m): the distinct patterns' accumulated dual coefficients a_k = sum_{j<k}
        rho r_j times their multiplicities, theta_k = theta_start - J_u^T (W a_k)."""
        if self.primal:
            raise ValueError("the primal factorization has no dual coefficients: build the "
                             "segment with dual=True")
        data = self.lin.data
        return (data.root[:, None] * self.spectral.coefficients(k)).reshape(data.n, data.n_out, -1)

    def weights(self, k: torch.Tensor) -> torch.Tensor:
        if self.primal:
            return self.theta_start[:, None] - self.spectral.coefficients(k)
        return self.theta_start[:, None] - self.lin.operator.transpose(self.dual(k))


def _choose_factorization(factorization: str, size: int, n_params: int,
                          product_cost: float) -> str:
    """"dual" (dense nO x nO), "primal" (dense P x P) or "krylov" (matrix-free Lanczos), by
    estimated multiply-adds: building a dense kernel costs about nO kernel products and its
    eigendecomposition about 6 N^3; Lanczos about KRYLOV_PRODUCTS products. "auto" never
    factorizes a space larger than DENSE_LIMIT densely; "dense" takes the cheaper dense space."""
    if factorization == "krylov":
        return "krylov"
    dense = {"dual": size * product_cost + 6.0 * size**3,
             "primal": size * n_params**2 + 6.0 * n_params**3 + product_cost * n_params}
    best = min(dense, key=dense.get)
    if factorization == "dense":
        return best
    small = (size if best == "dual" else n_params) <= DENSE_LIMIT
    return best if small and dense[best] <= KRYLOV_PRODUCTS * product_cost else "krylov"


class _FunctionSpaceSegment:
    """Losses with a nonlinear gradient: f_{j+1} = f_j - rho Theta W g(f_j) (discrete) or
    df/dk = -rho Theta W g(f) (continuous) on the stage patterns, accumulating dual
    coefficients a_k = sum_{j<k} rho g(f_j); theta_k = theta_start - J_u^T W a_k."""

    def __init__(self, lin: _Linearization, theta_start: torch.Tensor, time: str) -> None:
        data = lin.data
        self.lin, self.theta_start, self.time = lin, theta_start, time
        self.f_start = lin.outputs_at(theta_start).reshape(-1)
        size = len(self.f_start)
        if size <= FUNCTION_SPACE_DENSE:
            kernel = lin.dense_kernel() * data.weight[None, :]
            self._kernel = lambda g: kernel @ g
        else:
            self._kernel = lambda g: lin.operator.kernel(
                (data.weight * g).reshape(data.n, data.n_out, 1)).reshape(-1)
        self._solved, self._solution = {}, None

    def _gradient(self, f: torch.Tensor) -> torch.Tensor:
        data = self.lin.data
        return data.rho * loss_gradient(f.reshape(data.n, data.n_out), data.y,
                                        data.stage.loss).reshape(-1)

    def _states(self, k: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(f_k, a_k) per requested step."""
        wanted = [int(step) for step in k.tolist()]
        if self.time == "discrete":
            missing = sorted(set(wanted) - set(self._solved))
            if missing:
                f, a = self.f_start, torch.zeros_like(self.f_start)
                for step in range(max(missing) + 1):
                    if step in missing:
                        self._solved[step] = (f, a)
                    g = self._gradient(f)
                    f, a = f - self._kernel(g), a + g
            return [self._solved[step] for step in wanted]
        horizon = max(wanted)
        if self._solution is None or self._solution.t[-1] < horizon:
            self._solution = self._integrate(max(horizon, 1))
        states = torch.as_tensor(self._solution.sol(np.asarray(wanted, dtype=float))).to(
            self.f_start)
        size = len(self.f_start)
        return [(states[:size, i], states[size:, i]) for i in range(len(wanted))]

    def _integrate(self, horizon: int):
        size = len(self.f_start)

        def rhs(_, state):
            f = torch.as_tensor(state[:size]).to(self.f_start)
            g = self._gradient(f)
            return np.concatenate([(-self._kernel(g)).cpu().numpy(), g.cpu().numpy()])

        start = np.concatenate([self.f_start.cpu().numpy(), np.zeros(size)]).astype(np.float64)
        solution = solve_ivp(rhs, (0, horizon), start, method="LSODA", rtol=1e-10, atol=1e-12,
                             dense_output=True)
        if not solution.success:
            raise ValueError(f"the gradient-flow ODE failed ({solution.message}); use "
                             f"time='discrete'")
        return solution

    def dual(self, k: torch.Tensor) -> torch.Tensor:
        """W a_k (n, O, m), as for _MeanSquaredSegment."""
        data = self.lin.data
        states = self._states(k)
        if data.stage.loss == "bce":
            _warn_outside_unit_interval(data, torch.stack([f for f, _ in states]), k)
        a = torch.stack([a for _, a in states], dim=-1)
        return (data.weight[:, None] * a).reshape(data.n, data.n_out, -1)

    def weights(self, k: torch.Tensor) -> torch.Tensor:
        return self.theta_start[:, None] - self.lin.operator.transpose(self.dual(k))


def _warn_outside_unit_interval(data: _StageData, outputs: torch.Tensor,
                                k: torch.Tensor) -> None:
    """Cross-entropy needs f in (0, 1); the linear model's outputs (m, nO) may leave it."""
    low, high = float(outputs.min()), float(outputs.max())
    if low <= 0 or high >= 1:
        warnings.warn(f"stage {data.index} ({data.stage.name or 'unnamed'}): the linearized "
                      f"outputs leave (0, 1) (range {low:.3g} to {high:.3g} by local step "
                      f"{int(k.max())}), where cross-entropy is undefined and the forecast is "
                      f"unreliable: lower the learning rate or use relinearize='auto'",
                      RuntimeWarning, stacklevel=4)


def _segment(lin: _Linearization, theta_start: torch.Tensor, k: torch.Tensor, time: str,
             factorization: str, stability: bool = True, dual: bool = False):
    """The linear dynamics of lin's stage from theta_start, ready for the steps k (m,);
    ``stability``: check the discrete-time stability bound of this linear model; ``dual``:
    keep its dual coefficients available (segment.dual(k))."""
    if lin.data.stage.loss == "mse":
        return _MeanSquaredSegment(lin, theta_start, k, time, factorization, stability, dual)
    return _FunctionSpaceSegment(lin, theta_start, time)


# -- the forecast over a curriculum ----------------------------------------------------------


class _Record:
    """Forecast weights (P, m) at global steps (m,), with the center theta_c of their linear
    model and their stage."""

    def __init__(self, steps: np.ndarray, weights: torch.Tensor, center: torch.Tensor,
                 data: _StageData) -> None:
        self.steps, self.weights, self.center, self.data = steps, weights, center, data


def forecast(
    network: RepresentationNetwork | Sequence[RepresentationNetwork],
    curriculum: Curriculum,
    probes: PatternSet,
    checkpoints: int | Sequence[int] = 101,
    time: str = "discrete",
    readout: str | Sequence[str] = READOUTS,
    relinearize: int | str = 1,
    tolerance: float = 0.5,
    record_weights: bool = True,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    progress: Callable[[int], None] | None = None,
    factorization: str = "auto",
    threads: int | None = None,
) -> xr.Dataset:
    """Forecast hidden representations and outputs on ``probes`` from the initial weights and the
    curriculum alone (equations in the module docstring), in the trainer's layout.

    Returns the layout of repkernel.train (same dims, coords and variables) with a ``readout``
    dim on the forecast quantities and attrs source="forecast":
      hidden(time, readout, item, unit), output(time, readout, item, output_unit),
      target(item, output_unit), loss(time, readout) (mean per-pattern loss on the patterns of
      the stage that produced the state), probe_loss(time, readout), and, with record_weights,
      weights(time, parameter) = theta_0 + d (coords parameter, parameter_group);
      segment_start(segment), segment_steps(segment), segment_error(segment) and
      segment_stage(segment): where the linear model was (re)centered, for how many steps, and
      its relative deviation from the network at the segment end (module docstring); attrs
      jacobian_evaluations and rejected_segments.
    readout "linear" = h_c + J_h,c (theta - theta_c) (h_0 + J_h d with the frozen kernel);
    "network" = the network evaluated at the forecast weights. ``time`` counts steps (parameter
    updates) for both time="discrete" (gradient descent on the linear model, exact) and
    time="continuous" (gradient flow, t = eta * steps). Minibatch and online stages are forecast
    by their full-batch drift (Stage.drift_rate); their fluctuations are not modelled.
    relinearize=R: R equal segments per stage, the linear model recentered at the forecast
    weights at each segment start (1 = frozen kernel at theta_0; R = steps reproduces gradient
    descent); "auto": segment lengths chosen so that each segment's error <= ``tolerance``.
    factorization: "auto" (by estimated cost), "dense" or "krylov" (module docstring).
    threads: torch's intra-op CPU threads (repkernel.cpu_threads); default one for small
    networks, where more threads only cost.
    checkpoints: a count spread over the curriculum or explicit steps (results.checkpoint_steps).
    Tensors follow ``device``/``dtype`` (default: the network's); the caller's network is not
    modified. ``progress(steps_done)`` is called after each segment.
    ``network`` may be a list of networks (e.g. one per seed): one forecast each, stacked on a
    leading ``seed`` dim as in repkernel.train.
    Raises ValueError for bad arguments, and when a discrete MSE stage's rate is above the
    stability bound 2n / lam_max of its linearized dynamics (the message states both).
    """
    if isinstance(network, Sequence):
        if not network:
            raise ValueError("forecast needs at least one network, got an empty list")
        return stack_runs([forecast(net, curriculum, probes, checkpoints, time, readout,
                                    relinearize, tolerance, record_weights, device, dtype,
                                    progress, factorization, threads) for net in network],
                          seed_labels(network))
    readouts = (readout,) if isinstance(readout, str) else tuple(readout)
    if not readouts or any(r not in READOUTS for r in readouts):
        raise ValueError(f"readout must be drawn from {READOUTS}, got {readout!r}")
    net, threads = checked_run(network, curriculum, probes, time, relinearize, tolerance,
                               factorization, device, dtype, threads)
    with cpu_threads.threads(threads):
        return _forecast(net, curriculum, probes, checkpoints, time, readouts, relinearize,
                         tolerance, record_weights, progress, factorization)


def checked_run(network, curriculum, probes, time, relinearize, tolerance, factorization,
                device, dtype, threads) -> tuple[RepresentationNetwork, int]:
    """The forecast's argument checks (ValueError naming the problem): the network placed on
    ``device``/``dtype`` and the CPU threads to use. Shared with repkernel.influence."""
    if time not in TIMES:
        raise ValueError(f"time must be one of {TIMES}, got {time!r}")
    if factorization not in FACTORIZATIONS:
        raise ValueError(f"factorization must be one of {FACTORIZATIONS}, got {factorization!r}")
    adaptive = relinearize == "auto"
    if not adaptive and not (isinstance(relinearize, (int, np.integer))
                             and not isinstance(relinearize, bool) and relinearize >= 1):
        raise ValueError(f"relinearize must be a positive number of segments or 'auto', got "
                         f"{relinearize!r}")
    if not (isinstance(tolerance, (int, float, np.floating)) and math.isfinite(tolerance)
            and tolerance > 0):
        raise ValueError(f"tolerance must be a positive finite number (the largest relative "
                         f"deviation of the network from its linear model per segment, e.g. "
                         f"0.5), got {tolerance!r}")
    net = placed(network, device, dtype)
    if net.n_parameters == 0:
        raise ValueError("the network has no trainable weights: call set_trainable first")
    check_run(net, curriculum, probes)
    if threads is None:
        threads = cpu_threads.threads_for_run(net, curriculum, probes)
    return net, threads


def integrate(net, curriculum, steps, time, relinearize, tolerance, factorization,
              progress=None, keep_dual: bool = False) -> _Run:
    """The forecast engine over a curriculum (after checked_run): the _Run holding the forecast
    weights at the checkpoint ``steps``, the segment log, and with ``keep_dual`` every
    segment's dual coefficients (_Piece). Loads weights into ``net`` (pass a copy)."""
    theta0 = net.flat_parameters()
    run = _Run(net, theta0, steps, time, factorization, progress, keep_dual)
    for index, stage in enumerate(curriculum.stages):
        data = _StageData(stage, index, theta0)
        if relinearize == "auto":
            run.adaptive_stage(data, tolerance)
        else:
            run.equal_segments(data, relinearize)
    return run


def _forecast(net, curriculum, probes, checkpoints, time, readouts, relinearize, tolerance,
              record_weights, progress, factorization) -> xr.Dataset:
    """forecast() after its checks (see there)."""
    adaptive = relinearize == "auto"
    center_net = copy.deepcopy(net)  # weights are loaded into it; the caller's stay untouched
    theta0 = net.flat_parameters()
    steps = checkpoint_steps(checkpoints, curriculum.total_steps)
    run = integrate(center_net, curriculum, steps, time, relinearize, tolerance, factorization,
                    progress)
    options = {"time": time, "readout": list(readouts), "relinearize": relinearize,
               "factorization": factorization}
    if adaptive:
        options["tolerance"] = float(tolerance)
    ds = _dataset(net, curriculum, probes, steps, run.records, readouts, record_weights,
                  center_net, theta0, options)
    starts, lengths, errors, stages = (np.array(column) for column in zip(*run.segments))
    ds["segment_start"] = ("segment", starts.astype(int))
    ds["segment_steps"] = ("segment", lengths.astype(int))
    ds["segment_error"] = ("segment", errors.astype(float))
    ds["segment_stage"] = ("segment", stages.astype(int))
    ds = ds.assign_coords(segment=("segment", np.arange(len(starts))))  # cells of a sweep differ
    ds.attrs["jacobian_evaluations"] = run.jacobian_evaluations
    ds.attrs["rejected_segments"] = run.rejected
    return describe(ds)


class _Piece:
    """A segment kept with its dual coefficients (_Run with keep_dual): the global checkpoint
    steps it covers (m,), its linear model ``lin`` (center lin.theta, stage data, training
    Jacobian operator), its start and end weights (P,), and ``dual`` = W a (n_u, O, m + 1) at
    those checkpoints and at its end, so that theta = start - lin.operator.transpose(dual)."""

    def __init__(self, steps: np.ndarray, lin: _Linearization, start: torch.Tensor,
                 end: torch.Tensor, dual: torch.Tensor) -> None:
        self.steps, self.lin, self.start, self.end, self.dual = steps, lin, start, end, dual


class _Run:
    """The forecast weights over a curriculum, segment by segment: records for the readouts, a
    log of the segments (global start, steps, error, stage) and, with ``keep_dual``, every
    segment's dual coefficients (``pieces``, for repkernel.influence)."""

    def __init__(self, net, theta0, steps, time, factorization, progress,
                 keep_dual: bool = False) -> None:
        self.net, self.theta0, self.theta = net, theta0, theta0.clone()
        self.steps, self.time, self.factorization = steps, time, factorization
        self.progress, self.keep_dual = progress, keep_dual
        self.records: list[_Record] = []
        self.pieces: list[_Piece] = []
        self.segments: list[tuple[int, int, float, int]] = []
        self.jacobian_evaluations, self.rejected = 0, 0
        self.start = 0  # global step of the current stage's start

    def _linearize(self, theta: torch.Tensor, data: _StageData) -> _Linearization:
        self.jacobian_evaluations += 1
        return _Linearization(self.net, theta, data)

    def _local(self, lo: int, hi: int) -> tuple[np.ndarray, torch.Tensor]:
        """Checkpoints in the global steps (lo, hi] (step 0 included in the first segment) and
        their local steps with the segment length hi - lo appended, (m + 1,)."""
        first = not self.segments  # step 0 belongs to the very first segment only
        wanted = self.steps[((self.steps > lo) | first) & (self.steps <= hi)
                            & (self.steps >= lo)]
        local = torch.as_tensor(np.append(wanted - lo, hi - lo), dtype=self.theta.dtype,
                                device=self.theta.device)
        return wanted, local

    def _advance(self, lin, segment, data, lo, hi, error=None) -> None:
        """Record the checkpoints of a segment covering global steps (lo, hi] and move to its
        end; ``error`` is the segment's (module docstring), computed here when not given."""
        wanted, local = self._local(lo, hi)
        if self.keep_dual:  # the weights from the kept coefficients, computed once
            dual = segment.dual(local)
            weights = segment.theta_start[:, None] - lin.operator.transpose(dual)
            self.pieces.append(_Piece(wanted, lin, self.theta, weights[:, -1], dual))
        else:
            weights = segment.weights(local)
        if len(wanted):
            self.records.append(_Record(wanted, weights[:, :-1], lin.theta, data))
        self.theta = weights[:, -1]
        if error is None:
            error = lin.error(self.theta) if hi > lo else 0.0
        self.segments.append((lo, hi - lo, error, data.index))
        if self.progress is not None:
            self.progress(hi)

    def equal_segments(self, data: _StageData, relinearize: int) -> None:
        stage = data.stage
        bounds = np.round(np.linspace(0, stage.steps, min(relinearize, max(stage.steps, 1)) + 1))
        lin = None
        for seg_start, seg_end in zip(bounds[:-1].astype(int), bounds[1:].astype(int)):
            if lin is None or relinearize > 1:
                lin = self._linearize(self.theta if relinearize > 1 else self.theta0, data)
            lo, hi = self.start + seg_start, self.start + seg_end
            segment = _segment(lin, self.theta, self._local(lo, hi)[1], self.time,
                               self.factorization, dual=self.keep_dual)
            self._advance(lin, segment, data, lo, hi)
        self.start += stage.steps

    def adaptive_stage(self, data: _StageData, tolerance: float) -> None:
        """Segments of the stage whose error stays under ``tolerance`` (module docstring)."""
        stage, done, lo = data.stage, 0, self.start
        length = 1  # a new stage starts fast (new residuals): grow from one step
        if stage.steps == 0:
            lin = self._linearize(self.theta, data)
            self._advance(lin, _segment(lin, self.theta, self._local(lo, lo)[1], self.time,
                                        self.factorization, dual=self.keep_dual), data, lo, lo)
        while done < stage.steps:
            lin = self._linearize(self.theta, data)
            remaining = stage.steps - done
            trial = min(length, remaining)
            lo = self.start + done
            # the stability bound is checked at the stage's start, as for the frozen kernel;
            # later, a linear model that would diverge fails the error control instead
            segment = _segment(lin, self.theta, self._local(lo, lo + trial)[1], self.time,
                               self.factorization, stability=done == 0, dual=self.keep_dual)
            while True:
                error = lin.error(segment.weights(torch.tensor(
                    [float(trial)], dtype=self.theta.dtype, device=self.theta.device))[:, 0])
                if error <= tolerance or trial == 1:
                    break
                self.rejected += 1  # shorter, from the same factorization
                trial = max(1, int(trial * max(GROWTH[0], SAFETY * tolerance / error)))
            self._advance(lin, segment, data, lo, lo + trial, error)
            factor = min(GROWTH[1], max(GROWTH[0], SAFETY * tolerance / max(error, 1e-300)))
            grown = max(1, int(trial * factor))
            length = max(length, grown) if trial == remaining and error <= tolerance else grown
            done += trial
        self.start += stage.steps


def _readout(kind: str, center_net, center: torch.Tensor, patterns: PatternSet,
             weights: torch.Tensor, hidden: bool = True):
    """Hidden (one (m, n, H_l) per layer, or () without ``hidden``) and output (m, n, O) on
    ``patterns`` for forecast weights (P, m): the linear model around ``center`` (loaded into
    center_net) or the network itself."""
    if kind == "linear":
        with torch.no_grad():
            layers, output = center_net.represent(patterns)
        d_layers, d_output = JacobianOperator(center_net, patterns).forward(
            weights - center[:, None], hidden=hidden)
        return (tuple((h[..., None] + dh).movedim(-1, 0) for h, dh in zip(layers, d_layers)),
                (output[..., None] + d_output).movedim(-1, 0))
    x, c, _ = patterns.to(weights.device, weights.dtype)
    return represent_at(center_net, weights.T, x, c)


def _dataset(net, curriculum, probes, steps, records, readouts, record_weights, center_net,
             theta0, options) -> xr.Dataset:
    """Evaluate the readouts at every checkpoint and assemble the trainer's layout."""
    like = theta0.new_empty(0)
    n_t, n_r, n_p = len(steps), len(readouts), len(probes)
    hidden = [like.new_empty(n_t, n_r, n_p, width) for width in net.hidden_sizes]
    output = like.new_empty(n_t, n_r, n_p, probes.n_outputs)
    loss, probe_loss = like.new_empty(n_t, n_r), like.new_empty(n_t, n_r)
    y_probe = probes.to(like.device, like.dtype)[2]
    row = 0
    for record in records:
        data = record.data
        rows = slice(row, row + len(record.steps))
        row += len(record.steps)
        center_net.load_flat_parameters(record.center)
        share = data.counts / data.counts.sum()  # the stage loss counts each pattern once
        for r, kind in enumerate(readouts):
            layers, out = _readout(kind, center_net, record.center, probes, record.weights)
            for target, layer in zip(hidden, layers):
                target[rows, r] = layer
            output[rows, r] = out
            probe_loss[rows, r] = pattern_loss(out, y_probe, data.stage.loss).mean(-1)
            stage_output = _readout(kind, center_net, record.center, data.patterns,
                                    record.weights, hidden=False)[1]
            loss[rows, r] = pattern_loss(stage_output, data.y, data.stage.loss) @ share
    ds = representation_dataset(hidden, output, steps, probes, leading_dims=("time", "readout"),
                                leading_coords={"readout": ("readout", list(readouts))})
    ds["loss"] = (("time", "readout"), loss.cpu().numpy())
    ds["probe_loss"] = (("time", "readout"), probe_loss.cpu().numpy())
    all_weights = (torch.cat([record.weights.T for record in records]) if record_weights
                   else None)
    return finish_run(ds, net, curriculum, probes, steps, all_weights, "forecast", theta0.device,
                      theta0.dtype, forecast=options)


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
