"""A stand-in for the Python that runs ``spineseg segment`` in the browser tests (``spineseg web --python``).

Called as ``fake_segmenter.py -m SpineSegLib.cli segment INPUT -o OUT ... --model MODEL [--fast]``. When the model
folder's name starts with ``truth``, it checks that INPUT is the test phantom and publishes the phantom's truth
(exact labels, a heatmap peak at each lesion) as the result, with progress lines: the page then shows known
vertebra names. Any other model runs the real command line.
"""

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

PHANTOM = {"seed": 3, "region": "lumbar", "shape": (64, 64, 96), "spacing": (2.0, 2.0, 2.0), "lesions": 2}


def emit(event):
    print(json.dumps(event), flush=True)


def truth_result(phantom):
    from SpineSegLib.results import SegmentationResult, vertebra_summary
    from SpineSegLib.volume import Volume

    ct = phantom.ct
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in ct.shape], indexing="ij"), axis=-1).astype(np.float32)
    heat = np.zeros(ct.shape, dtype=np.float32)
    lesions = []
    for index, lesion in enumerate(phantom.lesions, start=1):
        centre = ct.ras_to_voxel(lesion["center_ras"])[0]
        heat = np.maximum(heat, np.exp(-((grid - centre) ** 2).sum(-1) / (2 * 3.0**2)).astype(np.float32))
        lesions.append({**lesion, "id": index, "score": round(0.95 - 0.1 * index, 2)})
    labels = Volume(np.asarray(phantom.labels.array, dtype=np.uint8), phantom.labels.affine)
    return SegmentationResult(labels, Volume(heat, ct.affine), lesions, vertebra_summary(labels, lesions),
                              {"model": {"name": "phantom truth (test)"}, "mode": "fast"})


def main(argv):
    args = argv[2:] if argv[:2] == ["-m", "SpineSegLib.cli"] else argv
    model = Path(args[args.index("--model") + 1]) if "--model" in args else Path("")
    if not model.name.startswith("truth"):
        os.execv(sys.executable, [sys.executable, *argv])
    from SpineSegLib.io import read_volume
    from SpineSegLib.phantom import PhantomConfig, generate_phantom
    from SpineSegLib.results import save_results

    source, output = Path(args[1]), Path(args[args.index("-o") + 1])
    emit({"event": "progress", "fraction": 0.05, "stage": "reading the CT"})
    ct = read_volume(source)
    phantom = generate_phantom(PhantomConfig(**PHANTOM))
    if ct.shape != phantom.ct.shape or not np.array_equal(ct.array, np.asarray(phantom.ct.array, np.float32)):
        emit({"event": "error", "message": "the fake segmenter only knows the test phantom"})
        return 2
    for step in range(1, 5):
        emit({"event": "progress", "fraction": 0.1 + 0.2 * step, "stage": "fake pass"})
        time.sleep(0.1)
    save_results(truth_result(phantom), ct, output)
    emit({"event": "progress", "fraction": 1.0, "stage": "done"})
    emit({"event": "done", "output": str(output.absolute())})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
