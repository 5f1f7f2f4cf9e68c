"""repkernel: forecast how a network's hidden representations change during training from its
initial weights and curriculum (pseudo-kernels and linearized dynamics), and check the forecast
against the trained network."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("repkernel")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

from repkernel.curriculum import Curriculum, Stage
from repkernel.environments import MultitaskEnvironment, deep_linear_modes_task, step_function_task
from repkernel.forecasting import forecast, modes
from repkernel.losses import batch_loss, loss_gradient, pattern_loss
from repkernel.networks import MLP, DeepLinear, MultitaskNetwork, RepresentationNetwork
from repkernel.patterns import PatternSet, pattern_set
from repkernel.results import checkpoint_steps, config_of, load, save
from repkernel.training import DivergenceError, train

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
    "__version__",
    "batch_loss",
    "checkpoint_steps",
    "config_of",
    "deep_linear_modes_task",
    "forecast",
    "load",
    "loss_gradient",
    "modes",
    "pattern_loss",
    "pattern_set",
    "save",
    "step_function_task",
    "train",
]
