"""TensorFlow Lite files as deployed targets, run with ``ai-edge-litert``."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np

from sai_attack.models.deployed.base import FileModel, OpenedFile, resolve_input_size


class TFLiteModel(FileModel):
    """A TensorFlow Lite classifier, run with ``ai-edge-litert`` on the CPU.

    Float inputs are normalised to [-1, 1] by default (``mean = std = 0.5``, the TensorFlow
    convention); quantised uint8/int8 inputs take the 8-bit pixels (see :class:`DeployedModel`).
    Files with a fixed batch size of 1 run one image at a time.

    Args:
        path: The ``.tflite`` file.
        label_offset: See :class:`DeployedModel`.
        mean: See :class:`DeployedModel`.
        std: See :class:`DeployedModel`.
        size: TFLite files fix their input size; a given size must agree with it.
        num_threads: Interpreter threads (default: PyTorch's thread count).
    """

    kind = "tflite"
    file_label = "TFLite"
    interpreter = "ai_edge_litert.interpreter"

    def _open(self, path: Path, module: ModuleType, size: int | None, threads: int) -> OpenedFile:
        try:
            interpreter = module.Interpreter(model_path=str(path), num_threads=threads)
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
        dims = shape[1:3] if layout == "nhwc" else shape[2:4]
        signature = [int(s) for s in inp.get("shape_signature", inp["shape"])]
        fields = {
            "input_size": resolve_input_size(dims, size, path),
            "layout": layout,
            "input_dtype": inp["dtype"],
            "input_quantization": _tflite_quantization(inp),
            "output_quantization": _tflite_quantization(out),
            "num_outputs": int(np.prod(out["shape"][1:])),
            "batch_size": None if signature[0] == -1 else shape[0],
        }
        handles = {
            "_interpreter": interpreter,
            "_input_index": inp["index"],
            "_output_index": out["index"],
            "_allocated_batch": shape[0],
        }
        return OpenedFile(fields, handles)

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


def _tflite_quantization(details: dict) -> tuple[float, int] | None:
    scale, zero_point = details.get("quantization", (0.0, 0))
    if not scale or np.dtype(details["dtype"]).kind == "f":
        return None
    return float(scale), int(zero_point)
