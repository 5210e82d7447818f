import csv
import importlib.util
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from conftest import SHARED, TinyNet
from sai_attack import data
from sai_attack.models import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageClassifier,
    ONNXModel,
    TFLiteModel,
    load_target,
    split_target_spec,
)

MODELS_DIR = SHARED / "models"
MOBILENETS = {
    # file -> top-1 (%) the README reports on 300 nips17-dev images
    "mobilenet_v2_1.0_224_quant.tflite": 84.7,
    "mobilenet_v1_0.75_192_quant.tflite": 75.3,
}

needs_litert = pytest.mark.skipif(
    importlib.util.find_spec("ai_edge_litert") is None, reason="ai-edge-litert is not installed"
)
needs_onnx = pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None,
    reason="onnxruntime/onnx are not installed",
)


def _export(module: nn.Module, example: torch.Tensor, path, dynamic_batch: bool = True) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation warning
        torch.onnx.export(
            module.eval(),
            (example,),
            str(path),
            dynamo=False,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}} if dynamic_batch else None,
        )


class _NHWC(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.permute(0, 3, 1, 2))


@needs_onnx
def test_onnx_nchw_matches_the_torch_model(tmp_path):
    net = TinyNet(num_classes=10, seed=3).eval()
    path = tmp_path / "tiny.onnx"
    _export(net, torch.rand(1, 3, 16, 16), path)
    x = torch.rand(5, 3, 20, 20, generator=torch.Generator().manual_seed(0))

    target = ONNXModel(path, mean=0.5, std=0.25)
    assert target.input_size == (16, 16)
    assert target.layout == "nchw"
    assert target.batch_size is None
    assert target.label_offset == 0
    assert target.num_classes == 10
    reference = ImageClassifier(net, mean=0.5, std=0.25, input_size=16)
    with torch.no_grad():
        torch.testing.assert_close(target(x), reference(x), rtol=1e-4, atol=1e-4)
        # The default float normalisation is ImageNet's (models exported from PyTorch).
        imagenet = ImageClassifier(net, IMAGENET_MEAN, IMAGENET_STD, input_size=16)
        torch.testing.assert_close(ONNXModel(path)(x), imagenet(x), rtol=1e-4, atol=1e-4)
    # Through a spec, with options.
    spec_target = load_target(f"onnx:{path}@mean=0.5,std=0.25")
    torch.testing.assert_close(spec_target(x), target(x))
    per_channel = load_target(f"onnx:{path}@mean=0.5/0.5/0.5,std=0.25/0.25/0.25")
    torch.testing.assert_close(per_channel(x), target(x))


@needs_onnx
def test_onnx_nhwc_fixed_batch_and_background_class(tmp_path):
    net = TinyNet(num_classes=1001, seed=4).eval()
    path = tmp_path / "nhwc.onnx"
    _export(_NHWC(net), torch.rand(1, 12, 12, 3), path, dynamic_batch=False)
    x = torch.rand(3, 3, 12, 12, generator=torch.Generator().manual_seed(1))

    target = load_target(f"onnx:{path}")
    assert target.layout == "nhwc"
    assert target.batch_size == 1  # runs image by image
    assert target.label_offset == 1  # auto: 1001 outputs, background at 0
    assert target.num_classes == 1000
    with torch.no_grad():
        full = ImageClassifier(net, IMAGENET_MEAN, IMAGENET_STD, input_size=12)(x)
    scores = target(x)
    assert scores.shape == (3, 1000)
    torch.testing.assert_close(scores, full[:, 1:], rtol=1e-4, atol=1e-4)
    # ImageNet class i is output i + 1.
    assert torch.equal(scores.argmax(1), full[:, 1:].argmax(1))
    explicit = load_target(f"onnx:{path}@label-offset=0")
    assert explicit(x).shape == (3, 1001)
    torch.testing.assert_close(load_target(f"onnx:{path}", label_offset=0)(x), explicit(x))


def _integer_input_model(path, elem_type) -> None:
    """A hand-built ONNX graph: integer NHWC image in, its pixel values (as float) out."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
            helper.make_node("Flatten", ["xf"], ["y"], axis=1),
        ],
        "pixels",
        [helper.make_tensor_value_info("x", elem_type, ["batch", 4, 4, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 48])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


@needs_onnx
def test_onnx_integer_inputs_get_8bit_pixels(tmp_path):
    from onnx import TensorProto

    x = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    pixels = torch.round(x * 255).permute(0, 2, 3, 1).reshape(2, 48)
    _integer_input_model(tmp_path / "u8.onnx", TensorProto.UINT8)
    target = load_target(f"onnx:{tmp_path / 'u8.onnx'}")
    assert target.input_dtype == np.uint8
    torch.testing.assert_close(target(x), pixels)
    _integer_input_model(tmp_path / "i8.onnx", TensorProto.INT8)
    torch.testing.assert_close(load_target(f"onnx:{tmp_path / 'i8.onnx'}")(x), pixels - 128)


def test_split_target_spec():
    assert split_target_spec("efficientnet-lite1") == ("efficientnet-lite1", {})
    assert split_target_spec("tflite:a/b.tflite@label-offset=1") == (
        "tflite:a/b.tflite",
        {"label-offset": "1"},
    )
    assert split_target_spec("onnx:m.onnx@mean=0.5,std=0.5,label_offset=auto") == (
        "onnx:m.onnx",
        {"mean": "0.5", "std": "0.5", "label-offset": "auto"},
    )
    # An @ in a path without key=value items is part of the path.
    assert split_target_spec("onnx:/data/run@2/m.onnx") == ("onnx:/data/run@2/m.onnx", {})


@pytest.mark.parametrize(
    ("spec", "error", "message"),
    [
        ("alexnet", ValueError, "unknown target 'alexnet'; choose one of efficientnet-lite0, "
         "efficientnet-lite1, efficientnet-lite2, torchvision:<arch> / timm:<name> with weights, "
         "tflite:PATH or onnx:PATH"),
        ("tflite:", ValueError, "target 'tflite:' lacks a file path after 'tflite:'"),
        ("onnx:/nonexistent/m.onnx", FileNotFoundError,
         "ONNX model file '/nonexistent/m.onnx' does not exist"),
        ("tflite:/nonexistent/m.tflite", FileNotFoundError,
         "TFLite model file '/nonexistent/m.tflite' does not exist"),
        ("efficientnet-lite0@label-offset=1", ValueError,
         "option(s) label-offset of target 'efficientnet-lite0@label-offset=1' apply to "
         "tflite:/onnx: targets only"),
        ("onnx:m.onnx@colour=rgb", ValueError,
         "unknown option 'colour' in target 'onnx:m.onnx@colour=rgb'; options: label-offset, "
         "mean, std, size, weights"),
        ("onnx:m.onnx@label-offset=one", ValueError,
         "label-offset of target 'onnx:m.onnx@label-offset=one' must be 'auto' or an integer "
         ">= 0, got 'one'"),
        ("onnx:m.onnx@mean=0.5/0.5", ValueError,
         "mean of target 'onnx:m.onnx@mean=0.5/0.5' must be one number or three, got '0.5/0.5'"),
        ("tflite:m.tflite@size=224", ValueError,
         "option size of target 'tflite:m.tflite@size=224' applies to onnx: targets only"),
        ("onnx:m.onnx@weights=w.pt", ValueError,
         "option weights of target 'onnx:m.onnx@weights=w.pt' applies to PyTorch models only"),
    ],
)  # fmt: skip
def test_bad_target_specs(spec, error, message):
    with pytest.raises(error, match=".") as exc:
        load_target(spec)
    assert message in str(exc.value)


@needs_onnx
def test_bad_label_offset_and_file(tmp_path):
    net = TinyNet(num_classes=10).eval()
    path = tmp_path / "tiny.onnx"
    _export(net, torch.rand(1, 3, 8, 8), path)
    with pytest.raises(
        ValueError, match=r"label offset must lie in 0..9 for a model with 10 outputs, got 10"
    ):
        ONNXModel(path, label_offset=10)
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(ValueError, match="cannot load ONNX model .*junk.onnx"):
        ONNXModel(tmp_path / "junk.onnx")


# -- TensorFlow Lite (the shared quantised MobileNets) -------------------------------------------


@pytest.fixture(scope="module")
def mobilenet_paths():
    paths = {name: MODELS_DIR / name for name in MOBILENETS}
    if not all(p.is_file() for p in paths.values()):
        pytest.skip(f"shared TFLite models not found in {MODELS_DIR}")
    return paths


@needs_litert
def test_tflite_reads_size_dtype_and_quantization(mobilenet_paths):
    v2 = TFLiteModel(mobilenet_paths["mobilenet_v2_1.0_224_quant.tflite"])
    assert v2.input_size == (224, 224)
    assert v2.layout == "nhwc"
    assert v2.input_dtype == np.uint8
    assert v2.input_quantization == (0.0078125, 128)
    assert v2.output_quantization == (0.00390625, 0)
    assert v2.num_outputs == 1001
    assert v2.label_offset == 1
    v1 = load_target(f"tflite:{mobilenet_paths['mobilenet_v1_0.75_192_quant.tflite']}")
    assert v1.input_size == (192, 192)
    x = torch.rand(3, 3, 150, 170, generator=torch.Generator().manual_seed(0))
    scores = v1(x)
    assert scores.shape == (3, 1000)
    assert scores.dtype == torch.float32
    # Dequantised softmax outputs: multiples of 1/256 in [0, 1].
    assert float(scores.min()) >= 0
    assert float(scores.sum(1).max()) <= 1.01
    torch.testing.assert_close(scores * 256, torch.round(scores * 256))
    # Batch results equal one-by-one results.
    torch.testing.assert_close(v1(x[1:2]), scores[1:2])


@pytest.mark.integration
@needs_litert
@pytest.mark.parametrize("name", list(MOBILENETS))
def test_tflite_mobilenets_reproduce_readme_accuracy(nips17, mobilenet_paths, name):
    """The README's top-1 on 300 nips17-dev images, within 2 points: the first 300 rows of
    labels.csv, preprocessed like everything else here (shorter side resized to the model's
    input size with Pillow's bilinear filter, centre crop), label offset 1."""
    target = load_target(f"tflite:{mobilenet_paths[name]}@label-offset=1")
    rows = list(csv.DictReader((nips17 / "labels.csv").open(encoding="utf-8")))[:300]
    size = target.input_size[0]
    correct = 0
    for i in range(0, len(rows), 50):
        chunk = rows[i : i + 50]
        x = data.to_tensor(
            [data.resize_center_crop(data.load_image(nips17 / "images" / r["image"]), size)
             for r in chunk]
        )  # fmt: skip
        labels = torch.tensor([int(r["label"]) for r in chunk])
        correct += int((target(x).argmax(1) == labels).sum())
    accuracy = 100.0 * correct / len(rows)
    assert abs(accuracy - MOBILENETS[name]) <= 2.0, f"{name}: {accuracy:.1f}%"
