"""How canonical features become the fitted model's input columns (part of the artifact contract).

Numeric, binary and ordinal features map to one column each; a categorical feature becomes one
indicator column per category. Training and the service both call :func:`columns_for` and
:func:`encode`, so a model always sees its columns in the order it was fitted with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from models.manifest import FeatureSpec, FeatureType, ModelColumn


def columns_for(features: Sequence[FeatureSpec]) -> list[ModelColumn]:
    columns: list[ModelColumn] = []
    for spec in features:
        if spec.type is FeatureType.CATEGORICAL:
            columns.extend(
                ModelColumn(name=f"{spec.name}={c.code}", feature=spec.name, category=c.code)
                for c in spec.categories
            )
        else:
            columns.append(ModelColumn(name=spec.name, feature=spec.name))
    return columns


def encode(
    columns: Sequence[ModelColumn], values: Mapping[str, npt.ArrayLike]
) -> npt.NDArray[np.float64]:
    """Column matrix (n rows x len(columns)) from canonical feature arrays; NaN = missing.

    Categorical values are category codes (strings); a missing categorical (None/NaN) leaves its
    indicator columns NaN so that the model's missing-value handling applies.
    """
    first = next(iter(values.values()))
    n = len(np.asarray(first, dtype=object))
    matrix = np.empty((n, len(columns)), dtype=np.float64)
    for j, column in enumerate(columns):
        raw = values[column.feature]
        if column.category is None:
            matrix[:, j] = np.asarray(raw, dtype=np.float64)
        else:
            codes = np.asarray(raw, dtype=object)
            present = np.array([isinstance(c, str) for c in codes], dtype=bool)
            matrix[:, j] = np.where(present, codes == column.category, np.nan)
    return matrix
