"""Importers of recorded performance datasets, in their original formats, into Measurements.

>>> from perfpred.collect.importers import run_import          # doctest: +SKIP
>>> report = run_import("kernel-tuner", ["datasets/kernel-tuner/gemm"], store)  # doctest: +SKIP
>>> print(report.summary())                                     # doctest: +SKIP

Formats: ``kernel-tuner`` (cache files and T4 results), ``uci-sgemm``, ``neusight``,
``vidur``, ``ml-energy``. ``export_kernel_tuner_cache`` writes a GEMM / kernel table back
as a Kernel Tuner cache.
"""

from perfpred.collect.importers._base import FileImport, Importer
from perfpred.collect.importers._export import export_kernel_tuner_cache
from perfpred.collect.importers._gpus import GPU_FACTS, gpu_hardware, hardware_id_for
from perfpred.collect.importers._kernel_tuner import KernelTunerImporter
from perfpred.collect.importers._ml_energy import MlEnergyImporter
from perfpred.collect.importers._neusight import NeuSightImporter
from perfpred.collect.importers._registry import IMPORTERS, ImportReport, get_importer, read_files, run_import
from perfpred.collect.importers._uci_sgemm import UciSgemmImporter
from perfpred.collect.importers._vidur import VidurImporter

__all__ = [
    "GPU_FACTS",
    "IMPORTERS",
    "FileImport",
    "ImportReport",
    "Importer",
    "KernelTunerImporter",
    "MlEnergyImporter",
    "NeuSightImporter",
    "UciSgemmImporter",
    "VidurImporter",
    "export_kernel_tuner_cache",
    "get_importer",
    "gpu_hardware",
    "hardware_id_for",
    "read_files",
    "run_import",
]
