"""Domain-code noise experiment for networks with domain modulation (``vertebraformer``;
``spineseg-train protocol domain-codes``).

The network's ``forward(x, domain=d)`` conditions on domain ``d``'s prototype; ``domain=None`` uses its domain
classifier's mix. Conditions, on the cases whose domain is in the model card's ``training.domains``:

* ``true codes`` — each case's own domain (the reference);
* ``10 % / 20 % / 30 % wrong`` — that share of cases (a seeded random subset; the 10 % subset lies inside the 20 %
  one, and so on) gets a uniformly drawn *other* domain;
* ``random codes`` — every case a uniformly drawn domain (right by chance 1 / D of the time);
* ``swapped codes`` — every case the next domain in the card's order (all wrong, systematically);
* ``inferred`` — no code: the classifier's mix, as the engine runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from SpineSegLib.checkpoint import LoadedModel, load_checkpoint
from SpineSegLib.inference import Segmenter, resolve_device

from .conditions import Condition, run_conditions
from .report import write_report

DEFAULT_WRONG = (0.1, 0.2, 0.3)
REFERENCE = "true codes"


class DomainCoded(torch.nn.Module):
    """Wraps a network so that ``forward(x)`` calls ``network(x, domain=self.code)`` (the engine passes no code)."""

    def __init__(self, network: torch.nn.Module):
        super().__init__()
        self.network = network
        self.code: int | None = None
        self.size_divisor = getattr(network, "size_divisor", 1)

    def forward(self, x, **kwargs):
        return self.network(x, domain=self.code, **kwargs)


def domain_vocabulary(model: LoadedModel) -> list[str]:
    conditioner = getattr(model.network, "domain", None)
    if conditioner is None or not hasattr(conditioner, "prototypes"):
        raise ValueError(f"{model.card['architecture']['id']} has no domain modulation: the domain-code experiment "
                         "needs a vertebraformer with domain_modulation")
    domains = list(model.card.get("training", {}).get("domains") or [])
    if not domains:
        raise ValueError("the model card lists no training domains (training.domains): the true code of a case "
                         "is unknown")
    if len(domains) > conditioner.num_domains:
        raise ValueError(f"the card lists {len(domains)} domains but the network has {conditioner.num_domains}")
    return domains


def code_assignments(true: list[int], n_domains: int, wrong_fractions, seed: int) -> dict[str, list[int]]:
    """``{condition: [code per case]}`` (see the module docstring)."""
    rng = np.random.default_rng(seed)
    n = len(true)
    order = rng.permutation(n)
    others = [int(rng.choice([d for d in range(n_domains) if d != t])) if n_domains > 1 else t for t in true]
    plans = {REFERENCE: list(true)}
    if n_domains > 1:
        for fraction in wrong_fractions:
            wrong = set(order[: int(round(fraction * n))].tolist())
            plans[f"{fraction:.0%} wrong"] = [others[i] if i in wrong else true[i] for i in range(n)]
        plans["random codes"] = [int(c) for c in rng.integers(0, n_domains, n)]
        plans["swapped codes"] = [(t + 1) % n_domains for t in true]
    return plans


def domain_codes(model: str | Path, cases, report_dir: str | Path, wrong_fractions=DEFAULT_WRONG, *,
                 device: str = "auto", fast: bool = False, n_resamples: int = 10_000, seed: int = 0,
                 surface: bool = True, data_description: str = "", log=print) -> dict:
    loaded = load_checkpoint(model, resolve_device(device))
    vocabulary = domain_vocabulary(loaded)
    cases = list(cases)
    domain_of = [str(c.meta.get("domain")) for c in cases]
    kept = [c for c, d in zip(cases, domain_of) if d in vocabulary]
    notes = [f"Domains (code order): {', '.join(vocabulary)}."]
    if len(kept) < len(cases):
        skipped = sorted({d for d in domain_of if d not in vocabulary})
        notes.append(f"{len(cases) - len(kept)} case(s) of domains outside the model's vocabulary "
                     f"({', '.join(skipped)}) left out: their true code is unknown.")
    if not kept:
        raise ValueError("no case has a domain the model was trained with")
    if len(vocabulary) < 2:
        notes.append("One training domain: there is no wrong code to give; only true and inferred codes run.")
    true = [vocabulary.index(str(c.meta.get("domain"))) for c in kept]
    plans = code_assignments(true, len(vocabulary), wrong_fractions, seed)
    position = {c.case_id: i for i, c in enumerate(kept)}
    wrapped = DomainCoded(loaded.network)
    segmenter = Segmenter(LoadedModel(wrapped, loaded.card, loaded.path), device=device, fast=fast)

    def runner(codes):
        def run(case):
            wrapped.code = None if codes is None else codes[position[case.case_id]]
            return segmenter(case.ct)
        return run

    conditions = [Condition(name, runner(codes), f"{sum(c != t for c, t in zip(codes, true))} wrong of {len(true)}")
                  for name, codes in plans.items()]
    conditions.append(Condition("inferred", runner(None), "domain classifier's mix (no code)"))
    results = run_conditions(conditions, kept, surface, log)
    wrong_counts = {c.name: c.note for c in conditions}
    return write_report(report_dir, f"Domain-code noise: {loaded.name}", results, reference=REFERENCE,
                        n_resamples=n_resamples, seed=seed, column="codes", what="domain codes",
                        settings={"model": str(model), "data": data_description,
                                  "wrong_fractions": list(wrong_fractions), "mode": "fast" if fast else "full"},
                        notes=notes, extra={"plans": {k: [vocabulary[i] for i in v] for k, v in plans.items()},
                                            "wrong_counts": wrong_counts})
