"""Exact TreeSHAP for shallow forests, compiled at load time into lookup tables.

Path-dependent TreeSHAP values of a tree depend on ``x`` only through which side of each split
``x`` falls (and whether it is missing). So trees are grouped by the set of features they split
on; for each group the Shapley values are computed once per cell of the grid spanned by the
group's thresholds (one extra cell per feature for "missing"), summed over the group's trees and
stored. Scoring locates each feature's cell with one ``searchsorted`` over the union of that
feature's thresholds and gathers from one concatenated table (``../shared/DESIGN.md``).

The forest is read from XGBoost's documented JSON model format (``Booster.save_model`` to a
``.json`` file; schema in XGBoost's ``doc/model.schema``), so neither loading nor scoring needs
XGBoost. The margin follows from the efficiency property: ``margin = base + sum(contributions)``.
Tests check the tables against XGBoost's ``pred_contribs`` on the same file.

The value function is XGBoost's (Lundberg et al. 2018, Algorithm 1): features in ``S`` follow
``x`` (missing values follow the default branch), other splits average their children weighted
by cover. With at most ``MAX_GROUP_FEATURES`` features per tree, the Shapley sum over subsets is
enumerated directly, vectorised over all grid cells.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

Float = npt.NDArray[np.float64]
Int = npt.NDArray[np.intp]
MAX_GROUP_FEATURES = 3
SUPPORTED_FORMAT = ((2, 0, 0), (4, 0, 0))
"""XGBoost releases (from inclusive, to exclusive) whose JSON model format the parser reads."""


class UnsupportedModel(ValueError):
    """The JSON model is not one the lookup tables can reproduce exactly."""


class ForestTooDeep(UnsupportedModel):
    """A tree splits on more features than the lookup tables support."""


@dataclass(frozen=True)
class _Tree:
    left: list[int]
    right: list[int]
    default_left: list[bool]
    feature: list[int]
    threshold: list[float]  # for leaves: the leaf value
    cover: list[float]

    def is_leaf(self, node: int) -> bool:
        return self.left[node] == -1

    def features(self) -> tuple[int, ...]:
        return tuple(
            sorted({self.feature[n] for n in range(len(self.left)) if not self.is_leaf(n)})
        )

    def thresholds(self, feature: int) -> set[float]:
        return {
            self.threshold[n]
            for n in range(len(self.left))
            if not self.is_leaf(n) and self.feature[n] == feature
        }

    def expected_value(self, node: int, subset: frozenset[int], cells: Float) -> Float:
        """E[tree | x_S] for every row of ``cells`` (columns = all model columns)."""
        if self.is_leaf(node):
            return np.full(cells.shape[0], self.threshold[node])
        left = self.expected_value(self.left[node], subset, cells)
        right = self.expected_value(self.right[node], subset, cells)
        feature = self.feature[node]
        if feature in subset:
            values = cells[:, feature]
            go_left = np.where(
                np.isnan(values), self.default_left[node], values < self.threshold[node]
            )
            return np.where(go_left, left, right)
        cover_left, cover_right = self.cover[self.left[node]], self.cover[self.right[node]]
        return (cover_left * left + cover_right * right) / (cover_left + cover_right)

    def shap(self, cells: Float, features: tuple[int, ...]) -> Float:
        """Exact Shapley values (rows x len(features)) by enumerating subsets."""
        k = len(features)
        value = {
            frozenset(s): self.expected_value(0, frozenset(s), cells)
            for r in range(k + 1)
            for s in itertools.combinations(features, r)
        }
        out = np.zeros((cells.shape[0], k))
        for i, feature in enumerate(features):
            others = [f for f in features if f != feature]
            for r in range(k):
                weight = math.factorial(r) * math.factorial(k - r - 1) / math.factorial(k)
                for subset in itertools.combinations(others, r):
                    s = frozenset(subset)
                    out[:, i] += weight * (value[s | {feature}] - value[s])
        return out


def _version(document: Mapping[str, Any]) -> tuple[int, int, int]:
    version = document.get("version")
    if (
        not isinstance(version, list)
        or len(version) != 3
        or not all(isinstance(v, int) for v in version)
    ):
        raise UnsupportedModel(f"'version' must be [major, minor, patch], not {version!r}")
    major, minor, patch = version
    return major, minor, patch


def _tree(raw: Mapping[str, Any], n_columns: int, index: int) -> _Tree:
    leaf_size = int(raw["tree_param"].get("size_leaf_vector", "1"))
    if leaf_size > 1:
        raise UnsupportedModel(f"tree {index} has vector leaves (multi-target trees)")
    if any(kind != 0 for kind in raw["split_type"]):
        raise UnsupportedModel(f"tree {index} has categorical splits")
    tree = _Tree(
        left=[int(v) for v in raw["left_children"]],
        right=[int(v) for v in raw["right_children"]],
        default_left=[bool(v) for v in raw["default_left"]],
        feature=[int(v) for v in raw["split_indices"]],
        # float32 values as XGBoost compares them, widened exactly to float64
        threshold=[float(np.float32(v)) for v in raw["split_conditions"]],
        cover=[float(v) for v in raw["sum_hessian"]],
    )
    n_nodes = len(tree.left)
    fields = (tree.right, tree.default_left, tree.feature, tree.threshold, tree.cover)
    if n_nodes == 0 or any(len(f) != n_nodes for f in fields):
        raise UnsupportedModel(f"tree {index}: node arrays differ in length")
    for node in range(n_nodes):
        if tree.is_leaf(node):
            if tree.right[node] != -1:
                raise UnsupportedModel(f"tree {index}: node {node} has one child")
            continue
        children_ok = all(0 < c < n_nodes for c in (tree.left[node], tree.right[node]))
        if not children_ok or not 0 <= tree.feature[node] < n_columns:
            raise UnsupportedModel(f"tree {index}: node {node} points outside the tree or model")
    return tree


@dataclass(frozen=True)
class Forest:
    """A ``binary:logistic`` gbtree model as XGBoost's JSON model format describes it."""

    n_columns: int
    feature_names: list[str]
    """As saved by XGBoost (empty when it was trained without names)."""
    base_margin: float
    """The logit of XGBoost's ``base_score``: the margin before any tree."""
    trees: list[_Tree]
    xgboost_version: tuple[int, int, int]
    """The ``version`` field of the document: the XGBoost release that wrote it."""

    def slice(self, start: int, stop: int) -> Forest:
        """Trees ``start:stop`` with the same base (as ``booster[start:stop]`` in XGBoost)."""
        return replace(self, trees=self.trees[start:stop])

    def check_compilable(self) -> None:
        """Raise :class:`ForestTooDeep` unless every tree fits the lookup tables."""
        for index, tree in enumerate(self.trees):
            n = len(tree.features())
            if n > MAX_GROUP_FEATURES:
                raise ForestTooDeep(
                    f"tree {index} splits on {n} features; lookup tables support at most "
                    f"{MAX_GROUP_FEATURES} (train with max_depth <= 2 or interaction constraints)"
                )


def parse_forest(document: Mapping[str, Any]) -> Forest:
    """Read a parsed XGBoost JSON model (``Booster.save_model("model.json")``).

    Raises :class:`UnsupportedModel` for anything the lookup tables cannot reproduce exactly:
    another format version, objective or booster, several targets or classes, categorical or
    vector-leaf trees, or inconsistent node arrays.
    """
    version = _version(document)
    if not SUPPORTED_FORMAT[0] <= version < SUPPORTED_FORMAT[1]:
        low, high = (".".join(map(str, v)) for v in SUPPORTED_FORMAT)
        raise UnsupportedModel(
            f"written by XGBoost {'.'.join(map(str, version))}; "
            f"this parser reads the JSON model format of XGBoost >= {low}, < {high}"
        )
    learner = document["learner"]
    objective = learner["objective"]["name"]
    if objective != "binary:logistic":
        raise UnsupportedModel(f"only binary:logistic boosters are supported, not {objective!r}")
    booster = learner["gradient_booster"]
    if booster["name"] != "gbtree":
        raise UnsupportedModel(f"only gbtree boosters are supported, not {booster['name']!r}")
    params = learner["learner_model_param"]
    if int(params.get("num_target", "1")) != 1 or int(params.get("num_class", "0")) != 0:
        raise UnsupportedModel("only single-target, single-class models are supported")
    n_columns = int(params["num_feature"])
    # a scalar ("5E-1") in older releases, a one-element vector ("[5E-1]") in newer ones
    base_score = float(str(params["base_score"]).strip("[]"))
    if not 0.0 < base_score < 1.0:
        raise UnsupportedModel(f"base_score {base_score} is not a probability")
    names = [str(n) for n in learner.get("feature_names", [])]
    if names and len(names) != n_columns:
        raise UnsupportedModel(f"{len(names)} feature names for {n_columns} features")
    raw_trees = booster["model"]["trees"]
    if len(raw_trees) != int(booster["model"]["gbtree_model_param"]["num_trees"]):
        raise UnsupportedModel("the number of trees differs from num_trees")
    return Forest(
        n_columns=n_columns,
        feature_names=names,
        base_margin=math.log(base_score / (1.0 - base_score)),
        trees=[_tree(raw, n_columns, i) for i, raw in enumerate(raw_trees)],
        xgboost_version=version,
    )


@dataclass(frozen=True)
class TreeTables:
    """Compiled lookup tables; ``contributions`` is exact path-dependent TreeSHAP per column."""

    n_columns: int
    base_margin: float
    thresholds: list[Float]
    """Per column: sorted union of the forest's split thresholds."""
    threshold_lists: list[list[float]]
    slot_feature: list[Int]
    """Per slot: the column each group's slot refers to (a group uses up to 3 slots)."""
    slot_map: list[Int]
    """Per slot: global cell -> local cell, concatenated over groups."""
    slot_map_offset: list[Int]
    slot_stride: list[Int]
    """Per slot: stride of the slot's local cell in the group's table."""
    table_offset: Int
    table: Float
    """(total cells, slots): contribution to each slot's column."""
    onehot: list[Float]
    """Per slot: (groups x columns) indicator, to scatter group values onto columns."""
    curves: list[Float]
    """Per column: summed contribution of its single-feature trees, per global cell. These are
    the exact per-feature risk curves (shape functions) of a depth-1 forest."""
    curve_lists: list[list[float]]

    @property
    def n_groups(self) -> int:
        return len(self.table_offset)

    def global_cells(self, matrix: Float) -> Int:
        """Cell index per row and column; missing values get the last cell."""
        x = matrix.astype(np.float32).astype(np.float64)
        cells = np.empty(x.shape, dtype=np.intp)
        for j, thresholds in enumerate(self.thresholds):
            column = x[:, j]
            cells[:, j] = np.where(
                np.isnan(column), len(thresholds) + 1, np.searchsorted(thresholds, column, "right")
            )
        return cells

    def _index(self, cells: Int) -> Int:
        index = self.table_offset
        for feature, mapping, offset, stride in zip(
            self.slot_feature, self.slot_map, self.slot_map_offset, self.slot_stride, strict=True
        ):
            index = index + mapping[offset + cells[:, feature]] * stride
        return index

    def contributions(self, matrix: Float) -> Float:
        """(rows x columns) contributions to the margin; ``margin = base + row sum``."""
        cells = self.global_cells(matrix)
        out: Float = np.empty((matrix.shape[0], self.n_columns))
        for j, curve in enumerate(self.curves):
            out[:, j] = curve[cells[:, j]]
        if self.n_groups:
            rows = self.table[self._index(cells)]
            for s, onehot in enumerate(self.onehot):
                out += rows[:, :, s] @ onehot
        return out

    def contributions_one(self, row: list[float]) -> Float:
        """Same as :meth:`contributions` for one row given as floats, with less overhead."""
        # XGBoost compares float32 values; rounding the row once is cheaper than per value.
        values = np.asarray(row, dtype=np.float32).tolist()
        cells = [
            len(thresholds) + 1 if value != value else bisect.bisect_right(thresholds, value)
            for value, thresholds in zip(values, self.threshold_lists, strict=True)
        ]
        out = np.array([curve[c] for curve, c in zip(self.curve_lists, cells, strict=True)])
        if self.n_groups:
            rows = self.table[self._index(np.array([cells], dtype=np.intp))[0]]
            for s, features in enumerate(self.slot_feature):
                out += np.bincount(features, rows[:, s], minlength=self.n_columns)
        return out


def _representatives(thresholds: list[float]) -> Float:
    """One value per local cell: below all, at each threshold (x >= t goes right), missing."""
    below = thresholds[0] - abs(thresholds[0]) - 1.0 if thresholds else 0.0
    return np.array([below, *thresholds, np.nan], dtype=np.float64)


def _local_map(global_thresholds: Float, local: list[float]) -> Int:
    global_reps = np.concatenate([[-np.inf], global_thresholds])
    mapped = np.searchsorted(np.asarray(local, dtype=np.float64), global_reps, "right")
    return np.concatenate([mapped, [len(local) + 1]]).astype(np.intp)


def compile_tables(forest: Forest) -> TreeTables:
    forest.check_compilable()
    base_margin = forest.base_margin
    n_columns = forest.n_columns
    groups: dict[tuple[int, ...], list[_Tree]] = {}
    for tree in forest.trees:
        features = tree.features()
        if not features:  # a stump with a single leaf only shifts the base value
            base_margin += tree.threshold[0]
            continue
        groups.setdefault(features, []).append(tree)

    union: list[set[float]] = [set() for _ in range(n_columns)]
    for features, members in groups.items():
        for f in features:
            for tree in members:
                union[f] |= tree.thresholds(f)
    thresholds = [np.array(sorted(u), dtype=np.float64) for u in union]

    slots = range(MAX_GROUP_FEATURES)
    slot_feature: list[list[int]] = [[] for _ in slots]
    slot_maps: list[list[Int]] = [[] for _ in slots]
    slot_stride: list[list[int]] = [[] for _ in slots]
    tables: list[Float] = []
    curves = [np.zeros(len(t) + 2) for t in thresholds]
    for features, members in groups.items():
        local = [sorted(set().union(*(t.thresholds(f) for t in members))) for f in features]
        reps = [_representatives(t) for t in local]
        grid = np.array(list(itertools.product(*reps)), dtype=np.float64)
        cells = np.full((grid.shape[0], n_columns), np.nan)
        cells[:, list(features)] = grid
        values: Float = np.sum([tree.shap(cells, features) for tree in members], axis=0)
        base_margin += float(sum(t.expected_value(0, frozenset(), cells[:1])[0] for t in members))
        if len(features) == 1:
            f = features[0]
            curves[f] = curves[f] + values[:, 0][_local_map(thresholds[f], local[0])]
            continue
        table = np.zeros((grid.shape[0], MAX_GROUP_FEATURES))
        table[:, : len(features)] = values
        tables.append(table)
        sizes = [len(r) for r in reps]
        for s in slots:
            if s < len(features):
                f = features[s]
                slot_maps[s].append(_local_map(thresholds[f], local[s]))
                slot_stride[s].append(math.prod(sizes[s + 1 :]))
            else:  # an unused slot: points at the group's first column, adds zeros
                f = features[0]
                slot_maps[s].append(np.zeros(len(thresholds[f]) + 2, dtype=np.intp))
                slot_stride[s].append(0)
            slot_feature[s].append(f)

    sizes_all = np.array([len(t) for t in tables], dtype=np.intp)
    table_offset = (np.cumsum(sizes_all) - sizes_all).astype(np.intp)

    def offsets(maps: list[Int]) -> Int:
        lengths = np.array([len(m) for m in maps], dtype=np.intp)
        return (np.cumsum(lengths) - lengths).astype(np.intp)

    def onehot(features: list[int]) -> Float:
        matrix = np.zeros((len(features), n_columns))
        matrix[np.arange(len(features)), features] = 1.0
        return matrix

    return TreeTables(
        n_columns=n_columns,
        base_margin=base_margin,
        thresholds=thresholds,
        threshold_lists=[t.tolist() for t in thresholds],
        slot_feature=[np.array(f, dtype=np.intp) for f in slot_feature],
        slot_map=[np.concatenate(m) if m else np.zeros(0, dtype=np.intp) for m in slot_maps],
        slot_map_offset=[offsets(m) for m in slot_maps],
        slot_stride=[np.array(st, dtype=np.intp) for st in slot_stride],
        table_offset=table_offset,
        table=np.concatenate(tables) if tables else np.zeros((0, MAX_GROUP_FEATURES)),
        onehot=[onehot(f) for f in slot_feature],
        curves=curves,
        curve_lists=[c.tolist() for c in curves],
    )
