"""The search's complete plan, made once the data is carved: how trials are scored, how long each model trains,
and whether the winners are refit.

``search.command.settings.ask`` checks the command line before any data is read; ``plan`` then makes ``Settings`` from
what it asked and the data: cross-validation for a validation split too small to select on (``imagesets.folds``),
each model's epochs for the number of images an epoch trains on (``models.ModelSpec.budget``) unless
``--max-epochs`` set them, a refit on small data, one process shape for every model (``one_shape``). Nothing
changes the plan afterwards.
"""

from __future__ import annotations

import dataclasses

import models
from models import external
from search.command.settings import SMALL_TRAIN, Asked, ModelAsk, ModelPlan, Options, Settings, UsageError


def plan(asked: Asked, shape: models.DataShape, val_images: int, full_train: int) -> Settings:
    """The plan for data of ``shape`` (``shape.train_images`` training and ``val_images`` validation images;
    ``full_train`` training images before any --train-size): how trials are scored (cross-validation below
    ``imagesets.folds.CV_BELOW_VAL`` validation images, ``--folds``), each model's epochs and first rung for that
    many training images, and whether winners are refit (on small data, and always under cross-validation, whose
    folds' models each miss a fold of the images). A chosen model that cannot take such data at all, or a
    ``--set`` value that cannot build for it, is a ``UsageError`` naming the model and the fix."""
    from imagesets.folds import fold_train_images, folds_for

    folds = folds_for(val_images, asked.folds)
    if folds > 1:  # a fold's model trains on the pool of training and validation images, less its fold
        shape = dataclasses.replace(shape, train_images=fold_train_images(shape.train_images + val_images, folds))
    refit = full_train < SMALL_TRAIN if asked.refit is None else asked.refit
    if folds > 1 and not refit:
        raise UsageError(f"--no-refit with {folds}-fold cross-validation: the folds' models each miss a fold of the "
                         "images, so the winner is refit on all of them; drop --no-refit, or score on the validation "
                         "split with --folds 1")
    plans, shape_note = one_shape([_model_plan(ask, asked, shape) for ask in asked.asks])
    options = {f.name: getattr(asked, f.name) for f in dataclasses.fields(Options)}
    return Settings(**options, plans=plans, folds=folds, refit=refit, shape_note=shape_note,
                    asha_note="" if asked.smoke else asha_note(plans))


# Trials of a model below which early stopping did not pay in the replay map (benchmarks/asha_replay.py: 200 recorded
# CNN learning curves on Fashion-MNIST, 1,000 replays a cell): no budget under 20 full trials gained 0.1 point of
# regret at any reduction factor, and where the workers outnumbered the trials ASHA cost up to 2.9 points.
ASHA_PAYS_FROM = 20


def asha_note(plans: list[ModelPlan]) -> str:
    """A line naming the models whose ASHA (a first rung before their last epoch) stops trials in a search too small
    for it to pay, and what to change; "" where there are none."""
    small = [p for p in plans if p.grace_period < p.max_epochs and p.num_samples < ASHA_PAYS_FROM]
    if not small:
        return ""
    names = ", ".join(f"{p.name} ({p.num_samples} trials)" for p in small)
    return (f"note: early stopping is unlikely to pay in this search of {names}: replayed on recorded learning curves, "
            f"ASHA gained nothing in searches under {ASHA_PAYS_FROM} full trials "
            "(docs/benchmarks.md#when-early-stopping-pays-the-rung-rule-replayed-on-recorded-curves). "
            "To train every trial in full: --grace-period equal to --max-epochs; for ASHA to pay: the epochs of 50 "
            "full trials or more, at --reduction-factor 2 (the default) or 4")


def _model_plan(ask: ModelAsk, asked: Asked, shape: models.DataShape) -> ModelPlan:
    """One model's plan: its epochs and first rung for an epoch of ``shape.train_images`` images where the command
    line did not set them; refused where the model cannot take such data."""
    from models.config import ConfigError

    spec = models.get(ask.name)
    try:
        spec.check_fits({**spec.defaults_for(shape), **ask.fixed}, shape)
    except ConfigError as e:
        others = [a.name for a in asked.asks if a.name != ask.name]
        leave_out = f", or leave {ask.name} out (--model {','.join(others)})" if others else ""
        raise UsageError(f"{ask.name} cannot search {asked.data.dataset} ({shape}): {e}{leave_out}") from None
    except Exception as e:  # a user's own adapt or fits raising something else: their line, not a traceback
        if not external.origin(ask.name):
            raise
        raise own_error(e, ask.name) from None
    own_epochs, own_rung = spec.budget(asked.gpus > 0, shape.train_images)
    epochs = ask.max_epochs or own_epochs
    if ask.grace_period and ask.grace_period > epochs:
        raise UsageError(f"--grace-period {ask.grace_period} is longer than {ask.name}'s budget of {epochs} epochs; "
                         f"lower it or raise --max-epochs")
    fields = {f.name: getattr(ask, f.name) for f in dataclasses.fields(ModelAsk)}
    made = ModelPlan(**{**fields, "max_epochs": epochs, "grace_period": ask.grace_period or min(own_rung, epochs)},
                     shape=dataclasses.replace(shape, epochs=epochs))
    if external.origin(ask.name):
        check_own(made)
    return made


def check_own(plan: ModelPlan) -> None:
    """A model of the user's own (``--models-from``), checked as its trials will use it, before Ray starts: its
    default configuration and a draw of its space are complete, valid settings; what fails names the user's line."""
    import optuna

    from models.config import params_to_config, split_config
    from search.command.space import default_params, plan_space

    spec = models.get(plan.name)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        split_config({**params_to_config(default_params(plan)), **plan.fixed}, spec.config_cls, plan.name)
        trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
        constants = plan_space(plan, trial)
        split_config({**params_to_config(trial.params), **constants}, spec.config_cls, plan.name)
    except Exception as e:  # the user's code, or the settings it gave
        raise own_error(e, plan.name) from None


def own_error(error: Exception, name: str) -> UsageError:
    """What went wrong with the user's model ``name``, at their line."""
    return UsageError(f"{external.where(error, name)}: model {name!r}: {type(error).__name__}: {error}")


def one_shape(plans: list[ModelPlan]) -> tuple[list[ModelPlan], str]:
    """Every plan given the same CPUs and GPU share a trial, the largest any of them asks for, and a line saying
    what that costs ("" where they already agree).

    Tune hands a finished trial's process only to a trial of the same resource shape (``reuse_actors``): with a
    shape per model, each trial of another model than the last one in that slot paid a new worker process, its
    imports, its CUDA context and the data copied to the GPU (18.9 s from a slot freeing to its next trial on an
    H200). One shape lets any model's next trial take any freed slot; the price is that a model declaring less
    GPU than the largest runs fewer trials at once (each gets more of a GPU than it needs).
    """
    cpus, gpus = max(p.cpus for p in plans), max(p.gpus for p in plans)
    if all((p.cpus, p.gpus) == (cpus, gpus) for p in plans):
        return plans, ""
    smaller = [f"{p.name} {p.gpus:g}" for p in plans if p.gpus < gpus] + \
              [f"{p.name} {p.cpus:g} CPU" for p in plans if p.cpus < cpus and p.gpus == gpus]
    note = (f"One process shape for every model ({cpus:g} CPU{'s' if cpus != 1 else ''}"
            + (f" and {gpus:g} GPU" if gpus else "") + " a trial, the largest any model asks for): a freed slot takes "
            f"any model's next trial without a new process. Its cost: {', '.join(smaller)} asked for less, so fewer of "
            "their trials run at once (--gpu-per-trial F sets one share for all)")
    return [dataclasses.replace(p, cpus=cpus, gpus=gpus) for p in plans], note
