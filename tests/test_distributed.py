"""torchrun with two CPU processes (gloo): sharded batches, identical parameters on every rank, falling loss."""

import json
import os
import subprocess
import sys

from tests.conftest import REPO


def test_two_process_ddp_training_keeps_ranks_in_sync(corpus_dir, tmp_path):
    run_dir = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
        "-m", "training.train", "--config", "training/configs/tiny.yaml", "--run-dir", str(run_dir),
        "--data-dir", str(corpus_dir), "--set", "train.epochs=2", "data.max_train_pairs=300",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert all(r["world_size"] == 2 and r["ranks_in_sync"] for r in records)
    assert records[1]["train_loss"] < records[0]["train_loss"]
    assert (run_dir / "best.pt").exists()
