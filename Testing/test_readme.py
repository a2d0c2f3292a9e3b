"""The README's examples are run, not just read: every `semisupseg ...` command line in its bash blocks is parsed
by the real command-line parsers (a wrong or renamed option fails here), and the "Segment, evaluate, inspect" block
and the Python example run end to end on the bundled scans with a tiny model."""
from __future__ import annotations

import glob
import re
import shlex
import shutil
from pathlib import Path
from typing import List

import numpy as np
import pytest

from semisupseg.cli import build_parser, main

README = Path(__file__).resolve().parents[1] / "README.md"


def blocks(language: str) -> List[str]:
    """The fenced code blocks of the README in ``language``."""
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def commands(block: str) -> List[List[str]]:
    """The ``semisupseg`` command lines of a bash block, as argv lists without the program name (continuation
    lines joined, comments dropped, ``a && b`` split; ``torchrun ... -m semisupseg CMD`` counts; a ``...`` token
    is the README's ellipsis and is dropped)."""
    out = []
    for line in block.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        chunk: List[str] = []
        for word in words + ["&&"]:
            if word != "&&":
                chunk.append(word)
                continue
            if chunk and chunk[0] == "semisupseg":
                out.append([w for w in chunk[1:] if w != "..."])
            elif chunk and chunk[0] == "torchrun" and "semisupseg" in chunk:
                out.append([w for w in chunk[chunk.index("semisupseg") + 1:] if w != "..."])
            chunk = []
    return out


def _section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(title)
    return re.search(r"```bash\n(.*?)```", text[start:], flags=re.S).group(1)


def test_every_readme_command_line_parses():
    argvs = [argv for block in blocks("bash") for argv in commands(block)]
    assert len(argvs) >= 12  # the extraction finds the examples
    names = {argv[0] for argv in argvs}
    assert {"demo", "train", "segment", "evaluate", "info", "preview", "import-checkpoint"} <= names
    parser = build_parser()
    for argv in argvs:
        try:
            args = parser.parse_args(argv)
        except SystemExit:  # pragma: no cover - the message is on stderr
            pytest.fail(f"README command does not parse: semisupseg {shlex.join(argv)}")
        assert callable(getattr(args, "func", None)), argv


def test_the_extraction_itself():
    block = "# comment\nsemisupseg train --out a \\\n    --iterations 3  # trailing\npip x && semisupseg demo\n" \
            "torchrun --nproc_per_node 2 -m semisupseg train --method dtc ... --out r\n"
    assert commands(block) == [["train", "--out", "a", "--iterations", "3"], ["demo"],
                               ["train", "--method", "dtc", "--out", "r"]]


def _write_h5(path: Path, image: np.ndarray, label: np.ndarray) -> None:
    import h5py

    path.parent.mkdir(parents=True)
    with h5py.File(path, "w") as f:  # the LA release stores x, y, z
        f["image"] = image.transpose(2, 1, 0).astype(np.float32)
        f["label"] = label.transpose(2, 1, 0).astype(np.uint8)


@pytest.mark.slow
def test_segment_block_and_python_example_run(tmp_path, monkeypatch, capsys):
    import torch

    from semisupseg.checkpoint import make_card, save_model
    from semisupseg.data import sample_dataset
    from semisupseg.io import read_image, read_label, write_volume
    from semisupseg.nets import VNet, VNetConfig
    from semisupseg.volume import Volume

    la = sample_dataset("la")
    cases = sorted(p.name[:-len(".nii.gz")] for p in (la / "imagesTr").glob("*.nii.gz"))
    work = tmp_path / "work"
    (work / "labelsTr").mkdir(parents=True)
    monkeypatch.chdir(work)
    # the README's files: scan.nii.gz, other.nrrd, ../shared/data/LA/h5/<ID>/mri_norm2.h5 and their labels
    for name, case in (("scan.nii.gz", cases[0]), ("other.nrrd", cases[1])):
        image = read_image(la / "imagesTr" / f"{case}.nii.gz")
        write_volume(image, work / name)
        write_volume(read_label(la / "labelsTr" / f"{case}.nii.gz", image), work / "labelsTr" / name)
    image = read_image(la / "imagesTr" / f"{cases[2]}.nii.gz")
    label = read_label(la / "labelsTr" / f"{cases[2]}.nii.gz", image)
    _write_h5(tmp_path / "shared/data/LA/h5" / cases[2] / "mri_norm2.h5", image.array, label.array)
    write_volume(Volume(label.array, (0.625,) * 3), work / "labelsTr" / f"{cases[2]}.nii.gz")  # h5 geometry
    # imagesTs/: a folder of hippocampus scans for the shipped model
    (work / "imagesTs").mkdir()
    shutil.copy(sample_dataset("hippocampus") / "imagesTr" / "hippocampus_023.nii.gz", work / "imagesTs")
    # runs/la_mt/best.pt: a mean-teacher model of the README's train example, tiny and briefly trained
    assert main(["train", "--method", "mean-teacher", "--labeled", str(la), "--split-labeled", "labeled_2",
                 "--out", "runs/la_mt", "--iterations", "1", "--patch-size", "32", "32", "32",
                 "--set", "model.n_filters=2", "--no-bar"]) == 0
    # sassnet_best.pth: a peer checkpoint in the SASSNet release's layout
    torch.manual_seed(0)
    peer = VNet(VNetConfig(num_classes=2, n_filters=2, sdm_head=True)).eval()
    save_model(tmp_path / "peer.pt", peer, make_card(peer, method="sassnet", spacing_xyz=(0.625,) * 3,
                                                     patch_size_xyz=(112, 112, 80)))
    assert main(["export-checkpoint", str(tmp_path / "peer.pt"), "--layout", "sassnet", "-o",
                 "sassnet_best.pth"]) == 0
    capsys.readouterr()

    for argv in commands(_section("### Segment, evaluate, inspect")):
        argv = [m for a in argv for m in (sorted(glob.glob(a)) if "*" in a else [a])]
        code = main(argv)
        captured = capsys.readouterr()
        assert code == 0, (argv, captured.err)
    assert sorted(p.name for p in (work / "seg").glob("*_label.nii.gz")) == sorted(
        f"{c}_label.nii.gz" for c in ("scan", "other", cases[2]))
    assert [p.name for p in (work / "seg_ts").iterdir()] == ["hippocampus_023_label.nii.gz"]
    table = Path("metrics.csv").read_text()
    assert "scan" in table and cases[2] in table
    assert Path("scan.png").stat().st_size > 1000 and Path("sassnet.pt").exists() and Path("la_mt_vnet.pth").exists()

    # the Python example, with the README's file names
    shutil.copy("runs/la_mt/best.pt", "best.pt")
    (python_block,) = blocks("python")
    exec(compile(python_block, "README.md", "exec"), {})
    assert Path("scan_label.nii.gz").exists()
