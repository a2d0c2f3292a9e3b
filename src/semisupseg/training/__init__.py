"""The training engine: typed config, the :class:`Trainer` loop, events, EMA teacher, two-stream batches, DDP.

Typical use::

    from semisupseg.training import TrainConfig, Trainer, load_config, apply_overrides
    cfg = load_config("run.yaml")                       # or TrainConfig(...)
    apply_overrides(cfg, ["optim.lr=0.005", "data.patch_size=[64,64,48]"])
    cfg.out = "runs/la_mt"
    result = Trainer(cfg).run()                         # events in runs/la_mt/events.jsonl
"""
from __future__ import annotations

from semisupseg.training.config import (DataConfig, ModelConfig, OptimConfig, TrainConfig, apply_overrides,
                                        config_from_dict, load_config, load_run_config, parse_override, save_config,
                                        schedule_note, set_value)
from semisupseg.training.data import CaseArrays, TrainData
from semisupseg.training.engine import Trainer, TrainResult, learning_rate, network_config
from semisupseg.training.events import Events, read_events

__all__ = ["TrainConfig", "DataConfig", "ModelConfig", "OptimConfig", "load_config", "load_run_config",
           "save_config", "apply_overrides", "config_from_dict", "parse_override", "schedule_note", "set_value",
           "CaseArrays", "TrainData", "Trainer", "TrainResult", "Events", "read_events", "learning_rate",
           "network_config"]
