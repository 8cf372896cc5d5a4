"""Time the training step of Apple's official AIMv2 trainer (apple/ml-l3m).

`tools/benchmark.py` times `AIMV2Pretrainer`'s training step; this worker
times the same step of Apple's PyTorch trainer, at the same sizes, so that
the two can stand side by side. It builds ml-l3m's own model and loss
classes with the arguments of its AIMv2 recipe
(`configs/aimv2/001_aimv2_hfdata.yaml`) at our encoder and decoder sizes,
feeds them a batch shaped like its dataset's (a normalized image, caption
tokens and the prefix mask of its `RandomRasterMasking` generator) and runs
what its training loop (`l3m.engine.train`) does per iteration:

- forward and loss, under `torch.autocast("cpu", dtype=torch.bfloat16)`
  for `"mixed_bfloat16"` (the recipe's `dtype: bfloat16`; its loss
  scaler is off for bfloat16) or in float32 for `"float32"`;
- backward, global-norm gradient clipping at 1.0, a step of its `AdamLH`
  optimizer (rate 1e-3, betas (0.9, 0.95), eps 1e-8, weight decay 1e-4,
  none on the parameters its `wd_exclude` patterns name), and
  `zero_grad(set_to_none=True)`.

With `compiled=True` the model (not the loss or the optimizer) is wrapped in
`torch.compile`, as its runner does for `torch_compile: true`. The
learning-rate schedule, logging and the CUDA synchronisation are left out:
they cost nothing on a CPU step. Before timing, the official model's
trainable parameter count must equal `AIMV2Pretrainer`'s at the same
configuration (else it raises), so both sides do the same work.

ml-l3m is not a dependency: give a checkout of it.

    git clone https://github.com/apple/ml-l3m
    .venv/bin/python tools/official_trainer.py --source ml-l3m \\
        --workload tiny
    .venv/bin/python tools/official_trainer.py --source ml-l3m \\
        --workload small --dtype-policy mixed_bfloat16 --compiled

It prints `RESULT <json>` (see `run_official`). Only the modules of the
classes it uses are imported from the checkout, without ml-l3m's package
`__init__` files, which import its data, logging and distribution stack
(wandb, hydra, transformers, torchvision, ...). Two imports those modules
make for initialisation helpers and type annotations get small stand-ins
when they are not installed (see `stand_in_modules`); they do not change
what a step computes.
"""

import argparse
import fnmatch
import functools
import importlib.abc
import importlib.machinery
import importlib.util
import json
import math
import os
import resource
import statistics
import sys
import time
import types

TOOLS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TOOLS)
REPOSITORY = "https://github.com/apple/ml-l3m"
DTYPE_POLICIES = ("float32", "mixed_bfloat16")

# The optimisation of ml-l3m's AIMv2 recipe (its `optim` section).
LEARNING_RATE = 1e-3
BETAS = (0.9, 0.95)
EPSILON = 1e-8
WEIGHT_DECAY = 1e-4
GRADIENT_CLIP_NORM = 1.0
NO_DECAY_PATTERNS = (
    "*bias*",
    "*pos_embed*",
    "*norm*",
    "*logit_scale*",
    "*cls_token*",
    "*positional_embedding*",
)
# Its loss: pixel and text weights, the padding id the text loss ignores.
CRITERIA_WEIGHTS = (0.4, 1.0)
PAD_TOKEN = 1
NORM_EPSILON = 1e-5


# --- Stand-ins for imports that do not affect the step ----------------------


def _to_2tuple(value):
    """A pair from one value, or the pair itself (`timm`'s `to_2tuple`).

    Args:
        value: a value, or an iterable (not a string) of two values.

    Returns:
        A tuple of two values.
    """
    if isinstance(value, str) or not hasattr(value, "__iter__"):
        return (value, value)
    return tuple(value)


def _trunc_normal_(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0):
    """Fill `tensor` from a normal truncated to `[a, b]` (absolute bounds).

    Args:
        tensor: torch.Tensor. Filled in place.
        mean: float. Mean of the normal. Defaults to `0.0`.
        std: float. Standard deviation of the normal. Defaults to `1.0`.
        a: float. Lowest value. Defaults to `-2.0`.
        b: float. Highest value. Defaults to `2.0`.

    Returns:
        `tensor`.
    """
    import torch

    return torch.nn.init.trunc_normal_(tensor, mean=mean, std=std, a=a, b=b)


def _variance_scaling_(tensor, scale=1.0, mode="fan_in", distribution="normal"):
    """Fill `tensor` with variance `scale / fan` (TensorFlow's scheme).

    Args:
        tensor: torch.Tensor. Filled in place; its fans are PyTorch's.
        scale: float. Variance before dividing by the fan. Defaults to
            `1.0`.
        mode: str. `"fan_in"`, `"fan_out"` or `"fan_avg"`. Defaults to
            `"fan_in"`.
        distribution: str. `"truncated_normal"` (cut at two standard
            deviations, widened to keep the variance), `"normal"` or
            `"uniform"`. Defaults to `"normal"`.

    Returns:
        `tensor`.

    Raises:
        ValueError: for another `mode` or `distribution`.
    """
    import torch

    fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(tensor)
    fans = {"fan_in": fan_in, "fan_out": fan_out}
    fans["fan_avg"] = (fan_in + fan_out) / 2
    if mode not in fans:
        raise ValueError(
            f"`mode` must be one of {sorted(fans)}. Received: mode={mode!r}"
        )
    variance = scale / fans[mode]
    if distribution == "truncated_normal":
        # The standard deviation of a unit normal cut at +-2.
        std = math.sqrt(variance) / 0.87962566103423978
        return _trunc_normal_(tensor, std=std, a=-2 * std, b=2 * std)
    if distribution == "normal":
        return torch.nn.init.normal_(tensor, std=math.sqrt(variance))
    if distribution == "uniform":
        bound = math.sqrt(3 * variance)
        return torch.nn.init.uniform_(tensor, -bound, bound)
    raise ValueError(
        "`distribution` must be 'truncated_normal', 'normal' or 'uniform'. "
        f"Received: distribution={distribution!r}"
    )


def _drop_path_class():
    import torch

    class DropPath(torch.nn.Module):
        """Stochastic depth: drops a residual branch per example.

        Args:
            drop_prob: float. Probability of dropping the branch in
                training. `0.0` (the AIMv2 recipe) is the identity.
            scale_by_keep: bool. Divide kept branches by the keep
                probability. Defaults to `True`.
        """

        def __init__(self, drop_prob=0.0, scale_by_keep=True):
            super().__init__()
            self.drop_prob = drop_prob
            self.scale_by_keep = scale_by_keep

        def forward(self, x):
            if not self.training or self.drop_prob == 0.0:
                return x
            keep = 1.0 - self.drop_prob
            shape = (x.shape[0],) + (1,) * (x.ndim - 1)
            mask = x.new_empty(shape).bernoulli_(keep)
            if self.scale_by_keep and keep > 0.0:
                mask = mask / keep
            return x * mask

    return DropPath


def stand_in_modules():
    """Stand-ins for `timm.layers` and `omegaconf`, not installed anywhere.

    ml-l3m's model modules import four names from `timm.layers`
    (`DropPath`, `trunc_normal_`, `variance_scaling_`, `to_2tuple`): weight
    initialisation, stochastic depth (off in the AIMv2 recipe) and a tuple
    helper. Its distribution helpers import `omegaconf.DictConfig` for type
    annotations only. These stand-ins, written here on `torch.nn.init`,
    serve when those packages are missing or fail to import (timm imports
    torchvision, which may not match a CPU build of torch). They change
    how parameters start, never what a training step computes or costs.

    Returns:
        A dict of module name to module: `"timm"`, `"timm.layers"`,
        `"timm.layers.weight_init"` and `"omegaconf"`.
    """
    timm = types.ModuleType("timm")
    timm.__doc__ = "Stand-in for timm: the helpers ml-l3m's models import."
    layers = types.ModuleType("timm.layers")
    weight_init = types.ModuleType("timm.layers.weight_init")
    for module in (layers, weight_init):
        module.trunc_normal_ = _trunc_normal_
        module.variance_scaling_ = _variance_scaling_
    layers.to_2tuple = _to_2tuple
    layers.DropPath = _drop_path_class()
    layers.weight_init = weight_init
    timm.layers = layers
    timm.__path__ = []
    layers.__path__ = []

    omegaconf = types.ModuleType("omegaconf")
    omegaconf.__doc__ = "Stand-in for omegaconf: a name for annotations."
    omegaconf.DictConfig = type("DictConfig", (dict,), {})
    return {
        "timm": timm,
        "timm.layers": layers,
        "timm.layers.weight_init": weight_init,
        "omegaconf": omegaconf,
    }


def _install_stand_ins():
    """Put the stand-ins of `stand_in_modules` where imports fail.

    Returns:
        The list of top-level names that got a stand-in.
    """
    modules = stand_in_modules()
    installed = []
    for name, probe in (("timm", "timm.layers"), ("omegaconf", "omegaconf")):
        try:
            importlib.import_module(probe)
            continue
        except Exception:  # noqa: BLE001 (timm fails in many ways)
            pass
        # Drop what a failed import left half-initialised.
        for loaded in [m for m in sys.modules if m.split(".")[0] == name]:
            del sys.modules[loaded]
        for module_name, module in modules.items():
            if module_name.split(".")[0] == name:
                sys.modules[module_name] = module
        installed.append(name)
    return installed


# --- Importing ml-l3m from a checkout ---------------------------------------


def _source_package(source):
    """`<source>/src`, after checking that it holds the `l3m` package."""
    if source is None or not os.path.isdir(
        os.path.join(str(source), "src", "l3m")
    ):
        reason = (
            "does not exist"
            if source is None or not os.path.exists(str(source))
            else "has no src/l3m"
        )
        raise FileNotFoundError(
            f"`source` must be a checkout of apple/ml-l3m: the directory "
            f"that holds src/l3m (git clone {REPOSITORY}). Received: "
            f"source={source!r}, which {reason}."
        )
    return os.path.abspath(os.path.join(str(source), "src"))


class _PackagesWithoutInit(importlib.abc.MetaPathFinder):
    """Finds `l3m` in one directory and skips its packages' `__init__`.

    Each `l3m` package becomes an empty package with its search path, so a
    module of it imports only what that module itself imports.
    """

    def __init__(self, directory):
        self.directory = directory

    def find_spec(self, fullname, path, target=None):
        if fullname.split(".")[0] != "l3m":
            return None
        search = [self.directory] if fullname == "l3m" else path
        spec = importlib.machinery.PathFinder.find_spec(fullname, search)
        if spec is None or spec.submodule_search_locations is None:
            return spec
        package = importlib.machinery.ModuleSpec(
            fullname, None, is_package=True
        )
        package.submodule_search_locations = list(
            spec.submodule_search_locations
        )
        return package


def import_l3m(source):
    """The ml-l3m classes of the AIMv2 recipe, imported from `source`.

    Args:
        source: str. A checkout of apple/ml-l3m (holding `src/l3m`).

    Returns:
        A `types.SimpleNamespace` of the classes, by their names, and
        `stand_ins`: the packages that got a stand-in.

    Raises:
        FileNotFoundError: if `source` holds no `src/l3m`.
        ImportError: if another `l3m` is already imported.
    """
    directory = _source_package(source)
    package = os.path.join(directory, "l3m")
    loaded = sys.modules.get("l3m")
    paths = [os.path.realpath(p) for p in getattr(loaded, "__path__", [])]
    if loaded is not None and os.path.realpath(package) not in paths:
        raise ImportError(
            f"Another l3m is already imported ({list(loaded.__path__)}); "
            f"cannot import the one of source={source!r}."
        )
    stand_ins = _install_stand_ins()
    if directory not in sys.path:
        sys.path.insert(0, directory)
    if not any(
        isinstance(f, _PackagesWithoutInit) and f.directory == directory
        for f in sys.meta_path
    ):
        sys.meta_path.insert(0, _PackagesWithoutInit(directory))

    names = {
        "l3m.model.meta_models": (
            "MetaModel",
            "InSeriesMetaModels",
            "GenericBlock",
        ),
        "l3m.model.utils": ("MultiBlock",),
        "l3m.model.preprocessors.vision": (
            "ViTPreprocessor",
            "PatchEmbed",
            "TextPreprocessor",
        ),
        "l3m.model.preprocessors.mask_builders": (
            "PrefixAttentionMaskBuilder",
        ),
        "l3m.model.preprocessors.multimodal": ("VisionAndTextPreprocessor",),
        "l3m.model.layers.normalization": ("RMSNorm",),
        "l3m.model.layers.ffn": ("SwiGLUFFN",),
        "l3m.model.layers.attention": ("GenericAttention",),
        "l3m.model.trunks.transformer": ("Transformer",),
        "l3m.model.postprocessors.select": ("SelectTokens",),
        "l3m.model.heads.classifier": ("LinearClassifier",),
        "l3m.loss.wrappers": ("MultiLossWrapper",),
        "l3m.loss.mae_loss": ("RasterPixelLoss",),
        "l3m.loss.llm_cross_entropy_loss": ("LLMCrossEntropyLoss",),
        "l3m.helpers.vision.mask_generator": ("RandomRasterMasking",),
        "l3m.optim.adamw_lh": ("AdamLH",),
    }
    classes = {}
    for module_name, class_names in names.items():
        module = importlib.import_module(module_name)
        for class_name in class_names:
            classes[class_name] = getattr(module, class_name)
    return types.SimpleNamespace(stand_ins=stand_ins, **classes)


# --- The official model at our sizes ----------------------------------------


def _block_parameters(width, hidden):
    # Query, key, value and output projections; SwiGLU; two RMSNorms.
    return 4 * width * width + 3 * width * hidden + 2 * width


def reference_parameter_count(backbone_config, decoder_config):
    """Trainable parameters of `AIMV2Pretrainer` at these configurations.

    Args:
        backbone_config: dict of `AIMV2Backbone` arguments
            (`keras_aimv2.configs.BACKBONE_CONFIGS` entry).
        decoder_config: dict of `AIMV2Pretrainer` decoder arguments
            (`keras_aimv2.configs.DECODER_CONFIGS` entry).

    Returns:
        The number of trainable parameters, an int.
    """
    height, width, channels = backbone_config["image_shape"]
    patch = backbone_config["patch_size"]
    dim = backbone_config["hidden_dim"]
    num_patches = (height // patch) * (width // patch)
    learned = backbone_config.get("position_embedding", "learned") == "learned"
    encoder = (
        patch * patch * channels * dim  # patch projection
        + 2 * dim  # its bias and RMSNorm
        + (num_patches * dim if learned else 0)
        + backbone_config["num_layers"]
        * _block_parameters(dim, backbone_config["intermediate_dim"])
        + dim  # final RMSNorm
    )
    decoder_dim = decoder_config["decoder_hidden_dim"]
    vocabulary = decoder_config["vocabulary_size"]
    decoder = (
        dim * decoder_dim
        + decoder_dim  # image projection
        + vocabulary * decoder_dim  # token embedding
        + decoder_dim  # BOS token
        + (decoder_config["context_length"] + 1) * decoder_dim  # positions
        + decoder_config["decoder_num_layers"]
        * _block_parameters(
            decoder_dim, decoder_config["decoder_intermediate_dim"]
        )
        + decoder_dim  # final RMSNorm
        + decoder_dim * vocabulary  # text head
        + decoder_dim * patch * patch * channels  # pixel head
    )
    return encoder + decoder


def swiglu_arguments(intermediate_dim):
    """`Transformer` arguments that give ml-l3m's SwiGLU this hidden width.

    ml-l3m's `SwiGLUFFN` turns the trunk's MLP width `h` (`mlp_ratio *
    width` unless `mlp_hidden_dim` is given) into `int(2 * h / 3)` rounded
    up to a multiple of `multiple_of` (256). With `mlp_hidden_dim =
    ceil(3 * intermediate_dim / 2)` that is `intermediate_dim` again; for
    the released sizes it is the same module as the recipe's
    `mlp_ratio: 4`.

    Args:
        intermediate_dim: int. The SwiGLU hidden width wanted.

    Returns:
        A tuple `(mlp_hidden_dim, multiple_of)`: `multiple_of` is the
        recipe's 256 where that keeps the width, else 1.
    """
    multiple_of = 256 if intermediate_dim % 256 == 0 else 1
    return -(-3 * intermediate_dim // 2), multiple_of


def _trunk(l3m, width, num_layers, num_heads, intermediate_dim, causal, **keys):
    mlp_hidden_dim, multiple_of = swiglu_arguments(intermediate_dim)
    return l3m.Transformer(
        embed_dim=width,
        num_blocks=num_layers,
        mlp_hidden_dim=mlp_hidden_dim,
        ffn_target=functools.partial(l3m.SwiGLUFFN, multiple_of=multiple_of),
        norm_layer=functools.partial(l3m.RMSNorm, eps=NORM_EPSILON),
        attn_target=functools.partial(
            l3m.GenericAttention,
            dim=width,
            num_heads=num_heads,
            qkv_bias=False,
            is_causal=causal,
        ),
        weight_init_style="xavier_uniform",
        post_trunk_norm=True,
        use_bias=False,
        **keys,
    )


def build_official(l3m, backbone_config, decoder_config):
    """ml-l3m's AIMv2 model and loss, at our sizes.

    The classes and arguments of the recipe's `model` and `loss` sections,
    with its sizes replaced by ours.

    Args:
        l3m: the namespace of `import_l3m`.
        backbone_config: dict of `AIMV2Backbone` arguments.
        decoder_config: dict of `AIMV2Pretrainer` decoder arguments.

    Returns:
        A tuple `(model, criterion)`: an `InSeriesMetaModels` and a
        `MultiLossWrapper`.

    Raises:
        ValueError: for images without three channels, or a SwiGLU whose
            hidden width differs from ours.
    """
    import torch

    height, width, channels = backbone_config["image_shape"]
    if channels != 3:
        raise ValueError(
            "ml-l3m's pixel loss patchifies three-channel images. Received: "
            f"image_shape={tuple(backbone_config['image_shape'])}"
        )
    patch = backbone_config["patch_size"]
    dim = backbone_config["hidden_dim"]
    num_patches = (height // patch) * (width // patch)
    learned = backbone_config.get("position_embedding", "learned") == "learned"
    decoder_dim = decoder_config["decoder_hidden_dim"]
    decoder_layers = decoder_config["decoder_num_layers"]
    vocabulary = decoder_config["vocabulary_size"]

    encoder = l3m.MetaModel(
        preprocessor=l3m.MultiBlock(
            [
                l3m.ViTPreprocessor(
                    read_key="image",
                    write_key="image_tokens",
                    patchifier=l3m.PatchEmbed(
                        img_size=(height, width),
                        patch_size=patch,
                        in_chans=channels,
                        embed_dim=dim,
                        norm_layer=functools.partial(
                            l3m.RMSNorm, eps=NORM_EPSILON
                        ),
                    ),
                    pos_embed_type="absolute" if learned else "sincos",
                    drop_patches=False,
                    cls_token=False,
                ),
                l3m.PrefixAttentionMaskBuilder(
                    read_key="encoder_prefix_mask",
                    write_key="encoder_prefix_attn_mask",
                    seq_len=num_patches,
                    cls_token=False,
                ),
            ]
        ),
        trunk=_trunk(
            l3m,
            dim,
            backbone_config["num_layers"],
            backbone_config["num_heads"],
            backbone_config["intermediate_dim"],
            causal=False,
            read_key="image_tokens",
            write_key="image_tokens",
            self_attn_mask_read_key="encoder_prefix_attn_mask",
        ),
        postprocessor=torch.nn.Identity(),
        head=torch.nn.Identity(),
    )
    decoder = l3m.MetaModel(
        preprocessor=l3m.VisionAndTextPreprocessor(
            text_read_key="text_tokens",
            vision_read_key="projected_image_tokens",
            write_key="vision_text_tokens",
            text_preprocessor=l3m.TextPreprocessor(
                read_key="text",
                write_key="text_tokens",
                inference_read_key="prompt",
                vocab_size=vocabulary,
                embed_dim=decoder_dim,
                context_length=decoder_config["context_length"],
                cls_token=True,
            ),
            vision_preprocessor=l3m.GenericBlock(
                read_key="image_tokens",
                write_key="projected_image_tokens",
                module=torch.nn.Linear(dim, decoder_dim),
            ),
        ),
        trunk=_trunk(
            l3m,
            decoder_dim,
            decoder_layers,
            decoder_config["decoder_num_heads"],
            decoder_config["decoder_intermediate_dim"],
            causal=True,
            read_key="vision_text_tokens",
            write_key="vision_text_tokens",
        ),
        postprocessor=l3m.MultiBlock(
            [
                l3m.SelectTokens(
                    read_key="vision_text_tokens",
                    write_key="text_tokens",
                    start=num_patches,
                ),
                l3m.SelectTokens(
                    read_key="vision_text_tokens",
                    write_key="image_tokens",
                    start=0,
                    end=num_patches,
                ),
            ]
        ),
        head=l3m.MultiBlock(
            [
                l3m.LinearClassifier(
                    read_key="text_tokens",
                    write_key="text_tokens",
                    in_features=decoder_dim,
                    out_features=vocabulary,
                    weight_init_style="fan_in_depth_scaled",
                    encoder_num_blocks=decoder_layers,
                    use_bias=False,
                ),
                l3m.LinearClassifier(
                    read_key="image_tokens",
                    write_key="image_preds",
                    in_features=decoder_dim,
                    out_features=patch * patch * channels,
                    weight_init_style="fan_in_depth_scaled",
                    encoder_num_blocks=decoder_layers,
                    use_bias=False,
                ),
            ]
        ),
    )
    model = l3m.InSeriesMetaModels(
        models={"image_encoder": encoder, "text_decoder": decoder}
    )
    criterion = l3m.MultiLossWrapper(
        criteria=[
            l3m.RasterPixelLoss(
                read_key="image_preds",
                norm_pix_loss=True,
                mask_read_key="encoder_prefix_mask",
                patch_size=patch,
                image_size=(height, width),
            ),
            l3m.LLMCrossEntropyLoss(
                read_key="text_tokens",
                shift_target=False,
                ignore_index=PAD_TOKEN,
            ),
        ],
        criteria_weights=list(CRITERIA_WEIGHTS),
    )
    for name, trunk, hidden in (
        ("encoder", encoder.trunk, backbone_config["intermediate_dim"]),
        ("decoder", decoder.trunk, decoder_config["decoder_intermediate_dim"]),
    ):
        built = trunk.blocks[0].mlp.fc1.out_features
        if built != hidden:
            raise ValueError(
                f"ml-l3m's {name} SwiGLU came out {built} wide instead of "
                f"{hidden}: its width rule changed (see swiglu_arguments)."
            )
    return model, criterion


def official_batch(l3m, backbone_config, decoder_config, batch_size, seed=0):
    """A batch as ml-l3m's AIMv2 dataset yields it, with random contents.

    Args:
        l3m: the namespace of `import_l3m`.
        backbone_config: dict of `AIMV2Backbone` arguments.
        decoder_config: dict of `AIMV2Pretrainer` decoder arguments.
        batch_size: int. Examples in the batch.
        seed: int. Seed of the contents. Defaults to `0`.

    Returns:
        A dict: `"image"` `(batch, 3, height, width)` standard normal,
        `"text"` `(batch, context_length)` int64 ids (never the padding
        id, as our benchmark's captions fill the context), and
        `"encoder_prefix_mask"` `(batch, num_patches)` bool from its
        `RandomRasterMasking` (false on a prefix of `U{1, ..., I - 1}`
        patches).
    """
    import torch

    height, width, channels = backbone_config["image_shape"]
    patch = backbone_config["patch_size"]
    num_patches = (height // patch) * (width // patch)
    masking = l3m.RandomRasterMasking(
        write_key="encoder_prefix_mask",
        num_patches=num_patches,
        prefix_range=(1, num_patches - 1),
        seed=seed,
    )
    generator = torch.Generator().manual_seed(seed)
    return {
        "image": torch.randn(
            batch_size, channels, height, width, generator=generator
        ),
        "text": torch.randint(
            PAD_TOKEN + 1,
            decoder_config["vocabulary_size"],
            (batch_size, decoder_config["context_length"]),
            generator=generator,
        ),
        masking.write_key: torch.stack([masking() for _ in range(batch_size)]),
    }


def parameter_groups(model):
    """The recipe's two groups: decayed, and those `wd_exclude` names.

    Args:
        model: torch.nn.Module (before `torch.compile`, as ml-l3m groups
            it, so that names carry no wrapper prefix).

    Returns:
        A list of two optimizer parameter-group dicts.
    """
    decayed, excluded = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if any(fnmatch.fnmatch(name, p) for p in NO_DECAY_PATTERNS):
            excluded.append(parameter)
        else:
            decayed.append(parameter)
    return [
        {"params": decayed, "weight_decay": WEIGHT_DECAY},
        {"params": excluded, "weight_decay": 0.0},
    ]


# --- The benchmark worker ---------------------------------------------------


def _check_arguments(dtype_policy, batch_size, repeats, warmup, steps):
    if dtype_policy not in DTYPE_POLICIES:
        raise ValueError(
            f"`dtype_policy` must be one of {DTYPE_POLICIES}. Received: "
            f"dtype_policy={dtype_policy!r}"
        )
    for name, value, least in (
        ("batch_size", batch_size, 1),
        ("repeats", repeats, 1),
        ("warmup", warmup, 0),
        ("steps", steps, 1),
    ):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(
                f"`{name}` must be an int. Received: {name}={value!r}"
            )
        if value < least:
            raise ValueError(
                f"`{name}` must be at least {least}. Received: {name}={value}"
            )


def run_official(
    source,
    backbone_config,
    decoder_config,
    batch_size,
    *,
    compiled=False,
    dtype_policy="float32",
    repeats=5,
    warmup=2,
    steps=1,
):
    """Time ml-l3m's AIMv2 training step at our sizes.

    Args:
        source: str. A checkout of apple/ml-l3m, the directory holding
            `src/l3m`.
        backbone_config: dict of `AIMV2Backbone` arguments
            (`keras_aimv2.configs.BACKBONE_CONFIGS` entry).
        decoder_config: dict of `AIMV2Pretrainer` decoder arguments
            (`keras_aimv2.configs.DECODER_CONFIGS` entry).
        batch_size: int. Examples per step.
        compiled: bool. Wrap the model in `torch.compile`, as ml-l3m's
            runner does for `torch_compile: true`. Defaults to `False`.
        dtype_policy: str. `"float32"`, or `"mixed_bfloat16"` for forward
            and loss under bfloat16 autocast. Defaults to `"float32"`.
        repeats: int. Timed repeats; the median is reported. Defaults to
            `5`.
        warmup: int. Untimed repeats before them, after the first step.
            Defaults to `2`.
        steps: int. Training steps per repeat. Defaults to `1`.

    Returns:
        A dict: `variant` (`"official"` or `"official:compiled"`),
        `dtype_policy`, `batch_size`, `first_step_s` (the first step,
        compilation included, seconds), `step_ms` (median per step),
        `step_ms_repeats`, `samples_per_s`, `peak_rss_gb` (the process's
        peak resident memory), `torch_threads`, `parameters` (trainable)
        and `loss` (of the last step).

    Raises:
        ValueError: for a `dtype_policy` other than `"float32"` or
            `"mixed_bfloat16"`, counts out of range, or an official model
            whose parameter count differs from `AIMV2Pretrainer`'s.
        FileNotFoundError: if `source` holds no `src/l3m`.
        FloatingPointError: if a loss is not finite (ml-l3m stops there).
    """
    _check_arguments(dtype_policy, batch_size, repeats, warmup, steps)
    l3m = import_l3m(source)
    import torch

    torch.manual_seed(0)
    model, criterion = build_official(l3m, backbone_config, decoder_config)
    parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
    expected = reference_parameter_count(backbone_config, decoder_config)
    if parameters != expected:
        raise ValueError(
            f"The official model has {parameters} trainable parameters, "
            f"AIMV2Pretrainer {expected} at the same configuration: the "
            "two would not do the same work."
        )
    model.train()
    optimizer = l3m.AdamLH(
        parameter_groups(model),
        lr=LEARNING_RATE,
        betas=BETAS,
        eps=EPSILON,
        weight_decay=WEIGHT_DECAY,
    )
    if compiled:
        model = torch.compile(model)
    batch = official_batch(l3m, backbone_config, decoder_config, batch_size)
    mixed = dtype_policy == "mixed_bfloat16"

    def step():
        # Its loader yields a fresh dict per step; the model writes into it.
        data = dict(batch)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mixed):
            output = model(data)
            loss, _ = criterion(output, model=model)
            del output
            value = loss.item()
            if not math.isfinite(value):
                raise FloatingPointError(f"The loss is {value}.")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(
            model.parameters(), GRADIENT_CLIP_NORM, norm_type=2.0, foreach=True
        )
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return value

    start = time.perf_counter()
    loss = step()
    first_step = time.perf_counter() - start
    for _ in range(warmup * steps):
        loss = step()
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            loss = step()
        timings.append((time.perf_counter() - start) / steps)
    seconds = statistics.median(timings)
    return {
        "variant": "official:compiled" if compiled else "official",
        "dtype_policy": dtype_policy,
        "batch_size": batch_size,
        "first_step_s": round(first_step, 2),
        "step_ms": round(1000 * seconds, 1),
        "step_ms_repeats": [round(1000 * t, 1) for t in timings],
        "samples_per_s": round(batch_size / seconds, 2),
        "peak_rss_gb": round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2
        ),
        "torch_threads": torch.get_num_threads(),
        "parameters": parameters,
        "loss": loss,
    }


# --- Command line -----------------------------------------------------------


def _load_by_path(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def workload(name):
    """Configurations, batch size and steps of a `tools/benchmark.py` workload.

    The benchmark's `WORKLOADS` and the named sizes of
    `keras_aimv2/configs.py` are read from their files, without importing
    `keras_aimv2` (which imports Keras and TensorFlow): this process's peak
    memory then stays the official trainer's.

    Args:
        name: str. A key of `WORKLOADS` (`"tiny"`, `"small"`,
            `"large-224"`).

    Returns:
        A tuple `(backbone_config, decoder_config, batch_size, steps)`.

    Raises:
        ValueError: for an unknown name.
    """
    benchmark = _load_by_path(
        "_benchmark_workloads", os.path.join(TOOLS, "benchmark.py")
    )
    if name not in benchmark.WORKLOADS:
        raise ValueError(
            f"`workload` must be one of {sorted(benchmark.WORKLOADS)}. "
            f"Received: workload={name!r}"
        )
    configs = _load_by_path(
        "_keras_aimv2_configs", os.path.join(ROOT, "keras_aimv2", "configs.py")
    )
    settings = benchmark.WORKLOADS[name]
    backbone, decoder = settings["backbone"], settings["decoder"]
    if isinstance(backbone, str):
        backbone = configs.BACKBONE_CONFIGS[backbone]
    if isinstance(decoder, str):
        decoder = configs.DECODER_CONFIGS[decoder]
    return (
        dict(backbone),
        dict(decoder),
        settings["batch_size"],
        settings["steps_per_repeat"],
    )


def main(argv=None):
    """Run one workload and print `RESULT <json>`.

    Args:
        argv: list of str or `None`. Command-line arguments; `None` reads
            `sys.argv`. Defaults to `None`.

    Returns:
        The result dict of `run_official`, with `workload` added.
    """
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--source",
        required=True,
        help=f"checkout of ml-l3m (git clone {REPOSITORY})",
    )
    parser.add_argument(
        "--workload", default="tiny", help="tiny, small or large-224"
    )
    parser.add_argument("--compiled", action="store_true")
    parser.add_argument(
        "--dtype-policy", choices=DTYPE_POLICIES, default="float32"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="steps per repeat (default: the workload's)",
    )
    arguments = parser.parse_args(argv)
    backbone, decoder, batch_size, steps = workload(arguments.workload)
    result = run_official(
        arguments.source,
        backbone,
        decoder,
        batch_size,
        compiled=arguments.compiled,
        dtype_policy=arguments.dtype_policy,
        repeats=arguments.repeats,
        warmup=arguments.warmup,
        steps=arguments.steps or steps,
    )
    result = {"workload": arguments.workload, **result}
    print("RESULT " + json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
