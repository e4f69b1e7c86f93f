"""Devices and precision: one place that resolves them for the whole package.

- :func:`resolve_device`: ``"auto"`` (a GPU when torch sees one, else the CPU) and the
  other device names the encoders, the backbones and decoding accept, as a torch device;
- :func:`engine_placement`: an encoder's ``device`` as Fabric's ``(accelerator, devices)``;
- :func:`assign_devices`: one GPU for each of several fits run in parallel, round robin;
- :func:`backbone_autocast` and :func:`autocast_dtype`: Fabric precisions (``"bf16-mixed"``)
  and the backbones' autocast names (``"bf16"``) as torch dtypes; :func:`parameter_dtype`
  for the ``"*-true"`` precisions;
- :class:`ArrayBackend` / :func:`get_backend`: the numpy/torch switch of the ridge solvers,
  so that one code path runs on a CPU or a GPU.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

#: what an encoder's ``device`` may name besides ``"cuda:<index>"``
ACCELERATORS = ("auto", "cpu", "cuda", "gpu", "mps")

#: mixed precision of a backbone's forward pass, by name
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

#: Fabric's mixed precisions -> the backbone autocast they imply
_MIXED = {"bf16-mixed": "bf16", "16-mixed": "fp16"}

#: Fabric's "true" precisions -> the dtype of the parameters
_TRUE = {"bf16-true": torch.bfloat16, "16-true": torch.float16, "64-true": torch.float64}


def resolve_device(device: Any) -> torch.device:
    """The torch device a ``device`` argument names.

    ``"auto"``: the first GPU when torch sees one, else the CPU; ``"gpu"`` is ``"cuda"``;
    anything else goes to :class:`torch.device` (``"cpu"``, ``"cuda:1"``, a device).
    """
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(feature_device(device))


def feature_device(device: Any) -> Any:
    """Where a backbone runs for an encoder's ``device`` (``"gpu"`` is ``"cuda"``; the
    rest, ``"auto"`` included, as given)."""
    if isinstance(device, str) and device == "gpu":
        return "cuda"
    return device


def engine_placement(device: str) -> tuple[str, Any]:
    """Map an encoder's ``device`` to Fabric's ``(accelerator, devices)``.

    ``"auto"``, ``"cpu"``, ``"cuda"``/``"gpu"``, ``"mps"``, or ``"cuda:<k>"`` for one GPU.
    """
    if isinstance(device, str) and device.startswith("cuda:"):
        return "cuda", [int(device.split(":", 1)[1])]
    if device not in ACCELERATORS:
        raise ValueError(
            f"device must be one of {ACCELERATORS} or 'cuda:<index>', got {device!r}."
        )
    return device, None


def assign_devices(n_fits: int, device: Any, devices: Any, n_gpus: int) -> list:
    """The ``device`` of each of ``n_fits`` fits run side by side: one GPU each, round robin.

    When ``device`` asks for GPUs without naming one (``"auto"``, ``"cuda"``, ``"gpu"``) and
    ``n_gpus`` GPUs are there to share, fit ``i`` runs on ``"cuda:<ids[i % len(ids)]>"``;
    ``ids`` are the GPU indices that ``devices`` lists (``[0, 2]``, ``"0,2"``), the first
    ``devices`` ones for a count above 1, and all ``n_gpus`` otherwise (``1``, ``-1``,
    ``"auto"``). Without a GPU (``n_gpus=0``), on the CPU or ``"mps"``, or with one named GPU
    (``"cuda:1"``), every fit gets ``device`` as it is.

    Parameters
    ----------
    n_fits : int
        Fits to place.
    device, devices
        The estimator's ``device`` and ``devices`` parameters.
    n_gpus : int
        GPUs the fits may use (``torch.cuda.device_count()``; 0 to leave the placement to
        a cluster that gives each worker its own GPU).

    Returns
    -------
    list of str
        The ``device`` of every fit.

    Examples
    --------
    >>> assign_devices(3, "auto", 1, n_gpus=2)
    ['cuda:0', 'cuda:1', 'cuda:0']
    >>> assign_devices(2, "auto", 1, n_gpus=0)
    ['auto', 'auto']
    """
    if n_gpus < 1 or not (isinstance(device, str) and device in ("auto", "cuda", "gpu")):
        return [device] * n_fits
    if isinstance(devices, str) and "," in devices:
        devices = [int(part) for part in devices.split(",") if part.strip()]
    elif isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
        devices = int(devices)
    if isinstance(devices, (list, tuple)):
        ids = [int(index) for index in devices]
    elif isinstance(devices, (int, np.integer)) and not isinstance(devices, bool) and devices > 1:
        ids = list(range(int(devices)))
    else:
        ids = list(range(n_gpus))
    missing = [index for index in ids if not 0 <= index < n_gpus]
    if not ids or missing:
        raise ValueError(
            f"devices={devices!r} names GPUs {missing or ids} that are not there: torch sees "
            f"{n_gpus} GPU(s), indices 0 to {n_gpus - 1}; list those the fits may use."
        )
    return [f"cuda:{ids[i % len(ids)]}" for i in range(n_fits)]


def backbone_autocast(precision: str) -> str | None:
    """The backbone autocast (``"bf16"``, ``"fp16"`` or ``None``) of a Fabric precision."""
    return _MIXED.get(precision)


def autocast_dtype(autocast: str | None) -> torch.dtype | None:
    """The torch dtype of a backbone autocast name (``None``: no autocast)."""
    if autocast is None:
        return None
    if autocast not in AUTOCAST_DTYPES:
        raise ValueError(f"autocast must be None, 'bf16' or 'fp16', got {autocast!r}.")
    return AUTOCAST_DTYPES[autocast]


def parameter_dtype(precision: str) -> torch.dtype:
    """The dtype a model's parameters take under a Fabric precision (float32 unless
    ``"bf16-true"``, ``"16-true"`` or ``"64-true"``)."""
    return _TRUE.get(precision, torch.float32)


class ArrayBackend:
    """The few array operations the solver needs, for numpy or torch.

    Both libraries share operators, ``.T``, ``.sum(0)``, slicing and broadcasting; this
    shim covers the rest (creation, dtype changes, float64 reductions, ``eigh``), so the
    solver has a single code path.

    Parameters
    ----------
    name : {"numpy", "torch"}
        The array library.
    device : str or None
        Torch device (``"cpu"``, ``"cuda"``, ``"cuda:1"``...); numpy runs on the CPU.
    """

    def __init__(self, name: str, device: str | None = None):
        if name == "torch":
            self._torch = torch
            self.device = torch.device(device or "cpu")
            self.float32, self.float64 = torch.float32, torch.float64
        elif name == "numpy":
            if device not in (None, "cpu"):
                raise ValueError(
                    f"The numpy backend runs on the CPU only, got device={device!r}; "
                    "use backend='torch' for a GPU."
                )
            self._torch = None
            self.device = "cpu"
            self.float32, self.float64 = np.float32, np.float64
        else:
            raise ValueError(f"backend must be 'numpy' or 'torch', got {name!r}.")
        self.name = name

    def __repr__(self) -> str:
        return f"ArrayBackend({self.name!r}, device={str(self.device)!r})"

    def dtype(self, dtype: Any) -> Any:
        """Backend dtype for a numpy-like dtype (``np.float32``, ``"float64"``...)."""
        if self._torch is None:
            return np.dtype(dtype).type
        return {np.float32: self.float32, np.float64: self.float64}[np.dtype(dtype).type]

    def asarray(self, x: Any, dtype: Any) -> Any:
        """``x`` (numpy array, torch tensor, list) as a backend array of ``dtype``."""
        if self._torch is None:
            if type(x).__module__.startswith("torch"):
                x = x.detach().cpu().numpy()
            return np.asarray(x, dtype=dtype)
        if not isinstance(x, self._torch.Tensor):
            x = self._torch.from_numpy(np.ascontiguousarray(x))
        return x.to(device=self.device, dtype=dtype)

    def astype(self, x: Any, dtype: Any) -> Any:
        """Cast ``x`` to ``dtype`` (no copy when it already has it)."""
        return x.astype(dtype, copy=False) if self._torch is None else x.to(dtype)

    def index(self, indices: np.ndarray) -> Any:
        """Integer indices usable to take rows of backend arrays."""
        if self._torch is None:
            return np.asarray(indices, dtype=np.intp)
        return self._torch.as_tensor(np.asarray(indices, dtype=np.int64), device=self.device)

    def to_numpy(self, x: Any) -> np.ndarray:
        """Copy ``x`` to a numpy array on the CPU."""
        return x if self._torch is None else x.detach().cpu().numpy()

    def zeros(self, shape: tuple[int, ...], dtype: Any) -> Any:
        """Array of zeros."""
        if self._torch is None:
            return np.zeros(shape, dtype=dtype)
        return self._torch.zeros(shape, dtype=dtype, device=self.device)

    def mean64(self, x: Any) -> Any:
        """Column means accumulated in float64."""
        return x.mean(0, dtype=self.float64)

    def sum64(self, x: Any) -> Any:
        """Column sums accumulated in float64."""
        return x.sum(0, dtype=self.float64)

    def all_finite(self, x: Any) -> bool:
        """Whether ``x`` holds no NaN or infinity."""
        return bool(np.isfinite(x).all()) if self._torch is None else bool(x.isfinite().all())

    def qr(self, a: Any) -> Any:
        """Orthonormal basis ``Q`` of the columns of ``a`` (reduced QR)."""
        return np.linalg.qr(a)[0] if self._torch is None else self._torch.linalg.qr(a)[0]

    def eigh(self, a: Any) -> tuple[Any, Any]:
        """Eigenvalues (ascending) and eigenvectors of a symmetric matrix."""
        return np.linalg.eigh(a) if self._torch is None else self._torch.linalg.eigh(a)


def get_backend(
    backend: str = "auto", device: str | None = None, like: Any = None
) -> ArrayBackend:
    """Resolve ``backend``/``device`` arguments to an :class:`ArrayBackend`.

    Parameters
    ----------
    backend : {"auto", "numpy", "torch"}
        ``"auto"`` picks torch when ``device`` is a GPU, when ``device="auto"`` finds one,
        or when ``like`` is a torch tensor; numpy otherwise.
    device : str or None
        ``None`` or ``"cpu"``: the CPU; ``"auto"``: the first GPU when torch sees one;
        any torch device string otherwise.
    like : object
        An input array, to follow its library with ``backend="auto"``.

    Returns
    -------
    backend : ArrayBackend
    """
    if device == "auto":
        device = str(resolve_device("auto"))
    if backend == "auto":
        on_gpu = device is not None and str(device) != "cpu"
        is_tensor = like is not None and type(like).__module__.startswith("torch")
        backend = "torch" if on_gpu or is_tensor else "numpy"
    return ArrayBackend(backend, device)
