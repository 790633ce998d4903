"""Vertebra renumbering rules, without MRML: which name each vertebra of a column gets.

A column is the vertebra segments ordered cranio-caudally (by their centroids' S coordinate). Renaming one of
them to its true name renames every other one consistently: the names follow the label table's order
(C1-C7, T1-T12, [T13], L1-L5, [L6]), one step per vertebra. Transitional vertebrae:

- **T13** is part of the sequence when the new name is T13, or when the column already has a T13 that is not
  the vertebra being renamed (renaming the T13 itself to another name removes it).
- **L6** likewise, and also when the lumbar vertebrae below the renamed one would otherwise run into the sacrum
  (six lumbar vertebrae are then L1-L6).
- The **sacrum** is an anchor: sacrum segments keep their name unless the sacrum segment itself is renamed (to a
  lumbar name, say), and only the lowest vertebra of the column can become the sacrum.
"""

from __future__ import annotations

from .errors import InputError
from .labels import LabelTable, load_label_table

SACRUM = "sacrum"
T13 = "T13"
L6 = "L6"


def vertebra_sequence(table: LabelTable | None = None, t13: bool = False, l6: bool = False) -> list[str]:
    """The cranio-caudal names of a column (sacrum last), with or without the transitional vertebrae."""
    table = table or load_label_table()
    names = [lab.name for lab in table if lab.name not in (SACRUM, T13, L6) or (lab.name == T13 and t13)
             or (lab.name == L6 and l6)]
    return [n for n in names if n != SACRUM] + ([SACRUM] if any(lab.name == SACRUM for lab in table) else [])


def canonical_name(name: str, table: LabelTable | None = None) -> str:
    """The label table's spelling of a vertebra name (``l1`` -> ``L1``); InputError if unknown."""
    table = table or load_label_table()
    try:
        return table.by_name(str(name).strip()).name
    except KeyError as error:
        raise InputError(f"unknown vertebra name {name!r}: use one of {', '.join(table.names)}") from error


def plan_renumber(names: list[str], picked: int, new_name: str, table: LabelTable | None = None,
                  t13: bool | None = None, l6: bool | None = None) -> list[str]:
    """New names for a column whose current names are ``names`` (cranio-caudal) when ``names[picked]`` is truly
    ``new_name``. ``t13``/``l6`` force the transitional vertebrae in or out (default: the rules above).

    Returns the new list of names (same length and order). Raises :class:`InputError` when the column cannot be
    named that way (more vertebrae above than C1 allows, too many below, a second sacrum...).
    """
    table = table or load_label_table()
    names = [canonical_name(n, table) for n in names]
    new_name = canonical_name(new_name, table)
    if not 0 <= picked < len(names):
        raise InputError(f"no vertebra number {picked} in a column of {len(names)}")
    current = names[picked]
    # The anchored sacrum: sacrum segments other than the picked one keep their name and leave the column.
    column = [i for i, n in enumerate(names) if n != SACRUM or i == picked]
    result = list(names)
    position = column.index(picked)
    if new_name == SACRUM:
        if position != len(column) - 1:
            raise InputError("only the lowest vertebra of the column can be the sacrum")
        if any(n == SACRUM for i, n in enumerate(names) if i != picked):
            raise InputError("the column already has a sacrum: merge the two segments instead")
    if t13 is None:
        t13 = new_name == T13 or any(names[i] == T13 for i in column if i != picked)
    if l6 is None:
        l6 = new_name == L6 or any(names[i] == L6 for i in column if i != picked)
    for attempt_l6 in ((l6,) if l6 else (False, True)):
        sequence = vertebra_sequence(table, t13, attempt_l6)
        if new_name not in sequence:
            raise InputError(f"{new_name} cannot be placed in this column")
        anchor = sequence.index(new_name)
        wanted = {i: anchor + (k - position) for k, i in enumerate(column)}
        last_vertebra = len(sequence) - 1 if new_name == SACRUM else sequence.index(SACRUM) - 1
        too_low = [i for i in column if wanted[i] > last_vertebra]
        if too_low and not attempt_l6 and not l6:
            continue  # one more lumbar vertebra than L5 allows: try with L6
        break
    too_high = [i for i in column if wanted[i] < 0]
    if too_high:
        raise InputError(f"naming {current} as {new_name} puts {len(too_high)} vertebra(e) above C1; "
                         "check the name")
    if too_low:
        raise InputError(f"naming {current} as {new_name} leaves {len(too_low)} vertebra(e) below the last lumbar "
                         "vertebra; check the name")
    for i in column:
        result[i] = sequence[wanted[i]]
    return result


def plan_shift(names: list[str], steps: int, table: LabelTable | None = None) -> list[str]:
    """Every vertebra of the column moves ``steps`` places along the sequence (+1: one caudal, L1 -> L2; -1: one
    cranial, L2 -> L1); transitional vertebrae present stay, and L6 is added when needed."""
    table = table or load_label_table()
    names = [canonical_name(n, table) for n in names]
    column = [i for i, n in enumerate(names) if n != SACRUM]
    if not column:
        raise InputError("there is no vertebra to shift")
    if steps == 0:
        return names
    t13 = T13 in names
    l6 = L6 in names
    top = column[0]
    sequence = vertebra_sequence(table, t13, True)
    target = sequence.index(names[top]) + int(steps)
    if not 0 <= target < sequence.index(SACRUM):
        raise InputError(f"cannot shift {names[top]} by {steps}: it would leave the vertebra sequence")
    return plan_renumber(names, top, sequence[target], table, t13=t13, l6=l6)
