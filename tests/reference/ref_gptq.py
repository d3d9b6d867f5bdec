"""Independent NumPy GPTQ (Frantar et al. 2022, Algorithm 1 with lazy batch
updates), for checking sqserve's C quantizer (tests/test_gptq_ref.py).

Written from the paper, not from engine/quant/gptq.c: H = X^T X, damped by
damp * mean(diag H) (dead inputs get H_ii = 1), U = upper Cholesky factor
of H^-1, columns quantized in order (or by descending diag H, act-order),
each column's error divided by U_jj and spread over the later columns.
Weights: symmetric integer, `bits` bits (codes -qmax..qmax, qmax =
2^(bits-1) - 1), one scale max|w| / qmax per row and group of `group`
columns of the stored layout. Without act-order a group's scale is taken
from the compensated weights when its first column comes up; with
act-order every scale is fixed up front from the original weights
("static groups", so the stored layout stays plain). Rounding: np.rint
(half to even), as C's nearbyintf in the default mode.
"""

from __future__ import annotations

import numpy as np


def rtn(W: np.ndarray, bits: int, group: int) -> np.ndarray:
    qmax = 2 ** (bits - 1) - 1
    n, k = W.shape
    Wg = W.reshape(n, k // group, group)
    s = np.abs(Wg).max(axis=2, keepdims=True) / qmax
    q = np.where(s > 0, np.clip(np.rint(Wg / np.where(s > 0, s, 1)), -qmax, qmax), 0)
    return (q * s).reshape(n, k).astype(np.float32)


def gptq(W: np.ndarray, X: np.ndarray, bits: int, group: int, damp: float = 0.01,
         act_order: bool = False) -> np.ndarray:
    """W [n, k] float32, X [m, k] calibration inputs; returns the dequantized W."""
    qmax = 2 ** (bits - 1) - 1
    W = W.astype(np.float64).copy()
    n, k = W.shape
    H = X.astype(np.float64).T @ X.astype(np.float64)
    dead = np.diag(H) == 0
    H[dead, dead] = 1
    perm = np.argsort(-np.diag(H), kind="stable") if act_order else np.arange(k)
    scales = np.zeros((n, k // group))
    if act_order:  # static groups from the uncompensated weights
        scales = np.abs(W.reshape(n, k // group, group)).max(axis=2) / qmax
    W = W[:, perm]
    H = H[np.ix_(perm, perm)]
    H[np.diag_indices(k)] += damp * np.mean(np.diag(H))
    Hinv = np.linalg.inv(H)
    Hinv = (Hinv + Hinv.T) / 2
    U = np.linalg.cholesky(Hinv).T  # upper: Hinv = U^T U
    Q = np.zeros_like(W)
    for p in range(k):
        col = perm[p]
        g = col // group
        if not act_order and col % group == 0:
            scales[:, g] = np.abs(W[:, p:p + group]).max(axis=1) / qmax
        s = scales[:, g]
        w = W[:, p]
        q = np.where(s > 0, np.clip(np.rint(w / np.where(s > 0, s, 1)), -qmax, qmax), 0) * s
        Q[:, p] = q
        e = (w - q) / U[p, p]
        W[:, p + 1:] -= np.outer(e, U[p, p + 1:])
    out = np.empty_like(Q)
    out[:, perm] = Q
    return out.astype(np.float32)


def out_err(X: np.ndarray, W: np.ndarray, Q: np.ndarray) -> float:
    """||X W^T - X Q^T||_F / ||X W^T||_F."""
    X = X.astype(np.float64)
    ref = X @ W.astype(np.float64).T
    return float(np.linalg.norm(ref - X @ Q.astype(np.float64).T) / np.linalg.norm(ref))
