"""Search configurations with the predictor first and confirm the best on hardware.

The tuner arrives with its own issue; this package is where it lives.
"""

__all__: list[str] = []
