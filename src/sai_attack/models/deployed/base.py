"""The deployed-model base classes: preprocessing for an external interpreter, and model files.

:class:`DeployedModel` turns (B, 3, H, W) RGB tensors in [0, 1] into the input tensor a file
expects and its outputs into scores; :class:`FileModel` adds what the TensorFlow Lite and ONNX
targets share: the model file, the optional interpreter and the thread count.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

NUM_IMAGENET_CLASSES = 1000


def _triplet(value: float | Sequence[float], name: str) -> np.ndarray:
    values = [float(value)] if isinstance(value, (int, float)) else [float(v) for v in value]
    values = values * 3 if len(values) == 1 else values
    if len(values) != 3:
        raise ValueError(f"{name} must be one number or three, got {len(values)} values")
    return np.asarray(values, dtype=np.float32)


class DeployedModel(nn.Module):
    """A classifier run by an external interpreter, on RGB images in [0, 1].

    Subclasses open the file and implement :meth:`_run`. Preprocessing: images are resized to the
    model's input size with antialiased bilinear interpolation (as :class:`ImageClassifier` does),
    then converted to the input dtype: uint8 inputs get the 8-bit pixel values (``round(255 x)``),
    int8 inputs ``round(255 x) - 128``, float inputs ``(x - mean) / std``. When ``mean``/``std``
    are given for a quantised input, the float value ``(x - mean) / std`` is quantised with the
    input's scale and zero point instead. Quantised outputs are dequantised.

    Args:
        name: Display name.
        input_size: (height, width) the model takes, or ``None`` to feed images as they are.
        layout: ``nhwc`` or ``nchw``.
        input_dtype: NumPy dtype of the input tensor.
        input_quantization: (scale, zero point) of a quantised input, or ``None``.
        output_quantization: (scale, zero point) of a quantised output, or ``None``.
        num_outputs: Length of the model's output vector.
        label_offset: Output index of ImageNet class 0 (1 for 1001-class models whose output 0 is
            "background"); ``"auto"`` is 1 for 1001 outputs and 0 otherwise. The returned scores
            are ``outputs[:, label_offset:]``.
        mean: Normalisation mean on the [0, 1] scale (one number or three), for float inputs.
        std: Normalisation standard deviation on the [0, 1] scale.
        batch_size: The batch size the file fixes, or ``None`` when it is dynamic.
    """

    kind = "deployed"

    def __init__(
        self,
        name: str,
        input_size: tuple[int, int] | None,
        layout: str,
        input_dtype: type,
        input_quantization: tuple[float, int] | None,
        output_quantization: tuple[float, int] | None,
        num_outputs: int,
        label_offset: int | str = "auto",
        mean: float | Sequence[float] | None = None,
        std: float | Sequence[float] | None = None,
        batch_size: int | None = None,
    ) -> None:
        super().__init__()
        if layout not in ("nhwc", "nchw"):
            raise ValueError(f"layout must be 'nhwc' or 'nchw', got {layout!r}")
        if label_offset == "auto":
            label_offset = 1 if num_outputs == NUM_IMAGENET_CLASSES + 1 else 0
        if isinstance(label_offset, bool) or not isinstance(label_offset, (int, np.integer)):
            raise ValueError(f"label offset must be 'auto' or an integer, got {label_offset!r}")
        if not 0 <= int(label_offset) < num_outputs:
            raise ValueError(
                f"label offset must lie in 0..{num_outputs - 1} for a model with {num_outputs} "
                f"outputs, got {label_offset}"
            )
        self.name = name
        self.input_size = input_size
        self.layout = layout
        self.input_dtype = np.dtype(input_dtype)
        self.input_quantization = input_quantization
        self.output_quantization = output_quantization
        self.num_outputs = int(num_outputs)
        self.label_offset = int(label_offset)
        self.batch_size = batch_size
        self.mean = None if mean is None else _triplet(mean, "mean")
        self.std = None if std is None else _triplet(std, "std")
        if self.std is not None and np.any(self.std <= 0):
            raise ValueError(f"std must be positive, got {self.std.tolist()}")

    @property
    def num_classes(self) -> int:
        """Number of scores returned per image (outputs after the label offset)."""
        return self.num_outputs - self.label_offset

    @property
    def supports_cam(self) -> bool:
        """Deployed models expose no features."""
        return False

    def describe(self) -> dict:
        """What was read from the file and the options in effect, for reports."""
        return {
            "name": self.name,
            "kind": self.kind,
            "input_size": list(self.input_size) if self.input_size else None,
            "layout": self.layout,
            "input_dtype": str(self.input_dtype),
            "input_quantization": self.input_quantization,
            "output_quantization": self.output_quantization,
            "num_outputs": self.num_outputs,
            "label_offset": self.label_offset,
            "mean": None if self.mean is None else self.mean.tolist(),
            "std": None if self.std is None else self.std.tolist(),
        }

    # -- preprocessing -------------------------------------------------------------------------

    def _default_float_normalisation(self) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _to_input(self, images: torch.Tensor) -> np.ndarray:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W) images, got shape {tuple(images.shape)}")
        x = images.detach().float().cpu().clamp(0, 1)
        if self.input_size is not None and tuple(x.shape[-2:]) != tuple(self.input_size):
            x = F.interpolate(
                x, size=self.input_size, mode="bilinear", align_corners=False, antialias=True
            ).clamp(0, 1)
        arr = x.numpy()  # (B, 3, H, W)
        if self.layout == "nhwc":
            arr = arr.transpose(0, 2, 3, 1)
        shape = (1, 1, 1, 3) if self.layout == "nhwc" else (1, 3, 1, 1)
        dtype = self.input_dtype
        if dtype.kind == "f":
            default_mean, default_std = self._default_float_normalisation()
            mean = (default_mean if self.mean is None else self.mean).reshape(shape)
            std = (default_std if self.std is None else self.std).reshape(shape)
            return ((arr - mean) / std).astype(dtype)
        info = np.iinfo(dtype)
        if self.mean is not None or self.std is not None:
            if self.input_quantization is None:
                raise ValueError(
                    f"model {self.name!r} has a {dtype} input without quantisation parameters; "
                    "mean/std cannot be applied"
                )
            scale, zero_point = self.input_quantization
            mean = (np.zeros(3, np.float32) if self.mean is None else self.mean).reshape(shape)
            std = (np.ones(3, np.float32) if self.std is None else self.std).reshape(shape)
            q = np.round((arr - mean) / std / scale + zero_point)
        else:
            # Integer image models take the 8-bit pixels (int8: shifted by -128).
            q = np.round(arr * 255.0) + (info.min if info.min < 0 else 0)
        return np.clip(q, info.min, info.max).astype(dtype)

    def _to_scores(self, outputs: np.ndarray) -> np.ndarray:
        out = outputs.reshape(outputs.shape[0], -1).astype(np.float32)
        if self.output_quantization is not None:
            scale, zero_point = self.output_quantization
            out = (out - zero_point) * scale
        return out[:, self.label_offset :]

    def _run(self, batch: np.ndarray) -> np.ndarray:
        """Run the interpreter on one prepared batch; returns (B, num_outputs)."""
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Return (B, num_classes) scores for (B, 3, H, W) images in [0, 1] (no gradient)."""
        batch = self._to_input(images)
        step = self.batch_size or len(batch)
        outputs = [self._run(batch[i : i + step]) for i in range(0, len(batch), step)]
        scores = self._to_scores(np.concatenate(outputs) if outputs else np.zeros((0, 1)))
        return torch.from_numpy(np.ascontiguousarray(scores)).to(images.device)

    def extra_repr(self) -> str:
        """Name, input size and label offset, for ``repr``."""
        return (
            f"name={self.name!r}, input_size={self.input_size}, "
            f"input_dtype={self.input_dtype}, label_offset={self.label_offset}"
        )


def _model_file(path: str | os.PathLike, kind: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{kind} model file {str(p)!r} does not exist")
    return p


class OpenedFile(NamedTuple):
    """What :meth:`FileModel._open` read from a model file.

    Attributes:
        fields: The :class:`DeployedModel` arguments read from the file (all but ``name``,
            ``label_offset``, ``mean`` and ``std``).
        handles: The interpreter objects that :meth:`DeployedModel._run` uses, by attribute name.
    """

    fields: dict[str, Any]
    handles: dict[str, Any]


class FileModel(DeployedModel):
    """A deployed model read from a file and run on the CPU by an optional interpreter.

    Subclasses name the file format and the interpreter module, and implement :meth:`_open`
    (what the file says about its input and output) and :meth:`_run`.

    Args:
        path: The model file.
        label_offset: See :class:`DeployedModel`.
        mean: See :class:`DeployedModel`.
        std: See :class:`DeployedModel`.
        size: Input side length, for files whose spatial size is dynamic; a file that fixes its
            size must agree with it.
        num_threads: Interpreter threads (default: PyTorch's thread count).
    """

    # How messages name the file format, and the module that runs it (an optional dependency
    # named like ``kind`` in the package extras).
    file_label: ClassVar[str] = ""
    interpreter: ClassVar[str] = ""

    def __init__(
        self,
        path: str | os.PathLike,
        label_offset: int | str = "auto",
        mean: float | Sequence[float] | None = None,
        std: float | Sequence[float] | None = None,
        size: int | None = None,
        num_threads: int | None = None,
    ) -> None:
        path = _model_file(path, self.file_label)
        try:
            module = importlib.import_module(self.interpreter)
        except ImportError:
            raise ImportError(
                f"{self.kind}: targets need the optional dependency: "
                f"pip install 'sai-attack[{self.kind}]'"
            ) from None
        fields, handles = self._open(path, module, size, num_threads or torch.get_num_threads())
        super().__init__(
            name=f"{self.kind}:{path.stem}",
            label_offset=label_offset,
            mean=mean,
            std=std,
            **fields,
        )
        self.path = path
        # Set only now: nn.Module.__setattr__ needs nn.Module.__init__ to have run.
        for attr, value in handles.items():
            setattr(self, attr, value)

    def _open(self, path: Path, module: ModuleType, size: int | None, threads: int) -> OpenedFile:
        """Load the file with the interpreter and read its input and output.

        Args:
            path: The model file (it exists).
            module: The imported :attr:`interpreter` module.
            size: The requested input side length, or ``None``.
            threads: Interpreter threads.

        Returns:
            What the file says, and the interpreter objects :meth:`_run` uses.

        Raises:
            ValueError: When the file cannot be loaded or is not an image classifier.
        """
        raise NotImplementedError

    def describe(self) -> dict:
        """See :meth:`DeployedModel.describe`; adds the file."""
        return {**super().describe(), "path": str(self.path)}


def resolve_input_size(dims: Sequence, size: int | None, path: Path) -> tuple[int, int] | None:
    """The (height, width) a file takes: its own when fixed, else ``size`` (or ``None``).

    Args:
        dims: The file's (height, width) input dimensions; a dynamic one is not a positive int.
        size: The requested side length, or ``None``.
        path: The file, for messages.

    Raises:
        ValueError: When ``size`` conflicts with a fixed input size.
    """
    if all(isinstance(d, int) and d > 0 for d in dims):
        if size is not None and size not in dims:
            raise ValueError(
                f"size {size} conflicts with the fixed input size {dims} of {str(path)!r}"
            )
        return int(dims[0]), int(dims[1])
    return (int(size), int(size)) if size else None
