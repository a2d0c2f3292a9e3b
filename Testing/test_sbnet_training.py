"""SASSNet and SB-Net train end to end with the engine on a tiny real LA subset (skipped without the shared data)."""
from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from semisupseg.methods.base import Batch, StepContext
from semisupseg.nets import build_network


def _supervised_loss(trainer, batch: Batch, key: str) -> float:
    """The method's unweighted supervised loss on ``batch`` (train-mode BN, no gradient)."""
    ctx = StepContext(iteration=0, max_iterations=trainer.cfg.iterations, device=torch.device("cpu"),
                      num_classes=trainer.cfg.data.num_classes, seg_form=trainer.seg_form,
                      generator=torch.Generator().manual_seed(0))
    trainer.model.train()
    with torch.no_grad():
        return trainer.method.step(trainer.model, batch, ctx).logs[key]


@pytest.mark.slow
@pytest.mark.parametrize("method,expected_terms,supervised_key", [
    ("sassnet", {"dice", "sdm", "adversarial"}, "dice"),
    ("sbnet", {"psm", "sdm", "boundary", "consistency", "adversarial"}, "l_psm"),
])
def test_trains_end_to_end_on_la(method, expected_terms, supervised_key, la_dir, tmp_path):
    from semisupseg.training.config import DataConfig, ModelConfig, OptimConfig, TrainConfig
    from semisupseg.training.engine import Trainer

    iterations = 8
    cfg = TrainConfig(method=method, out=str(tmp_path / method), iterations=iterations, batch_size=4,
                      labeled_batch_size=2, seed=5, device="cpu", amp="off", val_every=10 ** 6,
                      save_every=10 ** 6, method_params={"d_ndf": 8},
                      data=DataConfig(labeled=str(la_dir), num_labeled=2, max_unlabeled=2, validation=0,
                                      patch_size=[32, 32, 16], foreground_prob=1.0, augment=False),
                      model=ModelConfig(n_filters=4), optim=OptimConfig(lr=0.05))
    trainer = Trainer(cfg, handle_signals=False)
    result = trainer.run()
    assert result.status == "finished" and result.iteration == iterations
    events = [json.loads(line) for line in (tmp_path / method / "events.jsonl").read_text().splitlines()]
    steps = [e for e in events if e.get("event") == "iteration"]
    assert len(steps) == iterations
    for e in steps:
        assert set(e["losses"]) == expected_terms
        assert all(math.isfinite(v) for v in e["losses"].values())
        assert math.isfinite(e["logs"]["d_loss"])
    assert trainer.method.optimizers["discriminator"].state  # the discriminator was trained
    if method == "sbnet":
        assert type(trainer.model).__name__ == "SBNet"
    # the supervised loss on the same fixed labeled patches is lower after training than before
    image, label = trainer.batcher.next()
    batch = Batch(torch.from_numpy(image), torch.from_numpy(label), cfg.labeled_batch_size)
    final_loss = _supervised_loss(trainer, batch, supervised_key)
    trained = copy.deepcopy(trainer.model.state_dict())
    torch.manual_seed(cfg.seed)  # the engine seeds the initial weights with the run's seed
    initial = build_network(trainer.method.network_arch, trainer.net_config).state_dict()
    trainer.model.load_state_dict(initial)
    initial_loss = _supervised_loss(trainer, batch, supervised_key)
    trainer.model.load_state_dict(trained)
    assert math.isfinite(final_loss) and final_loss < initial_loss
