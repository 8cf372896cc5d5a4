"""The model code imports no distribution code and no backend.

Read from the source (every `import`, also inside functions), so that a
branch taken only on some backend or under some strategy cannot hide one.
"""

import ast
import os

import pytest
from conftest import ROOT
from conftest import only_on

PACKAGE = os.path.join(ROOT, "keras_aimv2")
BACKENDS = ("jax", "torch", "tensorflow")
# keras-hub's preprocessors run in `tf.data` on every backend (strings,
# tokenizers): TensorFlow is their engine there, not a Keras backend.
PREPROCESSING = {
    "keras_aimv2.models.aimv2_pretrainer_preprocessor",
    "keras_aimv2.models.aimv2_image_classifier_preprocessor",
    "keras_aimv2.models.aimv2_image_converter",
    "keras_aimv2.models.aimv2_tokenizer",
    "keras_aimv2.models.aimv2_lit_preprocessor",
    "keras_aimv2.models.caption_packing",
}


def _module_name(path):
    relative = os.path.relpath(path, ROOT)[: -len(".py")]
    name = relative.replace(os.sep, ".")
    return name[: -len(".__init__")] if name.endswith(".__init__") else name


def _model_modules():
    paths = [os.path.join(PACKAGE, "objective.py")]
    for package in ("layers", "models"):
        folder = os.path.join(PACKAGE, package)
        paths += [
            os.path.join(folder, name)
            for name in sorted(os.listdir(folder))
            if name.endswith(".py")
        ]
    return {_module_name(path): path for path in paths}


def imports_of(path):
    """Every module `path` imports, at any depth of its code."""
    with open(path, encoding="utf-8") as file:
        tree = ast.parse(file.read(), path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _path_of(module):
    base = os.path.join(ROOT, *module.split("."))
    for path in (base + ".py", os.path.join(base, "__init__.py")):
        if os.path.isfile(path):
            return path
    return None


def reachable(module, path):
    """The package's modules `module` imports, directly or through others."""
    seen, stack = {module: path}, [path]
    while stack:
        for name in imports_of(stack.pop()):
            if not name.startswith("keras_aimv2") or name in seen:
                continue
            found = _path_of(name)
            if found is not None:
                seen[name] = found
                stack.append(found)
    return seen


@only_on("jax")
@pytest.mark.parametrize("module", sorted(_model_modules()))
def test_model_code_imports_no_backend_and_no_distribution(module):
    path = _model_modules()[module]
    backends = {
        name
        for name in imports_of(path)
        if name.split(".")[0] in BACKENDS
        and not (name.split(".")[0] == "tensorflow" and module in PREPROCESSING)
    }
    assert not backends, f"{module} imports {sorted(backends)}"
    # Layers and the objective reach no distribution code at all; the
    # tasks import none themselves (their default optimizers, training
    # machinery chosen in `compile`, sum the replicas' gradients).
    if module.startswith("keras_aimv2.models"):
        scope = imports_of(path)
    else:
        scope = reachable(module, path)
    distribution = [name for name in scope if "distribution" in name]
    assert not distribution, f"{module} reaches {distribution}"


@only_on("jax")
def test_the_check_reads_imports_inside_functions(tmp_path):
    source = tmp_path / "module.py"
    source.write_text(
        "import keras\n\ndef f():\n    import torch\n"
        "    from keras_aimv2 import distribution\n"
    )
    assert {"torch", "keras_aimv2.distribution"} <= imports_of(str(source))
