"""Where the decoder's per-slot inputs live between steps: numpy arrays, or onnxruntime OrtValues on the device.

The steppable search (``inference.search.StepSearch``) gives every beam of every active sentence a slot, a row of
the decoder batch. Each slot holds the sentence's encoder output (memory [C, W, M], keys [C, W, K], mask [C, W]) and
the beam's decoder state [C, D] (C slots, W source positions). Every step reads all of them and then replaces each
slot's state with the new state of its parent beam. The search keeps its own bookkeeping (scores, tokens, history)
in numpy and asks a ``SlotTensors`` to do the rest:

- ``ArraySlots`` keeps the tensors as numpy arrays; it serves any ``StepModel`` (PyTorch in training, onnxruntime
  on the CPU).
- ``OrtValueSlots`` keeps them as OrtValues on the decoder session's device, runs the decoder through I/O binding,
  and reorders, grows and compacts them with small ONNX graphs on the same device (``DeviceOps``). With the CUDA
  provider they never leave the GPU between steps: a newcomer's encoder output goes up once, and each step sends
  the previous tokens and parent slots up and the k best candidates per slot down (the attention only when a
  sentence asked for it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np
import onnxruntime as ort

from inference.one_node_onnx import BOOL, FLOAT, INT64, one_node_model
from inference.step_model import TOP_K_INPUT, Encoded, StepModel

if TYPE_CHECKING:
    from inference.onnx_model import OnnxGraphs

Decoded = tuple[np.ndarray, np.ndarray, object, "np.ndarray | None"]


class SlotTensors(Protocol):
    """The encoder output and decoder state of C slots, on whatever device the decoder reads them from."""

    capacity: int  # C
    width: int  # W

    def resize(self, capacity: int, width: int, template: Encoded) -> None:
        """Grow to ``capacity`` slots and ``width`` source positions (new room is zeros; the template gives the
        other dimensions when the tensors do not exist yet)."""

    def place(self, slots: np.ndarray, fresh: Encoded, owner: np.ndarray) -> None:
        """Give slot ``slots[i]`` the encoder output and initial state of newcomer ``owner[i]`` of ``fresh``."""

    def compact(self, keep: np.ndarray, width: int) -> None:
        """Keep the slots ``keep`` [N] (renumbered 0..N-1) and the first ``width`` source positions."""

    def decode(self, prev: np.ndarray, k: int, want_attention: bool) -> Decoded:
        """One decoder call over every slot: prev [C] int64 -> each slot's k best log-probs [C, k] and tokens
        [C, k] (best first, ties by the lower token), the new state (opaque: pass it to ``advance``) and the
        attention [C, W] (None when not wanted or not produced)."""

    def advance(self, new_state: object, parent_of: np.ndarray) -> None:
        """state[i] = new_state[parent_of[i]] for every slot i."""


def _is_identity(index: np.ndarray) -> bool:
    return bool((index == np.arange(len(index))).all())


class ArraySlots:
    """``SlotTensors`` as numpy arrays, for any ``StepModel``."""

    def __init__(self, model: StepModel) -> None:
        self.model = model
        self.encoded: Encoded | None = None  # memory, keys and mask of every slot; .state is the decoder state

    @property
    def capacity(self) -> int:
        return 0 if self.encoded is None else len(self.encoded.state)

    @property
    def width(self) -> int:
        return 0 if self.encoded is None else self.encoded.mask.shape[1]

    def resize(self, capacity: int, width: int, template: Encoded) -> None:
        if self.encoded is None:
            self.encoded = Encoded(*(np.zeros((0,) + a.shape[1:], a.dtype) for a in
                                     (template.memory, template.keys, template.mask, template.state)))
        rows, wider = capacity - self.capacity, width - self.width
        e = self.encoded
        pad = lambda a: np.pad(a, ((0, rows), (0, wider)) + ((0, 0),) * (a.ndim - 2))
        self.encoded = Encoded(pad(e.memory), pad(e.keys), pad(e.mask), np.pad(e.state, ((0, rows), (0, 0))))

    def place(self, slots: np.ndarray, fresh: Encoded, owner: np.ndarray) -> None:
        assert self.encoded is not None
        width = fresh.mask.shape[1]
        for name in ("memory", "keys", "mask"):
            target = getattr(self.encoded, name)
            target[slots, :width] = getattr(fresh, name)[owner]
            target[slots, width:] = 0
        self.encoded.state[slots] = fresh.state[owner]

    def compact(self, keep: np.ndarray, width: int) -> None:
        assert self.encoded is not None
        e = self.encoded
        self.encoded = Encoded(e.memory[keep, :width], e.keys[keep, :width], e.mask[keep, :width], e.state[keep])

    def decode(self, prev: np.ndarray, k: int, want_attention: bool) -> Decoded:
        """The graph's TopK finds the candidates where the model has one; otherwise one partition of the [C, V]
        log-probs does."""
        assert self.encoded is not None
        if getattr(self.model, "supports_top_k", False):
            return self.model.step_top_k(prev, self.encoded.state, self.encoded, k)  # type: ignore[attr-defined]
        log_probs, state, weights = self.model.step(prev, self.encoded.state, self.encoded)
        vocab = log_probs.shape[1]
        k = min(k, vocab)
        tokens = np.argpartition(log_probs, vocab - k, axis=1)[:, vocab - k :]
        values = np.take_along_axis(log_probs, tokens, 1)
        order = np.lexsort((tokens, -values), axis=1)
        return np.take_along_axis(values, order, 1), np.take_along_axis(tokens, order, 1), state, weights

    def advance(self, new_state: object, parent_of: np.ndarray) -> None:
        assert self.encoded is not None and isinstance(new_state, np.ndarray)
        self.encoded.state = new_state if _is_identity(parent_of) else new_state[parent_of]


# ---- on the device ---------------------------------------------------------------------------------------------

_ONNX_TYPES = {"tensor(float)": FLOAT, "tensor(bool)": BOOL, "tensor(int64)": INT64}


class DeviceOps:
    """Row gathers, scatters and zero padding of OrtValues, run as one-node ONNX graphs on the decoder's device.

    A session per (operation, element type, rank) is built on first use; they are a few kilobytes each."""

    OPSET = 17

    def __init__(self, providers: list[str], device: str) -> None:
        self.providers, self.device = providers, device
        self._sessions: dict[tuple, ort.InferenceSession] = {}
        self._options = ort.SessionOptions()
        self._options.intra_op_num_threads = 1
        self._options.add_session_config_entry("session.intra_op.allow_spinning", "0")

    def _run(self, op: str, x: ort.OrtValue, extra: list[np.ndarray], **attributes) -> ort.OrtValue:
        element, rank = _ONNX_TYPES[x.data_type()], len(x.shape())
        key = (op, element, rank, tuple(sorted(attributes.items())))
        session = self._sessions.get(key)
        if session is None:
            session = self._sessions[key] = self._session(op, element, rank, [a.ndim for a in extra], attributes)
        binding = session.io_binding()  # run_with_ort_values would copy its outputs to the CPU
        binding.bind_ortvalue_input("x", x)
        for i, array in enumerate(extra):
            binding.bind_cpu_input(f"in{i}", np.ascontiguousarray(array))
        binding.bind_output("y", self.device)
        session.run_with_iobinding(binding)
        return binding.get_outputs()[0]

    def _session(self, op: str, element: int, rank: int, extra_ranks: list[int], attributes: dict
                 ) -> ort.InferenceSession:
        model = one_node_model(op, self.input_specs(op, element, rank, extra_ranks), ("y", element, rank),
                               self.OPSET, attributes)
        return ort.InferenceSession(model, self._options, providers=self.providers)

    @staticmethod
    def input_specs(op: str, element: int, rank: int, extra_ranks: list[int]) -> list[tuple[str, int, int]]:
        """(name, element type, rank) of the graph's inputs: the data ``x``, then indices (int64) or, for
        ScatterND's updates, more data."""
        return [("x", element, rank)] + [(f"in{i}", element if op == "ScatterND" and i == 1 else INT64, extra_rank)
                                         for i, extra_rank in enumerate(extra_ranks)]

    def upload(self, array: np.ndarray) -> ort.OrtValue:
        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), self.device, 0)

    def take_rows(self, x: ort.OrtValue, rows: np.ndarray) -> ort.OrtValue:
        """x[rows]"""
        return self._run("Gather", x, [rows.astype(np.int64)], axis=0)

    def take_width(self, x: ort.OrtValue, width: int) -> ort.OrtValue:
        """x[:, :width]"""
        return self._run("Slice", x, [np.zeros(1, np.int64), np.array([width], np.int64), np.ones(1, np.int64)])

    def put_rows(self, x: ort.OrtValue, rows: np.ndarray, values: np.ndarray) -> ort.OrtValue:
        """x with x[rows] = values"""
        return self._run("ScatterND", x, [rows.astype(np.int64)[:, None], values])

    def pad(self, x: ort.OrtValue, rows: int, width: int) -> ort.OrtValue:
        """x with ``rows`` zero rows after its last and ``width`` zero columns after its last on axis 1."""
        if not rows and not width:
            return x
        rank = len(x.shape())
        after = [rows, width] + [0] * (rank - 2) if width else [rows] + [0] * (rank - 1)
        return self._run("Pad", x, [np.array([0] * rank + after, np.int64)])


# decoder input name -> its ``Encoded`` field
_ENCODED_FIELDS = {"memory": "memory", "memory_keys": "keys", "memory_mask": "mask", "state": "state"}


class OrtValueSlots:
    """``SlotTensors`` as OrtValues on the device of an onnxruntime decoder session, decoded through I/O binding.

    Only the inputs the decoder graph reads are kept (the exporter drops memory keys for dot attention)."""

    def __init__(self, graphs: OnnxGraphs) -> None:
        self.graphs = graphs
        providers = graphs.decoder.get_providers()
        self.device = "cuda" if providers[0] == "CUDAExecutionProvider" else "cpu"
        self.ops = DeviceOps(providers, self.device)
        inputs = {i.name for i in graphs.decoder.get_inputs()}
        self.names = [name for name in _ENCODED_FIELDS if name in inputs]  # decoder input names, "state" last
        self.values: dict[str, ort.OrtValue] = {}
        self.capacity = self.width = 0

    def _field(self, encoded: Encoded, name: str) -> np.ndarray:
        return getattr(encoded, _ENCODED_FIELDS[name])

    def resize(self, capacity: int, width: int, template: Encoded) -> None:
        rows, wider = capacity - self.capacity, width - self.width
        for name in self.names:
            if name in self.values:
                self.values[name] = self.ops.pad(self.values[name], rows, 0 if name == "state" else wider)
            else:
                like = self._field(template, name)
                shape = (capacity,) + like.shape[1:] if name == "state" else (capacity, width) + like.shape[2:]
                self.values[name] = self.ops.upload(np.zeros(shape, like.dtype))
        self.capacity, self.width = capacity, width

    def place(self, slots: np.ndarray, fresh: Encoded, owner: np.ndarray) -> None:
        for name in self.names:
            value = self._field(fresh, name)[owner]
            if name != "state":
                value = np.pad(value, ((0, 0), (0, self.width - value.shape[1])) + ((0, 0),) * (value.ndim - 2))
            self.values[name] = self.ops.put_rows(self.values[name], slots, value)

    def compact(self, keep: np.ndarray, width: int) -> None:
        for name in self.names:
            value = self.ops.take_rows(self.values[name], keep)
            self.values[name] = value if name == "state" else self.ops.take_width(value, width)
        self.capacity, self.width = len(keep), width

    def decode(self, prev: np.ndarray, k: int, want_attention: bool) -> Decoded:
        decoder = self.graphs.decoder
        binding = decoder.io_binding()
        binding.bind_cpu_input("prev_tokens", np.ascontiguousarray(prev, np.int64))
        binding.bind_cpu_input(TOP_K_INPUT, np.array([k], np.int64))
        for name in self.names:
            binding.bind_ortvalue_input(name, self.values[name])
        for name in self.graphs.top_k_outputs:  # the k best log-probs and tokens, new state, attention if any
            binding.bind_output(name, self.device if name in ("new_state", "attention") else "cpu")
        decoder.run_with_iobinding(binding)
        values, tokens, new_state, *attention = binding.get_outputs()
        weights = attention[0].numpy() if attention and want_attention else None
        return values.numpy(), tokens.numpy(), new_state, weights

    def advance(self, new_state: object, parent_of: np.ndarray) -> None:
        assert isinstance(new_state, ort.OrtValue)
        self.values["state"] = new_state if _is_identity(parent_of) else self.ops.take_rows(new_state, parent_of)

