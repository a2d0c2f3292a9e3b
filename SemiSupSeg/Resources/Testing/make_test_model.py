"""Train the small model the SemiSupSeg self-test and the library tests segment with (see README.md here).

Run from the repository root (CPU, about 10 minutes on 2 cores)::

    python SemiSupSeg/Resources/Testing/make_test_model.py

It runs ``semisupseg train`` on the bundled hippocampus sample data (2 labeled + 2 unlabeled scans, the 2 others
held out for validation) and copies the run's best model file and its card here as ``hippocampus_dtc_tiny.pt`` /
``.json``. Training is seeded but not bit-reproducible across machines (threads, bf16), so a rebuilt file differs
slightly; the tests only rely on its card and on a Dice well above chance.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
NAME = "hippocampus_dtc_tiny"
#: the training command after ``python -m semisupseg`` ({data} and {out} filled in)
TRAIN = ["train", "--method", "dtc", "--labeled", "{data}", "--split-labeled", "labeled_2", "--out", "{out}",
         "--iterations", "3000", "--patch-size", "32", "48", "32", "--seed", "7", "--no-bar",
         "--set", "model.n_filters=2", "--set", "optim.lr=0.02", "--set", "optim.step_size=2000",
         "--set", "data.foreground_prob=0.5", "--set", "val_every=250", "--set", "save_every=250"]


def main() -> int:
    from semisupseg.data import sample_dataset

    with tempfile.TemporaryDirectory(prefix="semisupseg-test-model-") as tmp:
        out = Path(tmp) / "run"
        args = [a.format(data=sample_dataset("hippocampus"), out=out) for a in TRAIN]
        subprocess.run([sys.executable, "-m", "semisupseg", *args], check=True)
        shutil.copyfile(out / "best.pt", HERE / f"{NAME}.pt")
        shutil.copyfile(out / "best.json", HERE / f"{NAME}.json")
    print(f"wrote {HERE / NAME}.pt and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
