"""Evaluation protocols and reports (``spineseg-train evaluate --report``, ``spineseg-train protocol ...``).

* :mod:`.scoring` — one result against its reference: per-vertebra Dice, identification, HD95/ASSD, lesions;
* :mod:`.conditions` — several conditions (models, perturbations, adaptation methods, domain codes) on the
  same cases;
* :mod:`.summary` / :mod:`.significance` — 95 % patient-level BCa intervals; paired Wilcoxon with Holm;
* :mod:`.report` / :mod:`.plots` — report.json, report.md, cases.csv and the figures;
* protocols: :mod:`.evaluation` (several models, a baseline), :mod:`.lodo` (leave one domain out),
  :mod:`.robustness` (input perturbations, :mod:`.perturbations`), :mod:`.tta` (instance norm, AdaIN, TENT),
  :mod:`.domain_codes` (Vertebraformer's domain-code noise).
"""
