"""Grouping cases that must stay in one split: the same patient, the same DICOM study or series, or near-duplicate
volumes (perceptual hash). A union-find over case ids; each group records why its cases are joined."""

from __future__ import annotations

from collections import defaultdict


class UnionFind:
    def __init__(self, items):
        self.parent = {item: item for item in items}

    def find(self, item):
        root = item
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[item] != root:
            self.parent[item], item = root, self.parent[item]
        return root

    def union(self, a, b) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def build_groups(records: list[dict], duplicate_pairs: list[tuple[str, str, int]]) -> tuple[list[dict], dict]:
    """``records``: ``{"id", "patient", "study_uid", "series_uid", "domain", "lesions"}`` per case.

    Returns ``(groups, links)``: groups (largest first) ``{"id", "cases", "patients", "domains", "reasons"}``, and
    ``links`` = ``{"patient" | "study_uid" | "series_uid": {value: [case ids]}}`` for values shared by > 1 case.
    """
    ids = [r["id"] for r in records]
    union = UnionFind(ids)
    reasons: dict[str, set] = defaultdict(set)
    links: dict[str, dict[str, list[str]]] = {}
    for key in ("patient", "study_uid", "series_uid"):
        members: dict[str, list[str]] = defaultdict(list)
        for r in records:
            if r.get(key):
                members[str(r[key])].append(r["id"])
        shared = {value: cases for value, cases in members.items() if len(cases) > 1}
        links[key] = shared
        for cases in shared.values():
            for other in cases[1:]:
                union.union(cases[0], other)
            for case in cases:
                reasons[case].add(f"same {key.replace('_uid', ' UID')}")
    for a, b, _distance in duplicate_pairs:
        union.union(a, b)
        reasons[a].add("near-duplicate volume")
        reasons[b].add("near-duplicate volume")
    by_root: dict[str, list[str]] = defaultdict(list)
    for case_id in ids:
        by_root[union.find(case_id)].append(case_id)
    by_id = {r["id"]: r for r in records}
    groups = []
    for cases in sorted(by_root.values(), key=lambda c: (-len(c), c[0])):
        groups.append({"cases": cases,
                       "patients": sorted({str(by_id[c].get("patient") or c) for c in cases}),
                       "domains": sorted({str(by_id[c].get("domain")) for c in cases}),
                       "lesions": sum(int(by_id[c].get("lesions", 0)) for c in cases),
                       "reasons": sorted(set().union(*(reasons[c] for c in cases)))})
    for index, group in enumerate(groups, start=1):
        group["id"] = f"g{index:05d}"
    return groups, links
