"""Kernels of a run configuration as one result Dataset: the entry point that ``repkernel
kernel`` and studies share (which kernel, on which patterns, a memory guard, provenance).

what:
  eigen          the published t = 0 eigen-analysis (repkernel.eigen.eigen_analysis) of the
                 stage's loss-weighted kernel: eigenvector(output_unit, rank, item),
                 by_input_feature, k-means kernel_group and its silhouette
  ntk            eNTK J_f(probes) J_f(stage patterns)^T (repkernel.kernels.ntk)
  pseudo         pseudo-kernel Pi = J_h(probes) J_f(stage patterns)^T (kernels.pseudo_kernel)
  loss-weighted  -rho J(probes) J_f^T g on the stage (kernels.loss_weighted_kernel; J = J_f
                 for target "output", J_h for "hidden")
"""

from __future__ import annotations

import xarray as xr

from repkernel import eigen, kernels, results

KERNELS = ("eigen", "ntk", "pseudo", "loss-weighted")
ON = ("train", "probes")


def dense_gigabytes(what: str, target: str, n_probes: int, n_train: int, network,
                    n_out: int) -> float:
    """Size in GB (float64) of the dense ``what`` kernel of n_probes x n_train patterns."""
    rows = n_out if what == "ntk" or (what == "loss-weighted" and target == "output") \
        else sum(network.hidden_sizes)
    columns = n_train * (n_out if what in ("ntk", "pseudo") else 1)
    return n_probes * rows * columns * 8 / 1e9


def kernel_result(setup, what: str = "eigen", target: str = "output", stage: int = 0,
                  on: str = "train", n_eigenvectors: int = 3, clusters: int = 12,
                  method: str = "auto", max_gb: float = 4.0) -> xr.Dataset:
    """The ``what`` kernel (module docstring) at the initial weights of ``setup`` (a
    repkernel.config.Setup), its curriculum stage ``stage`` the training side, as a Dataset with
    provenance attributes (the run configuration plus these options under "kernel").

    on (eigen only): "train" (the stage's patterns on both sides, the published analysis) or
    "probes" (the setup's probes against them). n_eigenvectors per output unit and ``clusters``
    k-means groups (0: none) for eigen; dense kernels over ``max_gb`` GB raise ValueError.
    """
    for name, value, choices in (("what", what, KERNELS), ("target", target, kernels.TARGETS),
                                 ("on", on, ON), ("method", method, kernels.METHODS)):
        if value not in choices:
            raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    stages = setup.curriculum.stages
    if not 0 <= stage < len(stages):
        raise ValueError(f"stage must be in 0..{len(stages) - 1} (the curriculum has "
                         f"{len(stages)} stages), got {stage}")
    chosen, net, probes = stages[stage], setup.network, setup.probes
    computing = dict(method=method, device=setup.device, dtype=setup.dtype)
    if what == "eigen":
        ds = eigen.eigen_analysis(net, chosen.patterns if on == "train" else probes, chosen,
                                  n_eigenvectors, clusters, **computing)
    else:
        size = dense_gigabytes(what, target, len(probes), len(chosen.patterns), net,
                               chosen.patterns.n_outputs)
        if size > max_gb:
            raise ValueError(f"the dense {what} kernel would take {size:.1f} GB (over max_gb "
                             f"{max_gb:g}): use fewer probes or training patterns, or raise "
                             f"max_gb (--max-gb)")
        if what == "ntk":
            da = kernels.ntk(net, probes, chosen.patterns, **computing)
        elif what == "pseudo":
            da = kernels.pseudo_kernel(net, probes, chosen.patterns, **computing)
        else:
            da = kernels.loss_weighted_kernel(net, probes, stage=chosen, target=target,
                                              **computing)
        ds = da.to_dataset()
    kernel_attrs = {k: v for k, v in ds.attrs.items() if k not in ("device", "dtype")}
    options = {"what": what, "target": target, "stage": stage, "on": on,
               "n_eigenvectors": n_eigenvectors, "clusters": clusters, "method": method}
    ds.attrs = {**kernel_attrs, **results.provenance({**setup.config, "kernel": options},
                                                      setup.device, setup.dtype, "kernel")}
    return ds
