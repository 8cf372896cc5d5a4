"""The same saved weights give the same results on another backend."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
from conftest import make_batch
from conftest import tiny_pretrainer
from conftest import to_numpy

# Each backend's run checks the next one, so the three runs close a cycle.
NEXT_BACKEND = {"jax": "tensorflow", "tensorflow": "torch", "torch": "jax"}

WORKER = textwrap.dedent(
    """
    import sys
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    from conftest import tiny_pretrainer
    from conftest import to_numpy

    pretrainer = tiny_pretrainer()
    pretrainer.load_weights(sys.argv[2])
    batch = dict(np.load(sys.argv[3]))
    loss = pretrainer.compute_loss(x=batch, y_pred=pretrainer(batch))
    np.savez(
        sys.argv[4],
        features=to_numpy(pretrainer.backbone(batch["images"])),
        loss=to_numpy(loss),
    )
    """
)


def _results(pretrainer, batch):
    loss = pretrainer.compute_loss(x=batch, y_pred=pretrainer(batch))
    return to_numpy(pretrainer.backbone(batch["images"])), to_numpy(loss)


def test_weights_give_the_same_outputs_on_the_next_backend(tmp_path):
    pretrainer = tiny_pretrainer(seed=5)
    batch = make_batch(batch_size=4, seed=9)
    batch["prefix_lengths"] = np.array([1, 4, 9, 15], "int32")
    weights = str(tmp_path / "tiny.weights.h5")
    pretrainer.save_weights(weights)
    inputs, outputs = str(tmp_path / "batch.npz"), str(tmp_path / "out.npz")
    np.savez(inputs, **batch)

    other = NEXT_BACKEND[keras.config.backend()]
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    subprocess.run(
        [sys.executable, "-c", WORKER, tests_dir, weights, inputs, outputs],
        env={**os.environ, "KERAS_BACKEND": other},
        check=True,
        timeout=600,
    )
    features, loss = _results(pretrainer, batch)
    theirs = np.load(outputs)
    assert features.shape == theirs["features"].shape == (4, 16, 64)
    np.testing.assert_allclose(features, theirs["features"], atol=1e-4)
    np.testing.assert_allclose(loss, theirs["loss"], atol=1e-4)
    # The check has teeth: other weights give other results.
    fresh_features, _ = _results(tiny_pretrainer(seed=6), batch)
    assert np.abs(fresh_features - theirs["features"]).max() > 1e-2
