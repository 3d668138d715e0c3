"""Estimators (scikit-learn contract), metrics, evaluation protocols and MLflow tracking.

Importing the package registers every featurizer ("gemm", "kernel", "gemm-gpu", "gemm-gpu-transfer",
"serving") and regressor ("xgb", "rf", "roofline", "hgb", "forest", "mlp", "grid-xgb", "deep-trees", "gp",
"xgb-quantile", "xgb-ensemble") by name, so ``PerformanceModel(kind=..., regressor=...)`` and the CLI know them.
"""

from perfpred.models._auto import AutoRegressor
from perfpred.models._evaluation import data_hash, evaluate_models, training_frame
from perfpred.models._gp import TorchGPRegressor
from perfpred.models._metrics import (
    ape,
    mape,
    median_ape,
    p90_ape,
    r2_linear,
    r2_log,
    regression_report,
    spearman,
)
from perfpred.models._performance_model import (
    FEATURIZERS,
    REGRESSORS,
    PerformanceModel,
    featurize,
    register_featurizer,
    register_regressor,
    row_kind,
)
from perfpred.models._regressors import LogTargetXGBRegressor, RooflineRegressor, gpperf_random_forest
from perfpred.models._tracking import (
    list_models,
    list_runs,
    load_model,
    log_training_run,
    model_details,
    resolve_model,
    training_rows,
)
from perfpred.models._training import TrainResult, default_comparison, default_regressor, train_model
from perfpred.models._uncertainty import (
    EnsembleIntervalRegressor,
    QuantileXGBRegressor,
    UncertainPerformanceModel,
    evaluate_intervals,
    interval_coverage,
)
from perfpred.models._zoo import (
    BlendRegressor,
    GridNeighbourRegressor,
    LogTargetForestRegressor,
    LogTargetHGBRegressor,
    MultiTargetModel,
    TorchMLPRegressor,
    deep_tree_blend,
)

__all__ = [
    "FEATURIZERS",
    "REGRESSORS",
    "AutoRegressor",
    "BlendRegressor",
    "EnsembleIntervalRegressor",
    "GridNeighbourRegressor",
    "LogTargetForestRegressor",
    "LogTargetHGBRegressor",
    "LogTargetXGBRegressor",
    "MultiTargetModel",
    "PerformanceModel",
    "QuantileXGBRegressor",
    "RooflineRegressor",
    "TorchGPRegressor",
    "TorchMLPRegressor",
    "TrainResult",
    "UncertainPerformanceModel",
    "ape",
    "data_hash",
    "deep_tree_blend",
    "default_comparison",
    "default_regressor",
    "evaluate_intervals",
    "evaluate_models",
    "featurize",
    "gpperf_random_forest",
    "interval_coverage",
    "list_models",
    "list_runs",
    "load_model",
    "log_training_run",
    "mape",
    "median_ape",
    "model_details",
    "p90_ape",
    "r2_linear",
    "r2_log",
    "register_featurizer",
    "register_regressor",
    "regression_report",
    "resolve_model",
    "row_kind",
    "spearman",
    "train_model",
    "training_frame",
    "training_rows",
]
