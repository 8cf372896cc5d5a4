"""Released-checkpoint conversion: exact parity with transformers' AIMv2.

Peers are transformers' `Aimv2VisionModel`s with random (seeded) weights,
perturbed so that every tensor matters: RMSNorm scales away from one,
position embeddings and biases away from zero, projections at unit gain.
Their `state_dict`s are saved as safetensors (renamed into Apple's and
timm's layouts where needed, the LiT model also into Apple's `AIMv2LiT`),
converted, and the Keras backbone must give the peer's `last_hidden_state`
(and the LiT head its pooled output) within 1e-4 (float32).
"""

import contextlib
import io
import json
import os
import runpy
import sys

import keras
import keras_hub
import numpy as np
import pytest
import torch
from conftest import to_numpy
from PIL import Image
from safetensors.torch import save_file
from transformers import Aimv2Config
from transformers import Aimv2Model
from transformers import Aimv2TextConfig
from transformers import Aimv2VisionConfig
from transformers import Aimv2VisionModel
from transformers.initialization import no_init_weights

import keras_aimv2
from keras_aimv2 import conversion
from keras_aimv2.cli import main as aimv2
from keras_aimv2.configs import ENCODER_SIZES
from keras_aimv2.configs import parameter_count
from keras_aimv2.models import aimv2_presets

TOLERANCE = 1e-4
SMALL = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "image_size": 56,
    "patch_size": 14,
}
LARGE = {
    "hidden_size": 1024,
    "intermediate_size": 2816,
    "num_hidden_layers": 24,
    "num_attention_heads": 8,
    "image_size": 224,
    "patch_size": 14,
}


def perturb(model, seed):
    """Give every parameter a distinctive random value."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.normal_(generator=generator)
            if "rms_norm" in name:
                param.mul_(0.3).add_(1.0)
            elif "position_embedding" in name or "cls_token" in name:
                param.mul_(0.5)
            elif param.ndim <= 1:
                param.mul_(0.1)
            else:
                param.mul_(param[0].numel() ** -0.5)
    return model.eval()


def hf_model(cls, config, seed):
    # Every parameter is set by `perturb`: skip transformers' own init.
    with no_init_weights():
        model = cls(config)
    return perturb(model, seed)


def hf_vision_model(seed=0, use_head=False, **overrides):
    config = Aimv2VisionConfig(**{**SMALL, **overrides}, use_head=use_head)
    return hf_model(Aimv2VisionModel, config, seed)


def hf_outputs(model, images):
    pixels = torch.from_numpy(
        np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    )
    with torch.no_grad():
        outputs = model(pixel_values=pixels)
    pooled = outputs.pooler_output
    return (
        outputs.last_hidden_state.numpy(),
        None if pooled is None else pooled.numpy(),
    )


def save_state_dict(state_dict, path):
    save_file({k: v.contiguous() for k, v in state_dict.items()}, str(path))
    return str(path)


def images_of(height, width, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(batch, height, width, 3)).astype("float32")


def record(name, difference):
    """Print a measured difference (shown with `pytest -s`)."""
    print(f"parity {keras.config.backend()}/{name}: {difference:.3g}")


def max_difference(ours, theirs):
    ours = to_numpy(ours)
    assert ours.shape == theirs.shape
    return np.max(np.abs(ours - theirs))


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A small transformers model, its safetensors and its outputs."""
    model = hf_vision_model(seed=1)
    directory = tmp_path_factory.mktemp("small")
    path = save_state_dict(model.state_dict(), directory / "model.safetensors")
    images = images_of(56, 56)
    return {
        "model": model,
        "path": path,
        "state_dict": model.state_dict(),
        "images": images,
        "expected": hf_outputs(model, images)[0],
    }


@pytest.fixture(scope="module")
def small_preset(small, tmp_path_factory):
    directory = tmp_path_factory.mktemp("preset") / "aimv2_small"
    conversion.convert_checkpoint(small["path"], directory, num_heads=2)
    return str(directory)


def test_small_transformers_parity_through_preset(small, small_preset):
    for cls in (keras_aimv2.AIMV2Backbone, keras_hub.models.Backbone):
        backbone = cls.from_preset(small_preset)
        assert isinstance(backbone, keras_aimv2.AIMV2Backbone)
        difference = max_difference(
            backbone(small["images"]), small["expected"]
        )
        assert difference < TOLERANCE
    record("small", difference)
    assert backbone.count_params() == aimv2_presets.backbone_parameter_count(
        64, 2, 128, patch_size=14, num_patches=16
    )
    assert backbone.count_params() == parameter_count(backbone.get_config())
    with open(os.path.join(small_preset, conversion.CONVERSION_FILE)) as f:
        saved = json.load(f)
    assert saved["layout"] == "transformers"
    assert saved["source_files"] == [os.path.abspath(small["path"])]
    assert saved["backbone_parameter_count"] == backbone.count_params()
    assert saved["config"]["num_heads"] == 2
    assert saved["config"]["image_shape"] == [56, 56, 3]


def test_config_json_gives_heads_and_epsilon(small, tmp_path):
    source = tmp_path / "checkpoint"
    source.mkdir()
    save_state_dict(small["state_dict"], source / "model.safetensors")
    config = Aimv2VisionConfig(**SMALL, use_head=False, rms_norm_eps=1e-3)
    config.save_pretrained(str(source))
    converted = conversion.load_checkpoint(str(source))
    assert converted.config["num_heads"] == 2
    assert converted.config["layer_norm_epsilon"] == 1e-3
    assert converted.num_heads_from == "config.json"
    # A config.json contradicting the weights is refused.
    Aimv2VisionConfig(**{**SMALL, "num_hidden_layers": 3}).save_pretrained(
        str(source)
    )
    with pytest.raises(conversion.CheckpointError, match="num_hidden_layers"):
        conversion.load_checkpoint(str(source))
    # Without config.json nor `num_heads`, a 64-wide model is ambiguous.
    os.remove(source / "config.json")
    with pytest.raises(conversion.CheckpointError, match="--num-heads"):
        conversion.load_checkpoint(str(source))


@pytest.fixture(scope="module")
def large(tmp_path_factory):
    """The real AIMv2-L 224 configuration (`ENCODER_SIZES["large"]`)."""
    model = hf_vision_model(seed=2, **LARGE)
    directory = tmp_path_factory.mktemp("large")
    path = save_state_dict(model.state_dict(), directory / "model.safetensors")
    images = images_of(224, 224, batch=1)
    expected = hf_outputs(model, images)[0]
    del model
    return {"path": path, "images": images, "expected": expected}


def test_large_224_parity(large):
    converted = conversion.load_checkpoint(large["path"])
    backbone = converted.backbone
    preset = aimv2_presets.backbone_presets["aimv2_large_patch14_224"]
    assert converted.config == preset["config"]
    assert backbone.count_params() == preset["metadata"]["params"]
    assert backbone.count_params() == ENCODER_SIZES["large"].parameters
    difference = max_difference(backbone(large["images"]), large["expected"])
    record("large-224", difference)
    assert difference < TOLERANCE


def test_native_parity_on_two_aspect_ratios(tmp_path):
    model = hf_vision_model(seed=3, is_native=True)
    assert not any("position" in k for k in model.state_dict())
    path = save_state_dict(model.state_dict(), tmp_path / "model.safetensors")
    converted = conversion.load_checkpoint(path, num_heads=2)
    assert converted.config["position_embedding"] == "sincos"
    assert converted.config["image_shape"] == (None, None, 3)
    assert converted.image_converter.image_size is None
    for height, width in ((28, 56), (42, 28)):
        images = images_of(height, width, seed=height)
        expected = hf_outputs(model, images)[0]
        difference = max_difference(converted.backbone(images), expected)
        record(f"native-{height}x{width}", difference)
        assert difference < TOLERANCE


@pytest.fixture(scope="module")
def lit():
    """A small CLIP-style `Aimv2Model` with the LiT head, and its outputs."""
    config = Aimv2Config(
        vision_config=Aimv2VisionConfig(**SMALL, use_head=True),
        text_config=Aimv2TextConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            vocab_size=50,
            eos_token_id=1,
        ),
        projection_dim=16,
    )
    model = hf_model(Aimv2Model, config, seed=4)
    images = images_of(56, 56, seed=5)
    features, pooled = hf_outputs(model.vision_model, images)
    return {
        "state_dict": model.state_dict(),
        "images": images,
        "features": features,
        "pooled": pooled,
    }


def assert_lit_parity(lit, preset, name):
    """The converted backbone and head give the transformers outputs."""
    backbone = keras_aimv2.AIMV2Backbone.from_preset(str(preset))
    ours = backbone(lit["images"])
    difference = max_difference(ours, lit["features"])
    record(f"{name}-features", difference)
    assert difference < TOLERANCE
    pool = conversion.load_attention_pool(str(preset))
    assert isinstance(pool, keras_aimv2.layers.AttentionPool)
    difference = max_difference(pool(ours), lit["pooled"])
    record(f"{name}-attention-pool", difference)
    assert difference < TOLERANCE


def test_lit_model_and_attention_pool_parity(lit, tmp_path):
    """transformers' `Aimv2Model`: the image tower under `vision_model.`."""
    state_dict = lit["state_dict"]
    assert "vision_model.head.cls_token" in state_dict
    path = save_state_dict(state_dict, tmp_path / "model.safetensors")
    preset = tmp_path / "lit"
    messages = []
    conversion.convert_checkpoint(
        path, preset, num_heads=2, log=messages.append
    )
    assert_lit_parity(lit, preset, "lit-transformers")
    # The text tower and projections are set aside, recorded and logged.
    with open(preset / conversion.CONVERSION_FILE) as f:
        skipped = json.load(f)["skipped_keys"]
    assert "logit_scale" in skipped
    assert "visual_projection.weight" in skipped
    assert any(k.startswith("text_model.") for k in skipped)
    assert not any(k.startswith("vision_model.") for k in skipped)
    (message,) = [m for m in messages if m.startswith("Skipping")]
    assert "text_model.* (" in message and "logit_scale" in message
    assert "not converted" in message
    with pytest.raises(FileNotFoundError, match="no attention-pool head"):
        conversion.load_attention_pool(str(tmp_path))


def apple_trunk(sd, depth):
    """transformers' `encoder.layers.N` and final norm -> Apple's `trunk`."""
    out = {"trunk.post_trunk_norm.weight": sd["rms_norm.weight"]}
    for i in range(depth):
        ours, theirs = f"trunk.blocks.{i}.", f"encoder.layers.{i}."
        attention = theirs + "attention."
        out.update(
            {
                ours + "norm_1.weight": sd[theirs + "rms_norm1.weight"],
                ours + "attn.qkv.weight": torch.cat(
                    [sd[attention + f"{n}_proj.weight"] for n in "qkv"]
                ),
                ours + "attn.proj.weight": sd[attention + "out_proj.weight"],
                ours + "norm_2.weight": sd[theirs + "rms_norm2.weight"],
                ours + "mlp.fc1.weight": sd[theirs + "ffn.gate_proj.weight"],
                ours + "mlp.fc3.weight": sd[theirs + "ffn.up_proj.weight"],
                ours + "mlp.fc2.weight": sd[theirs + "ffn.down_proj.weight"],
            }
        )
    return out


def apple_layout(state_dict, depth):
    """transformers' names and shapes -> Apple's (apple/ml-aim).

    A LiT head (`head.*`) is renamed into ml-aim's names.
    """
    sd = state_dict
    out = {
        "preprocessor.patchifier.proj.weight": sd[
            "embeddings.patch_embed.weight"
        ],
        "preprocessor.patchifier.proj.bias": sd["embeddings.patch_embed.bias"],
        "preprocessor.patchifier.norm.weight": sd["embeddings.rms_norm.weight"],
        "preprocessor.pos_embed": sd["embeddings.position_embedding.weight"][
            None
        ],
        **apple_trunk(sd, depth),
    }
    head = {"k_proj": "k", "v_proj": "v", "output_proj": "linear"}
    for key, value in sd.items():
        if key.startswith("head."):
            _, name, *rest = key.split(".")
            out[".".join(["head", head.get(name, name), *rest])] = value
    return out


def timm_layout(state_dict, depth):
    """transformers' names and shapes -> timm's."""
    apple = apple_layout(state_dict, depth)
    renames = {
        "preprocessor.patchifier.proj.": "patch_embed.proj.",
        "preprocessor.patchifier.norm.": "patch_embed.norm.",
        "preprocessor.pos_embed": "pos_embed",
        "trunk.post_trunk_norm.": "norm.",
        "trunk.blocks.": "blocks.",
        ".norm_1.": ".norm1.",
        ".norm_2.": ".norm2.",
        ".mlp.fc1.": ".mlp.fc1_g.",
        ".mlp.fc3.": ".mlp.fc1_x.",
    }
    out = {}
    for key, value in apple.items():
        for old, new in renames.items():
            key = key.replace(old, new)
        out[key] = value
    return out


def under(prefix, state_dict):
    """The entries of `state_dict` under `prefix`, without it."""
    return {
        k[len(prefix) :]: v
        for k, v in state_dict.items()
        if k.startswith(prefix)
    }


def lit_layout(state_dict, vision_layout, depth=2, text_depth=1):
    """transformers' `Aimv2Model` -> Apple's `AIMv2LiT` (apple/ml-aim).

    The image tower is renamed by `vision_layout` (`apple_layout` or
    `timm_layout`), the text tower and projections into Apple's names.
    """
    text = under("text_model.", state_dict)
    apple_text = {
        "preprocessor.text_embedding.weight": text[
            "embeddings.token_embedding.weight"
        ],
        "preprocessor.positional_embedding": text[
            "embeddings.position_embedding.weight"
        ],
        **apple_trunk(text, text_depth),
    }
    image = vision_layout(under("vision_model.", state_dict), depth)
    return {
        **{f"image_encoder.{k}": v for k, v in image.items()},
        **{f"text_encoder.{k}": v for k, v in apple_text.items()},
        "image_projector.weight": state_dict["visual_projection.weight"],
        "text_projector.weight": state_dict["text_projection.weight"],
        "log_logit_scale": state_dict["logit_scale"],
    }


def test_apple_and_timm_layouts_give_identical_outputs(small, tmp_path):
    reference = to_numpy(
        conversion.load_checkpoint(small["path"], num_heads=2).backbone(
            small["images"]
        )
    )
    apple = apple_layout(small["state_dict"], depth=2)
    # Apple's layout as two shards with an index.
    sharded = tmp_path / "apple"
    sharded.mkdir()
    keys = sorted(apple)
    weight_map = {}
    for shard, part in enumerate((keys[::2], keys[1::2]), start=1):
        name = f"model-0000{shard}-of-00002.safetensors"
        save_state_dict({k: apple[k] for k in part}, sharded / name)
        weight_map.update({k: name for k in part})
    with open(sharded / "model.safetensors.index.json", "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)
    timm = save_state_dict(
        timm_layout(small["state_dict"], depth=2), tmp_path / "timm.safetensors"
    )
    for source, layout in ((str(sharded), "apple"), (timm, "timm")):
        converted = conversion.load_checkpoint(source, num_heads=2)
        assert converted.layout == layout
        assert len(converted.source_files) == (2 if layout == "apple" else 1)
        np.testing.assert_array_equal(
            to_numpy(converted.backbone(small["images"])), reference
        )
    assert np.max(np.abs(reference - small["expected"])) < TOLERANCE


def test_checkpoint_loads_under_a_mixed_precision_policy(small):
    float32 = conversion.load_checkpoint(small["path"], num_heads=2)
    mixed = conversion.load_checkpoint(
        small["path"], num_heads=2, dtype="mixed_bfloat16"
    )
    assert mixed.backbone.compute_dtype == "bfloat16"
    # Weights stay float32 and equal; outputs agree to bfloat16 precision.
    pairs = zip(mixed.backbone.weights, float32.backbone.weights, strict=True)
    for ours, theirs in pairs:
        assert ours.dtype == "float32"
        np.testing.assert_array_equal(to_numpy(ours), to_numpy(theirs))
    outputs = to_numpy(mixed.backbone(small["images"])).astype("float32")
    reference = to_numpy(float32.backbone(small["images"]))
    assert np.max(np.abs(outputs - reference)) < 0.1 * np.max(np.abs(reference))
    assert not np.array_equal(outputs, reference)


def assert_fails_cleanly(state_dict, tmp_path, *fragments):
    source = save_state_dict(state_dict, tmp_path / "broken.safetensors")
    output = tmp_path / "out" / "preset"
    with pytest.raises(conversion.CheckpointError) as error:
        conversion.convert_checkpoint(source, output, num_heads=2)
    for fragment in fragments:
        assert fragment in str(error.value)
    assert not output.exists()
    assert sorted(os.listdir(tmp_path)) == ["broken.safetensors"]
    return str(error.value)


@pytest.mark.parametrize("layout", ["apple", "timm"])
def test_apple_lit_checkpoint_parity(lit, layout, tmp_path):
    """Apple's `AIMv2LiT`: the image tower under `image_encoder.`."""
    vision_layout = {"apple": apple_layout, "timm": timm_layout}[layout]
    state_dict = lit_layout(lit["state_dict"], vision_layout)
    for name in ("cls_token", "k.weight", "v.weight", "linear.bias"):
        assert f"image_encoder.head.{name}" in state_dict
    text_keys = {k for k in state_dict if not k.startswith("image_encoder.")}
    assert "text_encoder.trunk.blocks.0.attn.qkv.weight" in text_keys
    path = save_state_dict(state_dict, tmp_path / "model.safetensors")
    preset = tmp_path / "lit"
    # Through the command line, which prints the log messages.
    with contextlib.redirect_stdout(io.StringIO()) as stdout:
        assert conversion.main([path, str(preset), "--num-heads", "2"]) == 0
    assert_lit_parity(lit, preset, f"lit-{layout}")

    with open(preset / conversion.CONVERSION_FILE) as f:
        saved = json.load(f)
    assert saved["layout"] == layout
    assert saved["key_prefix"] == "image_encoder."
    assert set(saved["skipped_keys"]) == text_keys
    printed = stdout.getvalue()
    assert f"Layout: {layout} (prefix 'image_encoder.')" in printed
    (message,) = [m for m in printed.splitlines() if "Skipping" in m]
    assert f"Skipping {len(text_keys)} keys" in message
    assert "text tower and projections, which are not converted" in message
    assert f"text_encoder.* ({len(text_keys) - 3} keys)" in message
    for name in ("image_projector.weight", "text_projector.weight"):
        assert name in message
    assert "log_logit_scale" in message


def test_apple_lit_checkpoint_without_head_bias_fails(lit, tmp_path):
    state_dict = lit_layout(lit["state_dict"], apple_layout)
    del state_dict["image_encoder.head.linear.bias"]
    assert_fails_cleanly(
        state_dict,
        tmp_path,
        "missing key 'image_encoder.head.linear.bias'",
        "(64,)",
        "head.output_projection.bias",
    )


def test_layouts_in_two_prefixes_are_ambiguous(lit, tmp_path):
    transformers = lit["state_dict"]
    apple = lit_layout(transformers, apple_layout)
    assert_fails_cleanly(
        {**transformers, **{k: v.clone() for k, v in apple.items()}},
        tmp_path,
        "matches several layouts",
        "('apple', 'image_encoder.')",
        "('transformers', 'vision_model.')",
    )


def test_missing_key_fails_before_writing(small, tmp_path):
    state_dict = dict(small["state_dict"])
    del state_dict["encoder.layers.1.ffn.up_proj.weight"]
    assert_fails_cleanly(
        state_dict,
        tmp_path,
        "missing key 'encoder.layers.1.ffn.up_proj.weight'",
        "(128, 64)",
        "encoder.block_1.feed_forward.gate_up.kernel",
    )


def test_extra_key_fails_before_writing(small, tmp_path):
    state_dict = dict(small["state_dict"])
    state_dict["encoder.layers.0.attention.q_proj.bias"] = torch.zeros(64)
    assert_fails_cleanly(
        state_dict,
        tmp_path,
        "unexpected key 'encoder.layers.0.attention.q_proj.bias'",
        "(64,)",
    )


def test_wrong_shape_fails_before_writing(small, tmp_path):
    state_dict = dict(small["state_dict"])
    state_dict["encoder.layers.1.attention.out_proj.weight"] = torch.zeros(
        64, 32
    )
    assert_fails_cleanly(
        state_dict,
        tmp_path,
        "'encoder.layers.1.attention.out_proj.weight' has shape (64, 32)",
        "expected (64, 64)",
    )


def test_non_finite_values_fail_before_writing(small, tmp_path):
    state_dict = dict(small["state_dict"])
    nan_key = "encoder.layers.1.ffn.up_proj.weight"
    inf_key = "rms_norm.weight"
    state_dict[nan_key] = state_dict[nan_key].clone()
    state_dict[nan_key][0, :3] = float("nan")
    state_dict[inf_key] = state_dict[inf_key].clone()
    state_dict[inf_key][5] = -float("inf")
    message = assert_fails_cleanly(
        state_dict,
        tmp_path,
        "NaN or infinite values in 2 tensor(s)",
        f"{nan_key!r} in {tmp_path / 'broken.safetensors'}: 3 of 8192",
        f"{inf_key!r} in {tmp_path / 'broken.safetensors'}: 1 of 64",
    )
    assert "encoder.layers.0" not in message


def test_non_finite_values_name_their_shard(small, tmp_path):
    keys = sorted(small["state_dict"])
    bad_key = keys[-1]
    source = tmp_path / "sharded"
    source.mkdir()
    for i, part in enumerate((keys[: len(keys) // 2], keys[len(keys) // 2 :])):
        tensors = {k: small["state_dict"][k].clone() for k in part}
        if bad_key in tensors:
            tensors[bad_key].view(-1)[0] = float("nan")
        save_state_dict(
            tensors, source / f"model-0000{i + 1}-of-00002.safetensors"
        )
    output = tmp_path / "out"
    with pytest.raises(conversion.CheckpointError) as error:
        conversion.convert_checkpoint(source, output, num_heads=2)
    shard = source / "model-00002-of-00002.safetensors"
    assert f"{bad_key!r} in {shard}: 1 of" in str(error.value)
    assert not output.exists()


def test_unknown_layout_fails_before_writing(tmp_path):
    message = assert_fails_cleanly(
        {"backbone.stem.weight": torch.zeros(3, 3)},
        tmp_path,
        "not recognized",
        "backbone.stem.weight",
        "preprocessor.patchifier.proj.weight",
    )
    assert "embeddings.patch_embed.weight" in message


def test_failure_while_writing_leaves_nothing(small, tmp_path, monkeypatch):
    def fail(self, preset_dir):
        raise OSError("disk full")

    monkeypatch.setattr(keras_aimv2.AIMV2ImageConverter, "save_to_preset", fail)
    output = tmp_path / "new" / "preset"
    with pytest.raises(OSError, match="disk full"):
        conversion.convert_checkpoint(small["path"], output, num_heads=2)
    assert os.listdir(tmp_path) == []


def test_bfloat16_checkpoints_are_read_as_float32(small, tmp_path):
    halves = {k: v.to(torch.bfloat16) for k, v in small["state_dict"].items()}
    path = save_state_dict(halves, tmp_path / "model.safetensors")
    tensors, _ = conversion.read_safetensors(path)
    for key, value in halves.items():
        assert tensors[key].dtype == np.float32
        np.testing.assert_array_equal(tensors[key], value.float().numpy())
    assert not np.array_equal(
        tensors["rms_norm.weight"],
        small["state_dict"]["rms_norm.weight"].numpy(),
    )


def test_bfloat16_checkpoint_converts_to_its_float32_upcast(small, tmp_path):
    """A bfloat16 checkpoint gives the weights of its float32 upcast."""
    halves = {k: v.to(torch.bfloat16) for k, v in small["state_dict"].items()}
    bfloat16 = save_state_dict(halves, tmp_path / "bfloat16.safetensors")
    upcast = save_state_dict(
        {k: v.float() for k, v in halves.items()},
        tmp_path / "float32.safetensors",
    )
    ours = conversion.load_checkpoint(bfloat16, num_heads=2).backbone
    reference = conversion.load_checkpoint(upcast, num_heads=2).backbone
    assert len(ours.weights) == len(reference.weights)
    for weight, expected in zip(ours.weights, reference.weights, strict=True):
        assert weight.path == expected.path
        np.testing.assert_array_equal(to_numpy(weight), to_numpy(expected))
    np.testing.assert_array_equal(
        to_numpy(ours(small["images"])), to_numpy(reference(small["images"]))
    )
    # The weights hold the bfloat16 values, not the float32 originals.
    scale = to_numpy(ours.encoder.final_norm.scale)
    np.testing.assert_array_equal(scale, halves["rms_norm.weight"].float())
    assert not np.array_equal(
        scale, small["state_dict"]["rms_norm.weight"].numpy()
    )


def test_unreadable_dtype_is_refused_by_name(small, tmp_path):
    state_dict = dict(small["state_dict"])
    key = "rms_norm.weight"
    state_dict[key] = state_dict[key].to(torch.float8_e4m3fn)
    path = save_state_dict(state_dict, tmp_path / "model.safetensors")
    with pytest.raises(conversion.CheckpointError) as error:
        conversion.read_safetensors(path)
    message = str(error.value)
    assert f"Key {key!r} in {path} has dtype F8_E4M3" in message
    assert "BF16" in message


def test_pickle_checkpoints_are_refused(tmp_path):
    path = tmp_path / "pytorch_model.bin"
    path.write_bytes(b"not read")
    with pytest.raises(conversion.CheckpointError, match="safetensors"):
        conversion.read_safetensors(str(path))


def test_command_line(small, tmp_path, capsys):
    # `aimv2 convert`, as users run it.
    output = tmp_path / "cli"
    args = ["convert", small["path"], str(output), "--num-heads", "2"]
    assert aimv2(args) == 0
    assert "Done" in capsys.readouterr().out
    backbone = keras_aimv2.AIMV2Backbone.from_preset(str(output))
    difference = max_difference(backbone(small["images"]), small["expected"])
    assert difference < TOLERANCE
    # Converting again into the same directory fails, and says why.
    assert aimv2(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("aimv2 convert: error:")
    assert "already exists" in err
    assert aimv2(args + ["--overwrite"]) == 0
    missing = [str(tmp_path / "nothing"), str(tmp_path / "x")]
    assert aimv2(["convert", *missing]) == 1
    assert "does not exist" in capsys.readouterr().err
    # Bad arguments are the usage error of `aimv2 convert`.
    with pytest.raises(SystemExit) as exit_info:
        aimv2(["convert", small["path"]])
    assert exit_info.value.code == 2
    assert "usage: aimv2 convert" in capsys.readouterr().err


def test_module_command_line(capsys, monkeypatch):
    # `python -m keras_aimv2.conversion` is `aimv2 convert`.
    monkeypatch.setattr(sys, "argv", ["keras_aimv2.conversion", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("keras_aimv2.conversion", run_name="__main__")
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "usage: aimv2 convert" in printed and "--preset-name" in printed


def pil_resize(image, size):
    """Bicubic resize of a float image, channel by channel, with PIL."""
    channels = [
        np.asarray(
            Image.fromarray(image[..., c].astype("float32"), mode="F").resize(
                (size[1], size[0]), Image.BICUBIC
            )
        )
        for c in range(image.shape[-1])
    ]
    return np.stack(channels, axis=-1)


def clip_normalize(image):
    return (image / 255.0 - np.array(conversion.CLIP_MEAN)) / np.array(
        conversion.CLIP_STD
    )


def test_image_converter_reproduces_checkpoint_preprocessing(small_preset):
    converter = keras_hub.layers.ImageConverter.from_preset(small_preset)
    assert isinstance(converter, keras_aimv2.AIMV2ImageConverter)
    assert converter.image_size == (56, 56)
    rng = np.random.default_rng(6)
    # At the checkpoint's size no resize happens: exact normalization.
    image = rng.integers(0, 256, size=(56, 56, 3), dtype="uint8")
    ours = to_numpy(converter(image[None]))[0]
    difference = np.max(np.abs(ours - clip_normalize(image.astype("float64"))))
    assert difference < 1e-5
    # Resizing, as transformers' CLIPImageProcessor does with PIL: bicubic
    # with antialiasing, the centre square (crop 1.0) of a wide image.
    smooth = np.asarray(
        Image.fromarray(
            rng.integers(0, 256, size=(28, 35, 3), dtype="uint8")
        ).resize((140, 112), Image.BICUBIC)
    )
    std_in_gray_levels = 255.0 * np.array(conversion.CLIP_STD)
    cases = {
        "down-112x140": (smooth, (slice(0, 112), slice(14, 126))),
        "up-40x40": (smooth[:40, :40], (slice(None), slice(None))),
    }
    for name, (image, crop) in cases.items():
        square = np.ascontiguousarray(image[crop])
        # Float images: the same kernel as PIL's, up to float rounding.
        expected = pil_resize(square.astype("float32"), (56, 56))
        ours = to_numpy(converter(image[None].astype("float32")))[0]
        difference = np.max(np.abs(ours - clip_normalize(expected)))
        record(f"resize-{name}-float", difference)
        assert difference < 1e-4
        # uint8 images are resized to uint8, as PIL does; the two round
        # differently (PIL per pass), so allow two grey levels.
        expected = Image.fromarray(square).resize((56, 56), Image.BICUBIC)
        expected = clip_normalize(np.asarray(expected).astype("float64"))
        ours = to_numpy(converter(image[None]))[0]
        gray_levels = np.abs(ours - expected) * std_in_gray_levels
        record(f"resize-{name}-uint8-gray-levels", gray_levels.max())
        assert gray_levels.max() <= 2.0 + 1e-3
        assert gray_levels.mean() < 0.3


def test_presets_list_every_released_checkpoint():
    presets = aimv2_presets.backbone_presets
    expected = {
        f"aimv2_{size}_patch14_{res}"
        for size in ("large", "huge", "1b", "3b")
        for res in (224, 336, 448)
    } | {
        "aimv2_large_patch14_native",
        "aimv2_large_patch14_224_distilled",
        "aimv2_large_patch14_336_distilled",
        "aimv2_large_patch14_224_lit",
    }
    assert set(presets) == expected
    assert set(keras_aimv2.AIMV2Backbone.presets) == expected
    large = presets["aimv2_large_patch14_224"]["metadata"]
    large_parameters = ENCODER_SIZES["large"].parameters
    assert large["params"] == large_parameters
    assert large["imagenet_top1"] == 86.6
    assert large["source"] == "apple/aimv2-large-patch14-224"
    assert presets["aimv2_3b_patch14_448"]["metadata"]["imagenet_top1"] == 89.5
    assert presets["aimv2_1b_patch14_336"]["metadata"]["source"] == (
        "apple/aimv2-1B-patch14-336"
    )
    native = presets["aimv2_large_patch14_native"]["metadata"]
    assert native["imagenet_top1"] == 87.3 and native["resolution"] is None
    assert native["params"] == large_parameters - 256 * 1024
    distilled = presets["aimv2_large_patch14_336_distilled"]["metadata"]
    assert distilled["imagenet_top1"] is None
    assert all(p["metadata"]["path"] == "aimv2" for p in presets.values())


def test_named_presets_load_local_conversions(small, tmp_path, monkeypatch):
    root = tmp_path / "presets"
    monkeypatch.setenv("KERAS_AIMV2_PRESETS", str(root))
    name = "aimv2_large_patch14_224"
    # The name records the source: a checkpoint of another size is refused.
    with pytest.raises(conversion.CheckpointError, match="hidden_dim=64"):
        conversion.convert_checkpoint(
            small["path"], root / name, num_heads=2, preset_name=name
        )
    assert not (root / name).exists()
    conversion.convert_checkpoint(small["path"], root / name, num_heads=2)
    # The name resolves through our `from_preset`; keras-hub's own classes,
    # whose preset tables the package leaves alone, load the directory.
    for cls, preset in (
        (keras_aimv2.AIMV2Backbone, name),
        (keras_hub.models.Backbone, str(root / name)),
    ):
        backbone = cls.from_preset(preset)
        assert isinstance(backbone, keras_aimv2.AIMV2Backbone)
        difference = max_difference(
            backbone(small["images"]), small["expected"]
        )
        assert difference < TOLERANCE
    converter = keras_aimv2.AIMV2ImageConverter.from_preset(name)
    assert converter.image_size == (56, 56)

    missing = "aimv2_huge_patch14_448"
    with pytest.raises(aimv2_presets.PresetNotConvertedError) as error:
        keras_aimv2.AIMV2Backbone.from_preset(missing)
    message = str(error.value)
    # The message gives the whole conversion command, into the right place.
    assert aimv2_presets.conversion_command(missing) in message
    assert f" SOURCE {root / missing} --preset-name {missing}" in message
    assert "apple/aimv2-huge-patch14-448" in message
