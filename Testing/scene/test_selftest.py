"""The module's self-test body (what SpineSegTest runs in Slicer) against slicer-core, with the real out-of-process
runner and the bundled model (a tiny stand-in until the bundled model is in the tree)."""

import pytest

from SpineSegLib import scene
from SpineSegLib.selftest import run_selftest

pytestmark = [pytest.mark.slicer, pytest.mark.slow]


def test_selftest_body(slicer_context, model_path, uses_bundled_model, trained_model):
    messages = []
    # The bundled model is used as the module uses it (model=None); a random stand-in cannot be expected to put
    # its segments on the phantom's vertebrae, so only then is the geometry check off.
    summary = run_selftest(slicer_context.scene, model=None if uses_bundled_model else str(model_path),
                           device="cpu", log=messages.append, min_overlap=0.5 if trained_model else 0.0,
                           timeout=300)
    assert any(m.startswith("Refusals:") for m in messages)
    assert any(m.startswith("Cancel:") for m in messages)
    assert messages[-1].startswith("SpineSeg self-test passed")
    assert summary["segments"] and summary["seconds"] > 0
    results = scene.find_results(slicer_context.scene)
    assert len(results) == 1 and len(results[0].nodes()) == 4
