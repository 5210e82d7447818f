"""ONNX files as deployed targets, run with ``onnxruntime``."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np

from sai_attack.models.deployed.base import FileModel, OpenedFile, resolve_input_size
from sai_attack.models.wrapper import IMAGENET_MEAN, IMAGENET_STD

_NUMPY_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
}


class ONNXModel(FileModel):
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
    file_label = "ONNX"
    interpreter = "onnxruntime"

    def _open(self, path: Path, module: ModuleType, size: int | None, threads: int) -> OpenedFile:
        options = module.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        try:
            session = module.InferenceSession(
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
        input_size = resolve_input_size(dims, size, path)
        out_shape = list(out.shape)
        known = [d for d in out_shape[1:] if isinstance(d, int)]
        if len(known) != len(out_shape) - 1:
            raise ValueError(f"ONNX model {str(path)!r} has a dynamic output shape {out_shape}")
        fields = {
            "input_size": input_size,
            "layout": layout,
            "input_dtype": _NUMPY_DTYPES[inp.type],
            "input_quantization": None,
            "output_quantization": None,
            "num_outputs": int(np.prod(known)),
            "batch_size": shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None,
        }
        handles = {"_session": session, "_input_name": inp.name, "_output_name": out.name}
        return OpenedFile(fields, handles)

    def _default_float_normalisation(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(IMAGENET_MEAN, np.float32), np.asarray(IMAGENET_STD, np.float32)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        (result,) = self._session.run([self._output_name], {self._input_name: batch})
        return np.asarray(result)
