"""Validation of changes to ``ACERegressor()``'s defaults on an rMD17 *training* split.

Usage::

    python validate_defaults.py MOLECULE N 'JSON list of settings' [--test] [--validate-from K]

Each setting holds ``ACERegressor`` parameters and optionally ``"desc"``, a
dict of ``ACETransformer`` parameters that override the default descriptor
(``DEFAULT_DESCRIPTOR`` with the default degrees of the molecule's elements at
the standard budget: ``"desc": {}`` is the standard basis even where few data
would give ``ACERegressor()`` the larger one).
Fits on the first N training configurations and validates on training
configurations K-999 (K = 500 unless ``--validate-from K`` says otherwise;
N <= K); ``--test`` also reports the test split's errors, for
the record only (choices are made on the validation errors). One line of
JSON per setting, also appended, without test errors, to ``validate.jsonl``
beside this file.
Data from ``$SKACE_RMD17_DIR`` or ``shared/data/rmd17``.
"""
import json
import os
import sys
import time
from pathlib import Path

from skace import ACERegressor, ACETransformer
from skace.datasets import load_rmd17
from skace.regressor import DEFAULT_DESCRIPTOR, default_degrees
from validate import errors

HERE = Path(__file__).parent


def main(molecule, n_train, settings, with_test=False, validate_from=500):
    if n_train > validate_from:
        raise SystemExit(f"N must be at most {validate_from}: configurations {validate_from}-999 are the validation set")
    folder = os.environ.get("SKACE_RMD17_DIR", str(HERE / ".." / ".." / ".." / "shared" / "data" / "rmd17"))
    full = load_rmd17(molecule, "train", path=folder)
    if len(full) < 1000:
        raise SystemExit(f"{molecule}: {len(full)} training configurations, need 1000 (validation: {validate_from}-999)")
    train, val = full[:n_train], full[validate_from:1000]
    test = load_rmd17(molecule, "test", path=folder) if with_test else None
    elements = sorted(set(full[0].get_chemical_symbols()))
    for setting in settings:
        params = dict(setting)
        desc = params.pop("desc", None)
        model = ACERegressor(**params)
        if desc is not None:
            model.set_params(descriptor=ACETransformer(**{**DEFAULT_DESCRIPTOR, **default_degrees(elements), **desc}))
        t0 = time.perf_counter()
        model.fit(train)
        rec = dict(molecule=molecule, n_train=n_train, validate_from=validate_from, setting=setting,
                   n_features=int(model.n_features_),
                   alpha=float(model.alpha_), fit_s=round(time.perf_counter() - t0, 1), val=errors(model, val))
        with open(HERE / "validate.jsonl", "a") as fh:  # validation only: the log holds no test errors
            fh.write(json.dumps(rec) + "\n")
        if test is not None:
            rec["test_for_the_record"] = errors(model, test)
        print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Validate settings against ACERegressor()'s defaults.")
    parser.add_argument("molecule")
    parser.add_argument("n_train", type=int)
    parser.add_argument("settings", type=json.loads, help="JSON list of settings")
    parser.add_argument("--test", action="store_true", help="also report test errors, for the record only")
    parser.add_argument("--validate-from", type=int, default=500, metavar="K",
                        help="validate on training configurations K-999 (default 500)")
    a = parser.parse_args()
    main(a.molecule, a.n_train, a.settings, with_test=a.test, validate_from=a.validate_from)
