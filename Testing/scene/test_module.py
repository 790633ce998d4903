"""SpineSeg.py itself (widget, logic, parameter node) driven without the Slicer application: Qt and the
application are stand-ins (Testing/scene/fake_slicer_app.py), MRML is slicer-core. Runs in its own process so
the stand-ins never leak into other tests."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slicer

HERE = Path(__file__).resolve().parent


def test_module_widget_and_logic_with_a_fake_application(model_path):
    done = subprocess.run([sys.executable, str(HERE / "fake_slicer_app.py"), str(model_path)], capture_output=True,
                          text=True, timeout=300)
    tail = "\n".join((done.stdout + done.stderr).splitlines()[-40:])
    assert done.returncode == 0 and done.stdout.strip().endswith("OK"), tail
