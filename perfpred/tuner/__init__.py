"""Search configurations with the predictor first and confirm the best on hardware."""

from perfpred.tuner._baselines import optuna_search, random_search
from perfpred.tuner._kernel_tuner import KERNEL_TUNER_STRATEGIES, kernel_tuner_search
from perfpred.tuner._loop import HardwareBackend, Tuner, TuneResult, TuneSettings, diverse_top, maximin_design
from perfpred.tuner._scoring import best_so_far, evaluations_to_within, mean_curve, performance_score
from perfpred.tuner._space import Continuous, SearchSpace
from perfpred.tuner._study import ClaimTable, StudyRecorder, config_key
from perfpred.tuner._surrogate import EnsembleSurrogate, param_features

__all__ = [
    "KERNEL_TUNER_STRATEGIES",
    "ClaimTable",
    "Continuous",
    "EnsembleSurrogate",
    "HardwareBackend",
    "SearchSpace",
    "StudyRecorder",
    "TuneResult",
    "TuneSettings",
    "Tuner",
    "best_so_far",
    "config_key",
    "diverse_top",
    "evaluations_to_within",
    "kernel_tuner_search",
    "maximin_design",
    "mean_curve",
    "optuna_search",
    "param_features",
    "performance_score",
    "random_search",
]
