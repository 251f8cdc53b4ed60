"""nlsq: nonlinear least-squares curve fitting on JAX, a drop-in for scipy's.

Importing nlsq changes nothing global: it does not enable 64-bit mode, set
environment variables or add logging handlers.
"""

from nlsq.api.batch import curve_fit_batch
from nlsq.api.curve_fit import curve_fit
from nlsq.api.fitter import CurveFit
from nlsq.api.functional import FitOutput, fit
from nlsq.api.large import curve_fit_large
from nlsq.api.least_squares import least_squares
from nlsq.batch_result import BatchResult
from nlsq.cache import cache_info, clear_cache
from nlsq.errors import FitMemoryError
from nlsq.result import FitResult

__all__ = [
    "BatchResult",
    "CurveFit",
    "FitMemoryError",
    "FitOutput",
    "FitResult",
    "cache_info",
    "clear_cache",
    "curve_fit",
    "curve_fit_batch",
    "curve_fit_large",
    "fit",
    "least_squares",
]
__version__ = "0.1.0"
