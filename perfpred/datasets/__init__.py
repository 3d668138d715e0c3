"""The Measurement schema, its on-disk store, and leak-free splits."""

from perfpred.datasets._merge import MergeReport, merge_stores
from perfpred.datasets._schema import (
    KINDS,
    POWER_SOURCES,
    SCHEMA_VERSION,
    STATUSES,
    Measurement,
    measurement_key,
)
from perfpred.datasets._splits import (
    SPLITS,
    group_labels,
    grouped_split,
    leave_one_group_out,
    make_split,
    random_split,
)
from perfpred.datasets._store import MeasurementStore, StoreWarning

__all__ = [
    "KINDS",
    "POWER_SOURCES",
    "SCHEMA_VERSION",
    "SPLITS",
    "STATUSES",
    "Measurement",
    "MeasurementStore",
    "MergeReport",
    "StoreWarning",
    "group_labels",
    "grouped_split",
    "leave_one_group_out",
    "make_split",
    "measurement_key",
    "merge_stores",
    "random_split",
]
