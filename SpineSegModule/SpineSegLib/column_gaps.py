"""Gaps in the column: a witness to a vertebra the network left out.

Where the network misses a vertebra altogether (most often at the cervico-thoracic junction, or C3 below C2),
counting the vertebrae it found names every one beyond the gap a level too high. A radiologist sees the gap:
the distance from one vertebra's centre to the next is about twice the steps around it. Each step between two
vertebrae found whole is compared with the steps next to it (their median), and the log-odds that one vertebra is
missing there is the likelihood ratio of that step under "one step" (a log ratio around 0) and "two steps"
(around log 2), each with spread ``STEP_LOG_SD``. The count (:func:`.postprocess.scored_numbering`) adds it to a
transition that skips a level, on top of ``SKIP_PENALTY``.
"""

from __future__ import annotations

import numpy as np

# Spread of log(step / the median of the steps beside it) between vertebrae found one after another: 0.09 on the
# tuning phantoms' vertebrae as the network finds them (largest 0.32: T5 to T6, where the kyphosis turns); the
# two vertebrae either side of a missing one lay 0.76-0.78 apart.
STEP_LOG_SD = 0.12
MAX_LOG_ODDS = 8.0  # one step's say, either way
NEIGHBOUR_STEPS = 2  # steps compared on each side


def step_log_ratios(centres_mm: np.ndarray, whole: np.ndarray) -> np.ndarray:
    """Per vertebra, ordered cranio-caudally (``centres_mm`` (n, 3); ``whole``: not cut by the view, so its centre
    says where it is), the log of the step from the vertebra above to it over the median of the steps beside it;
    nan for the first, for steps from or to a cut vertebra, and where fewer than two steps beside it are known."""
    count = len(centres_mm)
    ratios = np.full(count, np.nan)
    if count < 3:
        return ratios
    steps = np.r_[np.nan, np.linalg.norm(np.diff(np.asarray(centres_mm, float), axis=0), axis=1)]
    measured = np.r_[False, whole[1:] & whole[:-1]]
    for step in np.flatnonzero(measured):
        beside = [j for j in range(step - NEIGHBOUR_STEPS, step + NEIGHBOUR_STEPS + 1)
                  if j != step and 0 < j < count and measured[j]]
        if len(beside) >= 2:
            ratios[step] = np.log(steps[step] / np.median(steps[beside]))
    return ratios


def missing_vertebra_log_odds(log_ratios: np.ndarray) -> np.ndarray:
    """Per step (:func:`step_log_ratios`), the log-odds that one vertebra is missing there: the likelihood ratio
    of two steps against one, capped at ``MAX_LOG_ODDS``; 0 where the step is unknown. The step into the sacrum
    is longer by anatomy: the count leaves it out (see ``scored_numbering``)."""
    one = log_ratios / STEP_LOG_SD
    two = (log_ratios - np.log(2.0)) / STEP_LOG_SD
    return np.nan_to_num(np.clip(0.5 * (one ** 2 - two ** 2), -MAX_LOG_ODDS, MAX_LOG_ODDS), nan=0.0)
