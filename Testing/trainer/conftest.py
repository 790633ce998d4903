"""Shared fixture of the trainer tests: a tiny phantom dataset (settings in tiny_training.py)."""

from __future__ import annotations

import pytest
from tiny_training import TINY_DATA


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    from spineseg_train.phantoms import make_phantom_dataset

    root = tmp_path_factory.mktemp("tiny_phantoms") / "data"
    make_phantom_dataset(root, TINY_DATA["count"], TINY_DATA["seed_start"], TINY_DATA["spacing"],
                         TINY_DATA["region"], shape=TINY_DATA["shape"])
    return root
