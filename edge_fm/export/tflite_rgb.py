"""RGB forms of integer .tflite classifiers, made by editing the graph of a finished file.

Mobile clients (MediaPipe Tasks, the TFLite Task Library) feed a model the bytes of an RGB image:
a ``uint8 [1, H, W, 3]`` tensor with scale 1 and zero point 0. edge-fm's integer exports read one
grey channel as int8 (``q = pixel - 128``). :func:`to_rgb_uint8` turns such a file into one that
reads RGB bytes, without the Keras model that produced it, and without changing a single output
for a grey image (one whose three channels are equal):

- the uint8 bytes become the int8 the graph expects (``q = pixel - 128``) through float32
  (``DEQUANTIZE``, ``QUANTIZE``: exact for whole numbers), which LiteRT's XNNPACK delegate runs
  with the rest of the graph; or, on request, through the single uint8-to-int8 ``QUANTIZE`` the
  converter emits, which keeps the file integer-only but which XNNPACK leaves to a slower kernel;
- ops that treat every channel alike (a multiply or add by a scalar, a resize, a pad) run on the
  three channels unchanged;
- the ITU-R BT.601 luma weights are folded into the first convolution's kernel, or the first
  dense layer's weights, with the weight scales untouched: each integer weight ``k`` is split into
  three integers that sum to ``k`` exactly, each as near as possible to its share of ``k``. On a
  grey image every accumulator, so every output, is bit for bit the original model's; on a colour
  image the model sees the luma of the image, to within one integer step per weight;
- a graph that repeats its grey channel to RGB before its first convolution (the ImageNet
  backbones) loses the repeat: the three channels flow through instead and the convolution's
  three kernels are summed, then split by the same luma weights;
- any other graph gets a fixed 1x1 convolution in front that computes the luma in integers and
  returns the original int8 grey input exactly for a grey image;
- the int8 probabilities gain a uint8 copy (``q + 128``, same scale, made the same way): MediaPipe's
  ImageClassifier refuses an int8 output ("Expected output tensor ... to have type UINT8 or
  FLOAT32").

The edge-fm description stored in the file is updated to the new input and output. A standard
``TFLITE_METADATA`` entry, which would describe the old input, is removed, as are the files packed
after the model: :func:`edge_fm.export.tflite_metadata.populate` writes fresh ones.

Example:
    >>> rgb = to_rgb_uint8(Path("models/cnn-2conv/model.tflite").read_bytes())  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses

import numpy as np

from edge_fm.errors import EdgeFMError, unknown_choice
from edge_fm.export import tflite_file
from edge_fm.export.luma import CHANNELS, GREY_WEIGHTS, INT8_WEIGHT_LIMIT, split_by_luma  # noqa: F401 (re-exported)
from edge_fm.export.rgb_description import update_metadata

# The int8 input every edge-fm integer export reads: q = pixel - 128.
GREY_INPUT_QUANTIZATION = (1.0, -128)
# Weight sum of the luma convolution used where no fold is possible: the largest whose biggest
# share (green) still fits an int8 weight, for the finest luma an int8 kernel can hold.
LUMA_CONV_SUM = 216

# How uint8 becomes int8 at the input, and back at the output (see rgb_form).
FLOAT_BRIDGE = "float"
INTEGER_BRIDGE = "integer"
BRIDGES = (FLOAT_BRIDGE, INTEGER_BRIDGE)

# How the luma conversion went into the graph (RgbForm.method).
FOLD_CONV = "fold-conv"
FOLD_DENSE = "fold-dense"
DROP_REPEAT = "drop-repeat"
LUMA_CONV = "luma-conv"
RGB_MODEL = "rgb"  # the model was trained on RGB images: only its input's type changes


@dataclasses.dataclass(frozen=True)
class RgbForm:
    """An RGB uint8 form of an integer .tflite classifier.

    Attributes:
        tflite: The new flatbuffer.
        method: How the luma conversion entered the graph: ``fold-conv`` (first convolution's
            kernel), ``fold-dense`` (first dense layer's weights), ``drop-repeat`` (an in-graph
            grey-to-RGB repeat removed, the convolution after it refolded), ``luma-conv`` (a 1x1
            convolution added in front) or ``rgb`` (a model of RGB images: no conversion).
        layer: Name of the weights tensor that took the fold, or of the added convolution.
        clipped_weights: Weights whose luma share did not fit int8, so their split leans on the
            other channels (the sum, and so grey images, stay exact).
        uint8_output: Whether the probabilities come out as uint8 (else int8, as before).
        bridge: ``float`` or ``integer``: the ops that turn uint8 into int8 (see :func:`rgb_form`).
    """

    tflite: bytes
    method: str
    layer: str
    clipped_weights: int
    uint8_output: bool
    bridge: str


def to_rgb_uint8(
    tflite: bytes, *, uint8_output: bool = True, fold: bool = True, bridge: str = FLOAT_BRIDGE
) -> bytes:
    """Returns the RGB uint8 form of an int8 grey classifier (see :func:`rgb_form`)."""
    return rgb_form(tflite, uint8_output=uint8_output, fold=fold, bridge=bridge).tflite


def rgb_form(
    tflite: bytes, *, uint8_output: bool = True, fold: bool = True, bridge: str = FLOAT_BRIDGE
) -> RgbForm:
    """Builds a new .tflite that reads ``uint8 [1, H, W, 3]`` RGB bytes (scale 1, zero point 0).

    A grey image fed as three equal channels gives exactly the original model's outputs; a colour
    image is classified as its BT.601 luma. A model trained on RGB images takes the bytes as they
    are: only the input's type changes, and every output is the original's.

    Args:
        tflite: A full-integer .tflite whose one input is int8 ``[1, H, W, 1 or 3]`` with scale 1
            and zero point -128 (raw pixels minus 128), as edge-fm exports them.
        uint8_output: Append a uint8 copy of an int8 output (``q + 128``, same scale) and make it
            the model's output. Without it the output stays int8.
        fold: Fold the luma weights into the first layer where the graph allows it; without it,
            always add the 1x1 luma convolution in front.
        bridge: How uint8 becomes int8 at the input, and int8 uint8 at the output. ``float``:
            DEQUANTIZE then QUANTIZE through float32, exact, and run by LiteRT's XNNPACK
            delegate with the rest of the graph. ``integer``: one QUANTIZE op, as the converter
            emits for a uint8 input: the file stays integer-only, but XNNPACK leaves that op to
            a plain kernel outside the delegate, a few microseconds more per call.

    Returns:
        The new model and how it was made.

    Raises:
        EdgeFMError: The bytes are not a .tflite file, or not a one-input int8 grey classifier.
    """
    if bridge not in BRIDGES:
        raise unknown_choice("bridge", bridge, BRIDGES)
    schema = tflite_file.schema
    model = _read(tflite)
    graph = _graph(model)
    grey_input = graph.tensors[graph.inputs[0]]
    channels = _check_grey_input(grey_input, schema)
    edit = _Edit(model, graph, schema, bridge)
    rgb_input = edit.quantize_input(grey_input, rgb_model=channels == CHANNELS)
    if channels == CHANNELS:  # a model of RGB data takes the bytes as they are: nothing to fold
        method, layer, clipped = RGB_MODEL, "", 0
    elif fold:
        method, layer, clipped = edit.fold_luma(grey_input, rgb_input)
    else:
        method, layer, clipped = edit.luma_conv(edit.index(grey_input), rgb_input)
    uint8_out = uint8_output and graph.tensors[graph.outputs[0]].type == schema.TensorType.INT8
    if uint8_out:
        edit.uint8_output()
    edit.drop_unused_tensors()
    # The description lists the ops and whether all are integer: read them off the finished graph.
    inspection = tflite_file.inspect(tflite_file.serialize(model))
    update_metadata(model, graph, schema, inspection)
    return RgbForm(
        tflite=tflite_file.serialize(model),
        method=method,
        layer=layer,
        clipped_weights=clipped,
        uint8_output=uint8_out,
        bridge=bridge,
    )


# ---------------------------------------------------------------- reading and checking


def _read(tflite: bytes):
    if not isinstance(tflite, (bytes, bytearray)):
        raise EdgeFMError("not a .tflite file: pass the bytes of an exported model.")
    return tflite_file.read(tflite)


def _graph(model):
    if len(model.subgraphs) != 1:
        raise EdgeFMError(
            f"the model has {len(model.subgraphs)} subgraphs; the RGB form handles one-graph classifiers."
        )
    graph = model.subgraphs[0]
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise EdgeFMError(
            f"the model has {len(graph.inputs)} inputs and {len(graph.outputs)} outputs; "
            "the RGB form handles an image classifier with one of each."
        )
    return graph


def _check_grey_input(tensor, schema) -> int:
    """The input's channels (1: grey, 3: RGB already), once checked to be edge-fm's int8 raw pixels."""
    shape = [int(v) for v in tensor.shape]
    scale, zero_point = tflite_file.quantization(tensor)
    if tensor.type != schema.TensorType.INT8 or len(shape) != 4 or shape[0] != 1 or shape[3] not in (1, 3):
        raise EdgeFMError(
            f"the model's input is {_type_name(tensor.type, schema)} {shape}; the RGB form "
            "needs an int8 image input [1, height, width, 1 or 3] (an edge-fm int8 export)."
        )
    if (scale, zero_point) != GREY_INPUT_QUANTIZATION:
        raise EdgeFMError(
            f"the model's int8 input has scale {scale} and zero point {zero_point}; the RGB form "
            "needs raw pixels (scale 1, zero point -128), as edge-fm's int8 exports take."
        )
    return shape[3]


def _type_name(code: int, schema) -> str:
    return tflite_file.type_name(code).lower()


# ---------------------------------------------------------------- the graph edit


# Ops that compute every channel alike with constant operands: they carry three channels as they
# carried one, and commute with the luma conversion (up to their own rounding).
_CHANNEL_WISE = (
    "MUL",
    "ADD",
    "SUB",
    "QUANTIZE",
    "RESIZE_BILINEAR",
    "RESIZE_NEAREST_NEIGHBOR",
    "PAD",
    "PADV2",
)
_SCALAR_OPERAND = ("MUL", "ADD", "SUB")


class _Edit(tflite_file.GraphEditor):
    """Changes one graph in place; each method is one step of :func:`rgb_form`."""

    def __init__(self, model, graph, schema, bridge: str):
        super().__init__(model, graph)
        self.schema, self.bridge = schema, bridge

    # -- the steps

    def quantize_input(self, grey_input, rgb_model: bool = False) -> int:
        """Adds the uint8 RGB input and the ops that make int8 of it (q = pixel - 128); returns the int8 tensor.

        For a model of RGB data (``rgb_model``) the int8 tensor is its own old input.
        """
        height, width = int(grey_input.shape[1]), int(grey_input.shape[2])
        name = tflite_file.name_of(grey_input)
        grey_input.name = f"{name};int8".encode()
        rgb = self.new_tensor(
            name, grey_input, self.schema.TensorType.UINT8, [1, height, width, CHANNELS], 1.0, 0
        )
        old_index = int(self.graph.inputs[0])
        rgb_int8 = old_index
        if not rgb_model:
            rgb_int8 = self.new_tensor(
                f"{name};int8_rgb",
                grey_input,
                self.schema.TensorType.INT8,
                [1, height, width, CHANNELS],
                *GREY_INPUT_QUANTIZATION,
            )
        self.graph.operators[0:0] = self.convert(rgb, rgb_int8)
        self.graph.inputs = np.array([rgb], dtype=np.int32)
        self._retarget_signatures(old_index, rgb, is_input=True)
        return rgb_int8

    def fold_luma(self, grey_input, rgb_int8: int) -> tuple[str, str, int]:
        """Moves the luma conversion into the graph: a fold where the graph allows one, else a 1x1 conv."""
        grey_index = self.index(grey_input)
        chain = self._channel_wise_chain(grey_index)
        last = chain[-1].outputs[0] if chain else grey_index
        after = self.consumers(last)
        if len(after) == 1:
            op, name = after[0], self.op_name(after[0])
            if name == "CONV_2D" and self._kernel_channels(op) == 1:
                return self._fold_conv(rgb_int8, chain, op)
            if name == "RESHAPE":
                dense = self.consumers(op.outputs[0])
                if len(dense) == 1 and self.op_name(dense[0]) == "FULLY_CONNECTED":
                    found = self._fold_dense(rgb_int8, chain, op, dense[0])
                    if found:
                        return found
            if name == "CONCATENATION" and self._is_channel_repeat(op, last):
                conv = self.consumers(op.outputs[0])
                if (
                    len(conv) == 1
                    and self.op_name(conv[0]) == "CONV_2D"
                    and self._kernel_channels(conv[0]) == CHANNELS
                ):
                    return self._drop_repeat(rgb_int8, chain, op, conv[0])
        return self.luma_conv(grey_index, rgb_int8)

    def _channel_wise_chain(self, start: int) -> list:
        chain, current = [], start
        while True:
            users = self.consumers(current)
            if len(users) != 1 or current in list(self.graph.outputs):
                return chain
            op = users[0]
            if self.op_name(op) not in _CHANNEL_WISE or int(op.inputs[0]) != current or len(op.outputs) != 1:
                return chain
            others = [int(i) for i in op.inputs[1:] if i >= 0]
            if any(self.constant(i) is None for i in others):
                return chain
            if self.op_name(op) in _SCALAR_OPERAND and any(
                int(np.prod(self.graph.tensors[i].shape)) != 1 for i in others
            ):
                return chain
            chain.append(op)
            current = int(op.outputs[0])

    def _kernel_channels(self, op) -> int:
        return int(self.graph.tensors[op.inputs[1]].shape[-1])

    def _is_channel_repeat(self, op, source: int) -> bool:
        axis = op.builtinOptions.axis
        rank = len(self.graph.tensors[source].shape)
        return (
            len(op.inputs) == CHANNELS and all(int(i) == source for i in op.inputs) and axis in (rank - 1, -1)
        )

    def _widen(self, chain, rgb_int8: int) -> None:
        """Feeds the chain of channel-wise ops three channels instead of one."""
        if chain:
            chain[0].inputs[0] = rgb_int8
        for op in chain:
            self._set_channels(int(op.outputs[0]), CHANNELS)

    def _set_channels(self, tensor_index: int, channels: int) -> None:
        tensor = self.graph.tensors[tensor_index]
        tensor.shape = np.array([*tensor.shape[:-1], channels], dtype=np.int32)
        if tensor.shapeSignature is not None:
            tensor.shapeSignature = np.array([*tensor.shapeSignature[:-1], channels], dtype=np.int32)

    def _int8_weights(self, tensor_index: int) -> np.ndarray:
        tensor = self.graph.tensors[tensor_index]
        if tensor.type != self.schema.TensorType.INT8 or self.constant(tensor_index) is None:
            raise EdgeFMError(
                "the model's first layer has no constant int8 weights; the RGB form needs a full-integer export."
            )
        return self.constant(tensor_index).view(np.int8).reshape([int(v) for v in tensor.shape])

    def _fold_conv(self, rgb_int8, chain, conv) -> tuple[str, str, int]:
        kernel = self._int8_weights(int(conv.inputs[1]))  # [out, kh, kw, 1]
        shares, clipped = split_by_luma(kernel[..., 0])
        self.set_constant(int(conv.inputs[1]), shares.astype(np.int8))
        self._widen(chain, rgb_int8)
        if not chain:
            conv.inputs[0] = rgb_int8
        return FOLD_CONV, tflite_file.name_of(self.graph.tensors[conv.inputs[1]]), clipped

    def _fold_dense(self, rgb_int8, chain, reshape, dense) -> tuple[str, str, int] | None:
        flat = self.graph.tensors[reshape.outputs[0]]
        source = self.graph.tensors[reshape.inputs[0]]
        pixels = int(np.prod(source.shape[1:]))
        weights = self._int8_weights(int(dense.inputs[1]))  # [out, pixels]
        if (
            list(flat.shape) != [1, pixels]
            or weights.shape[1] != pixels
            or dense.builtinOptions.weightsFormat != 0
        ):
            return None
        shares, clipped = split_by_luma(weights)  # [out, pixels, 3]: channels interleaved, as NHWC flattens
        self.set_constant(
            int(dense.inputs[1]), shares.reshape(weights.shape[0], pixels * CHANNELS).astype(np.int8)
        )
        self._widen(chain, rgb_int8)
        if not chain:
            reshape.inputs[0] = rgb_int8
        self._set_channels(int(reshape.outputs[0]), pixels * CHANNELS)
        if len(reshape.inputs) > 1 and reshape.inputs[1] >= 0:
            shape_index = self.new_tensor(
                f"{tflite_file.name_of(flat)}/rgb_shape",
                None,
                self.schema.TensorType.INT32,
                [2],
                1.0,
                0,
                data=np.array([-1, pixels * CHANNELS], dtype=np.int32),
            )
            self.graph.tensors[shape_index].quantization = None
            reshape.inputs[1] = shape_index
        if (
            reshape.builtinOptions is not None
            and getattr(reshape.builtinOptions, "newShape", None) is not None
        ):
            reshape.builtinOptions.newShape = np.array([-1, pixels * CHANNELS], dtype=np.int32)
        return FOLD_DENSE, tflite_file.name_of(self.graph.tensors[dense.inputs[1]]), clipped

    def _drop_repeat(self, rgb_int8, chain, concat, conv) -> tuple[str, str, int]:
        kernel = self._int8_weights(int(conv.inputs[1]))  # [out, kh, kw, 3], each channel saw the same grey
        shares, clipped = split_by_luma(kernel.astype(np.int32).sum(axis=-1))
        self.set_constant(int(conv.inputs[1]), shares.astype(np.int8))
        self._widen(chain, rgb_int8)
        conv.inputs[0] = int(chain[-1].outputs[0]) if chain else rgb_int8
        self.graph.operators.remove(concat)
        return DROP_REPEAT, tflite_file.name_of(self.graph.tensors[conv.inputs[1]]), clipped

    def luma_conv(self, grey_index, rgb_int8) -> tuple[str, str, int]:
        """A 1x1 int8 convolution RGB -> grey whose weights sum to LUMA_CONV_SUM and whose weight
        scale is its inverse: on equal channels it returns its input, so the old int8 grey input."""
        weights, _ = split_by_luma(np.array([LUMA_CONV_SUM]), limit=INT8_WEIGHT_LIMIT)
        name = f"{tflite_file.name_of(self.graph.tensors[grey_index])};luma"
        scale = 1.0 / LUMA_CONV_SUM
        kernel = self.new_tensor(
            f"{name}/kernel",
            None,
            self.schema.TensorType.INT8,
            [1, 1, 1, CHANNELS],
            scale,
            0,
            data=weights.reshape(1, 1, 1, CHANNELS).astype(np.int8),
        )
        bias = self.new_tensor(
            f"{name}/bias",
            None,
            self.schema.TensorType.INT32,
            [1],
            scale * GREY_INPUT_QUANTIZATION[0],
            0,
            data=np.zeros(1, dtype=np.int32),
        )
        options = self.schema.Conv2DOptionsT()
        options.padding, options.strideW, options.strideH = self.schema.Padding.VALID, 1, 1
        options.dilationWFactor, options.dilationHFactor = 1, 1
        options.fusedActivationFunction = self.schema.ActivationFunctionType.NONE
        conv = self.new_op(
            "CONV_2D",
            3,
            [rgb_int8, kernel, bias],
            [grey_index],
            self.schema.BuiltinOptions.Conv2DOptions,
            options,
        )
        # Ops run in list order: right after the op that makes its input.
        made_by = next(i for i, op in enumerate(self.graph.operators) if rgb_int8 in list(op.outputs))
        self.graph.operators.insert(made_by + 1, conv)
        return LUMA_CONV, name, 0

    def uint8_output(self) -> None:
        """Appends QUANTIZE int8 -> uint8 with the same scale and zero point + 128: q_u8 = q_i8 + 128."""
        old_index = int(self.graph.outputs[0])
        old = self.graph.tensors[old_index]
        scale, zero_point = tflite_file.quantization(old)
        name = tflite_file.name_of(old)
        old.name = f"{name};int8".encode()
        new = self.new_tensor(
            name, old, self.schema.TensorType.UINT8, [int(v) for v in old.shape], scale, zero_point + 128
        )
        self.graph.operators.extend(self.convert(old_index, new))
        self.graph.outputs = np.array([new], dtype=np.int32)
        self._retarget_signatures(old_index, new, is_input=False)

    def convert(self, source: int, target: int) -> list:
        """Ops that requantize ``source`` into ``target``, of another integer type, through the bridge."""
        if self.bridge == INTEGER_BRIDGE:
            return [self._quantize_op("QUANTIZE", source, target)]
        like = self.graph.tensors[source]
        real = self.new_tensor(
            f"{tflite_file.name_of(like)};float",
            like,
            self.schema.TensorType.FLOAT32,
            [int(v) for v in like.shape],
            1.0,
            0,
        )
        self.graph.tensors[real].quantization = None
        return [self._quantize_op("DEQUANTIZE", source, real), self._quantize_op("QUANTIZE", real, target)]

    def _quantize_op(self, kind: str, source: int, target: int):
        """A QUANTIZE or DEQUANTIZE op from tensor ``source`` to tensor ``target`` (empty options)."""
        options = {"QUANTIZE": "QuantizeOptions", "DEQUANTIZE": "DequantizeOptions"}[kind]
        return self.new_op(
            kind,
            1,
            [source],
            [target],
            getattr(self.schema.BuiltinOptions, options),
            getattr(self.schema, f"{options}T")(),
        )

    def _retarget_signatures(self, old: int, new: int, *, is_input: bool) -> None:
        for signature in self.model.signatureDefs or []:
            for entry in (signature.inputs if is_input else signature.outputs) or []:
                if entry.tensorIndex == old:
                    entry.tensorIndex = new
