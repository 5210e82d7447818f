"""Deployed models as black-box targets: TensorFlow Lite and ONNX files.

A :class:`DeployedModel` behaves like :class:`~sai_attack.models.ImageClassifier` for evaluation:
it takes (B, 3, H, W) RGB tensors in [0, 1] and returns (B, num_classes) scores. It is not
differentiable (the interpreter runs outside PyTorch), so it serves as a transfer (black-box)
target only.

What is read from the file: the input size, the layout (NHWC or NCHW), the input dtype and, for
TensorFlow Lite, its quantisation (scale, zero point) and the output quantisation. What cannot be
read from a file is the float normalisation a model expects, and whether its first output is a
"background" class; both are options (``mean``/``std`` and ``label_offset``).

Targets are named by specs that :func:`load_target` understands: built-in names
(``efficientnet-lite0``), ``torchvision:<arch>`` / ``timm:<name>`` (with weights), and
``tflite:PATH`` / ``onnx:PATH``. Options follow an ``@``: ``tflite:m.tflite@label-offset=1``,
``onnx:m.onnx@mean=0.5,std=0.5,size=224``, ``torchvision:resnet50@weights=r50.pt``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sai_attack.models.wrapper import IMAGENET_MEAN, IMAGENET_STD
from sai_attack.models.zoo import MODEL_PREFIXES, MODELS, load_model

logger = logging.getLogger(__name__)

NUM_IMAGENET_CLASSES = 1000
DEPLOYED_PREFIXES = ("tflite:", "onnx:")
TARGET_OPTIONS = ("label-offset", "mean", "std", "size", "weights")

_NUMPY_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
}


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


class TFLiteModel(DeployedModel):
    """A TensorFlow Lite classifier, run with ``ai-edge-litert`` on the CPU.

    Float inputs are normalised to [-1, 1] by default (``mean = std = 0.5``, the TensorFlow
    convention); quantised uint8/int8 inputs take the 8-bit pixels (see :class:`DeployedModel`).
    Files with a fixed batch size of 1 run one image at a time.

    Args:
        path: The ``.tflite`` file.
        label_offset: See :class:`DeployedModel`.
        mean: See :class:`DeployedModel`.
        std: See :class:`DeployedModel`.
        num_threads: Interpreter threads (default: PyTorch's thread count).
    """

    kind = "tflite"

    def __init__(
        self,
        path: str | os.PathLike,
        label_offset: int | str = "auto",
        mean: float | Sequence[float] | None = None,
        std: float | Sequence[float] | None = None,
        num_threads: int | None = None,
    ) -> None:
        path = _model_file(path, "TFLite")
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise ImportError(
                "tflite: targets need the optional dependency: pip install 'sai-attack[tflite]'"
            ) from None
        try:
            interpreter = Interpreter(
                model_path=str(path), num_threads=num_threads or torch.get_num_threads()
            )
            interpreter.allocate_tensors()
        except (RuntimeError, ValueError) as exc:
            raise ValueError(f"cannot load TFLite model {str(path)!r}: {exc}") from None
        inputs = interpreter.get_input_details()
        outputs = interpreter.get_output_details()
        if len(inputs) != 1:
            raise ValueError(f"TFLite model {str(path)!r} has {len(inputs)} inputs; expected one")
        inp, out = inputs[0], outputs[0]
        shape = [int(s) for s in inp["shape"]]
        if len(shape) != 4 or 3 not in (shape[1], shape[3]):
            raise ValueError(
                f"TFLite model {str(path)!r} takes input shape {shape}; expected 4-D RGB images"
            )
        layout = "nhwc" if shape[3] == 3 else "nchw"
        size = (shape[1], shape[2]) if layout == "nhwc" else (shape[2], shape[3])
        signature = [int(s) for s in inp.get("shape_signature", inp["shape"])]
        super().__init__(
            name=f"tflite:{path.stem}",
            input_size=size,
            layout=layout,
            input_dtype=inp["dtype"],
            input_quantization=_tflite_quantization(inp),
            output_quantization=_tflite_quantization(out),
            num_outputs=int(np.prod(out["shape"][1:])),
            label_offset=label_offset,
            mean=mean,
            std=std,
            batch_size=None if signature[0] == -1 else shape[0],
        )
        self.path = path
        self._interpreter = interpreter
        self._input_index = inp["index"]
        self._output_index = out["index"]
        self._allocated_batch = shape[0]

    def _default_float_normalisation(self) -> tuple[np.ndarray, np.ndarray]:
        return np.full(3, 0.5, np.float32), np.full(3, 0.5, np.float32)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if len(batch) != self._allocated_batch:
            self._interpreter.resize_tensor_input(self._input_index, list(batch.shape))
            self._interpreter.allocate_tensors()
            self._allocated_batch = len(batch)
        self._interpreter.set_tensor(self._input_index, np.ascontiguousarray(batch))
        self._interpreter.invoke()
        return self._interpreter.get_tensor(self._output_index).copy()

    def describe(self) -> dict:
        """See :meth:`DeployedModel.describe`; adds the file."""
        return {**super().describe(), "path": str(self.path)}


def _tflite_quantization(details: dict) -> tuple[float, int] | None:
    scale, zero_point = details.get("quantization", (0.0, 0))
    if not scale or np.dtype(details["dtype"]).kind == "f":
        return None
    return float(scale), int(zero_point)


class ONNXModel(DeployedModel):
    """An ONNX classifier, run with ``onnxruntime`` on the CPU.

    Float inputs are normalised with the ImageNet mean and std by default (the convention of
    models exported from PyTorch); uint8/int8 inputs take the 8-bit pixels. The layout is NCHW
    when the second input dimension is 3 and NHWC when the last one is. When the file leaves the
    spatial size dynamic, images are fed at their own size unless ``size`` is given.

    Args:
        path: The ``.onnx`` file.
        label_offset: See :class:`DeployedModel`.
        mean: See :class:`DeployedModel`.
        std: See :class:`DeployedModel`.
        size: Input side length, for files whose spatial size is dynamic.
        num_threads: Intra-op threads (default: PyTorch's thread count).
    """

    kind = "onnx"

    def __init__(
        self,
        path: str | os.PathLike,
        label_offset: int | str = "auto",
        mean: float | Sequence[float] | None = None,
        std: float | Sequence[float] | None = None,
        size: int | None = None,
        num_threads: int | None = None,
    ) -> None:
        path = _model_file(path, "ONNX")
        try:
            import onnxruntime as ort
        except ImportError:
            raise ImportError(
                "onnx: targets need the optional dependency: pip install 'sai-attack[onnx]'"
            ) from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads or torch.get_num_threads()
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ValueError(f"cannot load ONNX model {str(path)!r}: {exc}") from None
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise ValueError(f"ONNX model {str(path)!r} has {len(inputs)} inputs; expected one")
        inp, out = inputs[0], session.get_outputs()[0]
        if inp.type not in _NUMPY_DTYPES:
            raise ValueError(f"ONNX model {str(path)!r} takes {inp.type}; expected float or 8-bit")
        shape = list(inp.shape)
        if len(shape) != 4 or 3 not in (shape[1], shape[3]):
            raise ValueError(
                f"ONNX model {str(path)!r} takes input shape {shape}; expected 4-D RGB images"
            )
        layout = "nchw" if shape[1] == 3 else "nhwc"
        dims = shape[2:4] if layout == "nchw" else shape[1:3]
        if all(isinstance(d, int) and d > 0 for d in dims):
            input_size: tuple[int, int] | None = (int(dims[0]), int(dims[1]))
            if size is not None and size not in dims:
                raise ValueError(
                    f"size {size} conflicts with the fixed input size {dims} of {str(path)!r}"
                )
        else:
            input_size = (int(size), int(size)) if size else None
        out_shape = list(out.shape)
        known = [d for d in out_shape[1:] if isinstance(d, int)]
        if len(known) != len(out_shape) - 1:
            raise ValueError(f"ONNX model {str(path)!r} has a dynamic output shape {out_shape}")
        super().__init__(
            name=f"onnx:{path.stem}",
            input_size=input_size,
            layout=layout,
            input_dtype=_NUMPY_DTYPES[inp.type],
            input_quantization=None,
            output_quantization=None,
            num_outputs=int(np.prod(known)),
            label_offset=label_offset,
            mean=mean,
            std=std,
            batch_size=shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None,
        )
        self.path = path
        self._session = session
        self._input_name = inp.name
        self._output_name = out.name

    def _default_float_normalisation(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(IMAGENET_MEAN, np.float32), np.asarray(IMAGENET_STD, np.float32)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        (result,) = self._session.run([self._output_name], {self._input_name: batch})
        return np.asarray(result)

    def describe(self) -> dict:
        """See :meth:`DeployedModel.describe`; adds the file."""
        return {**super().describe(), "path": str(self.path)}


# --------------------------------------------------------------------------------------------
# Target specs
# --------------------------------------------------------------------------------------------


def split_target_spec(spec: str) -> tuple[str, dict[str, str]]:
    """Split ``NAME[@key=value,...]`` into the name and its options.

    The part after the last ``@`` is read as options only when every comma-separated item is
    ``key=value`` with a known key, so paths containing ``@`` still work.

    Returns:
        ``(name, options)``.

    Raises:
        ValueError: An options part with an unknown key.
    """
    head, sep, tail = spec.rpartition("@")
    if not sep or not head:
        return spec, {}
    items = [item.strip() for item in tail.split(",")]
    if not all("=" in item for item in items):
        return spec, {}
    options: dict[str, str] = {}
    for item in items:
        key, _, value = item.partition("=")
        key = key.strip().lower().replace("_", "-")
        if key not in TARGET_OPTIONS:
            raise ValueError(
                f"unknown option {key!r} in target {spec!r}; options: {', '.join(TARGET_OPTIONS)}"
            )
        options[key] = value.strip()
    return head, options


def _parse_offset(value: str | int, spec: str) -> int | str:
    if isinstance(value, int) or value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise ValueError(
            f"label-offset of target {spec!r} must be 'auto' or an integer, got {value!r}"
        ) from None


def _parse_floats(value: str, key: str, spec: str) -> list[float]:
    try:
        values = [float(v) for v in value.split("/")]
    except ValueError:
        raise ValueError(
            f"{key} of target {spec!r} must be a number or three numbers separated by '/', "
            f"got {value!r}"
        ) from None
    if len(values) not in (1, 3):
        raise ValueError(f"{key} of target {spec!r} must be one number or three, got {value!r}")
    return values


def load_target(
    spec: str,
    weights: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    label_offset: int | str = "auto",
) -> nn.Module:
    """Load a classifier to evaluate, by spec.

    Args:
        spec: A built-in model name, ``torchvision:<arch>`` / ``timm:<name>``, ``tflite:PATH`` or
            ``onnx:PATH``, optionally followed by ``@key=value,...`` options: ``label-offset``
            (``auto`` or an integer), ``mean`` and ``std`` (one number or three separated by
            ``/``, on the [0, 1] scale), ``size`` (ONNX files with a dynamic input size) and
            ``weights`` (PyTorch models).
        weights: Weights for a PyTorch model (the ``weights`` option takes precedence).
        device: Where PyTorch models run; deployed models run on the CPU and return scores on
            the device of their input.
        label_offset: Default label offset of deployed models (a ``label-offset`` option wins).

    Returns:
        An :class:`~sai_attack.models.ImageClassifier` or a :class:`DeployedModel`, in eval mode.

    Raises:
        ValueError: Unknown spec or bad option.
        FileNotFoundError: A missing model file.
        ImportError: The optional interpreter is not installed.
    """
    name, options = split_target_spec(spec.strip())
    if name in MODELS or name.startswith(MODEL_PREFIXES):
        bad = sorted(set(options) - {"weights"})
        if bad:
            raise ValueError(
                f"option(s) {', '.join(bad)} of target {spec!r} apply to tflite:/onnx: targets only"
            )
        return load_model(name, options.get("weights", weights), device)
    if name.startswith(DEPLOYED_PREFIXES):
        kind, _, path = name.partition(":")
        if not path:
            raise ValueError(f"target {spec!r} lacks a file path after '{kind}:'")
        if "weights" in options:
            raise ValueError(f"option weights of target {spec!r} applies to PyTorch models only")
        kwargs: dict = {
            "label_offset": _parse_offset(options.get("label-offset", label_offset), spec)
        }
        for key in ("mean", "std"):
            if key in options:
                kwargs[key] = _parse_floats(options[key], key, spec)
        if "size" in options:
            if kind != "onnx":
                raise ValueError(
                    f"option size of target {spec!r} applies to onnx: targets only (TFLite files "
                    "fix their input size)"
                )
            try:
                kwargs["size"] = int(options["size"])
            except ValueError:
                raise ValueError(
                    f"size of target {spec!r} must be an integer, got {options['size']!r}"
                ) from None
        model = TFLiteModel(path, **kwargs) if kind == "tflite" else ONNXModel(path, **kwargs)
        logger.info(
            "loaded %s: input %s %s, label offset %d",
            model.name,
            model.input_size,
            model.input_dtype,
            model.label_offset,
        )
        return model.eval()
    raise ValueError(
        f"unknown target {name!r}; choose one of {', '.join(MODELS)}, torchvision:<arch> / "
        "timm:<name> with weights, tflite:PATH or onnx:PATH"
    )
