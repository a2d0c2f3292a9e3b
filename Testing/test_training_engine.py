"""The training engine end to end on tiny synthetic data (and a tiny real LA subset when available)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from semisupseg.checkpoint import load_model, load_state
from semisupseg.errors import OutputExistsError
from semisupseg.training import CaseArrays, Events, TrainConfig, TrainData, Trainer, load_config, read_events


def _case(rng, cid, labeled=True, shape=(16, 24, 24)):
    """A bright box on noise: learnable in a few steps."""
    label = np.zeros(shape, np.uint8)
    z, y, x = shape
    z0, y0, x0 = rng.integers(1, 4, size=3)
    label[z0:z0 + z // 2, y0:y0 + y // 2, x0:x0 + x // 2] = 1
    image = rng.normal(0, 1, size=shape).astype(np.float32) + 2.0 * label
    return CaseArrays(cid, image, label if labeled else None, (1.0, 1.0, 1.0))


def _data(seed=0, unlabeled=2):
    rng = np.random.default_rng(seed)
    return TrainData(labeled=[_case(rng, f"l{i}") for i in range(3)],
                     unlabeled=[_case(rng, f"u{i}", False) for i in range(unlabeled)],
                     validation=[_case(rng, "v0")])


def _config(out, method="supervised", iterations=8, **kw):
    cfg = TrainConfig(method=method, iterations=iterations, batch_size=4, labeled_batch_size=2, device="cpu",
                      amp="off", val_every=4, save_every=2, num_threads=1, out=str(out))
    cfg.data.patch_size = [16, 16, 16]
    cfg.model.n_filters = 2
    cfg.optim.lr = 0.05
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def _weights(path):
    return load_state(path)["model"]


def test_supervised_run_writes_a_complete_run_dir(tmp_path):
    cfg = _config(tmp_path / "run", iterations=16)
    cfg.method_params = {"dice_weight": 0.5, "ce_weight": 0.5}
    result = Trainer(cfg, data=_data()).run()
    assert result.status == "finished" and result.iteration == 16
    losses = np.asarray(result.losses)
    assert np.all(np.isfinite(losses))
    assert losses[-4:].mean() < losses[:4].mean()  # it learns
    run = tmp_path / "run"
    for name in ("config.yaml", "data.json", "events.jsonl", "resume.pt", "last.pt", "last.json", "best.pt"):
        assert (run / name).is_file(), name
    assert load_config(run / "config.yaml").to_dict() == cfg.to_dict()
    model, card = load_model(run / "best.pt")
    assert card.method == "supervised" and card.patch_size_xyz == (16, 16, 16)
    assert card.training["best_val_dice"] == pytest.approx(result.best_metric)
    state = load_state(run / "resume.pt")  # weights_only=True inside
    assert state["iteration"] == 16 and state["teacher"] is None
    events = read_events(run / "events.jsonl")
    kinds = [e["event"] for e in events]
    assert kinds[0] == "started" and kinds[-1] == "finished"
    assert kinds.count("iteration") == 16 and kinds.count("validation") == 4
    it = [e for e in events if e["event"] == "iteration"][-1]
    assert set(it["losses"]) == {"dice", "ce"} and it["lr"] == pytest.approx(0.05) and it["eta_s"] >= 0
    val = [e for e in events if e["event"] == "validation"][-1]["metrics"]
    assert 0.0 <= val["dice"] <= 1.0 and val["cases"][0]["case"] == "v0"
    with pytest.raises(OutputExistsError):
        Trainer(_config(tmp_path / "run"), data=_data())._prepare_run_dir()


@pytest.mark.parametrize("perturb", ["none", "both"])
def test_deterministic_runs_and_exact_resume_after_cancel(tmp_path, perturb):
    """Same config twice: identical losses and weights. A run cancelled (stop file) at iteration 3 and resumed
    reaches the uninterrupted run's final weights exactly (mean-teacher: EMA teacher, noise generator; with the
    orientation-preserving perturbations, whose draws come from the resumable samplers)."""
    method = "mean-teacher"

    def config(out):
        cfg = _config(out, method)
        cfg.data.perturb = perturb
        return cfg

    a = Trainer(config(tmp_path / "a"), data=_data()).run()
    b = Trainer(config(tmp_path / "b"), data=_data()).run()
    assert a.losses == b.losses
    wa, wb = _weights(tmp_path / "a" / "resume.pt"), _weights(tmp_path / "b" / "resume.pt")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)

    stop = tmp_path / "STOP"

    def stopper(record):
        if record["event"] == "iteration" and record["iteration"] == 3:
            stop.touch()

    from semisupseg.progress import CancelToken

    c = Trainer(config(tmp_path / "c"), data=_data(), events=Events(listeners=[stopper]),
                cancel=CancelToken(stop_file=stop)).run()
    assert c.status == "cancelled" and c.iteration == 3
    assert [e["event"] for e in read_events(tmp_path / "c" / "events.jsonl")][-1] == "cancelled"
    assert load_state(tmp_path / "c" / "resume.pt")["iteration"] == 3 and (tmp_path / "c" / "last.pt").exists()
    stop.unlink()
    d = Trainer(config(tmp_path / "c"), data=_data(), resume=True).run()
    assert d.status == "finished" and d.iteration == 8
    assert c.losses + d.losses == a.losses
    wd = _weights(tmp_path / "c" / "resume.pt")
    assert all(torch.equal(wa[k], wd[k]) for k in wa)
    ta, td = (load_state(tmp_path / x / "resume.pt")["teacher"] for x in ("a", "c"))
    assert all(torch.equal(ta[k], td[k]) for k in ta)
    assert load_model(tmp_path / "a" / "last.pt")[1].training["perturb"] == perturb  # the card says how it trained


def test_nonfinite_loss_fails_with_event(tmp_path):
    cfg = _config(tmp_path / "run", iterations=3)
    cfg.optim.lr = 1e30
    with pytest.raises(FloatingPointError, match="non-finite"):
        Trainer(cfg, data=_data()).run()
    last = read_events(tmp_path / "run" / "events.jsonl")[-1]
    assert last["event"] == "failed" and "non-finite" in last["message"]


def test_tiny_real_la_subset(tmp_path, la_dir):
    """Three real LA cases (1.25 mm): 2 labeled, 1 validation from the pool; files read by the data layer."""
    from semisupseg.training.loading import load_train_data

    ids = json.loads((la_dir / "splits.json").read_text())["train"][:3]
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ids, "two": ids[:2]}))
    cfg = _config(tmp_path / "run", iterations=6)
    cfg.data.labeled, cfg.data.split, cfg.data.split_labeled, cfg.data.validation = str(la_dir), str(split), "two", 1
    cfg.data.patch_size = [32, 32, 16]
    cfg.method_params = {"dice_weight": 0.5, "ce_weight": 0.5}
    data = load_train_data(cfg.data, with_unlabeled=False)
    assert [c.case_id for c in data.validation] == ids[2:] and len(data.labeled) == 2
    assert data.spacing_xyz == pytest.approx((1.25, 1.25, 1.25))
    result = Trainer(cfg, data=data).run()
    assert all(math.isfinite(v) for v in result.losses) and result.losses[-1] < result.losses[0]
    _, card = load_model(tmp_path / "run" / "last.pt")
    assert card.spacing_xyz == pytest.approx((1.25, 1.25, 1.25)) and card.class_names[0] == "background"


def test_bundled_sample_data_multiclass_through_the_cli(tmp_path):
    """The hippocampus sample shipped in the package (3 classes, split file with labeled/unlabeled/val): the data
    layer reads it, num_classes is taken from dataset.json, the model card names the classes."""
    from semisupseg.cli import main
    from semisupseg.data import sample_dataset

    root = sample_dataset("hippocampus")
    assert main(["train", "--no-bar", "--method", "supervised", "--labeled", str(root), "--out",
                 str(tmp_path / "run"), "--iterations", "4", "--patch-size", "16", "16", "16", "--batch-size", "2",
                 "--labeled-batch-size", "2", "--device", "cpu", "--amp", "off", "--set", "model.n_filters=2",
                 "--set", "val_every=4", "--set", "num_threads=1"]) == 0
    _, card = load_model(tmp_path / "run" / "best.pt")
    assert card.num_classes == 3 and len(card.label_values) == 3
    events = read_events(tmp_path / "run" / "events.jsonl")
    val = [e for e in events if e["event"] == "validation"][0]["metrics"]
    assert len(val["cases"]) >= 1 and all(math.isfinite(e["loss"]) for e in events if e["event"] == "iteration")
    assert load_config(tmp_path / "run" / "config.yaml").data.num_classes == 3


def test_keep_every_keeps_loadable_copies_at_those_iterations(tmp_path):
    """``keep_every=3`` over 8 iterations: kept/it000003.pt and it000006.pt, each the model of that iteration (the
    copy at 6 differs from the one at 3 and from last.pt at 8), with a card; 0 keeps none; negative is refused."""
    from semisupseg.errors import InputError

    Trainer(_config(tmp_path / "run", keep_every=3), data=_data()).run()
    kept = sorted(p.name for p in (tmp_path / "run" / "kept").glob("*.pt"))
    assert kept == ["it000003.pt", "it000006.pt"]
    w3, w6 = (_weights_of(tmp_path / "run" / "kept" / k) for k in kept)
    last = _weights_of(tmp_path / "run" / "last.pt")
    key = next(k for k, v in w3.items() if v.is_floating_point() and v.dim() > 1)
    assert not torch.equal(w3[key], w6[key]) and not torch.equal(w6[key], last[key])
    assert (tmp_path / "run" / "kept" / "it000006.json").is_file()
    Trainer(_config(tmp_path / "off", iterations=4), data=_data()).run()
    assert not (tmp_path / "off" / "kept").exists()
    with pytest.raises(InputError, match="keep_every"):
        _config(tmp_path / "bad", keep_every=-1).validate()


def test_overwrite_removes_the_old_runs_kept_copies(tmp_path):
    """A new start with ``overwrite`` in a folder whose old run kept copies every 3 iterations: only the new run's
    copies remain (an old ``kept/it000003.pt`` beside new ones would be taken for a member of this run); a file of
    the user's in the folder stays."""
    run = tmp_path / "run"
    Trainer(_config(run, keep_every=3), data=_data()).run()
    (run / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError):
        Trainer(_config(run, keep_every=4), data=_data()).run()
    assert sorted(p.name for p in (run / "kept").glob("*.pt")) == ["it000003.pt", "it000006.pt"]
    Trainer(_config(run, keep_every=4), data=_data(), overwrite=True).run()
    assert sorted(p.name for p in (run / "kept").glob("*.pt")) == ["it000004.pt", "it000008.pt"]
    assert (run / "notes.txt").read_text() == "mine"


def _weights_of(path):
    model, _ = load_model(path)
    return model.state_dict()


def test_a_second_interrupt_waits_for_the_cancel_save_or_ends_cleanly(tmp_path, monkeypatch):
    """Ctrl-C twice. (1) The second arrives while the cancel's own save is written: it is ignored, the save
    completes (resume state at the cancelled iteration), status cancelled. (2) It arrives mid-step, before any
    cancel save: the run ends at once as cancelled (no failure, no traceback), keeping the last periodic state,
    and says which one."""
    import os
    import signal as signal_module

    from semisupseg.checkpoint import load_state
    from semisupseg.training.engine import Trainer as EngineTrainer

    # (1) interrupt, then a second interrupt inside the cancel's save of last.pt
    step = EngineTrainer._train_step
    save_model = EngineTrainer._save_model

    def step_then_interrupt(self):
        out = step(self)
        if self.iteration == 2:  # the 3rd step: first Ctrl-C
            os.kill(os.getpid(), signal_module.SIGINT)
        return out

    def save_with_interrupt(self, name, extra):
        if self._saving_on_cancel:
            os.kill(os.getpid(), signal_module.SIGINT)  # second Ctrl-C while the cancel saves
        return save_model(self, name, extra)

    monkeypatch.setattr(EngineTrainer, "_train_step", step_then_interrupt)
    monkeypatch.setattr(EngineTrainer, "_save_model", save_with_interrupt)
    result = Trainer(_config(tmp_path / "one", iterations=8, save_every=2), data=_data()).run()
    assert result.status == "cancelled" and result.iteration == 3
    assert load_state(tmp_path / "one" / "resume.pt")["iteration"] == 3

    # (2) two interrupts in one step, after the periodic save at iteration 2
    def step_twice(self):
        out = step(self)
        if self.iteration == 2:
            os.kill(os.getpid(), signal_module.SIGINT)
            os.kill(os.getpid(), signal_module.SIGINT)
        return out

    monkeypatch.setattr(EngineTrainer, "_train_step", step_twice)
    monkeypatch.setattr(EngineTrainer, "_save_model", save_model)
    result = Trainer(_config(tmp_path / "two", iterations=8, save_every=2), data=_data()).run()
    assert result.status == "cancelled" and result.saved_iteration == 2
    events = read_events(tmp_path / "two" / "events.jsonl")
    assert events[-1]["event"] == "cancelled" and "second interrupt" in events[-1]["message"]
    assert "iteration 2 is kept" in events[-1]["message"] and not any(e["event"] == "failed" for e in events)
    assert load_state(tmp_path / "two" / "resume.pt")["iteration"] == 2


def test_validation_counts_every_class_whose_hd95_is_undefined():
    """A validation case with one class predicted and present, the other absent from its reference: HD95 is the
    defined class's, and the undefined one is counted (before, ``hd95_undefined`` counted only cases where every
    class was undefined, so it said 0 here)."""
    from semisupseg.training.engine import validation_scores

    label = np.zeros((8, 10, 10), np.uint8)
    label[2:6, 2:6, 2:6] = 1
    pred = label.copy()
    pred[2:6, 2:6, 6:8] = 2  # class 2 predicted, absent from the reference
    dice, hd, undefined = validation_scores(pred, label, 3, (2.0, 1.0, 1.0))
    assert dice == pytest.approx(0.5) and hd == 0.0 and undefined == 1
    dice, hd, undefined = validation_scores(np.zeros_like(label), label, 3, (2.0, 1.0, 1.0))
    assert dice == pytest.approx(0.5) and math.isnan(hd) and undefined == 2  # both empty scores Dice 1 (class 2)


@pytest.mark.parametrize("num_classes", [2, 3])
def test_every_method_uses_all_the_network_parameters_unless_it_says_otherwise(num_classes, tmp_path):
    """Under torchrun, DDP looks for parameters without a gradient only when the method declares some
    (``ddp_unused_parameters``): every registered method's steps must then give every parameter of the network a
    gradient, or DDP would fail at the next step. (Before, it always looked: a graph traversal per step and a
    warning from every rank.)"""
    import sys
    from pathlib import Path

    from semisupseg.methods import list_methods

    sys.path.insert(0, str(Path(__file__).parent))
    from test_baselines_train import _config, _synthetic_data

    for method in list_methods():
        data = _synthetic_data()
        if num_classes == 2:
            for case in data.labeled:
                case.label[case.label > 1] = 1
        cfg = _config(method.name, tmp_path / f"{method.name}_{num_classes}", 2, (16, 16, 16), num_classes)
        trainer = Trainer(cfg, events=Events(bar=False), data=data, handle_signals=False)
        trainer.run()
        unused = [n for n, p in trainer.model.named_parameters() if p.requires_grad and p.grad is None]
        assert method.ddp_unused_parameters or not unused, (method.name, unused)
