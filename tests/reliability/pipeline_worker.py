"""Worker for test_pipeline_faults.py: runs landmark-example stages, optionally dying by SIGKILL.

``python pipeline_worker.py CONFIG.json OUT STAGE [STAGE ...] [--kill-at EPOCH STEP]``
runs the stages on ``OUT`` with the config (a JSON dict for ``config_from_dict``). With
``--kill-at`` the process SIGKILLs itself when the train stage is about to save its mid-epoch
checkpoint of (EPOCH, STEP): the optimizer step of batch STEP has been taken but not saved, so
the resumed run must redo it. With ``--kill-in-stage NAME`` it SIGKILLs itself right after that
stage's first output file is written (the stage is half done, no completion marker yet).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples" / "landmark"))

import torch  # noqa: E402
from landmark_pipeline import config as cfgmod  # noqa: E402
from landmark_pipeline.runner import run_stages  # noqa: E402

import retrieval_kit as rk  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("out")
    parser.add_argument("stages", nargs="+")
    parser.add_argument("--kill-at", type=int, nargs=2, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = cfgmod.config_from_dict(json.loads(Path(args.config).read_text()))

    if args.kill_at is not None:
        real_save = rk.train.save_checkpoint

        def save_or_die(path, **kwargs):
            if Path(path).name == "last.pt" and [kwargs.get("epoch"), kwargs.get("step")] == list(
                args.kill_at
            ):
                print("killing", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
            return real_save(path, **kwargs)

        rk.train.save_checkpoint = save_or_die
    run_stages(config, Path(args.out), args.stages, progress=False)
    print("finished", flush=True)


if __name__ == "__main__":
    main()
