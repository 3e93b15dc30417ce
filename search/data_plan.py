"""What the data decides about a search, once it is loaded: how trials are scored, how long each model trains,
and whether the winners are refit.

``search.settings`` checks the command line before any data is read; ``fit_to_data`` then adapts its plans to
the data: cross-validation for a validation split too small to select on (``imagesets.folds``), each model's
epochs for the number of images an epoch trains on (``models.ModelSpec.budget``), a refit on small data.
"""

from __future__ import annotations

import dataclasses

import models
from search.plans import ModelPlan
from search.settings import SMALL_TRAIN, Settings, UsageError


def fit_to_data(settings: Settings, shape: models.DataShape, val_images: int, full_train: int) -> Settings:
    """Every plan made for data of ``shape`` (``shape.train_images`` training and ``val_images`` validation
    images; ``full_train`` training images before any --train-size): how trials are scored (cross-validation
    below ``imagesets.folds.CV_BELOW_VAL`` validation images, ``--folds``), each model's epochs for that many
    training images (``ModelSpec.budget``, unless --max-epochs sets them), and whether winners are refit (on
    small data, and always under cross-validation, whose folds' models each miss a fifth of the images).
    A chosen model that cannot take such data at all, or a ``--set`` value that cannot build for it, is a
    ``UsageError`` naming the model and the fix."""
    from imagesets.folds import fold_train_images, folds_for
    from models.config import ConfigError

    folds = folds_for(val_images, settings.folds)
    if folds > 1:  # a fold's model trains on the pool of training and validation images, less its fold
        shape = dataclasses.replace(shape, train_images=fold_train_images(shape.train_images + val_images, folds))
    refit = full_train < SMALL_TRAIN if settings.refit is None else settings.refit
    if folds > 1 and not refit:
        raise UsageError(f"--no-refit with {folds}-fold cross-validation: the folds' models each miss a fold of the "
                         "images, so the winner is refit on all of them; drop --no-refit, or score on the validation "
                         "split with --folds 1")
    plans = []
    for plan in settings.plans:
        spec = models.get(plan.name)
        try:
            spec.check_fits({**spec.defaults_for(shape), **plan.fixed}, shape)
        except ConfigError as e:
            others = [p.name for p in settings.plans if p.name != plan.name]
            leave_out = f", or leave {plan.name} out (--model {','.join(others)})" if others else ""
            raise UsageError(f"{plan.name} cannot search {settings.data.dataset} ({shape}): {e}{leave_out}") from None
        plans.append(dataclasses.replace(plan, shape=shape, **_budget_for(plan, spec, settings.gpus > 0, shape)))
    return dataclasses.replace(settings, plans=plans, folds=folds, refit=refit)


def _budget_for(plan: ModelPlan, spec: models.ModelSpec, on_gpu: bool, shape: models.DataShape) -> dict[str, int]:
    """The plan's epochs and first rung for an epoch of ``shape.train_images`` images, where they are the
    model's own; those set by --max-epochs or --grace-period are kept."""
    epochs, first_rung = spec.budget(on_gpu, shape.train_images)
    epochs = epochs if plan.own_epochs else plan.max_epochs
    if not plan.own_rung and plan.grace_period > epochs:
        raise UsageError(f"--grace-period {plan.grace_period} is longer than {plan.name}'s budget of {epochs} epochs; "
                         f"lower it or raise --max-epochs")
    return {"max_epochs": epochs, "grace_period": plan.grace_period if not plan.own_rung else min(first_rung, epochs)}
