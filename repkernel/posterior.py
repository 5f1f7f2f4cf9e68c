"""Forecasts with uncertainty for MSE: the linearized ensemble and the Jacobian-kernel GP
posterior (DESIGN.md section 8).

Linearized ensemble (Lee et al. 2019). Kernels on N items, training items X (n of them), probes x;
Theta the NTK, K the prior covariance of the initial outputs (the NNGP; zero for one network
whose f_0 is known), m the prior mean of the initial outputs (zero, or f_0 itself):
    A(t)        = Theta(x, X) Theta(X, X)^-1 (I - D(t))
    D(t)        = exp(-rho Theta(X, X) k)            time="continuous" (gradient flow)
                = (I - rho Theta(X, X))^k            time="discrete"   (gradient descent, exact)
    mean(x, t)  = m(x) + A(t) (Y - m(X))
    cov(x, x', t) = K(x, x') + A K(X, X) A'^T - A K(X, x') - K(x, X) A'^T
with k in steps and rho = lr / n (reduction "mean") or lr ("sum"): the trainer's update on
L = reduce_i 1/2 ||f(x_i) - y_i||^2 (repkernel.losses), so the time axis is the forecast's.
Theta^-1 (I - D) acts on an eigenpair (lam, u) of Theta(X, X) as (1 - d(lam)) / lam, whose limit
is rho k as lam -> 0 (null directions do not move, as in the forecast); k = inf gives the
pseudo-inverse, i.e. kernel regression.

GP posterior (the adaptation view): prior f ~ GP(m, s^2 Theta), observations y = f(X) + noise of
variance noise^2:
    mean(x)     = m(x) + Theta(x, X) (Theta(X, X) + (noise^2 / s^2) I)^-1 (Y - m(X))
    cov(x, x')  = s^2 [Theta(x, x') - Theta(x, X) (Theta(X, X) + (noise^2 / s^2) I)^-1 Theta(X, x')]

Solvers: "eigh" (dense eigendecomposition of Theta(X, X), O(n^3)), "lanczos" / "cg" (only
products Theta(X, X) V, O(n^2) per iteration, for large training sets: Lanczos builds, for every
right-hand side at once, the Krylov space in which the spectral function (1 - d(lam)) / lam is
evaluated; conjugate gradients solve the regularized system of the GP posterior).

Kernels: (N, N) for scalar outputs or outputs that share one kernel (the Neural Tangents
convention; targets (n, O) are then O independent problems), or (N, O, N, O) eNTK blocks, which
are flattened to N O scalar items. Any of: torch tensors, numpy arrays, DataArrays
(e.g. ``infinite_width_kernels(...).ntk``, ``monte_carlo_kernel(...).ntk``, ``repkernel.ntk``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import xarray as xr

from repkernel.results import provenance

TIMES = ("continuous", "discrete")
REDUCTIONS = ("mean", "sum")
SOLVERS = ("eigh", "lanczos")
GP_SOLVERS = ("cholesky", "cg")


# -- inputs -------------------------------------------------------------------------------------


def _tensor(value, name: str, like: torch.Tensor | None = None) -> torch.Tensor:
    if isinstance(value, (xr.DataArray, xr.Variable)):
        value = value.values
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.array(value))  # a copy: inputs may be read-only
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name} must be a tensor, numpy array or DataArray, got "
                         f"{type(value).__name__}")
    if like is not None:
        value = value.to(device=like.device, dtype=like.dtype)
    if not value.is_floating_point() or not torch.isfinite(value).all():
        raise ValueError(f"{name} must hold finite floating-point numbers")
    return value


class _Problem:
    """Kernels flattened to scalar items, with training and probe indices and targets."""

    def __init__(self, ntk, train, targets, probes, prior_covariance, prior_mean):
        ntk = _tensor(ntk, "ntk")
        if ntk.ndim == 4:
            n_items, n_out = ntk.shape[:2]
            if tuple(ntk.shape) != (n_items, n_out, n_items, n_out):
                raise ValueError(f"a 4-D ntk must be (N, O, N, O) over one item set, got "
                                 f"{tuple(ntk.shape)}")
            self.blocks = n_out
            ntk = ntk.reshape(n_items * n_out, n_items * n_out)
        elif ntk.ndim == 2 and ntk.shape[0] == ntk.shape[1]:
            n_items, self.blocks = ntk.shape[0], 1
        else:
            raise ValueError(f"ntk must be a square (N, N) kernel or (N, O, N, O) blocks over one "
                             f"item set (train and probe items together), got {tuple(ntk.shape)}")
        eps = torch.finfo(ntk.dtype).eps
        if not torch.allclose(ntk, ntk.T, rtol=1e4 * eps, atol=1e4 * eps * float(ntk.abs().max())):
            raise ValueError("ntk is not symmetric: pass the kernel of one item set with itself")
        self.n_items, self.ntk = n_items, ntk
        self.train = _indices(train, n_items, "train")
        self.probes = (np.arange(n_items) if probes is None
                       else _indices(probes, n_items, "probes"))
        targets = _tensor(targets, "targets", ntk)
        targets = targets[:, None] if targets.ndim == 1 else targets
        if targets.ndim != 2 or targets.shape[0] != len(self.train):
            raise ValueError(f"targets must be (n_train,) or (n_train, O) with n_train = "
                             f"{len(self.train)}, got {tuple(targets.shape)}")
        if self.blocks > 1 and targets.shape[1] != self.blocks:
            raise ValueError(f"the ntk has {self.blocks} outputs per item but targets have "
                             f"{targets.shape[1]} columns")
        self.n_out = targets.shape[1]
        self.prior_mean = (torch.zeros(n_items, self.n_out, dtype=ntk.dtype, device=ntk.device)
                           if prior_mean is None else _tensor(prior_mean, "prior_mean", ntk))
        if self.prior_mean.ndim == 1:
            self.prior_mean = self.prior_mean[:, None]
        if tuple(self.prior_mean.shape) != (n_items, self.n_out):
            raise ValueError(f"prior_mean must be (N, O) = ({n_items}, {self.n_out}) over all "
                             f"items, got {tuple(self.prior_mean.shape)}")
        self.prior_covariance = None
        if prior_covariance is not None:
            cov = _tensor(prior_covariance, "prior_covariance", ntk)
            if cov.numel() != ntk.numel():
                raise ValueError(f"prior_covariance must have the ntk's shape, got "
                                 f"{tuple(cov.shape)}")
            self.prior_covariance = cov.reshape(ntk.shape)
        # flat scalar indices (item, output) -> row of the flat kernel; columns of right-hand sides
        self.rows_train = _flat(self.train, self.blocks)
        self.rows_probe = _flat(self.probes, self.blocks)
        residual = targets - self.prior_mean[self.train]
        self.residual = residual.reshape(-1, 1) if self.blocks > 1 else residual

    @property
    def train_kernel(self) -> torch.Tensor:
        return self.ntk[np.ix_(self.rows_train, self.rows_train)]

    @property
    def cross_kernel(self) -> torch.Tensor:
        return self.ntk[np.ix_(self.rows_probe, self.rows_train)]

    def mean_shape(self, flat: torch.Tensor) -> torch.Tensor:
        """(..., rows_probe, columns) -> (..., n_probes, O) with the prior mean added."""
        out = flat.reshape(*flat.shape[:-2], len(self.probes), self.n_out)
        return out + self.prior_mean[self.probes]


def _indices(index, n_items: int, name: str) -> np.ndarray:
    index = np.array(index)  # a writable copy (torch indexing warns on read-only arrays)
    if index.dtype == bool:
        index = np.flatnonzero(index)
    if index.ndim != 1 or index.size == 0 or not np.issubdtype(index.dtype, np.integer):
        raise ValueError(f"{name} must be a non-empty 1-D list of item indices or a boolean mask")
    if index.min() < 0 or index.max() >= n_items or len(np.unique(index)) != len(index):
        raise ValueError(f"{name} indices must be distinct and lie in 0..{n_items - 1}")
    return index


def _flat(items: np.ndarray, blocks: int) -> np.ndarray:
    return (items[:, None] * blocks + np.arange(blocks)[None, :]).reshape(-1)


def _check_psd(eigenvalues: torch.Tensor, name: str = "ntk") -> None:
    scale = float(eigenvalues.abs().max()) if eigenvalues.numel() else 0.0
    lowest = float(eigenvalues.min())
    if lowest < -1e3 * torch.finfo(eigenvalues.dtype).eps * max(scale, 1e-300):
        raise ValueError(f"{name} on the training items is not positive semidefinite (smallest "
                         f"eigenvalue {lowest:.3g}, largest {scale:.3g}): pass a kernel Gram "
                         f"matrix (J J^T, an NNGP/NTK), not an arbitrary matrix")


# -- the spectral function of the linearized dynamics --------------------------------------------


def _decay_function(lam: torch.Tensor, rho: float, steps: torch.Tensor, time: str):
    """(1 - d(lam)) / lam for every step: (T, len(lam)); d = exp(-rho lam k) or (1-rho lam)^k;
    its limit rho k at lam = 0; k = inf gives 1 / lam (0 on the null space)."""
    lam = lam.clamp_min(0)
    k = steps[:, None]
    tiny = lam <= torch.finfo(lam.dtype).eps * max(float(lam.max()), 1e-300) * lam.numel()
    safe = torch.where(tiny, torch.ones_like(lam), lam)
    if time == "continuous":
        decayed = -torch.expm1(-rho * safe * torch.where(torch.isinf(k), torch.zeros_like(k), k))
        decayed = torch.where(torch.isinf(k), torch.ones_like(decayed), decayed)
    else:
        decayed = 1 - torch.pow(1 - rho * safe, k)
    value = decayed / safe
    null = torch.where(torch.isinf(k), torch.zeros_like(k), rho * k).expand_as(value)
    return torch.where(tiny, null, value)


def _check_stable(lam_max: float, rho: float, time: str, lr: float, n: int, reduction: str):
    if time == "discrete" and rho * lam_max >= 2:
        bound = 2 * n / lam_max if reduction == "mean" else 2 / lam_max
        raise ValueError(f"gradient descent with lr={lr} diverges on these kernels (rho lam_max "
                         f"= {rho * lam_max:.3g} >= 2): use lr < {bound:.3g} or "
                         f"time='continuous'")


def _lanczos(product, start: torch.Tensor, iterations: int):
    """Lanczos with full reorthogonalization for every column of start (m, c) at once.
    Returns the bases V (c, m, j), tridiagonals T (c, j, j) and the start norms (c,)."""
    m = start.shape[0]
    norms = start.norm(dim=0)
    safe = torch.where(norms > 0, norms, torch.ones_like(norms))
    v = start / safe
    basis, alphas, betas = [v], [], []
    for step in range(min(iterations, m)):
        w = product(v)
        alpha = (w * v).sum(0)
        alphas.append(alpha)
        stacked = torch.stack(basis, dim=-1)  # (m, c, j)
        w = w - torch.einsum("mcj,cj->mc", stacked, torch.einsum("mcj,mc->cj", stacked, w))
        w = w - torch.einsum("mcj,cj->mc", stacked, torch.einsum("mcj,mc->cj", stacked, w))
        beta = w.norm(dim=0)
        converged = beta <= 1e3 * torch.finfo(beta.dtype).eps * alpha.abs().clamp_min(1e-300)
        if step == min(iterations, m) - 1 or bool(converged.all()):
            break
        betas.append(beta)
        v = w / torch.where(beta > 0, beta, torch.ones_like(beta))
        basis.append(v)
    j = len(alphas)
    basis = torch.stack(basis[:j], dim=-1).permute(1, 0, 2)  # (c, m, j)
    tri = torch.diag_embed(torch.stack(alphas, dim=-1))
    if j > 1:
        off = torch.stack(betas[: j - 1], dim=-1)
        tri = tri + torch.diag_embed(off, 1) + torch.diag_embed(off, -1)
    return basis, tri, norms


class _Spectral:
    """Applies (1 - D(t)) Theta^-1 (T, m, c) to right-hand sides (m, c) for all steps."""

    def __init__(self, kernel, rho, steps, time, solver, iterations, check):
        self.kernel, self.rho, self.steps, self.time = kernel, rho, steps, time
        self.solver, self.iterations, self.check = solver, iterations, check
        if solver == "eigh":
            self.lam, self.u = torch.linalg.eigh(kernel)
            _check_psd(self.lam)
            check(float(self.lam.max()))
            self.values = _decay_function(self.lam, rho, steps, time)  # (T, m)

    def __call__(self, rhs: torch.Tensor) -> torch.Tensor:
        if self.solver == "eigh":
            coefficients = self.u.T @ rhs  # (m, c)
            return torch.einsum("ij,tj,jc->tic", self.u, self.values, coefficients)
        basis, tri, norms = _lanczos(lambda v: self.kernel @ v, rhs, self.iterations)
        mu, s = torch.linalg.eigh(tri)  # (c, j), (c, j, j)
        _check_psd(mu.reshape(-1))
        self.check(float(mu.max()))
        values = _decay_function(mu.reshape(-1), self.rho, self.steps, self.time)
        values = values.reshape(len(self.steps), *mu.shape)  # (T, c, j)
        # f(Theta) b ~ |b| V S f(mu) S^T e1
        weights = torch.einsum("cij,tcj,cj->tci", s, values, s[:, 0, :]) * norms[None, :, None]
        return torch.einsum("cmi,tci->tmc", basis, weights)


# -- public API -----------------------------------------------------------------------------------


def posterior(ntk, train: Sequence[int] | np.ndarray, targets, steps, lr: float = 1.0,
              reduction: str = "mean", time: str = "continuous", prior_covariance=None,
              prior_mean=None, probes: Sequence[int] | np.ndarray | None = None,
              covariance: bool = False, solver: str = "eigh",
              iterations: int | None = None) -> xr.Dataset:
    """Mean and covariance over time of the outputs of the linearized ensemble trained on MSE
    (equations in the module docstring).

    ntk: (N, N) or (N, O, N, O) over all items (training and probe); train: indices (or mask)
    of the n training items; targets (n,) or (n, O); steps: step counts k (np.inf allowed:
    the end of training); lr, reduction: the trainer's (rho = lr / n or lr); time: "continuous"
    (gradient flow) or "discrete" (gradient descent, exact for the linear model; ValueError past
    its stability bound). prior_covariance: the prior covariance of the initial outputs, same
    shape as ntk (the NNGP; None = zero: deterministic f_0); prior_mean (N,) or (N, O): the
    prior mean of the initial outputs (None = zero; f_0 for one known network). probes: indices
    reported (default every item). solver "eigh" or "lanczos" (``iterations`` Krylov steps,
    default min(n O, 200); products with Theta(X, X) only).

    Returns a Dataset: mean(time, item, output_unit), variance(time, item, output_unit), and with
    ``covariance=True`` covariance(time, item, item_b) for an (N, N) kernel (shared by every
    output) or covariance(time, item, output_unit, item_b, output_unit_b) for (N, O, N, O).
    Raises ValueError for non-PSD or asymmetric kernels and bad arguments.
    """
    if time not in TIMES:
        raise ValueError(f"time must be one of {list(TIMES)}, got {time!r}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {list(REDUCTIONS)}, got {reduction!r}")
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {list(SOLVERS)}, got {solver!r}")
    if not (isinstance(lr, (int, float, np.floating)) and np.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive finite number, got {lr!r}")
    problem = _Problem(ntk, train, targets, probes, prior_covariance, prior_mean)
    like = problem.ntk
    steps_np = np.atleast_1d(np.asarray(steps, dtype=float))
    if steps_np.ndim != 1 or (steps_np < 0).any() or np.isnan(steps_np).any():
        raise ValueError("steps must be a 1-D list of step counts >= 0 (np.inf allowed)")
    finite = steps_np[np.isfinite(steps_np)]
    if time == "discrete" and (finite != np.round(finite)).any():
        raise ValueError("gradient descent counts whole steps: give integer steps, or use "
                         "time='continuous' for gradient-flow time")
    k = torch.as_tensor(steps_np, dtype=like.dtype, device=like.device)
    n_train = len(problem.train)
    rho = lr / n_train if reduction == "mean" else lr
    if iterations is None:
        iterations = min(len(problem.rows_train), 200)
    elif not (isinstance(iterations, (int, np.integer)) and iterations >= 1):
        raise ValueError(f"iterations must be a positive integer, got {iterations!r}")
    spectral = _Spectral(problem.train_kernel, rho, k, time, solver, iterations,
                         lambda lam_max: _check_stable(lam_max, rho, time, lr, n_train,
                                                       reduction))
    cross = problem.cross_kernel  # (p, m)
    mean = problem.mean_shape(cross @ spectral(problem.residual))  # (T, n_p, O)

    n_p = len(problem.rows_probe)
    cov = None
    if problem.prior_covariance is None:
        variance = like.new_zeros(len(k), n_p)
        if covariance:
            cov = like.new_zeros(len(k), n_p, n_p)
    else:
        # rows of A(t): a_x(t) = (1 - D) Theta^-1 Theta(X, x), one column per probe row
        a = spectral(cross.T).transpose(1, 2)  # (T, p, m)
        prior = problem.prior_covariance
        k_pp = prior[np.ix_(problem.rows_probe, problem.rows_probe)]
        k_px = prior[np.ix_(problem.rows_probe, problem.rows_train)]
        k_xx = prior[np.ix_(problem.rows_train, problem.rows_train)]
        variance = (torch.diagonal(k_pp) + ((a @ k_xx) * a).sum(-1)
                    - 2 * (a * k_px).sum(-1))  # the diagonal alone: O(T p m^2), no (T, p, p)
        if covariance:
            a_k = a @ k_px.T  # (T, p, p): A K(X, x')
            cov = k_pp + a @ k_xx @ a.transpose(1, 2) - a_k - a_k.transpose(1, 2)
    return _dataset(problem, steps_np, mean, variance, cov,
                    {"kind": "linearized_ensemble", "lr": lr, "reduction": reduction,
                     "time": time, "solver": solver, "steps": steps_np.tolist(),
                     "n_train": n_train, "prior_covariance": prior_covariance is not None,
                     "prior_mean": prior_mean is not None})


def learned_coefficients(train_kernel, residual, steps, rho: float, time: str = "continuous",
                         solver: str = "eigh", iterations: int | None = None) -> torch.Tensor:
    """Dual coefficients of the linearized dynamics, a(t) = Theta(X, X)^-1 (I - D(t)) r for
    residuals r = Y - f_0(X) (m, c): (T, m, c), so that f(x, t) = f_0(x) + Theta(x, X) a(t) and
    the hidden representation moves as h(x, t) = h_0(x) + Pi(x, X) a(t). Same D(t), rho and
    solvers as ``posterior``; train_kernel (m, m) must be PSD."""
    if time not in TIMES or solver not in SOLVERS:
        raise ValueError(f"time must be one of {list(TIMES)} and solver one of {list(SOLVERS)},"
                         f" got {time!r}, {solver!r}")
    kernel = _tensor(train_kernel, "train_kernel")
    residual = _tensor(residual, "residual", kernel)
    k = torch.as_tensor(np.atleast_1d(np.asarray(steps, dtype=float)), dtype=kernel.dtype,
                        device=kernel.device)
    spectral = _Spectral(kernel, rho, k, time, solver, iterations or min(len(kernel), 200),
                         lambda lam_max: _check_stable(lam_max, rho, time, rho, 1, "sum"))
    return spectral(residual)


def gp_posterior(ntk, train: Sequence[int] | np.ndarray, targets, noise: float = 0.0,
                 scale: float = 1.0, prior_mean=None,
                 probes: Sequence[int] | np.ndarray | None = None, covariance: bool = False,
                 solver: str = "cholesky", tolerance: float = 1e-10,
                 max_iterations: int | None = None) -> xr.Dataset:
    """Jacobian-kernel GP posterior (module docstring): prior f ~ GP(prior_mean, scale^2 ntk),
    observations with noise standard deviation ``noise``. Same kernels, indices and layout as
    ``posterior`` (without the time dim). solver "cholesky" (dense) or "cg" (conjugate gradients
    on Theta(X, X) + (noise / scale)^2 I for all right-hand sides at once, products only;
    ``tolerance`` on the relative residual). noise = 0 needs a positive definite Theta(X, X).
    """
    if solver not in GP_SOLVERS:
        raise ValueError(f"solver must be one of {list(GP_SOLVERS)}, got {solver!r}")
    if not (np.isfinite(noise) and noise >= 0 and np.isfinite(scale) and scale > 0):
        raise ValueError(f"noise must be >= 0 and scale > 0 (finite), got noise={noise!r}, "
                         f"scale={scale!r}")
    problem = _Problem(ntk, train, targets, probes, None, prior_mean)
    kernel = problem.train_kernel
    _check_psd(torch.linalg.eigvalsh(kernel) if solver == "cholesky" else
               torch.diagonal(kernel))
    system = kernel + (noise / scale) ** 2 * torch.eye(len(kernel), dtype=kernel.dtype,
                                                       device=kernel.device)
    cross = problem.cross_kernel
    rhs = torch.cat([problem.residual, cross.T], dim=1)
    if solver == "cholesky":
        factor, info = torch.linalg.cholesky_ex(system)
        if int(info) != 0:
            raise ValueError("Theta(X, X) + (noise / scale)^2 I is not positive definite: add "
                             "observation noise (noise > 0) or remove duplicate training items")
        solved = torch.cholesky_solve(rhs, factor)
    else:
        solved = conjugate_gradients(lambda v: system @ v, rhs, tolerance,
                                     max_iterations or 10 * len(system))
    n_res = problem.residual.shape[1]
    mean = problem.mean_shape(cross @ solved[:, :n_res])
    cov = scale**2 * (problem.ntk[np.ix_(problem.rows_probe, problem.rows_probe)]
                      - cross @ solved[:, n_res:])
    ds = _dataset(problem, np.array([np.inf]), mean[None],
                  torch.diagonal(cov)[None], cov[None] if covariance else None,
                  {"kind": "gp_posterior", "noise": noise, "scale": scale, "solver": solver,
                   "prior_mean": prior_mean is not None})
    return ds.isel(time=0, drop=True)


def conjugate_gradients(product, rhs: torch.Tensor, tolerance: float = 1e-10,
                        max_iterations: int = 1000) -> torch.Tensor:
    """Solve S X = B for a symmetric positive definite S given only products S V, every column
    of B (m, c) at once; stops when every relative residual is below ``tolerance``.
    Raises ValueError when the iteration fails (S not positive definite) or does not converge."""
    x = torch.zeros_like(rhs)
    r = rhs.clone()
    p = r.clone()
    rr = (r * r).sum(0)
    target = tolerance**2 * (rhs * rhs).sum(0)
    for _ in range(max_iterations):
        if bool((rr <= target).all()):
            return x
        sp = product(p)
        curvature = (p * sp).sum(0)
        if bool((curvature[rr > target] <= 0).any()):
            raise ValueError("conjugate gradients met a non-positive curvature: the kernel "
                             "system is not positive definite (add noise > 0)")
        alpha = torch.where(rr > target, rr / torch.where(curvature > 0, curvature,
                                                          torch.ones_like(curvature)), 0)
        x = x + alpha * p
        r = r - alpha * sp
        rr_new = (r * r).sum(0)
        p = r + (rr_new / torch.where(rr > 0, rr, torch.ones_like(rr))) * p
        rr = rr_new
    raise ValueError(f"conjugate gradients did not reach tolerance {tolerance} in "
                     f"{max_iterations} iterations: the kernel system is ill conditioned (add "
                     f"noise > 0 or raise max_iterations)")


def _dataset(problem: _Problem, steps: np.ndarray, mean: torch.Tensor, diag: torch.Tensor,
             cov: torch.Tensor | None, config: dict) -> xr.Dataset:
    """mean (T, n_p, O), diag (T, p) the variances of the flat probe rows, cov (T, p, p) or
    None."""
    blocks, n_p = problem.blocks, len(problem.probes)
    if blocks > 1:
        variance = diag.reshape(len(steps), n_p, blocks)
    else:
        variance = diag[:, :, None].expand(-1, -1, problem.n_out)
    coords = {"time": steps, "item": problem.probes, "output_unit": np.arange(problem.n_out)}
    data = {"mean": (("time", "item", "output_unit"), mean.cpu().numpy()),
            "variance": (("time", "item", "output_unit"), variance.cpu().numpy())}
    if cov is not None:
        coords["item_b"] = problem.probes
        if blocks > 1:
            coords["output_unit_b"] = np.arange(blocks)
            data["covariance"] = (("time", "item", "output_unit", "item_b", "output_unit_b"),
                                  cov.reshape(len(steps), n_p, blocks, n_p, blocks).cpu().numpy())
        else:
            data["covariance"] = (("time", "item", "item_b"), cov.cpu().numpy())
    like = problem.ntk
    return xr.Dataset(data, coords=coords,
                      attrs=provenance(config, like.device, like.dtype, "posterior"))
