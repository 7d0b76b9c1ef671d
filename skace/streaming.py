"""Fitting from a stream of structures: an iterator or an ASE database, read block by block.

:meth:`skace.ACERegressor.fit` hands a database path or an iterator (a
generator, for example) here. Structures are read in blocks of about
:data:`STREAM_BLOCK_ATOMS` atoms; each block's rows are folded into Gram
matrices (force and virial rows) or kept as one energy row per structure, and
the block is dropped. Memory is ``O(n_features^2 + n_structures *
n_features)`` whatever the number of atoms; no structure list is ever held.

The basis needs the elements before the first block: they come from the
descriptor's ``elements`` parameter or, for a database, from a first pass
over its rows (atomic numbers only). An iterator whose elements are unknown
is read into a list and fitted the ordinary way.
"""

import os
import uuid

import numpy as np
from ase.data import atomic_numbers, chemical_symbols

from .fitting import LinearSystem, assemble_block, energy_row_scale, gram_buffer, read_stress, read_targets
from .structures import as_structure_list, species_indices

#: Atoms per block read from a stream.
STREAM_BLOCK_ATOMS = 20_000


def is_stream(X):
    """A database path, or an iterator that is not a sequence (read once, in blocks)."""
    return isinstance(X, (str, os.PathLike)) or (hasattr(X, "__next__") and not hasattr(X, "__len__"))


def _database_rows(path):
    import ase.db

    if not os.path.exists(path):
        raise FileNotFoundError(f"no ASE database at {os.fspath(path)!r}")
    with ase.db.connect(path) as db:
        for row in db.select():
            atoms = row.toatoms()
            atoms.info.update(row.key_value_pairs)
            yield atoms


def _database_elements(path):
    import ase.db

    found = set()
    with ase.db.connect(path) as db:
        for row in db.select():
            found.update(int(z) for z in np.unique(row.numbers))
    return [chemical_symbols[z] for z in sorted(found)]


def _blocks(iterable, block_atoms):
    block, n = [], 0
    for atoms in iterable:
        block.append(atoms)
        n += len(atoms)
        if n >= block_atoms:
            yield block
            block, n = [], 0
    if block:
        yield block


def fit_stream(model, X):
    """Fit ``model`` (an ``ACERegressor``) to the structures of a database path or iterator."""
    from sklearn.base import clone

    from .regressor import DEFAULT_DESCRIPTOR, ACETransformer

    descriptor = clone(model.descriptor if model.descriptor is not None else ACETransformer(**DEFAULT_DESCRIPTOR))
    if model.n_jobs is not None:
        descriptor.set_params(n_jobs=model.n_jobs)
    descriptor._validate_params()
    path = isinstance(X, (str, os.PathLike))
    if path and not os.path.exists(X):
        raise FileNotFoundError(f"no ASE database at {os.fspath(X)!r}")
    if descriptor.elements is not None:
        elements = list(descriptor.elements)
    elif path:
        elements = _database_elements(X)
        elements.sort(key=lambda s: (atomic_numbers[s], s))
    else:  # a one-pass iterator of unknown elements: read it
        return model.fit(list(X))
    if not elements:
        raise ValueError(f"empty input: the database {os.fspath(X)!r} holds no structures")
    if len(set(elements)) != len(elements):
        raise ValueError(f"elements contains duplicates: {elements}")
    if model.descriptor is None:  # the default descriptor's degrees depend on the elements
        # (its rows are not known before the stream is read: the standard budget)
        from .regressor import default_degrees

        descriptor.set_params(**default_degrees(elements))
    descriptor._build(elements)
    stream = _database_rows(X) if path else iter(X)

    nf = descriptor.n_features_out_
    energy_only = model.force_weight == 0
    use_stress = model.stress_weight > 0
    XE, yE, counts_all, energies_all, escale_all = [], [], [], [], []
    GF, bF, GS, bS = gram_buffer(nf, nf + len(elements)), np.zeros(nf), np.zeros((nf, nf)), np.zeros(nf)
    yyF = yyS = 0.0
    mF = mS = 0
    offset = 0
    for block in _blocks(stream, STREAM_BLOCK_ATOMS):
        name = f"X[{offset}:{offset + len(block)}]"
        block = as_structure_list(block, name=name)
        energies, forces, weights = read_targets(block, model.energy_key, model.forces_key,
                                                 need_forces=not energy_only, name=name)
        stress = read_stress(block, model.stress_key, name=name) if use_stress else None
        if model.baseline is not None:
            energies, forces, stress, _ = model._subtract_baseline(block, energies, forces, stress)
        species = species_indices(block, elements, name=name)
        counts = np.zeros((len(block), len(elements)))
        owner = np.repeat(np.arange(len(block)), [len(a) for a in block])
        np.add.at(counts, (owner, species), 1.0)
        escale = energy_row_scale(block, weights, model.energy_weight_scaling)
        part = assemble_block(descriptor, block, energies, forces, escale, weights, counts, False, None, stress,
                              index=np.arange(offset, offset + len(block)))
        XE.append(part.XE)
        yE.append(part.yE)
        if part.GF is not None:
            GF += part.GF
            bF += part.bF
            yyF += part.yyF
            mF += part.mF
        if part.mS:
            GS += part.GS if part.GS is not None else part.XS.T @ part.XS
            bS += part.bS if part.bS is not None else part.XS.T @ part.yS
            yyS += part.yyS
            mS += part.mS
        counts_all.append(counts)
        energies_all.append(energies)
        escale_all.append(escale)
        offset += len(block)
    if offset == 0:
        raise ValueError("empty input: X contains no structures")
    system = LinearSystem(np.concatenate(XE), np.concatenate(yE), None, None, GF if mF else None,
                          bF if mF else None, yyF, mF, nf)
    if mS:
        system.GS, system.bS, system.yyS, system.mS = GS, bS, yyS, mS
    model._finish_fit(descriptor, system, f"stream:{uuid.uuid4().hex}", np.concatenate(counts_all),
                      np.concatenate(energies_all), np.concatenate(escale_all), energy_only,
                      use_stress, cache=False, consume=True)
    return model
