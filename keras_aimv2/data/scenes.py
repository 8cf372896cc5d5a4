"""Procedural captioned scenes: coloured shapes on a plain background.

A scene is a 3 x 3 grid with one to three of its cells holding a shape: a
circle, square, triangle, diamond or cross, small or large, in one of eight
colours, on a black, grey or white background that contrasts with all of
them, plain or lightly textured. Its caption names what is there in varied
wording: "two red circles and a small blue square", "an image of a yellow
diamond to the left of a green cross", "there is a large pink disc in the
top left corner on a black background". Every word about a shape, colour,
size, position, count or spatial relation is true of the picture, so the
captions can be learned from the pixels alone.

Each example depends only on the seed and its index, so any number of
examples is reproducible, byte for byte, and any one of them can be made
alone with `scene_example`.

The generator knows what each image shows, so it also labels images for
probes of a frozen encoder (`PROBE_TASKS`, `scene_arrays`): questions about
the picture whose answer the captions do not give away, so that a probe
measures what the encoder learned to see, not what a caption spelled out.
"""

import dataclasses
import io

import numpy as np
from PIL import Image
from PIL import ImageDraw

SHAPES = ("circle", "square", "triangle", "diamond", "cross")
COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 225),
    "yellow": (245, 215, 40),
    "orange": (245, 135, 25),
    "purple": (140, 60, 190),
    "pink": (245, 140, 200),
    "cyan": (40, 210, 230),
}
BACKGROUNDS = {
    "black": (15, 15, 15),
    "dark gray": (70, 70, 70),
    "light gray": (190, 190, 190),
    "white": (245, 245, 245),
}
SIZES = ("small", "large")
GRID_SIZE = 3
POSITIONS = (
    ("top left", "top", "top right"),
    ("left", "center", "right"),
    ("bottom left", "bottom", "bottom right"),
)
SHAPE_WORDS = {
    "circle": ("circle", "disc"),
    "square": ("square",),
    "triangle": ("triangle",),
    "diamond": ("diamond", "rhombus"),
    "cross": ("cross", "plus sign"),
}
SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}
COUNT_WORDS = {1: "one", 2: "two", 3: "three"}
POSITION_PHRASES = {
    "top left": ("in the top left corner", "at the top left"),
    "top": ("at the top", "near the top"),
    "top right": ("in the top right corner", "at the top right"),
    "left": ("on the left", "at the left side"),
    "center": ("in the center", "in the middle"),
    "right": ("on the right", "at the right side"),
    "bottom left": ("in the bottom left corner", "at the bottom left"),
    "bottom": ("at the bottom", "near the bottom"),
    "bottom right": ("in the bottom right corner", "at the bottom right"),
}
RELATION_PHRASES = {
    "left of": ("to the left of", "left of"),
    "right of": ("to the right of", "right of"),
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
}

# Radius of a shape as a fraction of a grid cell, and the margin kept
# between a shape and the border of its cell, so that shapes never overlap
# and a shape in a column further left lies wholly to the left.
_RADIUS = {"small": 0.22, "large": 0.42}
_MARGIN = 0.04
_REPEAT_PROBABILITY = 0.3
_COLOR_JITTER = 12
_TEXTURE_AMPLITUDE = 10
_MIN_CONTRAST = 100.0
_SUPERSAMPLE = 2
_MIN_IMAGE_SIZE = 16
_PREFIXES = (
    "",
    "",
    "a picture of ",
    "an image of ",
    "a drawing of ",
    "an image showing ",
    "a picture with ",
)


@dataclasses.dataclass(frozen=True)
class SceneObject:
    """One shape of a scene.

    Args:
        shape: str. One of `SHAPES`.
        color: str. One of the names of `COLORS`.
        size: str. `"small"` or `"large"`.
        row: int. Grid row of the shape, 0 at the top.
        col: int. Grid column of the shape, 0 on the left.
        x: float. Horizontal centre in pixels.
        y: float. Vertical centre in pixels.
        radius: float. Half the side of the box the shape fills, in pixels.
        rgb: tuple of 3 ints. The exact colour drawn.
    """

    shape: str
    color: str
    size: str
    row: int
    col: int
    x: float
    y: float
    radius: float
    rgb: tuple

    @property
    def position(self):
        """The name of the grid cell, e.g. `"top left"` or `"center"`."""
        return POSITIONS[self.row][self.col]

    @property
    def box(self):
        """The box the shape fills: `(left, top, right, bottom)` pixels."""
        r = self.radius
        return (self.x - r, self.y - r, self.x + r, self.y + r)


@dataclasses.dataclass(frozen=True)
class Scene:
    """The structured description of a scene, from which it is drawn.

    Args:
        objects: tuple of `SceneObject`. The shapes, in distinct cells.
        background: str. One of the names of `BACKGROUNDS`.
        textured: bool. Whether the background has a light noise texture.
        texture_seed: int. Seed of the texture.
        image_size: int. Side of the image in pixels.
    """

    objects: tuple
    background: str
    textured: bool
    texture_seed: int
    image_size: int


@dataclasses.dataclass(frozen=True)
class ProbeTask:
    """A question about a scene, with a fixed set of answers.

    Args:
        num_classes: int. Number of answers; labels are `0 ...
            num_classes - 1`.
        label: callable. Takes a `Scene`, returns its label (an int).
        description: str. What the label is, and what captions say of it.
    """

    num_classes: int
    label: object
    description: str


PROBE_TASKS = {
    "large_count": ProbeTask(
        num_classes=4,
        label=lambda scene: sum(o.size == "large" for o in scene.objects),
        description="the number of large shapes, 0 to 3. Captions name a "
        "size only sometimes (for some shapes, at random), never count the "
        "large ones, and mix them with small ones, so the answer must be "
        "seen: how big each shape is, and how many there are.",
    ),
    "object_count": ProbeTask(
        num_classes=3,
        label=lambda scene: len(scene.objects) - 1,
        description="the number of shapes, 1 to 3, as labels 0 to 2. "
        "Captions name every shape, so a captioner learns this from the "
        "text: a control, easier for caption-trained encoders.",
    ),
}
# The task of a probe that names none.
DEFAULT_PROBE_TASK = "large_count"


def scene_label(scene, task=DEFAULT_PROBE_TASK):
    """The label of `scene` for a probe task.

    Args:
        scene: `Scene`. The scene, as drawn.
        task: str. A name of `PROBE_TASKS`. Defaults to `"large_count"`.

    Returns:
        An int in `[0, PROBE_TASKS[task].num_classes)`.

    Example:

    >>> _, _, scene = scene_example(seed=0, index=3)
    >>> scene_label(scene, "large_count")  # doctest: +SKIP
    2
    """
    return int(_probe_task(task).label(scene))


def scene_arrays(num_examples, seed, image_size=64, task=DEFAULT_PROBE_TASK):
    """Labelled scenes as arrays, for a probe: images and their labels.

    Image `i` is the image of `scene_example(seed, i, image_size)`, drawn
    straight into an array (no PNG); a few thousand take about a second.

    Args:
        num_examples: int. Number of scenes.
        seed: int. Seed of the scenes. Scenes of another seed are other
            scenes: a probe's are held out from a pre-training's by seed.
        image_size: int. Side of the images in pixels. Defaults to `64`.
        task: str. A name of `PROBE_TASKS`. Defaults to `"large_count"`.

    Returns:
        A tuple `(images, labels)`: uint8 `(num_examples, image_size,
        image_size, 3)` and int64 `(num_examples,)`.

    Example:

    >>> images, labels = scene_arrays(100, seed=1000, image_size=32)
    >>> images.shape, labels.max() <= 3
    ((100, 32, 32, 3), True)
    """
    _check_int("num_examples", num_examples, 0)
    _check_int("seed", seed, 0)
    _check_int("image_size", image_size, _MIN_IMAGE_SIZE)
    probe_task = _probe_task(task)
    images = np.empty((num_examples, image_size, image_size, 3), np.uint8)
    labels = np.empty((num_examples,), np.int64)
    for index in range(num_examples):
        # The draws of `scene_example`: the scene first, then its caption.
        scene = random_scene(np.random.default_rng([seed, index]), image_size)
        images[index] = np.asarray(render_scene(scene))
        labels[index] = probe_task.label(scene)
    return images, labels


def _probe_task(task):
    if task not in PROBE_TASKS:
        raise ValueError(
            f"Unknown scenes probe task {task!r}. Known tasks: "
            f"{sorted(PROBE_TASKS)}"
        )
    return PROBE_TASKS[task]


def scenes_source(num_examples, seed, image_size=64):
    """Yield captioned scenes as `(key, png_bytes, caption)` examples.

    Args:
        num_examples: int. Number of examples.
        seed: int. Seed of the scenes; the same seed gives the same bytes.
        image_size: int. Side of the square RGB images in pixels. Defaults
            to `64`.

    Returns:
        A generator of `(key, png_bytes, caption)`, with keys
        `"seed{seed}/{index:07d}"`.
    """
    _check_int("num_examples", num_examples, 0)
    _check_int("seed", seed, 0)
    _check_int("image_size", image_size, _MIN_IMAGE_SIZE)
    return _scene_examples(num_examples, seed, image_size)


def _scene_examples(num_examples, seed, image_size):
    for index in range(num_examples):
        image, caption, _ = scene_example(seed, index, image_size)
        yield f"seed{seed}/{index:07d}", image, caption


def scene_example(seed, index, image_size=64):
    """Make example `index` of the scenes of a seed.

    Args:
        seed: int. Seed of the scenes.
        index: int. Index of the example.
        image_size: int. Side of the image in pixels. Defaults to `64`.

    Returns:
        A tuple `(png_bytes, caption, scene)`, with `scene` the `Scene`
        that the image shows and the caption describes.
    """
    rng = np.random.default_rng([seed, index])
    scene = random_scene(rng, image_size)
    caption = describe_scene(scene, rng)
    buffer = io.BytesIO()
    # Level 3 makes smaller files than the default 6, twice as fast.
    render_scene(scene).save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue(), caption, scene


def random_scene(rng, image_size=64):
    """Draw a random scene description.

    Args:
        rng: `np.random.Generator`. Source of randomness.
        image_size: int. Side of the image in pixels. Defaults to `64`.

    Returns:
        A `Scene`.
    """
    _check_int("image_size", image_size, _MIN_IMAGE_SIZE)
    num_objects = int(rng.integers(1, 4))
    cells = rng.choice(GRID_SIZE * GRID_SIZE, size=num_objects, replace=False)
    objects = []
    for cell in cells:
        if objects and rng.random() < _REPEAT_PROBABILITY:
            kind = objects[int(rng.integers(len(objects)))]
            shape, color = kind.shape, kind.color
        else:
            shape = SHAPES[int(rng.integers(len(SHAPES)))]
            color = list(COLORS)[int(rng.integers(len(COLORS)))]
        size = SIZES[int(rng.integers(len(SIZES)))]
        row, col = divmod(int(cell), GRID_SIZE)
        objects.append(_place(rng, shape, color, size, row, col, image_size))
    return Scene(
        objects=tuple(objects),
        background=_pick_background(rng, {o.color for o in objects}),
        textured=bool(rng.random() < 0.5),
        texture_seed=int(rng.integers(2**31)),
        image_size=image_size,
    )


def _place(rng, shape, color, size, row, col, image_size):
    cell = image_size / GRID_SIZE
    radius = _RADIUS[size] * cell
    slack = cell / 2 - radius - _MARGIN * cell
    x, y = (np.array([col, row]) + 0.5) * cell + rng.uniform(-slack, slack, 2)
    jitter = rng.integers(-_COLOR_JITTER, _COLOR_JITTER + 1, 3)
    rgb = np.clip(np.array(COLORS[color]) + jitter, 0, 255)
    return SceneObject(
        shape=shape,
        color=color,
        size=size,
        row=row,
        col=col,
        x=float(x),
        y=float(y),
        radius=float(radius),
        rgb=tuple(int(c) for c in rgb),
    )


def _pick_background(rng, colors):
    def contrast(name):
        background = np.array(BACKGROUNDS[name])
        return min(
            np.linalg.norm(background - np.array(COLORS[c])) for c in colors
        )

    names = [n for n in BACKGROUNDS if contrast(n) >= _MIN_CONTRAST]
    return names[int(rng.integers(len(names)))]


def render_scene(scene):
    """Draw a scene.

    Shapes are drawn at twice the resolution and averaged down, which
    smooths their edges.

    Args:
        scene: `Scene`. What to draw.

    Returns:
        An RGB `PIL.Image.Image` of side `scene.image_size`.
    """
    size = scene.image_size
    pixels = np.empty((size, size, 3), dtype=np.int16)
    pixels[...] = BACKGROUNDS[scene.background]
    if scene.textured:
        texture = np.random.default_rng(scene.texture_seed).integers(
            -_TEXTURE_AMPLITUDE, _TEXTURE_AMPLITUDE + 1, (size, size, 1)
        )
        pixels += texture.astype(np.int16)
    pixels = np.clip(pixels, 0, 255).astype(np.uint8)
    pixels = pixels.repeat(_SUPERSAMPLE, axis=0).repeat(_SUPERSAMPLE, axis=1)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        _draw_shape(draw, obj, _SUPERSAMPLE)
    return image.resize((size, size), Image.Resampling.BOX)


def _draw_shape(draw, obj, scale):
    x, y, r = obj.x * scale, obj.y * scale, obj.radius * scale
    if obj.shape == "circle":
        draw.ellipse((x - r, y - r, x + r, y + r), fill=obj.rgb)
    elif obj.shape == "square":
        h = 0.85 * r
        draw.rectangle((x - h, y - h, x + h, y + h), fill=obj.rgb)
    elif obj.shape == "triangle":
        draw.polygon([(x, y - r), (x + r, y + r), (x - r, y + r)], fill=obj.rgb)
    elif obj.shape == "diamond":
        w = 0.75 * r
        points = [(x, y - r), (x + w, y), (x, y + r), (x - w, y)]
        draw.polygon(points, fill=obj.rgb)
    elif obj.shape == "cross":
        t = 0.33 * r
        draw.rectangle((x - r, y - t, x + r, y + t), fill=obj.rgb)
        draw.rectangle((x - t, y - r, x + t, y + r), fill=obj.rgb)
    else:
        raise ValueError(
            f"Unknown shape {obj.shape!r}; expected one of {SHAPES}."
        )


def describe_scene(scene, rng):
    """Write a caption of a scene, choosing a template and words at random.

    Args:
        scene: `Scene`. What to describe.
        rng: `np.random.Generator`. Source of randomness.

    Returns:
        The caption, a lowercase str.
    """
    groups = _groups(scene.objects)
    singles = [group[0] for group in groups if len(group) == 1]
    templates = [_listing, _there_is, _counting]
    if len(singles) >= 2:
        templates += [_relation, _relation]
    template = templates[int(rng.integers(len(templates)))]
    return template(scene, groups, rng)


def _groups(objects):
    """Group objects of the same colour and shape, in order of appearance."""
    groups = {}
    for obj in objects:
        groups.setdefault((obj.color, obj.shape), []).append(obj)
    return list(groups.values())


def _listing(scene, groups, rng):
    phrases = [_noun_phrase(g, rng, positions=True) for g in groups]
    prefix = _choice(rng, _PREFIXES)
    return prefix + _join(phrases, rng) + _background_phrase(scene, rng)


def _there_is(scene, groups, rng):
    phrases = [_noun_phrase(g, rng, positions=True) for g in groups]
    verb = "is" if len(groups[0]) == 1 else "are"
    return (
        f"there {verb} " + _join(phrases, rng) + _background_phrase(scene, rng)
    )


def _counting(scene, groups, rng):
    total = len(scene.objects)
    if total == 1:
        return (
            _choice(rng, _PREFIXES) + "a single " + _bare_phrase(groups[0], rng)
        )
    phrases = [_noun_phrase(g, rng, positions=False) for g in groups]
    noun = _choice(rng, ("shapes", "objects"))
    prefix = _choice(rng, ("", "an image of ", "a picture of "))
    return f"{prefix}{COUNT_WORDS[total]} {noun}: " + _join(phrases, rng)


def _relation(scene, groups, rng):
    singles = [g for g in groups if len(g) == 1]
    first, second = (
        singles[i] for i in rng.choice(len(singles), 2, replace=False)
    )
    relation = _choice(rng, _true_relations(first[0], second[0]))
    caption = " ".join(
        [
            _noun_phrase(first, rng, positions=False),
            _choice(rng, RELATION_PHRASES[relation]),
            _noun_phrase(second, rng, positions=False),
        ]
    )
    rest = [g for g in groups if g is not first and g is not second]
    if rest:
        caption += ", and " + _noun_phrase(rest[0], rng, positions=True)
    return _choice(rng, _PREFIXES) + caption


def _true_relations(a, b):
    relations = []
    if a.col < b.col:
        relations.append("left of")
    if a.col > b.col:
        relations.append("right of")
    if a.row < b.row:
        relations.append("above")
    if a.row > b.row:
        relations.append("below")
    return relations


def _noun_phrase(group, rng, positions):
    """E.g. "a small red circle at the top" or "two blue squares"."""
    phrase = _bare_phrase(group, rng)
    if len(group) > 1:
        return f"{COUNT_WORDS[len(group)]} {phrase}"
    phrase = f"{_article(phrase)} {phrase}"
    if positions and rng.random() < 0.5:
        phrase += " " + _choice(rng, POSITION_PHRASES[group[0].position])
    return phrase


def _bare_phrase(group, rng):
    """E.g. "small red circle" or "blue squares"; sizes only when shared."""
    obj = group[0]
    words = []
    if len({o.size for o in group}) == 1 and rng.random() < 0.6:
        words.append(_choice(rng, SIZE_WORDS[obj.size]))
    words.append(obj.color)
    shape = _choice(rng, SHAPE_WORDS[obj.shape])
    words.append(shape if len(group) == 1 else _plural(shape))
    return " ".join(words)


def _background_phrase(scene, rng):
    if rng.random() < 0.6:
        return ""
    texture = "textured " if scene.textured else "plain "
    if rng.random() < 0.5:
        texture = ""
    preposition = _choice(rng, ("on", "against"))
    return f" {preposition} a {texture}{scene.background} background"


def _join(phrases, rng):
    if len(phrases) == 1:
        return phrases[0]
    comma = "," if len(phrases) > 2 and rng.random() < 0.5 else ""
    return ", ".join(phrases[:-1]) + f"{comma} and " + phrases[-1]


def _plural(word):
    if word.endswith(("s", "x", "sh", "ch")):
        return word + "es"
    return word + "s"


def _article(phrase):
    return "an" if phrase[0] in "aeiou" else "a"


def _choice(rng, options):
    return options[int(rng.integers(len(options)))]


def _check_int(name, value, minimum):
    if (
        not isinstance(value, (int, np.integer))
        or isinstance(value, bool)
        or value < minimum
    ):
        raise ValueError(
            f"`{name}` must be an int of at least {minimum}. Received: "
            f"{name}={value!r}"
        )
