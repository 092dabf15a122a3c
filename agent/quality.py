"""Classification quality of each variant on the labelled requests of a window.

The gauge (``pruneguard_accuracy{variant}``) is plain accuracy, computed here on every tick;
the saved report adds Evidently's ``ClassificationPreset`` (precision, recall, F1, confusion
matrix per class) for each variant, which needs a ``DataDefinition`` with a
``MulticlassClassification`` entry.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["LABEL_COLUMN", "PREDICTION_COLUMN", "accuracy", "evidently_quality_report"]

LABEL_COLUMN = "label"
PREDICTION_COLUMN = "prediction"


def accuracy(predictions: ArrayLike, labels: ArrayLike) -> float | None:
    """Share of ``predictions`` equal to ``labels``; None without labelled rows."""
    pred, lab = np.asarray(predictions), np.asarray(labels)
    if lab.size == 0:
        return None
    return float(np.mean(pred == lab))


def evidently_quality_report(labelled: pd.DataFrame, class_labels: list[str] | None = None) -> Any:
    """Evidently's ``ClassificationPreset`` on ``labelled`` (int columns label, prediction)."""
    from evidently import DataDefinition, Dataset, MulticlassClassification, Report
    from evidently.presets import ClassificationPreset
    from sklearn.exceptions import UndefinedMetricWarning

    frame = labelled[[LABEL_COLUMN, PREDICTION_COLUMN]].astype(int)
    labels = None
    if class_labels:
        labels = {i: name for i, name in enumerate(class_labels)}
    definition = DataDefinition(
        classification=[
            MulticlassClassification(
                target=LABEL_COLUMN, prediction_labels=PREDICTION_COLUMN, labels=labels
            )
        ],
        categorical_columns=[LABEL_COLUMN, PREDICTION_COLUMN],
    )
    dataset = Dataset.from_pandas(frame, data_definition=definition)
    with warnings.catch_warnings():
        # a class that no row predicts (or no row has) has an undefined precision (recall);
        # sklearn reports it as 0.0 and warns, which is expected in a small window
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        return Report([ClassificationPreset()]).run(current_data=dataset, reference_data=None)
