"""What a trial of each model holds of the machine, and so how many run at once."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ray.tune import PlacementGroupFactory

from models.config import MODEL_KEY
from search.command.settings import ModelPlan


def resources_for(plans: list[ModelPlan], use_gpu: bool):
    """A function of a trial's config giving the resources its model declares (one bundle)."""
    table = {}
    for p in plans:
        bundle = {"CPU": p.cpus}
        if use_gpu and p.gpus:
            bundle["GPU"] = p.gpus
        table[p.name] = PlacementGroupFactory([bundle])

    def resources(config: dict[str, Any]) -> PlacementGroupFactory:
        return table[config[MODEL_KEY]]

    return resources


def trial_slots(plan: ModelPlan, nodes: list[Mapping[str, float]], use_gpu: bool) -> int:
    """How many trials of ``plan``'s model fit at once on ``nodes`` (each node's CPU and GPU counts).

    A trial's bundle never spans nodes, so each node is counted on its own: the trials its CPUs
    hold, and, for a GPU trial, the trials its GPUs hold (4 on a GPU at 0.25 each).
    """
    total = 0
    for node in nodes:
        fit = int(node.get("CPU", 0) // plan.cpus) if plan.cpus else 10**6
        if use_gpu and plan.gpus:
            fit = min(fit, int(round(node.get("GPU", 0) / plan.gpus, 6)))
        total += fit
    return total


def concurrency(plans: list[ModelPlan], nodes: list[Mapping[str, float]], use_gpu: bool,
                cap: int | None = None) -> tuple[int, dict[str, int]]:
    """Trials the search admits at once, and each model's own slots.

    Per model: what the nodes hold of its trials, at most its ``num_samples``. Across models: the
    most any one model could fill, so that the machine stays full whichever models still have trials
    to run (trials beyond what fits wait as pending, which costs nothing), but no more than the models'
    own slots together (six models of two trials each fill four slots, though none fills more than two).
    ``cap`` (``--max-concurrent``) bounds both. At least 1, even on a cluster still waiting for its autoscaler.
    """
    fits = {p.name: trial_slots(p, nodes, use_gpu) for p in plans}
    per_model = {p.name: max(1, min(fits[p.name], p.num_samples, cap or 10**9)) for p in plans}
    admitted = max(1, min(max(fits.values()), sum(per_model.values()), cap or 10**9))
    return admitted, per_model
