"""Patient-level splits stratified by source domain and pathology.

The unit is the group (:mod:`.groups`: one patient, study, series or a set of near-duplicates), so no patient is
ever in two splits. Each group gets a stratum — its (most common) domain and whether it has lesions — and, within a
stratum, groups are shuffled (seeded) and then placed largest first into the split furthest below its target
share of the stratum's cases (ties: train, val, test). Small strata cannot follow 60/20/20 exactly (a stratum of
two groups gives one train and one validation group); the curation report shows the counts per stratum.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

DEFAULT_FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}


def stratum_of(group: dict, records: dict[str, dict]) -> tuple[str, str]:
    domains = Counter(str(records[c].get("domain")) for c in group["cases"])
    domain = sorted(domains.items(), key=lambda item: (-item[1], item[0]))[0][0]
    return domain, "lesions" if group["lesions"] > 0 else "no lesions"


def stratified_split(groups: list[dict], records: dict[str, dict], fractions: dict[str, float] | None = None,
                     seed: int = 0) -> dict[str, str]:
    """``{case id: split name}``; every case of a group gets the same split."""
    fractions = dict(fractions or DEFAULT_FRACTIONS)
    total = sum(fractions.values())
    if total <= 0 or any(f < 0 for f in fractions.values()):
        raise ValueError(f"split fractions must be non-negative and not all zero: {fractions}")
    fractions = {k: v / total for k, v in fractions.items()}
    names = list(fractions)
    rng = np.random.default_rng(seed)
    strata: dict[tuple, list[dict]] = defaultdict(list)
    for group in groups:
        group["stratum"] = list(stratum_of(group, records))
        strata[tuple(group["stratum"])].append(group)
    assignment = {}
    for key in sorted(strata):
        members = strata[key]
        order = rng.permutation(len(members))
        members = sorted((members[i] for i in order), key=lambda g: -len(g["cases"]))  # stable: shuffled ties
        size = sum(len(g["cases"]) for g in members)
        placed = dict.fromkeys(names, 0)
        for group in members:
            deficits = [fractions[n] * size - placed[n] for n in names]
            split = names[int(np.argmax(deficits))]
            placed[split] += len(group["cases"])
            group["split"] = split
            for case in group["cases"]:
                assignment[case] = split
    return assignment
