"""Experiment: Bayesian evidence with one prior precision per correlation order (group ARD).

Usage::

    python group_evidence.py MOLECULE N '{"max_degree": [...]}' [order|order_centre]

Fits ``ACERegressor`` twice on the first N training configurations and
validates both on training configurations 500-999 (never the test split):
once with its default single-alpha evidence, once with MacKay fixed-point
updates of one alpha per group of basis functions (per correlation order, or
per order and centre element), starting from the single-alpha optimum. The
group solver replaces :class:`skace.linalg.GramSolver` for the second fit
(Gram route only: fits with more than 3/4 as many rows as functions). Each update
needs the diagonal of the posterior covariance, i.e. a Cholesky factorisation
and a triangular inverse, so this is an experiment, not a default. One line
of JSON per run is appended to ``group_evidence.jsonl`` beside this file.
"""
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from scipy import linalg
from scipy.linalg import lapack

import skace.regressor as R
from skace import ACERegressor, ACETransformer
from skace.datasets import load_rmd17
from skace.linalg import GramSolver

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from validate import BASE, errors  # noqa: E402

LABELS = None
LOG = []


class GroupGramSolver(GramSolver):
    def __init__(self, G, b, yy, m):
        self.G0 = np.array(G, copy=True)
        super().__init__(G, b, yy, m)
        self.lamvec = None

    def _factor_vec(self, lamvec):
        """Lower Cholesky factor of ``G + diag(lamvec)``."""
        A = self.G0.copy()
        A[np.diag_indices(self.n)] += lamvec
        L, info = lapack.dpotrf(A, lower=1, clean=1, overwrite_a=1)
        if info != 0:
            raise np.linalg.LinAlgError(info)
        return L

    def _solve_with_diag(self, lamvec):
        """Solution and diagonal of ``(G + diag(lamvec))^-1`` (column norms of ``L^-1``)."""
        L = self._factor_vec(lamvec)
        d = linalg.cho_solve((L, True), self.b, check_finite=False)
        Li, info = lapack.dtrtri(L, lower=1, overwrite_c=1)
        return d, np.einsum("ij,ij->j", Li, Li)

    def evidence_search(self, *a, **k):
        alpha, beta, value = super().evidence_search(*a, **k)
        lam0 = alpha / beta
        labels = LABELS
        groups = np.unique(labels)
        lam = {g: lam0 for g in groups}
        for it in range(40):
            lamvec = np.array([lam[g] for g in labels])
            d, diag = self._solve_with_diag(lamvec)
            rss = max(self.yy - float(self.b @ d) - float(np.sum(lamvec * d * d)), 1e-300)
            gam = {}
            for g in groups:
                s = labels == g
                gam[g] = s.sum() - lam[g] * diag[s].sum()
            beta = (self.m - sum(gam.values())) / rss
            new = {}
            for g in groups:
                s = labels == g
                alpha_g = max(gam[g], 1e-12) / max(float(d[s] @ d[s]), 1e-300)
                new[g] = alpha_g / beta
            change = max(abs(np.log(new[g] / lam[g])) for g in groups)
            lam = new
            LOG.append(dict(it=it, lam={int(g): float(v) for g, v in lam.items()},
                            gamma={int(g): round(float(v), 1) for g, v in gam.items()}, change=float(change)))
            print(json.dumps(LOG[-1]), flush=True)
            if change < 0.02:
                break
        self.lamvec = np.array([lam[g] for g in labels])
        return lam0 * beta, beta, value

    def factor(self, lam):
        if self.lamvec is None:
            return super().factor(lam)
        return self._factor_vec(self.lamvec), True

    def ridge(self, lam):
        if self.lamvec is None:
            return super().ridge(lam)
        return linalg.cho_solve(self.factor(lam), self.b, check_finite=False)


def main(molecule, n_train, desc_over, mode="order"):
    global LABELS
    full = load_rmd17(molecule, "train", path=os.environ.get(
        "SKACE_RMD17_DIR", str(HERE / ".." / ".." / ".." / "shared" / "data" / "rmd17")))
    train, val = full[:n_train], full[500:1000]
    desc = {**BASE, **desc_over}
    tr = ACETransformer(**desc).fit(train)
    feats = tr.basis_.features
    if mode == "order":
        lab = [len(f["factors"]) for f in feats]
    elif mode == "order_centre":
        lab = [10 * len(f["factors"]) + f["center"] for f in feats]
    else:
        raise SystemExit(f"unknown group mode {mode!r}: use 'order' or 'order_centre'")
    n_el = len(tr.elements_)
    LABELS = np.array(lab + [0] * n_el)
    model = ACERegressor(ACETransformer(**desc))
    t0 = time.perf_counter()
    model.fit(train)
    base = dict(fit_s=round(time.perf_counter() - t0, 1), val=errors(model, val), train=errors(model, train[:200]),
                alpha=float(model.alpha_))
    print("single", json.dumps(base), flush=True)
    R.GramSolver = GroupGramSolver
    model2 = ACERegressor(ACETransformer(**desc))  # reuses model's assembly (cache)
    t0 = time.perf_counter()
    model2.fit(train)
    grp = dict(fit_s=round(time.perf_counter() - t0, 1), val=errors(model2, val), train=errors(model2, train[:200]))
    print("group", json.dumps(grp), flush=True)
    rec = dict(molecule=molecule, n_train=n_train, desc=desc, mode=mode, n_features=int(model.n_features_),
               single=base, group=grp, lam=LOG[-1]["lam"] if LOG else None, iters=len(LOG))
    with open(HERE / "group_evidence.jsonl", "a") as fh:
        fh.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), *sys.argv[4:])
