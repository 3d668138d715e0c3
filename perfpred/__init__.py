"""perfpred: predict and tune the runtime and power of GEMMs, kernels and LLM serving configs."""

__version__ = "0.1.0"
