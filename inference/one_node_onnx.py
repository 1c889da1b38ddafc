"""One-node ONNX models, serialized without the onnx package.

The serving images leave the onnx package out (onnxruntime reads models without it), but ``inference.slots`` needs a
few one-node graphs (Gather, Slice, ScatterND, Pad) on the decoder's device. This writes the handful of protobuf
fields such a model needs; ``tests/test_step_search.py`` checks the result with ``onnx.checker``.
"""

from __future__ import annotations

FLOAT, INT64, BOOL = 1, 7, 9  # TensorProto.DataType
_IR_VERSION = 8
_ATTRIBUTE_INT = 2  # AttributeProto.AttributeType.INT


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _int_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _bytes_field(number: int, value: bytes | str) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _tensor_value(name: str, element: int, rank: int) -> bytes:
    """ValueInfoProto: a tensor of ``element`` type and ``rank`` dimensions, each of unknown size."""
    dims = b"".join(_bytes_field(1, _bytes_field(2, f"{name}_{i}")) for i in range(rank))  # dim { dim_param }
    tensor_type = _int_field(1, element) + _bytes_field(2, dims)  # elem_type, shape
    return _bytes_field(1, name) + _bytes_field(2, _bytes_field(1, tensor_type))  # name, type { tensor_type }


def one_node_model(op: str, inputs: list[tuple[str, int, int]], output: tuple[str, int, int], opset: int,
                   int_attributes: dict[str, int] | None = None) -> bytes:
    """A ModelProto whose graph is one ``op`` node; inputs and output are (name, element type, rank)."""
    attributes = b"".join(_bytes_field(5, _bytes_field(1, key) + _int_field(3, value) + _int_field(20, _ATTRIBUTE_INT))
                          for key, value in (int_attributes or {}).items())
    node = (b"".join(_bytes_field(1, name) for name, _, _ in inputs) + _bytes_field(2, output[0])
            + _bytes_field(4, op) + attributes)
    graph = (_bytes_field(1, node) + _bytes_field(2, op)
             + b"".join(_bytes_field(11, _tensor_value(*spec)) for spec in inputs)
             + _bytes_field(12, _tensor_value(*output)))
    opset_import = _bytes_field(1, "") + _int_field(2, opset)
    return _int_field(1, _IR_VERSION) + _bytes_field(7, graph) + _bytes_field(8, opset_import)
