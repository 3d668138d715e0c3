"""Search configurations with the predictor first and confirm the best on hardware."""

from perfpred.tuner._autotvm import autotvm_search
from perfpred.tuner._baselines import optuna_search, random_search
from perfpred.tuner._kernel_tuner import KERNEL_TUNER_STRATEGIES, kernel_tuner_search
from perfpred.tuner._loop import Tuner, TuneResult, TuneSettings, diverse_top
from perfpred.tuner._objectives import MetricBound, Objective
from perfpred.tuner._pareto import hypervolume, hypervolume_improvement, pareto_mask
from perfpred.tuner._pareto_baselines import optuna_pareto_search, random_order_search
from perfpred.tuner._pareto_loop import ParetoResult, ParetoSettings, ParetoTuner, tune_pareto
from perfpred.tuner._pareto_plot import plot_pareto
from perfpred.tuner._pareto_scoring import evaluations_to, hypervolume_curve, quality_curve
from perfpred.tuner._pareto_study import ParetoStudyRecorder
from perfpred.tuner._rounds import HardwareBackend, PredictorFirstLoop, maximin_design
from perfpred.tuner._scoring import best_so_far, evaluations_to_within, mean_curve, performance_score
from perfpred.tuner._serving_live import LiveTuneResult, tune_serving_live
from perfpred.tuner._serving_prior import fit_serving_prior
from perfpred.tuner._serving_replay import (
    ServingGroup,
    ServingPredictor,
    load_serving_table,
    lomo_predictor,
    serving_group,
    serving_groups,
    true_front,
    tune_serving,
)
from perfpred.tuner._space import Continuous, SearchSpace
from perfpred.tuner._study import ClaimTable, StudyRecorder, config_key
from perfpred.tuner._surrogate import (
    BlendSurrogate,
    EnsembleSurrogate,
    GPSurrogate,
    kernel_tuning_features,
    mixed_tuning_features,
    param_features,
)

__all__ = [
    "KERNEL_TUNER_STRATEGIES",
    "BlendSurrogate",
    "ClaimTable",
    "Continuous",
    "EnsembleSurrogate",
    "GPSurrogate",
    "HardwareBackend",
    "LiveTuneResult",
    "MetricBound",
    "Objective",
    "ParetoResult",
    "ParetoSettings",
    "ParetoStudyRecorder",
    "ParetoTuner",
    "PredictorFirstLoop",
    "SearchSpace",
    "ServingGroup",
    "ServingPredictor",
    "StudyRecorder",
    "TuneResult",
    "TuneSettings",
    "Tuner",
    "autotvm_search",
    "best_so_far",
    "config_key",
    "diverse_top",
    "evaluations_to",
    "evaluations_to_within",
    "fit_serving_prior",
    "hypervolume",
    "hypervolume_curve",
    "hypervolume_improvement",
    "kernel_tuner_search",
    "kernel_tuning_features",
    "load_serving_table",
    "lomo_predictor",
    "maximin_design",
    "mean_curve",
    "mixed_tuning_features",
    "optuna_pareto_search",
    "optuna_search",
    "param_features",
    "pareto_mask",
    "performance_score",
    "plot_pareto",
    "quality_curve",
    "random_order_search",
    "random_search",
    "serving_group",
    "serving_groups",
    "true_front",
    "tune_pareto",
    "tune_serving",
    "tune_serving_live",
]
