"""Rules mapping a checkpoint's tensors onto the Keras weights.

Every weight of `AIMV2Backbone` (and of the LiT model's `AttentionPool`
head, and of the whole `AIMV2LiTBackbone`: text tower, projections and
logit scale) has one `WeightRule`: the source keys it is made from, in
the checkpoint's layout, their expected shapes, and how they combine into
the Keras weight (PyTorch's `(out, in)` linear weights transposed, fused
query, key and value projections concatenated, the patch convolution
unrolled). The transformer blocks of the image and the text towers share
one set of per-block rules (`block_rules`). All rules are checked against
the checkpoint (no key missing, none left over, every shape as expected,
every value finite) before any weight is set.
"""

import dataclasses

import numpy as np

from keras_aimv2.conversion.config_inference import shape_of
from keras_aimv2.conversion.errors import CheckpointError
from keras_aimv2.conversion.errors import listed
from keras_aimv2.conversion.layouts import layout_module
from keras_aimv2.conversion.layouts import lit_key
from keras_aimv2.conversion.layouts import source_key
from keras_aimv2.conversion.layouts import text_prefix
from keras_aimv2.conversion.safetensors_reader import locate_keys


@dataclasses.dataclass
class WeightRule:
    """One Keras weight, made from source tensors of known shapes.

    Attributes:
        target: str. The weight's name (`"encoder.block_0.attention.qkv
            .kernel"`, see `backbone_variables`).
        keys: tuple of str. The source keys, in the checkpoint's layout.
        shapes: tuple of tuples. The expected shape of each source tensor.
        combine: callable. Makes the Keras value from the source arrays.
    """

    target: str
    keys: tuple
    shapes: tuple
    combine: object


def _linear(w):
    return w.T  # torch (out, in) -> Keras (in, out)


def _fused_linear(*ws):
    return np.concatenate(ws, axis=0).T


def _same(w):
    return w


def block_rules(key, qkv_roles, target, hidden_dim, intermediate_dim):
    """The rules of one pre-norm transformer block's weights.

    The image and the text towers' blocks (`TransformerBlock`: RMSNorm,
    attention with fused `[q|k|v]` kernel, RMSNorm, SwiGLU with fused
    `[gate|up]` kernel) are converted by these same rules.

    Args:
        key: callable. Maps a per-block role (`"attn_norm"`, `"q"`,
            `"gate"`, ...) to the block's source key.
        qkv_roles: tuple of str. The roles holding the query, key and
            value projections: `("qkv",)` when fused, else
            `("q", "k", "v")`.
        target: str. Prefix of the block's target names
            (`"encoder.block_0."`).
        hidden_dim: int. Width of the block.
        intermediate_dim: int. Width of the SwiGLU hidden layer.

    Returns:
        A list of six `WeightRule`s.

    Example:

    >>> rules = block_rules(
    ...     lambda role: f"blocks.0.{role}", ("qkv",), "block_0.", 32, 64
    ... )
    >>> rules[1].target, rules[1].keys
    ('block_0.attention.qkv.kernel', ('blocks.0.qkv',))
    """
    d, h = hidden_dim, intermediate_dim
    qkv_rows = 3 * d // len(qkv_roles)
    return [
        WeightRule(
            target + "attention_norm.scale", (key("attn_norm"),), ((d,),), _same
        ),
        WeightRule(
            target + "attention.qkv.kernel",
            tuple(key(role) for role in qkv_roles),
            ((qkv_rows, d),) * len(qkv_roles),
            _fused_linear,
        ),
        WeightRule(
            target + "attention.output_projection.kernel",
            (key("proj"),),
            ((d, d),),
            _linear,
        ),
        WeightRule(
            target + "feed_forward_norm.scale",
            (key("ffn_norm"),),
            ((d,),),
            _same,
        ),
        WeightRule(
            target + "feed_forward.gate_up.kernel",
            (key("gate"), key("up")),
            ((h, d), (h, d)),
            _fused_linear,
        ),
        WeightRule(
            target + "feed_forward.down.kernel",
            (key("down"),),
            ((d, h),),
            _linear,
        ),
    ]


def encoder_rules(layout, prefix, config):
    """The rules of every `AIMV2Backbone` weight.

    Args:
        layout: str. One of `LAYOUTS`.
        prefix: str. Prefix of the encoder's keys.
        config: dict. The `AIMV2Backbone` arguments (`infer_config`).

    Returns:
        A list of `WeightRule`s.

    Example:

    >>> rules = encoder_rules("timm", "", config)  # doctest: +SKIP
    >>> rules[0].keys
    ('patch_embed.proj.weight',)
    """
    module = layout_module(layout)
    d = config["hidden_dim"]
    h = config["intermediate_dim"]
    p = config["patch_size"]
    c = config["image_shape"][-1]

    def conv(w):
        # (D, C, p, p) -> (p, p, C, D) -> rows in (row, column, channel).
        return w.transpose(2, 3, 1, 0).reshape(p * p * c, d)

    def key(role, block=None):
        return source_key(layout, prefix, role, block)

    rules = [
        WeightRule(
            "patch_embedding.projection.kernel",
            (key("patch_weight"),),
            ((d, c, p, p),),
            conv,
        ),
        WeightRule(
            "patch_embedding.projection.bias",
            (key("patch_bias"),),
            ((d,),),
            _same,
        ),
        WeightRule(
            "patch_embedding.norm.scale", (key("patch_norm"),), ((d,),), _same
        ),
    ]
    if config["position_embedding"] == "learned":
        height, width, _ = config["image_shape"]
        n = (height // p) * (width // p)
        shape = (1, n, d) if module.POSITION_EMBEDDING_BATCH_AXIS else (n, d)
        rules.append(
            WeightRule(
                "patch_embedding.position_embedding",
                (key("pos_embed"),),
                (shape,),
                lambda w: w.reshape(n, d),
            )
        )
    for i in range(config["num_layers"]):
        rules += block_rules(
            lambda role, i=i: key(role, i),
            module.QKV_ROLES,
            f"encoder.block_{i}.",
            d,
            h,
        )
    rules.append(
        WeightRule(
            "encoder.final_norm.scale", (key("final_norm"),), ((d,),), _same
        )
    )
    return rules


def head_rules(layout, prefix, hidden_dim, output_dim, use_bias):
    """The rules of every weight of the LiT model's `AttentionPool` head.

    Args:
        layout: str. One of `LAYOUTS`.
        prefix: str. Prefix of the encoder's keys.
        hidden_dim: int. Width of the encoder's features.
        output_dim: int. Width of the head's output projection.
        use_bias: bool. Whether the key and value projections have biases.

    Returns:
        A list of `WeightRule`s.

    Example:

    >>> rules = head_rules("apple", "image_encoder.", 1024, 768, False)
    >>> rules[0].keys
    ('image_encoder.head.cls_token',)
    """
    d = hidden_dim
    output = source_key(layout, prefix, "head_output")
    rules = [
        WeightRule(
            "head.query",
            (source_key(layout, prefix, "head_query"),),
            ((1, 1, d),),
            lambda w: w.reshape(1, d),
        ),
        WeightRule(
            "head.output_projection.kernel",
            (output + "weight",),
            ((output_dim, d),),
            _linear,
        ),
        WeightRule(
            "head.output_projection.bias",
            (output + "bias",),
            ((output_dim,),),
            _same,
        ),
    ]
    for ours, role in (("key", "head_key"), ("value", "head_value")):
        linear = source_key(layout, prefix, role)
        rules.append(
            WeightRule(
                f"head.{ours}.kernel", (linear + "weight",), ((d, d),), _linear
            )
        )
        if use_bias:
            rules.append(
                WeightRule(
                    f"head.{ours}.bias", (linear + "bias",), ((d,),), _same
                )
            )
    return rules


def prefixed(rules, prefix):
    """The same rules with `prefix` before every target name.

    Args:
        rules: list of `WeightRule`s.
        prefix: str. Prefix of the target names (`"vision_encoder."`).

    Returns:
        A list of `WeightRule`s.
    """
    return [
        dataclasses.replace(rule, target=prefix + rule.target) for rule in rules
    ]


def text_rules(layout, config):
    """The rules of every weight of a LiT model's text tower.

    Args:
        layout: str. One of `LAYOUTS`.
        config: dict. The text tower's arguments of `AIMV2LiTBackbone`
            (`infer_lit_config`: `text_vocabulary_size`,
            `text_sequence_length`, `text_hidden_dim`, `text_num_layers`,
            `text_intermediate_dim`).

    Returns:
        A list of `WeightRule`s, targets under `"text_encoder."`.

    Example:

    >>> rules = text_rules("apple", config)  # doctest: +SKIP
    >>> rules[0].keys
    ('text_encoder.preprocessor.text_embedding.weight',)
    """
    module = layout_module(layout)
    prefix = text_prefix(layout)
    d = config["text_hidden_dim"]
    h = config["text_intermediate_dim"]
    v = config["text_vocabulary_size"]
    n = config["text_sequence_length"]

    def key(role, block=None):
        return source_key(layout, prefix, role, block, tower="text")

    rules = [
        WeightRule(
            "text_encoder.token_embedding.embeddings",
            (key("token_embedding"),),
            ((v, d),),
            _same,
        ),
        WeightRule(
            "text_encoder.position_embedding",
            (key("text_pos_embed"),),
            ((n, d),),
            _same,
        ),
    ]
    for i in range(config["text_num_layers"]):
        rules += block_rules(
            lambda role, i=i: key(role, i),
            module.TEXT_QKV_ROLES,
            f"text_encoder.block_{i}.",
            d,
            h,
        )
    rules.append(
        WeightRule(
            "text_encoder.final_norm.scale",
            (key("final_norm"),),
            ((d,),),
            _same,
        )
    )
    return rules


def lit_rules(layout, prefix, vision_config, head, lit_config):
    """The rules of every weight of an `AIMV2LiTBackbone`.

    Args:
        layout: str. One of `LAYOUTS`.
        prefix: str. Prefix of the image tower's keys.
        vision_config: dict. The `AIMV2Backbone` arguments
            (`infer_config`).
        head: tuple `(output_dim, use_bias)` of the attention-pool head
            (`head_config`).
        lit_config: dict. The other `AIMV2LiTBackbone` arguments
            (`infer_lit_config`).

    Returns:
        A list of `WeightRule`s, targets named as in `lit_variables`.

    Example:

    >>> rules = lit_rules(  # doctest: +SKIP
    ...     "transformers", "vision_model.", vision, (1024, False), lit
    ... )
    """
    image_dim = vision_config["hidden_dim"]
    text_dim = lit_config["text_hidden_dim"]
    projection_dim = lit_config["projection_dim"]
    pool_dim = head[0]
    return [
        *prefixed(
            encoder_rules(layout, prefix, vision_config), "vision_encoder."
        ),
        *prefixed(head_rules(layout, prefix, image_dim, *head), "vision_pool."),
        WeightRule(
            "vision_projection.kernel",
            (lit_key(layout, "image_projection"),),
            ((projection_dim, pool_dim),),
            _linear,
        ),
        *text_rules(layout, lit_config),
        WeightRule(
            "text_projection.kernel",
            (lit_key(layout, "text_projection"),),
            ((projection_dim, text_dim),),
            _linear,
        ),
        WeightRule(
            "log_logit_scale",
            (lit_key(layout, "log_logit_scale"),),
            ((),),
            _same,
        ),
    ]


def check_rules(rules, tensors, skipped, description):
    """Every rule's keys present with their shapes; no key left over.

    Args:
        rules: list of `WeightRule`s.
        tensors: dict from key to array. The checkpoint.
        skipped: list of str. Keys left out on purpose.
        description: str. What the rules convert into, for the message.

    Raises:
        CheckpointError: listing every missing key, wrong shape and key
            no rule uses.
    """
    problems = []
    used = set()
    for rule in rules:
        for key, shape in zip(rule.keys, rule.shapes, strict=True):
            used.add(key)
            if key not in tensors:
                problems.append(
                    f"missing key {key!r}: expected shape {shape} for "
                    f"{description} weight {rule.target!r}"
                )
            elif shape_of(tensors[key]) != shape:
                problems.append(
                    f"key {key!r} has shape {shape_of(tensors[key])}; "
                    f"expected {shape} for {description} weight "
                    f"{rule.target!r}"
                )
    extra = sorted(set(tensors) - used - set(skipped))
    for key in extra:
        problems.append(
            f"unexpected key {key!r} with shape {shape_of(tensors[key])}: "
            f"{description} has no weight for it"
        )
    if problems:
        raise CheckpointError(
            f"The checkpoint does not match {description} "
            f"({len(problems)} problems):{listed(problems)}"
        )


def check_finite(tensors, keys, files):
    """Refuse NaN or infinite values in the tensors `keys` to convert.

    Args:
        tensors: dict from key to array. The checkpoint.
        keys: iterable of str. The keys to check.
        files: list of str. The checkpoint's files, to name the one
            holding each bad tensor.

    Raises:
        CheckpointError: naming each tensor with NaN or infinite values,
            its file and how many values are bad.
    """
    bad = {}
    for key in keys:
        value = tensors[key]
        if np.issubdtype(value.dtype, np.floating):
            finite = np.count_nonzero(np.isfinite(value))
            if finite < value.size:
                bad[key] = value.size - finite
    if not bad:
        return
    origin = locate_keys(files, bad)
    problems = [
        f"{key!r} in {origin[key]}: {count} of {tensors[key].size} values"
        for key, count in sorted(bad.items())
    ]
    raise CheckpointError(
        f"The checkpoint holds NaN or infinite values in {len(bad)} "
        "tensor(s), so it is not converted (the file is damaged or the "
        f"training it comes from diverged):{listed(problems)}"
    )


def block_variables(block, prefix):
    """Every weight of a `TransformerBlock` under its rule's target name.

    Args:
        block: a built `TransformerBlock` (of the image or the text
            tower).
        prefix: str. Prefix of the target names (`"encoder.block_0."`).

    Returns:
        A dict from target name to Keras variable.
    """
    return {
        prefix + "attention_norm.scale": block.attention_norm.scale,
        prefix + "attention.qkv.kernel": block.attention.qkv.kernel,
        prefix + "attention.output_projection.kernel": (
            block.attention.output_projection.kernel
        ),
        prefix + "feed_forward_norm.scale": block.feed_forward_norm.scale,
        prefix + "feed_forward.gate_up.kernel": (
            block.feed_forward.gate_up.kernel
        ),
        prefix + "feed_forward.down.kernel": block.feed_forward.down.kernel,
    }


def backbone_variables(backbone):
    """Every weight of an `AIMV2Backbone` under its rule's target name.

    Args:
        backbone: `AIMV2Backbone`.

    Returns:
        A dict from target name to Keras variable.
    """
    embedding = backbone.patch_embedding
    variables = {
        "patch_embedding.projection.kernel": embedding.projection.kernel,
        "patch_embedding.projection.bias": embedding.projection.bias,
        "patch_embedding.norm.scale": embedding.norm.scale,
    }
    if embedding.position_embedding_type == "learned":
        variables["patch_embedding.position_embedding"] = (
            embedding.position_embedding
        )
    for i, block in enumerate(backbone.encoder.blocks):
        variables.update(block_variables(block, f"encoder.block_{i}."))
    variables["encoder.final_norm.scale"] = backbone.encoder.final_norm.scale
    return variables


def pool_variables(pool):
    """Every weight of an `AttentionPool` under its rule's target name.

    Args:
        pool: a built `AttentionPool`.

    Returns:
        A dict from target name to Keras variable.
    """
    variables = {
        "head.query": pool.query,
        "head.key.kernel": pool.key.kernel,
        "head.value.kernel": pool.value.kernel,
        "head.output_projection.kernel": pool.output_projection.kernel,
        "head.output_projection.bias": pool.output_projection.bias,
    }
    if pool.use_bias:
        variables["head.key.bias"] = pool.key.bias
        variables["head.value.bias"] = pool.value.bias
    return variables


def _prefix_keys(variables, prefix):
    return {prefix + name: variable for name, variable in variables.items()}


def lit_variables(model):
    """Every weight of an `AIMV2LiTBackbone` under its rule's target name.

    Args:
        model: a built `AIMV2LiTBackbone`.

    Returns:
        A dict from target name to Keras variable (see `lit_rules`).
    """
    text = model.text_encoder
    variables = {
        **_prefix_keys(
            backbone_variables(model.vision_encoder), "vision_encoder."
        ),
        **_prefix_keys(pool_variables(model.vision_pool), "vision_pool."),
        "vision_projection.kernel": model.vision_projection.kernel,
        "text_encoder.token_embedding.embeddings": (
            text.token_embedding.embeddings
        ),
        "text_encoder.position_embedding": text.position_embedding,
        "text_projection.kernel": model.text_projection.kernel,
        "log_logit_scale": model.log_logit_scale,
    }
    for i, block in enumerate(text.blocks):
        variables.update(block_variables(block, f"text_encoder.block_{i}."))
    variables["text_encoder.final_norm.scale"] = text.final_norm.scale
    return variables


def assign(layer, variables, rules, tensors):
    """Set every weight of `layer` from its rule, after checking coverage.

    The source tensors used are removed from `tensors`, releasing each
    once it is set.

    Args:
        layer: the Keras layer or model whose weights are set.
        variables: dict from target name to variable
            (`backbone_variables` or `pool_variables`).
        rules: list of `WeightRule`s, one per variable.
        tensors: dict from key to array. The checkpoint.
    """
    covered = {id(v) for v in variables.values()}
    unmapped = [w.path for w in layer.weights if id(w) not in covered]
    targets = {rule.target for rule in rules}
    if unmapped or targets != set(variables):
        raise RuntimeError(
            f"Internal error: the conversion rules do not cover "
            f"{type(layer).__name__} exactly. Weights without a rule: "
            f"{unmapped + sorted(set(variables) - targets)}; rules without "
            f"a weight: {sorted(targets - set(variables))}."
        )
    for rule in rules:
        # Each source tensor feeds one weight: release it once used.
        value = rule.combine(*(tensors.pop(k) for k in rule.keys))
        # `np.asarray`, not `ascontiguousarray`: it keeps 0-d arrays 0-d.
        value = np.asarray(value, dtype="float32", order="C")
        variable = variables[rule.target]
        if shape_of(value) != tuple(variable.shape):
            raise RuntimeError(
                f"Internal error: {rule.target!r} converts to shape "
                f"{shape_of(value)}, but the Keras weight has shape "
                f"{tuple(variable.shape)}."
            )
        variable.assign(value)
