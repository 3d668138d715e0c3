"""An exact Gaussian process on log(y), for small tables ("gp").

With a few thousand measured configurations of one kernel (a tuning budget, not a brute-forced
space), a GP with one length scale per feature (ARD) interpolates between the measured points
more smoothly than trees, whose piecewise-constant answers need many rows per leaf: on 2,000
UCI SGEMM rows (kernel + occupancy features) its 4-fold CV MAPE was 9.16% against 9.90% for
the best tuned XGBoost, and 8.03% with four summed kernels (``n_kernels=4``); blended 0.8 / 0.2
with that XGBoost it scored 7.18% on the held-out rows (``benchmarks/accuracy.py``, uci_2000,
fitted in float32; 8.10% with one kernel), and 6.53% (0.9 / 0.1) once the features said each
warp's bank conflicts and sector use. The cost is cubic in the rows, so it refuses tables above
``max_train_rows`` instead of silently running for hours.

Fitting: inputs standardised with the training rows' statistics (constant and all-missing
columns dropped; a missing value becomes the mean plus a 0/1 indicator column), log(y)
standardised, then a constant mean, per kernel an output scale and the ARD length scales, and
a noise variance maximise the marginal likelihood (Adam on its exact value and closed-form
gradients, float64 by default, Cholesky).
Predictions are exp of the posterior mean of log(y): the median of the predictive
distribution. torch is imported lazily.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from perfpred.errors import InvalidInputError, MissingDependencyError
from perfpred.models._regressors import (
    check_int,
    check_positive_target,
    log_target_tags,
    standardise_with_indicators,
)

GP_KERNELS = ("matern52", "rbf")
# Where each summed kernel starts: (length scale as a multiple of ``initial_length_scale``,
# output scale). Spread out so the components settle on different structure (one short-range,
# others near-global trends); a fit that starts them equal keeps them equal.
_COMPONENT_STARTS = ((1.0, 1.0), (10.0 / 3.0, 0.3), (1.0 / 3.0, 0.1), (10.0, 0.1))
_JITTERS = (1e-6, 1e-5, 1e-4, 1e-3)  # added to the diagonal until the Cholesky factor exists


def _torch():
    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError("regressor 'gp' needs torch: pip install torch") from exc
    return torch


class TorchGPRegressor(RegressorMixin, BaseEstimator):
    """Exact GP regression of log(y) with an ARD Matern-5/2 (or RBF) kernel, or a sum of them.

    Parameters:
        kernel: "matern52" (default; rough enough for performance cliffs) or "rbf".
        n_kernels: how many such kernels are summed (1-4), each with its own ARD length scales
            and output scale. More than one lets the fit weigh features differently at
            different ranges (a short-range kernel on a few parameters beside near-global
            trends on others): on 2,000 UCI SGEMM rows four of them took the 4-fold CV MAPE
            from 9.2% (one kernel, 50 steps) to 8.0% (four, 100 steps). Each adds a length
            scale per feature to fit.
        n_iter: Adam steps on the marginal likelihood (100 converged on UCI SGEMM: 400 gave
            the same cross-validated MAPE to 0.01 points).
        learning_rate: Adam step size on the log-parameters.
        initial_length_scale: starting ARD length scale, in standard deviations of a feature.
        max_train_rows: the largest table it fits (memory and time grow as rows^2 and rows^3).
        n_threads: torch threads while fitting (None: torch's default).
        fit_precision: "float64" (default) or "float32": the precision of each step that fits the
            hyperparameters (kernel matrices, their Cholesky factor, the gradients); the squared
            distances stay float64 (float32 ones cancel badly for near rows), and so does the
            posterior used for predictions. float32 halves a step: 2,000 UCI SGEMM rows, four
            kernels, gave the same 4-fold CV MAPE to 0.01 points at ~22 s a fit instead of ~41 s.
    """

    def __init__(self, kernel: str = "matern52", n_kernels: int = 1, n_iter: int = 100, learning_rate: float = 0.1,
                 initial_length_scale: float = 3.0, max_train_rows: int = 5000, n_threads: int | None = None,
                 fit_precision: str = "float64"):
        self.kernel = kernel
        self.n_kernels = n_kernels
        self.n_iter = n_iter
        self.learning_rate = learning_rate
        self.initial_length_scale = initial_length_scale
        self.max_train_rows = max_train_rows
        self.n_threads = n_threads
        self.fit_precision = fit_precision

    def __sklearn_tags__(self):
        return log_target_tags(super().__sklearn_tags__())

    def _check_params(self, n_rows: int) -> None:
        if self.kernel not in GP_KERNELS:
            raise InvalidInputError(f"`kernel` must be one of {GP_KERNELS}, but got kernel={self.kernel!r}")
        if self.fit_precision not in ("float32", "float64"):
            raise InvalidInputError(
                f"`fit_precision` must be 'float32' or 'float64', but got fit_precision={self.fit_precision!r}")
        check_int("n_kernels", self.n_kernels, 1)
        if self.n_kernels > len(_COMPONENT_STARTS):
            raise InvalidInputError(
                f"`n_kernels <= {len(_COMPONENT_STARTS)}` must hold, but got n_kernels={self.n_kernels}")
        check_int("n_iter", self.n_iter, 1)
        check_int("max_train_rows", self.max_train_rows, 1)
        for name in ("learning_rate", "initial_length_scale"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise InvalidInputError(f"`{name} > 0` must hold, but got {name}={value!r}")
        if n_rows > self.max_train_rows:
            raise InvalidInputError(
                f"`rows <= max_train_rows` must hold for the exact GP (time grows as rows^3), but got "
                f"rows={n_rows} > max_train_rows={self.max_train_rows}; use a tree model for large tables")
        if n_rows < 2:
            raise InvalidInputError(f"`rows >= 2` must hold to fit a GP, but got rows={n_rows}")

    def _transform(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=float)[:, self.columns_]
        return standardise_with_indicators(X, self.mean_, self.scale_, self.indicator_columns_)

    def _gram(self, torch, A, B, length_scales, output_scales):
        """The summed kernel between rows of A and B: length_scales (kernels x features),
        output_scales (kernels,)."""
        total = None
        for k, _ in self._components(torch, A, B, length_scales, output_scales, derivatives=False):
            total = k if total is None else total.add_(k)
        return total

    def _components(self, torch, A, B, length_scales, output_scales, derivatives: bool = True, dtype=None):
        """Per summed kernel: its matrix between rows of A and B and, when asked, d k / d(r^2),
        its derivative by the squared scaled distance (what every length scale's gradient needs).

        Written with in-place operations on rows x rows buffers: at 1,500 rows these
        element-wise passes, not the Cholesky factor, were most of a fitting step's time.
        ``dtype`` (e.g. float32) is the precision of those passes; the squared distances are
        formed in the inputs' precision first (|a|^2 + |b|^2 - 2 a.b cancels badly in float32:
        near rows got distances wrong enough to leave the kernel matrix indefinite)."""
        same = A is B
        for ls, scale in zip(length_scales, output_scales, strict=True):
            As = A / ls
            Bs = As if same else B / ls
            # |a|^2 + |b|^2 - 2 a.b, one product (what cdist does for large inputs, without its sqrt)
            r2 = (As @ Bs.T).mul_(-2.0).add_((As * As).sum(dim=1, keepdim=True)).add_((Bs * Bs).sum(dim=1))
            r2.clamp_min_(0.0)
            if same:
                r2.fill_diagonal_(0.0)
            if dtype is not None and dtype != r2.dtype:
                r2, scale = r2.to(dtype), scale.to(dtype)
            if self.kernel == "rbf":
                k = r2.mul_(-0.5).exp_().mul_(scale)
                yield k, (k * -0.5 if derivatives else None)
                continue
            s = r2.mul_(5.0).sqrt_()
            decay = s.neg().exp_()
            near = (s + 1.0).mul_(decay)  # (1 + s) e^-s
            k = s.square_().mul_(decay).div_(3.0).add_(near).mul_(scale)  # (1 + s + s^2/3) e^-s
            yield k, (near.mul_(-(5.0 / 6.0) * scale) if derivatives else None)

    def _cholesky(self, torch, K):
        eye = torch.eye(K.shape[0], dtype=K.dtype)
        for jitter in _JITTERS:
            L, info = torch.linalg.cholesky_ex(K + jitter * eye)
            if int(info) == 0:
                return L
        hint = "; or fit in float64: fit_precision='float64'" if K.dtype == torch.float32 else ""
        raise InvalidInputError(
            "`kernel matrix positive definite` must hold, but it is singular even with jitter "
            f"{_JITTERS[-1]} (duplicate rows with very different targets?{hint})")

    def fit(self, X, y):
        torch = _torch()
        X, y = validate_data(self, X, y, ensure_all_finite="allow-nan", y_numeric=True)
        y = check_positive_target(y)
        self._check_params(len(X))
        X = np.asarray(X, dtype=float)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-missing columns are dropped below
            finite = np.where(np.isfinite(X), X, np.nan)
            mean, scale = np.nanmean(finite, axis=0), np.nanstd(finite, axis=0)
        # A constant or never-known column cannot separate rows: it only costs a length scale.
        self.columns_ = np.flatnonzero(np.isfinite(mean) & np.isfinite(scale) & (scale > 1e-12))
        self.mean_, self.scale_ = mean[self.columns_], scale[self.columns_]
        self.indicator_columns_ = np.flatnonzero((~np.isfinite(X[:, self.columns_])).any(axis=0))
        ly = np.log(y)
        self.y_mean_, self.y_scale_ = float(ly.mean()), float(ly.std()) or 1.0
        Z = self._transform(X)
        target = (ly - self.y_mean_) / self.y_scale_

        previous_threads = torch.get_num_threads()
        if self.n_threads:
            torch.set_num_threads(int(self.n_threads))
        try:
            self._optimise(torch, torch.from_numpy(Z), torch.from_numpy(target))
        finally:
            torch.set_num_threads(previous_threads)
        return self

    def _nll_and_gradients(self, torch, Z, Z2, target, log_ls, log_os, log_noise, const):
        """The negative log marginal likelihood and its gradients, in closed form.

        With G = dnll/dK = (K^-1 - alpha alpha^T) / 2, a length scale's gradient is a sum over
        row pairs of G * dk/d(r^2) * d(r^2)/d(log l_j), which two matrix products give; autograd
        through cdist and the Cholesky factor cost several times as much (rows^3 products and
        rows^2 x features intermediates).
        """
        f64 = torch.float64
        ls, scales = log_ls.exp(), log_os.exp()
        # Everything but the squared distances in ``fit_precision`` (float32 halves a step; the
        # gradients only steer Adam), the results in float64.
        low = getattr(torch, self.fit_precision)
        Zl, Z2l = (Z, Z2) if low == Z.dtype else (Z.to(low), Z2.to(low))
        parts = list(self._components(torch, Z, Z, ls, scales, dtype=low))
        K = parts[0][0].clone()
        for k, _ in parts[1:]:
            K.add_(k)
        K.diagonal().add_(log_noise.exp().to(low))
        L = self._cholesky(torch, K)
        del K
        resid = (target - const).unsqueeze(1).to(low)
        alpha = torch.cholesky_solve(resid, L)
        nll = (0.5 * (resid * alpha).sum() + torch.log(torch.diagonal(L)).sum()).to(f64)
        G = torch.cholesky_inverse(L).addr_(alpha[:, 0], alpha[:, 0], alpha=-1.0).mul_(0.5)
        grad_ls = torch.empty_like(log_ls)
        grad_os = torch.empty_like(log_os)
        for c, (k, dk_dr2) in enumerate(parts):
            grad_os[c] = torch.dot(G.reshape(-1), k.reshape(-1)).to(f64)
            M = dk_dr2.mul_(G)
            # sum_pq M_pq (z_pj - z_qj)^2 for every feature j, M symmetric
            pair_sums = 2.0 * (Z2l.T @ M.sum(dim=1) - (Zl * (M @ Zl)).sum(dim=0))
            grad_ls[c] = -2.0 * pair_sums.to(f64) / ls[c] ** 2
        grad_noise = log_noise.exp() * torch.diagonal(G).sum().to(f64)
        alpha = alpha.to(f64)
        return nll, (grad_ls, grad_os, grad_noise, -alpha.sum())

    def _optimise(self, torch, Z, target) -> None:
        f64 = torch.float64
        starts = _COMPONENT_STARTS[:self.n_kernels]
        log_ls = torch.tensor([[math.log(self.initial_length_scale * f)] * Z.shape[1] for f, _ in starts], dtype=f64)
        log_os = torch.tensor([math.log(o) for _, o in starts], dtype=f64)
        log_noise = torch.tensor(math.log(1e-2), dtype=f64)
        const = torch.zeros((), dtype=f64)
        params = [log_ls, log_os, log_noise, const]
        opt = torch.optim.Adam(params, lr=float(self.learning_rate))
        Z2 = Z * Z
        self.history_ = []
        with torch.no_grad():
            for _ in range(int(self.n_iter)):
                nll, grads = self._nll_and_gradients(torch, Z, Z2, target, *params)
                for param, grad in zip(params, grads, strict=True):
                    param.grad = grad
                opt.step()
                self.history_.append(float(nll) / len(target))
            kernel_matrix = self._gram(torch, Z, Z, log_ls.exp(), log_os.exp()) + log_noise.exp() * torch.eye(
                len(target), dtype=f64)
            alpha = torch.cholesky_solve((target - const).unsqueeze(1), self._cholesky(torch, kernel_matrix))
        self.train_z_ = Z
        self.alpha_ = alpha.squeeze(1)
        self.length_scales_ = log_ls.exp().numpy()
        self.output_scales_ = log_os.exp().numpy()
        self.noise_variance_ = float(log_noise.exp())
        self.constant_ = float(const)

    def __setstate__(self, state):
        # A GP saved before summed kernels (one kernel: no n_kernels, a scalar output scale).
        if "output_scale_" in state:
            state["output_scales_"] = np.array([state.pop("output_scale_")])
            state["length_scales_"] = np.atleast_2d(state["length_scales_"])
        state.setdefault("n_kernels", 1)
        state.setdefault("fit_precision", "float64")
        super().__setstate__(state)

    def predict(self, X):
        return np.exp(self.predict_log(X))

    def predict_log(self, X, return_std: bool = False):
        """Posterior mean of log(y) per row; with ``return_std``, also the posterior standard
        deviation of that mean (the latent function's, without the noise: what an acquisition
        function wants)."""
        check_is_fitted(self, "alpha_")
        torch = _torch()
        X = validate_data(self, X, ensure_all_finite="allow-nan", reset=False)
        Z = torch.from_numpy(self._transform(X))
        ls, scales = torch.from_numpy(self.length_scales_), torch.from_numpy(self.output_scales_)
        means, stds = [], []
        if return_std:
            # Factored again here, not kept from fit: a saved model stays rows x features, not rows^2.
            K_train = self._gram(torch, self.train_z_, self.train_z_, ls, scales)
            L = self._cholesky(torch, K_train + self.noise_variance_ * torch.eye(len(K_train), dtype=K_train.dtype))
        with torch.no_grad():
            for i in range(0, len(Z), 8192):  # bounds the cross-kernel block's memory
                K = self._gram(torch, Z[i:i + 8192], self.train_z_, ls, scales)
                means.append((K @ self.alpha_).numpy() + self.constant_)
                if return_std:
                    v = torch.linalg.solve_triangular(L, K.T, upper=False)
                    var = (float(self.output_scales_.sum()) - (v * v).sum(dim=0)).clamp_min(0.0)
                    stds.append(var.sqrt().numpy())
        mean = (np.concatenate(means) if means else np.zeros(0)) * self.y_scale_ + self.y_mean_
        if not return_std:
            return mean
        return mean, (np.concatenate(stds) if stds else np.zeros(0)) * self.y_scale_
