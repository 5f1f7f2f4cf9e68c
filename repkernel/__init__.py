"""repkernel: forecast how a network's hidden representations change during training from its
initial weights and curriculum (pseudo-kernels and linearized dynamics), and check the forecast
against the trained network."""

from repkernel.cpu_threads import threads, threads_for
from repkernel.curriculum import Curriculum, Stage
from repkernel.designs import rank_designs
from repkernel.eigen import components_by, components_by_input_feature, kernel_groups
from repkernel.ensembles import (
    band_figure,
    calibration,
    ensemble,
    monte_carlo_forecast,
    monte_carlo_kernel,
    summarize,
)
from repkernel.environments import MultitaskEnvironment, deep_linear_modes_task, step_function_task
from repkernel.forecasting import forecast, modes
from repkernel.influence import influence, influence_on_groups, leave_out
from repkernel.kernel_path import kernel_path
from repkernel.kernels import (
    jacobian_product,
    jacobian_transpose_product,
    jacobians,
    kernel_eigenvectors,
    kernel_product,
    loss_weighted_kernel,
    ntk,
    ntk_matrix,
    pseudo_kernel,
    pseudo_kernel_matrix,
)
from repkernel.losses import batch_loss, loss_gradient, pattern_loss
from repkernel.multitask import (
    capacity,
    evaluate_multitask,
    learning_efficiency,
    maximum_independent_set,
    score_outputs,
)
from repkernel.networks import MLP, DeepLinear, MultitaskNetwork, RepresentationNetwork
from repkernel.patterns import PatternSet, pattern_set
from repkernel.posterior import gp_posterior, posterior
from repkernel.results import checkpoint_steps, config_of, load, save
from repkernel.similarity import (
    adjusted_rand_index,
    align_items,
    angular_shape_distance,
    cca_similarity,
    change_alignment,
    cka_similarity,
    compare,
    dimensionality_ratio,
    kmeans_groups,
    participation_ratio,
    procrustes_distance,
    rdm,
    rsa,
    rsm,
    silhouette,
    svcca_similarity,
    task_similarity,
    task_similarity_summary,
)
from repkernel.training import DivergenceError, train
from repkernel.version import __version__
from repkernel.wide import WideMLP, infinite_width_kernels
from repkernel.wrapped import WrappedNetwork, wrap

__all__ = [
    "MLP",
    "Curriculum",
    "DeepLinear",
    "DivergenceError",
    "MultitaskEnvironment",
    "MultitaskNetwork",
    "PatternSet",
    "RepresentationNetwork",
    "Stage",
    "WideMLP",
    "WrappedNetwork",
    "__version__",
    "adjusted_rand_index",
    "align_items",
    "angular_shape_distance",
    "band_figure",
    "batch_loss",
    "calibration",
    "capacity",
    "cca_similarity",
    "change_alignment",
    "checkpoint_steps",
    "cka_similarity",
    "compare",
    "components_by",
    "components_by_input_feature",
    "config_of",
    "deep_linear_modes_task",
    "dimensionality_ratio",
    "ensemble",
    "evaluate_multitask",
    "forecast",
    "gp_posterior",
    "infinite_width_kernels",
    "influence",
    "influence_on_groups",
    "jacobian_product",
    "jacobian_transpose_product",
    "jacobians",
    "kernel_eigenvectors",
    "kernel_groups",
    "kernel_path",
    "kernel_product",
    "kmeans_groups",
    "learning_efficiency",
    "leave_out",
    "load",
    "loss_gradient",
    "loss_weighted_kernel",
    "maximum_independent_set",
    "modes",
    "monte_carlo_forecast",
    "monte_carlo_kernel",
    "ntk",
    "ntk_matrix",
    "participation_ratio",
    "pattern_loss",
    "pattern_set",
    "posterior",
    "procrustes_distance",
    "pseudo_kernel",
    "pseudo_kernel_matrix",
    "rank_designs",
    "rdm",
    "rsa",
    "rsm",
    "save",
    "score_outputs",
    "silhouette",
    "step_function_task",
    "summarize",
    "svcca_similarity",
    "task_similarity",
    "task_similarity_summary",
    "threads",
    "threads_for",
    "train",
    "wrap",
]
