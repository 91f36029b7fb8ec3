"""vggedu: the helper package of a tutorial on VGG (Simonyan & Zisserman, 2014).

The notebooks in ``notebooks/`` teach; this package carries the plumbing:
``configs`` (Table 1 as data), ``models`` (builder, model class, the paper's layer names),
``vgg19`` (the explicit VGG-19), ``analysis`` (receptive field, parameter and FLOP arithmetic),
``data`` (CIFAR-10), ``training`` (config, step, evaluation), ``runs`` (a whole run, its time
budget), ``devices``, ``checkpoints``, ``distributed``, ``experiments`` (grids of runs),
``stats`` (the tests behind every verdict), ``studies`` (the stored studies, read),
``evaluation`` (dense, multi-crop, multi-scale, fusion), ``inspection`` (activations, Grad-CAM,
ImageNet weights), ``plots``, and the shipped classroom model (``load_classroom_model``).
"""

__version__ = "0.1.0"  # before the imports: vggedu.runs reads it into every run card

from .analysis import (
    LayerStats,
    activation_memory,
    count_dense_macs,
    count_flops,
    count_macs,
    count_parameters,
    format_table,
    layer_stats,
    stack_weights,
    stacked_receptive_field,
)
from .classroom import load_classroom_model
from .configs import (
    DERIVED_CONFIGS,
    VGG_CONFIGS,
    ConfigError,
    Layer,
    config_name,
    count_weight_layers,
    parse_layer,
    render_table_1,
    resolve_config,
)
from .models import VGG, VGG19, initialize, make_layers, vgg

__all__ = [
    "DERIVED_CONFIGS",
    "VGG_CONFIGS",
    "ConfigError",
    "Layer",
    "LayerStats",
    "VGG",
    "VGG19",
    "activation_memory",
    "config_name",
    "count_dense_macs",
    "count_flops",
    "count_macs",
    "count_parameters",
    "count_weight_layers",
    "format_table",
    "initialize",
    "layer_stats",
    "load_classroom_model",
    "make_layers",
    "parse_layer",
    "render_table_1",
    "resolve_config",
    "stack_weights",
    "stacked_receptive_field",
    "vgg",
]
