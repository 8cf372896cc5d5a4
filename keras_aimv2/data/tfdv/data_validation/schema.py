"""The curated schema of image-caption examples.

TFDV infers a schema from statistics, but what it infers describes the data
it saw, faults included: it would take a caption for a categorical string
with a domain of the captions seen, accept whatever image formats and sizes
were there, and require only the features present in every example. This
module infers one and then curates it with the rules pre-training needs:

- `key`, `caption` and `image_format` (present exactly when the image is)
  are required in every example; the other features are derived and may be
  missing where their source is missing or undecodable.
- `caption` is free text: a natural-language domain, never a categorical
  one.
- `caption_tokens` lies in [1, context_length]; a longer caption would be
  cut. `caption_boilerplate` and `caption_not_utf8` must be 0.
- `image_format` is JPEG or PNG; `image_channels` is 3 (RGB required);
  `image_width` and `image_height` are at least `min_image_size`;
  `image_aspect` lies in [1 / max_aspect, max_aspect].
- Drift and skew comparators with the thresholds of `COMPARATORS`.

Each feature carries a one-line description in its annotation comment,
which the report shows beside its anomalies.
"""

import dataclasses

import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import schema_pb2

DESCRIPTIONS = {
    "key": "identifier of the example",
    "caption": "caption text (free natural language)",
    "caption_chars": "caption length in characters",
    "caption_words": "caption length in whitespace-separated words",
    "caption_tokens": "caption length in tokens, end token included",
    "caption_boilerplate": "1 when the caption is empty or only whitespace",
    "caption_not_utf8": "1 when the caption bytes are not valid UTF-8",
    "image_format": "format of the stored image, UNDECODABLE if it does "
    "not decode",
    "image_bytes": "size of the stored image file in bytes",
    "image_width": "decoded image width in pixels",
    "image_height": "decoded image height in pixels",
    "image_aspect": "aspect ratio of the decoded image, width / height",
    "image_channels": "colour channels: 1 grayscale, 3 RGB, 4 RGBA or CMYK",
    "image_mode": "colour mode of the decoded image (RGB, L, RGBA, CMYK, P, "
    "...)",
}
TYPES = {
    **dict.fromkeys(
        ("key", "caption", "image_format", "image_mode"), schema_pb2.BYTES
    ),
    "image_aspect": schema_pb2.FLOAT,
}
REQUIRED = ("key", "caption", "image_format")
IMAGE_FORMATS = ("JPEG", "PNG")
RGB_CHANNELS = 3
# Feature: (comparator, threshold), used for both drift and skew.
COMPARATORS = {
    "caption_tokens": ("jensen_shannon_divergence", 0.1),
    "image_width": ("jensen_shannon_divergence", 0.1),
    "image_height": ("jensen_shannon_divergence", 0.1),
    "image_format": ("infinity_norm", 0.1),
    "image_mode": ("infinity_norm", 0.1),
}


@dataclasses.dataclass(frozen=True)
class Limits:
    """The limits the curated schema enforces.

    Args:
        context_length: int. Most caption tokens, end token included.
        min_image_size: int. Least image width and height in pixels.
        max_aspect: float. Largest ratio of the longer image side to the
            shorter.
    """

    context_length: int = 77
    min_image_size: int = 32
    max_aspect: float = 3.0


def curated_schema(statistics, limits):
    """Infer a schema from statistics and curate it.

    Args:
        statistics: `DatasetFeatureStatisticsList` of the per-example
            features.
        limits: `Limits`.

    Returns:
        A `schema_pb2.Schema`.
    """
    schema = tfdv.infer_schema(statistics, infer_feature_shape=False)
    # Inferred string domains list the values seen; none of them is kept.
    del schema.string_domain[:]
    for name in DESCRIPTIONS:
        feature = _feature(schema, name)
        feature.ClearField("domain")
        feature.annotation.comment[:] = [DESCRIPTIONS[name]]
        _set_presence(feature, required=name in REQUIRED)
    _set_domains(schema, limits)
    _set_comparators(schema)
    return schema


def _feature(schema, name):
    """Return the feature `name`, adding it when the data had none."""
    for feature in schema.feature:
        if feature.name == name:
            return feature
    feature = schema.feature.add(
        name=name, type=TYPES.get(name, schema_pb2.INT)
    )
    feature.value_count.min = 1
    feature.value_count.max = 1
    return feature


def _set_presence(feature, required):
    feature.presence.Clear()
    feature.presence.SetInParent()
    if required:
        feature.presence.min_fraction = 1.0
        feature.presence.min_count = 1


def _set_domains(schema, limits):
    tfdv.get_feature(schema, "caption").natural_language_domain.SetInParent()
    formats = tfdv.get_feature(schema, "image_format").string_domain
    formats.value[:] = IMAGE_FORMATS
    _int_domain(schema, "caption_tokens", 1, limits.context_length)
    _int_domain(schema, "caption_boilerplate", 0, 0)
    _int_domain(schema, "caption_not_utf8", 0, 0)
    _int_domain(schema, "image_channels", RGB_CHANNELS, RGB_CHANNELS)
    _int_domain(schema, "image_width", limits.min_image_size, None)
    _int_domain(schema, "image_height", limits.min_image_size, None)
    aspect = tfdv.get_feature(schema, "image_aspect").float_domain
    aspect.min = 1.0 / limits.max_aspect
    aspect.max = limits.max_aspect


def _int_domain(schema, name, minimum, maximum):
    domain = tfdv.get_feature(schema, name).int_domain
    domain.min = minimum
    if maximum is not None:
        domain.max = maximum


def _set_comparators(schema):
    for name, (kind, threshold) in COMPARATORS.items():
        feature = tfdv.get_feature(schema, name)
        for comparator in (feature.drift_comparator, feature.skew_comparator):
            getattr(comparator, kind).threshold = threshold


def describe_limits(schema):
    """Return the domains of a schema's features as readable strings.

    Args:
        schema: `schema_pb2.Schema`.

    Returns:
        A dict from feature name to a string such as `"in [1, 77]"`, for
        features that have a domain.
    """
    limits = {}
    for feature in schema.feature:
        domain = feature.WhichOneof("domain_info")
        if domain in ("int_domain", "float_domain"):
            limits[feature.name] = _range_text(getattr(feature, domain))
        elif domain == "string_domain":
            values = ", ".join(feature.string_domain.value)
            limits[feature.name] = f"one of {{{values}}}"
    return limits


def _range_text(domain):
    low = f"{domain.min:.4g}" if domain.HasField("min") else "-inf"
    high = f"{domain.max:.4g}" if domain.HasField("max") else "inf"
    return f"in [{low}, {high}]"
