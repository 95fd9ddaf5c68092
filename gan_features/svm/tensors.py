"""Devices, dtypes and tensors: the data are used where and as they are.

``X`` is used in place: numpy float32/float64 arrays are wrapped with ``torch.from_numpy`` (no
copy, read-only arrays included: the solver never writes to ``X``), tensors are used as given.
On a CUDA ``device`` the matrix is copied to the device once; the host array is not copied.

``hessian_dtype="auto"`` means bfloat16 where the device multiplies it natively (AVX512-BF16 or
AMX CPUs, CUDA), else the data's own dtype: only the Hessian-vector products use it (see
:mod:`.design`), and emulated bfloat16 would be slower than the data's dtype.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

HESSIAN_DTYPES = ("auto", "float32", "float64", "bfloat16")


def _fast_bfloat16(device: torch.device) -> bool:
    """Whether bfloat16 matrix products run natively (not emulated) on ``device``."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:  # a private torch API: if it is gone, assume no native bfloat16
            capability = torch._C._cpu._get_cpu_capability()
        except AttributeError:
            return False
        return bool(capability.get("avx512_bf16") or capability.get("amx_bf16"))
    return False


def _resolve_hessian_dtype(name: str, data_dtype: torch.dtype, device: torch.device) -> torch.dtype:
    if name not in HESSIAN_DTYPES:
        raise ValueError(f"hessian_dtype must be one of {HESSIAN_DTYPES}, got {name!r}")
    if name == "auto":
        return torch.bfloat16 if _fast_bfloat16(device) else data_dtype
    return getattr(torch, name)


def _as_tensor(X) -> torch.Tensor:
    """``X`` as a tensor sharing its memory (numpy arrays are wrapped, never copied)."""
    if isinstance(X, torch.Tensor):
        return X.detach()
    array = np.asarray(X)
    if any(stride < 0 for stride in array.strides):  # torch cannot wrap negative strides
        array = np.ascontiguousarray(array)
    with warnings.catch_warnings():
        # Read-only arrays (memmaps, h5py reads) are fine: the solver never writes to X.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


def _float_on(X: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``X`` as float32/float64 on ``device``: the same tensor when it already is (no copy)."""
    if X.dtype not in (torch.float32, torch.float64):
        X = X.to(torch.float32)  # only reached for tensors of other dtypes: documented copy
    return X.to(device)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
