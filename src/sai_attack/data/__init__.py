"""Images in, images out: loading, conversion, labels, inputs, and atomic writes.

* :mod:`~sai_attack.data.images`: decoding images of the allowed formats (decided by content,
  within file-size and pixel limits) to 8-bit RGB, resizing, tensors;
* :mod:`~sai_attack.data.files`: bounded reads of regular files, atomic writes and PNG encoding
  (every file the library writes);
* :mod:`~sai_attack.data.inputs`: labels CSVs, the images of an input folder, input names (plain
  names only) and output names (valid and unique on every filesystem).
"""

from sai_attack.data.files import (
    FileReadError,
    atomic_write_bytes,
    atomic_write_text,
    encode_png,
    open_regular_file,
    read_limited,
    save_png,
)
from sai_attack.data.images import (
    IMAGE_EXTENSIONS,
    IMAGE_FORMATS,
    MAX_FILE_BYTES,
    MAX_PIXELS,
    ImageLoadError,
    decode_image,
    image_format,
    load_image,
    read_image_file,
    resize_center_crop,
    to_tensor,
    to_uint8,
)
from sai_attack.data.inputs import (
    LABELS_FILENAME,
    MAX_LABELS_BYTES,
    MAX_STEM_BYTES,
    NUM_CLASSES,
    InputSet,
    LabelsError,
    LabelTable,
    discover_inputs,
    is_plain_name,
    name_problem,
    printable_name,
    read_labels,
    safe_stem,
    unique_stems,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "IMAGE_FORMATS",
    "LABELS_FILENAME",
    "MAX_FILE_BYTES",
    "MAX_LABELS_BYTES",
    "MAX_PIXELS",
    "MAX_STEM_BYTES",
    "NUM_CLASSES",
    "FileReadError",
    "ImageLoadError",
    "InputSet",
    "LabelTable",
    "LabelsError",
    "atomic_write_bytes",
    "atomic_write_text",
    "decode_image",
    "discover_inputs",
    "encode_png",
    "image_format",
    "is_plain_name",
    "load_image",
    "name_problem",
    "open_regular_file",
    "printable_name",
    "read_image_file",
    "read_labels",
    "read_limited",
    "resize_center_crop",
    "safe_stem",
    "save_png",
    "to_tensor",
    "to_uint8",
    "unique_stems",
]
