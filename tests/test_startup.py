"""What a process loads before it needs it: a trial's worker and the command line start light.

Importing torchvision costs a second (it imports every model it has, detection and torch._dynamo
included), scikit-learn another; Ray Tune and Optuna more. A worker that trains the CNN needs none
of torchvision, and a mistyped flag should be refused before Ray or Optuna load, or torch itself (the
model registry describes the models without it).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers import ROOT


def loaded_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code``."""
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return set(json.loads(proc.stdout.splitlines()[-1]))


def packages(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


def test_a_trial_worker_loads_torchvision_and_scikit_learn_only_when_its_trial_needs_them():
    worker = loaded_after("import trainables.tune_trial")
    assert not packages(worker) & {"torchvision", "sklearn"} and "torch._dynamo" not in worker
    cnn = loaded_after("import trainables.tune_trial, models\nmodels.get('cnn').build({})")
    assert "torchvision" not in packages(cnn)  # the CNN is plain torch
    vgg = loaded_after("import models\nmodels.get('vgg16').build({'pretrained': False})")
    assert "torchvision.models.vgg" in vgg  # a fine-tuned model loads its builder when it is built
    scored = loaded_after("from trainables.loop import macro_f1\nassert macro_f1([0, 1, 1], [0, 1, 0]) > 0")
    assert "sklearn.metrics" in scored  # scikit-learn computes F1, on first use


def test_a_mistyped_flag_is_refused_before_ray_optuna_or_torchvision_load():
    refused = loaded_after("from search.run import main\nassert main(['--model', 'nope']) == 2")
    assert not packages(refused) & {"ray", "optuna", "torchvision", "sklearn"}


@pytest.mark.parametrize("argv", [["--help"], ["--model", "cnn", "--set", "blocks=9"], ["--sampler", "grid"],
                                  ["--model", "vit", "--max-epochs", "vit=0"]])
def test_help_and_refusals_answer_without_loading_torch(argv):
    # The registry describes every model without torch (networks are imported when built): --help and
    # a bad flag or setting are answered in a fraction of a second, not after torch's import.
    code = f"from search.run import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass"
    assert "torch" not in packages(loaded_after(code))
