"""The steppable search (inference/search.py StepSearch): equal to the closed-loop search it replaced, and a
sentence's output does not depend on which sentences join or leave the batch while it decodes."""

from __future__ import annotations

import numpy as np
import pytest
from reference_search import closed_loop_search

from inference.onnx_model import OnnxSeq2Seq
from inference.search import SearchOptions, StepSearch, pad_batch, search
from inference.one_node_onnx import BOOL, FLOAT, one_node_model
from inference.slots import ArraySlots, DeviceOps, OrtValueSlots
from inference.translator import SentenceTranslator


@pytest.fixture(scope="module", params=[False, True], ids=["numpy-slots", "ortvalue-slots"])
def model(request, tiny_model_dir) -> OnnxSeq2Seq:
    """The decoder's per-slot inputs kept as numpy arrays, and as OrtValues decoded through I/O binding (what the
    CUDA provider uses by default; on the CPU provider the same code runs, so these tests cover it)."""
    return OnnxSeq2Seq(tiny_model_dir, threads=1, io_binding=request.param)


@pytest.fixture(scope="module")
def val_sources(model, corpus_dir) -> list[list[int]]:
    from training.data import load_pairs

    translator = SentenceTranslator(model, model.tokenizer)
    return [translator.encode(s) for s, _ in load_pairs(corpus_dir, "val", "de", "en", clean=False)[:120]]


def assert_same(got, expected) -> None:
    """Equal n-best lists: the same tokens and completeness, scores, per-token log-probs and attention within
    float noise (a batch of another size may sum in another order)."""
    assert len(got) == len(expected)
    for mine, theirs in zip(got, expected):
        assert [h.tokens for h in mine] == [h.tokens for h in theirs]
        assert [h.complete for h in mine] == [h.complete for h in theirs]
        for h, g in zip(mine, theirs):
            assert h.score == pytest.approx(g.score, abs=1e-5) and h.log_prob == pytest.approx(g.log_prob, abs=1e-5)
            np.testing.assert_allclose(h.token_log_probs, g.token_log_probs, atol=1e-5)
            assert (h.attention is None) == (g.attention is None)
            if h.attention is not None:
                np.testing.assert_allclose(h.attention, g.attention, atol=1e-5)


@pytest.mark.parametrize("options", [
    SearchOptions(beam_size=1),
    SearchOptions(beam_size=5, n_best=5, return_attention=True),
    SearchOptions(beam_size=3, n_best=2, length_penalty=0.6, max_length_ratio=0.5, max_length_offset=1),
], ids=["greedy", "beam5-nbest5-attention", "beam3-capped"])
def test_the_stepped_search_equals_the_closed_loop_on_the_validation_set(model, val_sources, options):
    for start in range(0, len(val_sources), 40):
        batch = val_sources[start : start + 40]
        assert_same(search(model, batch, options), closed_loop_search(model, batch, options))


def options_for(index: int) -> SearchOptions:
    """A mix: beam sizes 1-4, n-best up to the beam, attention on every other sentence."""
    beam = 1 + index % 4
    return SearchOptions(beam_size=beam, n_best=1 + index % beam, return_attention=index % 2 == 0)


def test_output_is_the_same_whatever_joins_or_leaves_mid_decode(model, val_sources):
    sources = val_sources[:48]
    alone = [search(model, [source], options_for(i))[0] for i, source in enumerate(sources)]

    stepper, got, waiting, steps = StepSearch(model), {}, list(range(len(sources))), 0
    leavers = set(range(5, len(sources), 7))  # withdrawn after a few steps, then admitted again from scratch
    readmit: list[int] = []
    while waiting or readmit or len(stepper):
        joining, waiting = waiting[:3], waiting[3:]  # a few join at every step
        joining += readmit
        readmit = []
        stepper.admit([sources[i] for i in joining], [options_for(i) for i in joining],
                      [(i, i in leavers) for i in joining])
        steps += 1
        if steps % 4 == 0:  # withdraw the leavers that are active; they come back with a fresh tag
            active = {s.tag for s in stepper.sentences if s.tag[1]}
            if active:
                assert stepper.withdraw(active) == len(active)
                readmit = [i for i, _ in active]
                leavers -= set(readmit)
        for (index, _), hypotheses in stepper.step():
            got[index] = hypotheses
        assert stepper.rows == sum(s.options.beam_size for s in stepper.sentences)
    assert sorted(got) == list(range(len(sources)))
    assert_same([got[i] for i in range(len(sources))], alone)


def test_freed_rows_are_reused_then_compacted_away(model, val_sources):
    stepper = StepSearch(model)
    stepper.admit(val_sources[:3], [SearchOptions(beam_size=4, return_attention=True)] * 3, ["a", "b", "c"])
    stepper.step()
    assert stepper.withdraw({"b"}) == 1 and stepper.rows == 8 and stepper.capacity == 12  # b's 4 slots are free
    stepper.admit(val_sources[3:4], [SearchOptions(beam_size=2)], ["d"])
    assert stepper.capacity == 12 and len(stepper.free) == 2  # d took two of them
    stepper.withdraw({"c"})
    stepper.step()  # 6 of 12 slots in use: compacted before the decoder call
    assert stepper.capacity == stepper.rows == stepper.tensors.capacity == 6
    assert stepper.withdraw({"nobody"}) == 0
    assert set(stepper.clear()) == {"a", "d"} and stepper.rows == stepper.capacity == 0 and stepper.step() == []


def test_the_graph_top_k_and_the_numpy_fallback_rank_alike(model, val_sources, tiny_model_dir, tmp_path):
    from training.top_k_graph import add_top_k

    assert model.supports_top_k and not add_top_k(tiny_model_dir / "decoder.onnx")  # export added it already
    sources = val_sources[:24]
    src_encoded = model.encode(*pad_batch(sources))
    prev = np.full(len(sources), model.bos_id, np.int64)
    log_probs, _, _ = model.step(prev, src_encoded.state, src_encoded)
    values, tokens, _, _ = model.step_top_k(prev, src_encoded.state, src_encoded, 6)
    np.testing.assert_array_equal(values, -np.sort(-log_probs, axis=1)[:, :6])
    np.testing.assert_array_equal(np.take_along_axis(log_probs, tokens, 1), values)

    options = SearchOptions(beam_size=4, n_best=2, return_attention=True)
    with_graph = search(model, sources, options)
    model.supports_top_k = False  # graphs exported before the TopK: the search partitions the log-probs itself
    try:
        assert_same(search(model, sources, options), with_graph)
    finally:
        model.supports_top_k = True


def test_ortvalue_slots_keep_the_decoder_inputs_on_the_device_through_growth_and_compaction(tiny_model_dir):
    model = OnnxSeq2Seq(tiny_model_dir, threads=1, io_binding=True)
    translator = SentenceTranslator(model, model.tokenizer)
    sources = [translator.encode(s) for s in ["Ein Hund.", "Zwei Männer spielen Fußball auf einer großen Wiese.",
                                              "Eine Frau liest ein Buch."]]
    stepper = StepSearch(model)
    assert isinstance(stepper.tensors, OrtValueSlots)

    def shapes() -> dict[str, tuple[int, ...]]:
        values = stepper.tensors.values
        assert all(value.device_name() == "cpu" for value in values.values())  # "cuda" with the CUDA provider
        return {name: tuple(value.shape()[:2]) for name, value in values.items()}

    stepper.admit(sources, [SearchOptions(beam_size=4)] * 3, ["a", "b", "c"])
    longest, state_size = max(map(len, sources)), model.encode(*pad_batch(sources)).state.shape[1]
    assert shapes() == {"memory": (12, longest), "memory_keys": (12, longest), "memory_mask": (12, longest),
                        "state": (12, state_size)}
    stepper.step()
    stepper.withdraw({"b", "c"})
    stepper.step()  # 4 of 12 slots in use: compacted to a's slots and a's source length
    assert {name: shape[0] for name, shape in shapes().items()} == dict.fromkeys(shapes(), 4)
    assert shapes()["memory"][1] == len(sources[0])

    model.supports_top_k = False  # graphs exported before the TopK: the search keeps numpy arrays
    try:
        assert isinstance(StepSearch(model).tensors, ArraySlots)
    finally:
        model.supports_top_k = True


@pytest.mark.parametrize("op,element,rank,attributes", [
    ("Gather", FLOAT, 3, {"axis": 0}), ("Slice", BOOL, 2, {}), ("ScatterND", FLOAT, 2, {}), ("Pad", BOOL, 2, {})])
def test_the_one_node_graphs_are_valid_onnx(op, element, rank, attributes):
    import onnx

    extra = {"Gather": [1], "Slice": [1, 1, 1], "ScatterND": [2, rank], "Pad": [1]}[op]
    inputs = DeviceOps.input_specs(op, element, rank, extra)
    model = onnx.load_from_string(one_node_model(op, inputs, ("y", element, rank), DeviceOps.OPSET, attributes))
    onnx.checker.check_model(model, full_check=True)
    (node,) = model.graph.node
    assert (node.op_type, list(node.input), list(node.output)) == (op, [name for name, _, _ in inputs], ["y"])
    assert {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute} == attributes
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [e for _, e, _ in inputs]
    assert [len(i.type.tensor_type.shape.dim) for i in model.graph.input] == [r for _, _, r in inputs]
