"""The Advanced-settings form (``SemiSupSegLib.method_form``) generated from the registered methods' real parameter
dataclasses and from the engine's config: kinds, defaults, documentation and choices per field; edited values back
to ``--set`` strings that the package's own override parser and the method's own checks read exactly; and a new
method getting its fields with nothing else to write."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, Optional, Tuple

import pytest


def _apply(overrides):
    from semisupseg.training import TrainConfig, apply_overrides

    return apply_overrides(TrainConfig(), overrides)


def test_every_registered_method_gets_its_parameter_dataclass_as_fields():
    from semisupseg.methods import list_methods
    from semisupseg.training.config import parse_override
    from SemiSupSegLib.method_form import method_fields, method_names

    names = [n for n, _ in method_names()]
    assert {"supervised", "mean-teacher", "ua-mt", "dtc", "sassnet", "sbnet", "vwadv", "sgrs"} <= set(names)
    assert all(desc for _, desc in method_names())
    for method in list_methods():
        fields = method_fields(method.name)
        declared = [f.name for f in dataclasses.fields(method.Params)]
        assert [f.name for f in fields] == declared, method.name  # every parameter is editable, in order
        params = method.Params()
        for f in fields:
            assert f.key == f"method_params.{f.name}"
            default = getattr(params, f.name)
            assert f.is_default(default)
            # the editor text and the --set string both read back exactly as the default
            assert f.is_default(f.parse(f.format(default))), (method.name, f.name)
            key, value = parse_override(f.override(default))
            assert key == f.key and f.is_default(value), (method.name, f.name, value)
            assert f.kind in ("str", "choice") or not isinstance(value, str), (method.name, f.name, value)
        # the defaults, sent back as --set strings, make the method's own Params unchanged
        cfg = _apply([f.override(getattr(params, f.name)) for f in fields])
        assert method.make_params(cfg.method_params) == params


def test_kinds_docs_and_choices_come_from_the_dataclasses():
    from semisupseg.methods.mean_teacher import RAMPUPS
    from SemiSupSegLib.method_form import method_fields

    dtc = {f.name: f for f in method_fields("dtc")}
    assert dtc["beta"].kind == "float" and dtc["beta"].default == 0.3
    assert "SDM regression" in dtc["beta"].doc and "``" not in dtc["beta"].doc  # from the docstring, rst removed
    assert dtc["rampup_period"].kind == "int"
    assert dtc["consistency_rampup"].kind == "choice" and set(dtc["consistency_rampup"].choices) == set(RAMPUPS)
    sgrs = {f.name: f for f in method_fields("sgrs")}
    assert sgrs["mixup_alpha"].doc == "MixUp Beta(α, α)"  # a #: comment above the field
    assert sgrs["teacher_mode"].choices == ("train", "eval")  # what the method's own check says
    assert sgrs["ce_normalization"].choices == ("volume", "region")  # what its documentation lists
    vwadv = {f.name: f for f in method_fields("vwadv")}
    assert vwadv["feature_stages"].kind == "ints" and vwadv["feature_stages"].format((2, 3, 4, 5)) == "2, 3, 4, 5"
    assert vwadv["ema_decay"].optional and vwadv["ema_decay"].kind == "float" and vwadv["ema_decay"].parse("") is None
    mt = {f.name: f for f in method_fields("mean-teacher")}
    assert mt["teacher_train_mode"].kind == "bool"
    # inherited fields keep the documentation of the class that declares them
    uamt = {f.name: f for f in method_fields("ua-mt")}
    assert uamt["noise_std"].doc == mt["noise_std"].doc and "teacher input noise" in uamt["noise_std"].doc
    assert "threshold" in uamt["threshold_start"].doc


def test_edited_values_become_set_strings_the_engine_and_the_method_read_exactly():
    from semisupseg.errors import InputError
    from semisupseg.methods import get_method
    from SemiSupSegLib.method_form import (method_fields, overrides, parse_values, set_arguments,
                                           validate_method_params)

    fields = method_fields("vwadv")
    values = parse_values(fields, {"method_params.disc_lr": "1e-05", "method_params.feature_stages": "3, 5",
                                   "method_params.teacher_mode": "eval", "method_params.ema_decay": "",
                                   "method_params.rampup": "constant", "method_params.alpha": "0.01"})
    strings = overrides(fields, values)
    # unchanged values (alpha, ema_decay None) are not sent; floats keep a decimal point (PyYAML reads 1e-05 as text)
    assert strings == ["method_params.rampup=\"constant\"", "method_params.feature_stages=[3, 5]",
                       "method_params.disc_lr=1.0e-05", "method_params.teacher_mode=\"eval\""]
    assert set_arguments(strings[:1]) == ["--set", "method_params.rampup=\"constant\""]
    cfg = _apply(strings)
    assert cfg.method_params == {"rampup": "constant", "feature_stages": [3, 5], "disc_lr": 1e-05,
                                 "teacher_mode": "eval"}
    params = get_method("vwadv").make_params(cfg.method_params)
    assert params.disc_lr == 1e-05 and isinstance(params.disc_lr, float) and params.feature_stages == (3, 5)

    # the method's own checks speak before anything starts, and bad text names the field
    sgrs = method_fields("sgrs")
    with pytest.raises(InputError, match=r"sgrs parameters: label_smoothing must be in \[0, 1\), got 1.5"):
        validate_method_params("sgrs", parse_values(sgrs, {"method_params.label_smoothing": "1.5"}))
    assert validate_method_params("sgrs", {"method_params.tau": 0.3})["tau"] == 0.3
    with pytest.raises(InputError, match="method_params.rampup_period: 'ten' is not a whole number"):
        parse_values(sgrs, {"method_params.rampup_period": "ten"})
    with pytest.raises(InputError, match="method_params.teacher_mode: 'batch' is not one of train, eval"):
        parse_values(sgrs, {"method_params.teacher_mode": "batch"})
    with pytest.raises(InputError, match="unknown method 'nope'"):
        method_fields("nope")


def test_engine_fields_carry_the_configs_choices_and_apply():
    from semisupseg.data.augment import AUGMENTATIONS
    from semisupseg.data.perturb import PERTURBATIONS
    from semisupseg.training.config import AMP_MODES, LR_SCHEDULES
    from SemiSupSegLib.method_form import ENGINE_KEYS, engine_fields, overrides, parse_values

    fields = {f.key: f for f in engine_fields()}
    assert list(fields) == list(ENGINE_KEYS)
    assert fields["amp"].choices == AMP_MODES and fields["optim.schedule"].choices == LR_SCHEDULES
    assert fields["data.augment"].choices == AUGMENTATIONS and fields["data.augment"].default == "none"
    assert fields["data.perturb"].choices == PERTURBATIONS and fields["data.perturb"].default == "both"
    assert fields["num_threads"].optional and fields["optim.grad_clip"].optional
    assert all(f.doc for f in fields.values()), [k for k, f in fields.items() if not f.doc]
    values = parse_values(fields.values(), {"amp": "off", "model.n_filters": "8", "optim.grad_clip": "12",
                                            "val_every": "200", "data.augment": "dihedral"})
    strings = overrides(fields.values(), values)
    assert strings == ["amp=\"off\"", "data.augment=\"dihedral\"", "model.n_filters=8", "optim.grad_clip=12.0"]
    cfg = _apply(strings).validate()
    assert (cfg.amp, cfg.data.augment, cfg.model.n_filters, cfg.optim.grad_clip) == ("off", "dihedral", 8, 12.0)


def test_a_new_method_gets_its_fields_for_free():
    from semisupseg.methods import _REGISTRY, Method, MethodParams, register
    from SemiSupSegLib.method_form import method_fields, method_names, overrides, parse_values

    @dataclass
    class ShinyParams(MethodParams):
        """Shiny: ``gain`` multiplies everything; ``mode``: how."""

        gain: float = 2.5
        #: where the shine goes
        mode: Literal["soft", "hard"] = "soft"
        widths: Tuple[float, ...] = (0.5, 1.5)
        budget: Optional[int] = None
        tag: str = "plain"

    @register
    class Shiny(Method):
        name = "test-shiny"
        description = "a method registered by a test"
        Params = ShinyParams

    try:
        assert ("test-shiny", "a method registered by a test") in method_names()
        fields = {f.name: f for f in method_fields("test-shiny")}
        assert [(f.kind, f.default) for f in fields.values()] == [("float", 2.5), ("choice", "soft"),
                                                                  ("floats", (0.5, 1.5)), ("int", None),
                                                                  ("str", "plain")]
        assert fields["gain"].doc == "Shiny: gain multiplies everything;"
        assert fields["mode"].doc == "where the shine goes" and fields["mode"].choices == ("soft", "hard")
        values = parse_values(fields.values(), {"method_params.mode": "hard", "method_params.widths": "1, 2e-3",
                                                "method_params.budget": "40", "method_params.tag": "on"})
        strings = overrides(fields.values(), values)
        assert strings[-1] == "method_params.tag=\"on\""  # quoted: YAML would read a bare on as true
        cfg = _apply(strings)
        assert Shiny.make_params(cfg.method_params) == ShinyParams(2.5, "hard", [1.0, 0.002], 40, "on")
    finally:
        _REGISTRY.pop("test-shiny", None)


def test_the_panels_open_before_torch_is_installed():
    """A fresh Slicer has no torch until the first Start or Segment installs it: every library module the two
    panels import when they open must import without it, the Method box gets a note saying how the packages get
    installed instead of methods, and the colour tables other than the SGRS regions are made."""
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    lib_parent = Path(__file__).resolve().parents[2] / "SemiSupSeg"
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # import torch raises ImportError, as in a Slicer without it
        sys.path.insert(0, {str(lib_parent)!r})
        from SemiSupSegLib import (bootstrap, colors, dependencies, labeled_set, live, method_form, parameters,
                                   results, segment_logic, self_tests, training_logic)
        choices, note = method_form.method_choices()
        assert choices == [] and note.startswith(method_form.NOT_INSTALLED_NOTE), (choices, note)
        assert segment_logic.gpu_available() is False
        import slicer
        scene = slicer.vtkMRMLScene()
        assert colors.color_node(scene, "entropy") is not None
        panel = training_logic.TrainingPanel(training_logic.TrainingLogic(), scene)
        assert panel.follow_folder("") is None and panel.tick().status == "no run"
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
