"""Evaluation metrics and statistics (numpy / scipy only).

* :mod:`.segmentation` — per-class Dice, IoU, accuracy (recall), their means, HD95 and ASSD in mm; Dice of
  vertebrae whatever their names, and of the whole spine.
* :mod:`.identification` — VerSe vertebra identification rate and Hungarian ID accuracy from centroids.
* :mod:`.lesions` — lesion matching (box IoU and centre distance), precision / recall, AP, FROC sensitivity.
* :mod:`.statistics` — patient-level BCa bootstrap intervals, paired Wilcoxon test, Holm–Bonferroni.
* :mod:`.regions` — per-region (cervical / thoracic / lumbar / sacral) summaries of per-vertebra values.

Each module's docstring states its conventions.
"""

from .identification import (
    IdAccuracyResult,
    IdentificationResult,
    centroids_mm,
    id_accuracy,
    identification_metrics,
    identification_rate,
)
from .lesions import (
    average_precision,
    box_iou_3d,
    evaluate_lesions,
    froc_curve,
    match_lesions,
    pooled_ranking,
    precision_recall_curve,
    recall_at_fp_per_scan,
    score_at_fp,
    sensitivity_at_fp,
)
from .regions import REGIONS, pooled_region_means, region_means, region_of, values_by_region
from .segmentation import (
    accuracy_per_class,
    assd,
    class_counts,
    confusion_matrix,
    dice_per_class,
    hd95,
    iou_per_class,
    per_label_surface_metrics,
    per_vertebra_dice,
    per_vertebra_instance_dice,
    segmentation_scores,
    spine_dice,
    surface_distances,
    surface_metrics,
)
from .statistics import BootstrapCI, WilcoxonResult, bootstrap_ci, holm_bonferroni, wilcoxon_paired

__all__ = [
    "BootstrapCI",
    "IdAccuracyResult",
    "IdentificationResult",
    "REGIONS",
    "WilcoxonResult",
    "accuracy_per_class",
    "assd",
    "average_precision",
    "bootstrap_ci",
    "box_iou_3d",
    "centroids_mm",
    "class_counts",
    "confusion_matrix",
    "dice_per_class",
    "evaluate_lesions",
    "froc_curve",
    "hd95",
    "holm_bonferroni",
    "id_accuracy",
    "identification_metrics",
    "identification_rate",
    "iou_per_class",
    "match_lesions",
    "per_label_surface_metrics",
    "per_vertebra_dice",
    "per_vertebra_instance_dice",
    "pooled_ranking",
    "pooled_region_means",
    "precision_recall_curve",
    "recall_at_fp_per_scan",
    "region_means",
    "region_of",
    "score_at_fp",
    "segmentation_scores",
    "sensitivity_at_fp",
    "spine_dice",
    "surface_distances",
    "surface_metrics",
    "values_by_region",
    "wilcoxon_paired",
]
