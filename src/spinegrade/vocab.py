"""The task's vocabulary: conditions, levels, severities, series types and row ids.

Every other module takes these names from here, so the spelling of the challenge lives in one place.
"""

from __future__ import annotations

from typing import Final

CONDITIONS: Final = (
    "spinal_canal_stenosis",
    "left_neural_foraminal_narrowing",
    "right_neural_foraminal_narrowing",
    "left_subarticular_stenosis",
    "right_subarticular_stenosis",
)
LEVELS: Final = ("l1_l2", "l2_l3", "l3_l4", "l4_l5", "l5_s1")
SEVERITIES: Final = ("normal_mild", "moderate", "severe")
# How train.csv spells the severities, in the order of SEVERITIES.
SEVERITY_LABELS: Final = ("Normal/Mild", "Moderate", "Severe")
# The challenge's sample weights by true severity.
SEVERITY_WEIGHTS: Final = (1.0, 2.0, 4.0)

SERIES_TYPES: Final = ("Sagittal T1", "Sagittal T2/STIR", "Axial T2")
CONDITION_SERIES: Final = {
    "spinal_canal_stenosis": "Sagittal T2/STIR",
    "left_neural_foraminal_narrowing": "Sagittal T1",
    "right_neural_foraminal_narrowing": "Sagittal T1",
    "left_subarticular_stenosis": "Axial T2",
    "right_subarticular_stenosis": "Axial T2",
}
CONDITION_GROUPS: Final = {
    "spinal": ("spinal_canal_stenosis",),
    "foraminal": ("left_neural_foraminal_narrowing", "right_neural_foraminal_narrowing"),
    "subarticular": ("left_subarticular_stenosis", "right_subarticular_stenosis"),
}
GROUP_OF_CONDITION: Final = {c: g for g, cs in CONDITION_GROUPS.items() for c in cs}
# Which side a condition is on; the flip augmentation swaps these.
SIDE_OF_CONDITION: Final = {
    c: ("left" if c.startswith("left_") else "right" if c.startswith("right_") else None) for c in CONDITIONS
}

# The 25 targets in train.csv's column order.
TARGETS: Final = tuple((c, lv) for c in CONDITIONS for lv in LEVELS)
LABEL_COLUMNS: Final = tuple(f"{c}_{lv}" for c, lv in TARGETS)

_CONDITION_DISPLAY: Final = {c: c.replace("_", " ").title() for c in CONDITIONS}
_LEVEL_DISPLAY: Final = {lv: lv.upper().replace("_", "/") for lv in LEVELS}
_CONDITION_FROM_DISPLAY: Final = {v.lower(): k for k, v in _CONDITION_DISPLAY.items()}
_LEVEL_FROM_DISPLAY: Final = {v.lower(): k for k, v in _LEVEL_DISPLAY.items()}


def condition_display(condition: str) -> str:
    """'left_neural_foraminal_narrowing' -> 'Left Neural Foraminal Narrowing' (coordinates file spelling)."""
    return _CONDITION_DISPLAY[condition]


def level_display(level: str) -> str:
    """'l4_l5' -> 'L4/L5' (the coordinates file's spelling)."""
    return _LEVEL_DISPLAY[level]


def condition_key(text: str) -> str:
    """Either spelling of a condition -> its snake_case key; KeyError names the unknown value."""
    t = str(text).strip().lower()
    if t in _CONDITION_FROM_DISPLAY:
        return _CONDITION_FROM_DISPLAY[t]
    if t in CONDITIONS:
        return t
    raise KeyError(f"unknown condition {text!r}; expected one of {', '.join(_CONDITION_DISPLAY.values())}")


def level_key(text: str) -> str:
    """Either spelling of a level ('L4/L5' or 'l4_l5') -> 'l4_l5'; KeyError names the unknown value."""
    t = str(text).strip().lower()
    if t in _LEVEL_FROM_DISPLAY:
        return _LEVEL_FROM_DISPLAY[t]
    if t in LEVELS:
        return t
    raise KeyError(f"unknown level {text!r}; expected one of {', '.join(_LEVEL_DISPLAY.values())}")


def severity_code(text: str) -> int:
    """'Normal/Mild' | 'Moderate' | 'Severe' (or the snake_case names) -> 0 | 1 | 2."""
    t = str(text).strip()
    if t in SEVERITY_LABELS:
        return SEVERITY_LABELS.index(t)
    if t in SEVERITIES:
        return SEVERITIES.index(t)
    raise KeyError(f"unknown severity {text!r}; expected one of {', '.join(SEVERITY_LABELS)}")


def make_row_id(study_id: int | str, condition: str, level: str) -> str:
    """The submission's row id: '<study_id>_<condition>_<level>'."""
    return f"{int(study_id)}_{condition}_{level}"


def parse_row_id(row_id: str) -> tuple[int, str, str]:
    """'<study_id>_<condition>_<level>' -> (study_id, condition, level); ValueError says what is wrong."""
    study, sep, rest = str(row_id).partition("_")
    if not sep or not study.isdigit():
        raise ValueError(f"row_id {row_id!r} does not start with a numeric study id and '_'")
    for level in LEVELS:
        if rest.endswith("_" + level):
            condition = rest[: -len(level) - 1]
            if condition in CONDITIONS:
                return int(study), condition, level
            raise ValueError(f"row_id {row_id!r} has unknown condition {condition!r}")
    raise ValueError(f"row_id {row_id!r} does not end with a level ({', '.join(LEVELS)})")
