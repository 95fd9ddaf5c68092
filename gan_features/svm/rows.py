"""Row sources: where the rows of ``X`` come from, block by block, for every pass of the solver.

In memory (:class:`_TensorRows`) the matrix is used in place (see :mod:`.tensors`). The only large
allocation is the optional bfloat16 copy for Hessian products (half the float32 matrix), so the
peak is ~1.5x the float32 matrix, plus the solver's work arrays (see :mod:`.tron`) and the
preconditioner's (see :mod:`.precondition`). On a CUDA device the matrix and its bfloat16 copy
are copied to the device once.

Out of core (:class:`_StoreRows`, :meth:`LinearL2SVM.fit_store`), an HDF5 feature store is
streamed from disk on every pass, never more than two row blocks in memory: one being read while
the other is multiplied.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..store import check_finite_rows
from .tensors import _float_on, _resolve_hessian_dtype

DEFAULT_STORE_BLOCK_BYTES = 64 << 20  # rows read from a store per block (two blocks live at once)
TRIANGLE_BLOCKS = 8  # row blocks of a triangular matrix's products (see _Triangle)


class _RowSource:
    """Yields ``(row slice, block of X on the device)`` for one pass over the rows."""

    n_rows: int
    n_features: int
    device: torch.device
    data_dtype: torch.dtype
    hessian_dtype: torch.dtype
    disk_bytes_per_pass: int = 0

    def blocks(self, hessian: bool) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor]]:
        """(rows, block, block^T): the block for ``block @ V``, its transpose (maybe stored in
        another layout) for ``block^T @ R``."""
        raise NotImplementedError

    def close(self) -> None:
        """Release threads or files the source holds (nothing, in memory)."""


class _TensorRows(_RowSource):
    """An in-memory matrix, used as one block (one GEMM per product is fastest).

    The Hessian copy (when its dtype differs from the data's) is stored transposed, ``X^T``
    contiguous: for bfloat16 on this CPU, ``X^T @ R`` then runs at ~20 GB/s instead of ~6 and
    ``X @ V`` (on the transposed view) at ~8 instead of ~12, ~1.4x per pass at 10,000 x 28,672
    with 16 columns. ``both_layouts`` keeps the row-major copy as well, for ~20 GB/s both ways
    (twice the copy's memory: used for the small n x n Gram factor only).
    """

    def __init__(self, X: torch.Tensor, device: torch.device, hessian_dtype: str, both_layouts: bool = False):
        self.X = _float_on(X, device)
        self.n_rows, self.n_features = self.X.shape
        self.device, self.data_dtype = device, self.X.dtype
        self.hessian_dtype = _resolve_hessian_dtype(hessian_dtype, self.data_dtype, device)
        if self.hessian_dtype == self.data_dtype:
            self.X_hessian, self.X_hessian_t = self.X, self.X.T
        else:  # the one extra copy the memory budget allows (half the float32 matrix in bfloat16)
            self.X_hessian_t = self.X.T.to(self.hessian_dtype, memory_format=torch.contiguous_format)
            self.X_hessian = self.X_hessian_t.T.contiguous() if both_layouts else self.X_hessian_t.T

    def blocks(self, hessian: bool) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor]]:
        if hessian:
            yield slice(0, self.n_rows), self.X_hessian, self.X_hessian_t
        else:
            yield slice(0, self.n_rows), self.X, self.X.T


class _Triangle:
    """The nonzero part of a triangular matrix for ``@``: row blocks ``M[lo:hi, :hi]`` (lower) or
    ``M[lo:hi, lo:]`` (upper), one GEMM each, skipping the zero half that a full product reads.

    At 10,000 x 10,000 here (16 columns) a product took 17 ms instead of 32 in float32, and 5.2
    instead of 7.6 in bfloat16 (from the row-major layout; bfloat16 products on a transposed view
    run at half speed, see :class:`_TensorRows`), with :data:`TRIANGLE_BLOCKS` blocks: fewer skip
    less, more make each GEMM too small."""

    def __init__(self, M: torch.Tensor, lower: bool):
        self.M, self.lower = M, lower
        self.shape, self.dtype = M.shape, M.dtype
        n = M.shape[0]
        rows = max(1, -(-n // TRIANGLE_BLOCKS))
        self.row_blocks = [(lo, min(lo + rows, n)) for lo in range(0, n, rows)]

    @property
    def T(self) -> "_Triangle":
        return _Triangle(self.M.T, not self.lower)

    def numel(self) -> int:
        """The entries one product reads."""
        n = self.shape[1]
        return sum((hi - lo) * (hi if self.lower else n - lo) for lo, hi in self.row_blocks)

    def element_size(self) -> int:
        return self.M.element_size()

    def __matmul__(self, V: torch.Tensor) -> torch.Tensor:
        out = torch.empty(self.shape[0], V.shape[1], dtype=torch.promote_types(self.dtype, V.dtype), device=V.device)
        for lo, hi in self.row_blocks:
            columns = slice(0, hi) if self.lower else slice(lo, None)
            torch.mm(self.M[lo:hi, columns], V[columns], out=out[lo:hi])
        return out


class _LowerTriangularRows(_TensorRows):
    """A lower triangular matrix (the Gram factor ``L``) whose products read its nonzero half only
    (:class:`_Triangle`); its bfloat16 copy in both layouts, so that both products stream at full speed."""

    def __init__(self, L: torch.Tensor, device: torch.device, hessian_dtype: str):
        super().__init__(L, device, hessian_dtype, both_layouts=True)

    def blocks(self, hessian: bool) -> Iterator[tuple[slice, _Triangle, _Triangle]]:
        if hessian and self.X_hessian_t.is_contiguous():  # a row-major copy of L^T: its upper triangle
            yield slice(0, self.n_rows), _Triangle(self.X_hessian, lower=True), _Triangle(self.X_hessian_t, lower=False)
        else:
            matrix = self.X_hessian if hessian else self.X
            yield slice(0, self.n_rows), _Triangle(matrix, lower=True), _Triangle(matrix, lower=True).T


class _StoreRows(_RowSource):
    """Rows of an HDF5 feature store, streamed from disk in blocks for every pass.

    ``rows`` selects a contiguous range (a slice) or sorted unique indices; for indices, each
    block reads the covering range of the file and keeps the selected rows. Two read buffers
    alternate so that a background thread reads block b+1 while block b is multiplied
    (torch releases the GIL inside its kernels, so the two really overlap).
    """

    def __init__(self, dataset, rows: np.ndarray | slice, device: torch.device, hessian_dtype: str,
                 block_bytes: int = DEFAULT_STORE_BLOCK_BYTES, prefetch: bool = True):
        self.dataset = dataset
        n_file, self.n_features = dataset.shape
        file_dtype = np.dtype(dataset.dtype)
        if file_dtype not in (np.float16, np.float32, np.float64):
            raise ValueError(f"feature store holds {file_dtype} features; expected float16, float32 or float64")
        if file_dtype == np.float16:  # read into float32 buffers: the solver's precision
            file_dtype = np.dtype(np.float32)
        self.data_dtype = torch.float32 if file_dtype == np.float32 else torch.float64
        self.device = device
        self.hessian_dtype = _resolve_hessian_dtype(hessian_dtype, self.data_dtype, device)
        row_bytes = self.n_features * file_dtype.itemsize
        chunk_rows = (dataset.chunks or (1,))[0]
        # Whole HDF5 chunks per block, at least one: reading part of a chunk makes HDF5 read the
        # whole chunk into a temporary buffer of its own (and read it again for the next block).
        block_rows = max(1, block_bytes // (row_bytes * chunk_rows)) * chunk_rows
        self.plan = self._plan(rows, n_file, block_rows)
        self.n_rows = sum(len(sel) if sel is not None else hi - lo for lo, hi, sel, _ in self.plan)
        self.disk_bytes_per_pass = sum(hi - lo for lo, hi, _, _ in self.plan) * row_bytes
        buffer_rows = max((hi - lo for lo, hi, _, _ in self.plan), default=0)
        prefetch = prefetch and len(self.plan) > 1
        self.buffers = [np.empty((buffer_rows, self.n_features), dtype=file_dtype) for _ in range(2 if prefetch else 1)]
        # One reader thread for the source's lifetime (not one per pass).
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="svm-store-read") if prefetch else None

    @staticmethod
    def _plan(rows: np.ndarray | slice, n_file: int, block_rows: int
              ) -> list[tuple[int, int, np.ndarray | None, slice]]:
        """Blocks as (file start, file stop, selected file rows or None for all, output slice);
        ``rows`` is a slice with step 1 or sorted unique indices (see :func:`_store_rows`)."""
        plan: list[tuple[int, int, np.ndarray | None, slice]] = []
        if isinstance(rows, slice):
            start, stop, _ = rows.indices(n_file)
            for lo in range(start, stop, block_rows):
                hi = min(lo + block_rows, stop)
                plan.append((lo, hi, None, slice(lo - start, hi - start)))
            return plan
        out = 0
        for lo in range(0, n_file, block_rows):
            hi = min(lo + block_rows, n_file)
            a, b = np.searchsorted(rows, [lo, hi])
            if b > a:
                selected = rows[a:b]
                plan.append((int(selected[0]), int(selected[-1]) + 1, selected, slice(out, out + b - a)))
                out += b - a
        return plan

    def _read(self, index: int, buffer: np.ndarray) -> np.ndarray:
        lo, hi, selected, _ = self.plan[index]
        view = buffer[:hi - lo]
        self.dataset.read_direct(view, source_sel=np.s_[lo:hi])  # converts float16 into the float32 buffer
        check_finite_rows(Path(self.dataset.file.filename), view, range(lo, hi))
        if selected is None or len(selected) == hi - lo:
            return view
        return view[selected - lo]  # a copy, at most one block

    def blocks(self, hessian: bool) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor]]:
        def emit(index: int, array: np.ndarray) -> tuple[slice, torch.Tensor, torch.Tensor]:
            block = torch.from_numpy(array).to(self.device)
            if hessian and block.dtype != self.hessian_dtype:
                block = block.to(self.hessian_dtype)
            return self.plan[index][3], block, block.T

        if self._pool is None:
            for index in range(len(self.plan)):
                yield emit(index, self._read(index, self.buffers[0]))
            return
        pending = self._pool.submit(self._read, 0, self.buffers[0])
        try:
            for index in range(len(self.plan)):
                array = pending.result()
                if index + 1 < len(self.plan):
                    # The other buffer is free: its block was consumed before we were resumed.
                    pending = self._pool.submit(self._read, index + 1, self.buffers[(index + 1) % 2])
                yield emit(index, array)
        finally:
            pending.result()  # never leave a read in flight into a buffer the next pass reuses

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None



def _opened(store):
    """A context manager yielding an open FeatureStore (opened here if given a path)."""
    from ..store import FeatureStore

    if isinstance(store, (str, os.PathLike)):
        return FeatureStore(store)
    return nullcontext(store)


def _store_rows(store, rows, device: str | torch.device, hessian_dtype: str, block_bytes: int, prefetch: bool
                ) -> tuple[_StoreRows, np.ndarray]:
    """The row source and labels for ``rows`` of an open store."""
    n = len(store)
    if rows is None:
        rows = slice(0, n)
    if isinstance(rows, slice):
        start, stop, step = rows.indices(n)
        rows = slice(start, stop) if step == 1 else np.arange(start, stop, step)
    if isinstance(rows, slice):
        labels = store.labels[rows]
    else:
        rows = np.asarray(rows)
        if rows.dtype == bool:
            if rows.shape != (n,):
                raise ValueError(f"a boolean row mask needs one entry per store row ({n}), got shape {rows.shape}")
            rows = np.flatnonzero(rows)
        elif rows.ndim != 1 or not np.issubdtype(rows.dtype, np.integer):
            raise ValueError("rows must be a slice, 1-D integer indices or a boolean mask")
        rows = np.sort(rows.astype(np.int64))  # blocks are read in file order
        if len(rows) and (rows[0] < 0 or rows[-1] >= n):
            raise ValueError(f"row indices must lie in [0, {n}), got {rows[0]}..{rows[-1]}")
        if np.any(np.diff(rows) == 0):
            raise ValueError("row indices contain duplicates")
        labels = store.labels[rows]  # in file order, like the blocks
    if len(labels) < 1:
        raise ValueError("no rows selected from the feature store")
    source = _StoreRows(store.features, rows, torch.device(device), hessian_dtype,
                        block_bytes=block_bytes, prefetch=prefetch)
    return source, np.asarray(labels)


@contextmanager
def _streamed_rows(store, rows, device: str | torch.device, hessian_dtype: str, block_bytes: int, prefetch: bool
                   ) -> Iterator[tuple[_StoreRows, np.ndarray]]:
    """(row source, labels) for ``rows`` of ``store`` (a FeatureStore or a path), open while in use:
    the source's reader thread is stopped and a store opened here closed on leaving."""
    with _opened(store) as opened:
        source, labels = _store_rows(opened, rows, device, hessian_dtype, block_bytes, prefetch)
        try:
            yield source, labels
        finally:
            source.close()
