"""``spineseg-train compare`` and ``spineseg-train models`` at smoke scale."""

from __future__ import annotations

import json

import yaml
from tiny_training import TINY_ARCHS

from spineseg_train.cli import main


def test_compare_two_architectures_writes_the_three_tables(tiny_dataset, tmp_path, capsys):
    config = tmp_path / "compare.yaml"
    config.write_text(yaml.safe_dump({
        "base": {"threads": 1},
        "eval": {"id_patches": 2, "sw_batch_size": 2},
        "runs": [{"id": "unet3d", "architecture": "unet3d", "args": TINY_ARCHS["unet3d"]},
                 {"id": "vertebraformer", "architecture": "vertebraformer", "args": TINY_ARCHS["vertebraformer"]}],
    }))
    out = tmp_path / "compare"
    argv = ["compare", "--data", f"{tiny_dataset}:3", "--budget-steps", "2", "--eval-count", "1", "-o", str(out),
            "--config", str(config), "--device", "cpu"]
    assert main(argv) == 0
    text = (out / "comparison.md").read_text()
    for title in ("Table 1", "Table 2", "Table 3"):
        assert f"### {title}" in text
    assert "protocol check" in text and "not a replication" in text  # the phantom-scale caveat
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in text.splitlines() if line.startswith("| ") and "`" in line}
    assert rows["3D U-Net (`unet3d`)"][0] != "not run" and rows["3D CNN (`cnn3d`)"][0] == "not run"
    vf = rows["+ dynamic modulation (`vertebraformer`)"]
    assert len(vf) == 4 and vf[0] != "not run"
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"unet3d", "vertebraformer"}
    assert set(results["vertebraformer"]["summary"]) >= {"mIoU", "mDice", "mAcc", "ID accuracy", "lesion AP"}
    assert (out / "runs" / "unet3d" / "model" / "model_card.json").is_file()

    capsys.readouterr()
    assert main(argv) == 0  # resumable: finished runs are skipped
    assert capsys.readouterr().out.count("done before, skipped") == 2


def test_models_command_prints_the_table(capsys):
    assert main(["models", "--arch", "unet3d", "--flops-size", "32", "--latency-size", "32", "--latency-runs", "1",
                 "--no-gpu"]) == 0
    out = capsys.readouterr().out
    assert "`unet3d`" in out and "GFLOPs @ 32³" in out and "CPU latency @ 32³" in out
