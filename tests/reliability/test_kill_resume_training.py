"""Crash safety of training (issue 14, Build 6): a training process killed outright (SIGKILL, a preempted cluster
job) resumes from its last checkpoint at the same step with the same optimiser state, and ends with the weights of
an uninterrupted run.

The training runs in its own process on the stand-in data of the training tests (`tests.training.standins`), with
the checkpoint callback of the runs (``last.ckpt`` every step); it is killed once its last checkpoint holds the end
of an epoch (the stand-in loader is not resumable mid-epoch, so only there is the continuation exact).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import torch

import ludl
from ludl.training.train import _check_resumable

_REPO = Path(ludl.__file__).resolve().parents[1]
STEPS_PER_EPOCH = 4  # 8 stand-in samples, batch size 2
MAX_STEPS = 8
_SECONDS = 300.0

# One training run: `python -c SCRIPT ROOT MAX_STEPS DELAY_S [CKPT]`; prints the final weights' file.
SCRIPT = textwrap.dedent(
    """
    import sys, time
    import pytorch_lightning as pl
    import torch
    from pytorch_lightning.callbacks import ModelCheckpoint
    from ludl.training.module import DoseLightningModule
    from tests.training.standins import TINY_MODEL, StandInDataModule

    root, max_steps, delay_s = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    ckpt = sys.argv[4] if len(sys.argv) > 4 else None

    class Slow(pl.Callback):  # gives the test time to kill the process between steps
        def on_train_batch_end(self, *args):
            time.sleep(delay_s)

    torch.manual_seed(0)
    module = DoseLightningModule(model=TINY_MODEL, optimizer={"_target_": "torch.optim.AdamW", "_partial_": True})
    checkpoint = ModelCheckpoint(dirpath=root, save_last=True, save_top_k=0, every_n_train_steps=1)
    trainer = pl.Trainer(
        accelerator="cpu", max_steps=max_steps, limit_val_batches=0, logger=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[checkpoint, Slow()], default_root_dir=root,
    )
    trainer.fit(module, datamodule=StandInDataModule(n=8, batch_size=2), ckpt_path=ckpt)
    torch.save(module.state_dict(), root + "/final.pt")
    """
)


def _train(root: Path, max_steps: int, delay_s: float, ckpt: Path | None = None) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(_REPO), *filter(None, [env.get("PYTHONPATH")])])
    args = [sys.executable, "-c", SCRIPT, str(root), str(max_steps), str(delay_s), *([str(ckpt)] if ckpt else [])]
    return subprocess.Popen(args, env=env, cwd=_REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _saved_step(last: Path) -> int | None:
    """The global step of ``last.ckpt``; None while it is absent or being written."""
    try:
        return int(torch.load(last, map_location="cpu", weights_only=True)["global_step"])
    except Exception:  # absent, or caught in the middle of a write: look again
        return None


def _finish(job: subprocess.Popen[str]) -> None:
    _, err = job.communicate(timeout=_SECONDS)
    assert job.returncode == 0, err[-3000:]


@pytest.mark.slow
def test_sigkill_mid_training_resumes_at_the_same_step_and_optimiser_state(tmp_path: Path) -> None:
    uninterrupted = tmp_path / "uninterrupted"
    _finish(_train(uninterrupted, MAX_STEPS, 0.0))

    killed = tmp_path / "killed"
    job = _train(killed, MAX_STEPS, 0.2)
    last = killed / "last.ckpt"
    deadline = time.monotonic() + _SECONDS
    while True:
        step = _saved_step(last)
        if step is not None and step >= STEPS_PER_EPOCH and step % STEPS_PER_EPOCH == 0:
            break
        assert job.poll() is None, "training ended before it could be killed"
        assert time.monotonic() < deadline, "timed out waiting for an end-of-epoch checkpoint"
        time.sleep(0.01)
    job.send_signal(signal.SIGKILL)
    job.communicate(timeout=_SECONDS)
    assert job.returncode == -signal.SIGKILL
    assert not (killed / "final.pt").exists()  # it really stopped mid-way

    _check_resumable(last)  # the checkpoint a preempted job leaves is whole
    saved: dict[str, Any] = torch.load(last, map_location="cpu", weights_only=True)
    assert saved["global_step"] < MAX_STEPS
    resumed_from = tmp_path / "resumed_from.ckpt"
    resumed_from.write_bytes(last.read_bytes())
    _finish(_train(killed, MAX_STEPS, 0.0, resumed_from))

    # The resumed run continued from the saved step with the saved Adam moments: it ends where the uninterrupted
    # run ends, weight for weight, and its checkpoint counts every step once.
    final = torch.load(killed / "final.pt", weights_only=True)
    reference = torch.load(uninterrupted / "final.pt", weights_only=True)
    assert final.keys() == reference.keys()
    for name, value in reference.items():
        assert torch.allclose(final[name], value, rtol=1e-5, atol=1e-7), name
    resumed = torch.load(last, map_location="cpu", weights_only=True)
    assert resumed["global_step"] == MAX_STEPS
    moments_at_kill = saved["optimizer_states"][0]["state"]
    moments_at_end = resumed["optimizer_states"][0]["state"]
    assert all(int(moments_at_end[k]["step"]) == MAX_STEPS for k in moments_at_end)
    assert all(int(moments_at_kill[k]["step"]) == saved["global_step"] for k in moments_at_kill)
