"""Give an exported decoder-step graph a TopK output: each row's best tokens, sorted, computed by onnxruntime.

    python -m training.top_k_graph models/de-en [models/en-de ...]   # upgrade exported model directories in place

With it the service's search reads [rows, k] best log-probs and tokens instead of the [rows, V] log-probs, and
finds them in onnxruntime's TopK rather than in a numpy partition over the vocabulary (the largest share of the
search's Python time). ``training.export`` adds it to every graph it writes; this command upgrades directories
exported before, leaving their weights untouched and refreshing the card's checksums. The input ``top_k``
(int64 [1]) chooses k per call; ``log_probs`` stays an output, so older callers keep working.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import onnx
from onnx import TensorProto, helper

from inference.card import GraphSignature, read_card, write_card
from inference.step_model import DECODER_INPUTS, DECODER_OUTPUTS, TOP_K_INPUT, TOP_K_OUTPUTS

log = logging.getLogger("training.top_k_graph")


def add_top_k(path: Path) -> bool:
    """Add the ``top_k`` input and the TopK outputs to the decoder graph at ``path``; False if it has them."""
    model = onnx.load(str(path))
    graph = model.graph
    if any(output.name == TOP_K_OUTPUTS[0] for output in graph.output):
        return False
    graph.input.append(helper.make_tensor_value_info(TOP_K_INPUT, TensorProto.INT64, [1]))
    # ONNX TopK breaks ties by the lower index, as the search's own ranking does.
    graph.node.append(helper.make_node("TopK", ["log_probs", TOP_K_INPUT], TOP_K_OUTPUTS, name="top_k", axis=1,
                                       largest=1, sorted=1))
    graph.output.extend([helper.make_tensor_value_info(TOP_K_OUTPUTS[0], TensorProto.FLOAT, ["batch", "k"]),
                         helper.make_tensor_value_info(TOP_K_OUTPUTS[1], TensorProto.INT64, ["batch", "k"])])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return True


def upgrade(model_dir: Path) -> list[str]:
    """Add the TopK to every decoder graph of an exported model directory; returns the files changed."""
    card = read_card(model_dir)
    changed = [name for name in (card.files.decoder, card.files.decoder_int8)
               if name is not None and add_top_k(model_dir / name)]
    decoder = GraphSignature(inputs=DECODER_INPUTS + [TOP_K_INPUT], outputs=DECODER_OUTPUTS + TOP_K_OUTPUTS)
    write_card(model_dir, card.with_sections(graphs=card.graphs.model_copy(update={"decoder": decoder})))
    return changed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dirs", type=Path, nargs="+")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for model_dir in args.model_dirs:
        changed = upgrade(model_dir)
        log.info("%s: %s", model_dir, f"added TopK to {', '.join(changed)}" if changed else "already had TopK")


if __name__ == "__main__":
    main()
