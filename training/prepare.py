"""Inspect a config's corpora before training: what is read, what cleaning drops and why, what the splits are.

    python -m training.prepare --config training/configs/de-en.yaml [--json report.json]

Prints, per corpus: pairs read and kept, dropped pairs per rule with a few examples (file:line), length
histograms, the duplicate rate; then the sizes of the training, validation and test sets. Any bad input
(missing file, ragged row, misaligned Moses pair, invalid UTF-8, unreadable TMX, a corpus empty after
cleaning, a language the config does not know) stops with one message naming the file and line, exit 2:
the same checks ``training.train`` runs before it trains.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from training.config import load_config
from training.corpus_config import ConfigError
from training.corpus_readers import CorpusError
from training.datasets import PreparedData, prepare_data


def render(data: PreparedData, source: str, target: str) -> str:
    lines = [f"# Data for {source} -> {target}", ""]
    for name, entry in data.report["corpora"].items():
        cleaning = entry.get("cleaning")
        lines.append(f"## {name} ({entry['format']}, weight {entry['weight']}){': ' + entry['domain'] if entry['domain'] else ''}")
        if entry.get("licence"):
            lines.append(f"licence: {entry['licence']}")
        if cleaning:
            read, kept = cleaning["read"], cleaning["kept"]
            lines.append(f"pairs read {read:,}, kept {kept:,} ({100 * kept / max(read, 1):.1f}%)")
            for rule, count in cleaning["dropped"].items():
                lines.append(f"  dropped {rule:<13} {count:>7,}")
                for example in cleaning["examples"].get(rule, []):
                    lines.append(f"      {example['at']}: {example['source'][:70]!r} ||| {example['target'][:70]!r}")
            duplicates = cleaning["dropped"].get("duplicate", 0)
            lines.append(f"duplicate rate {100 * duplicates / max(read, 1):.2f}% of pairs read")
        described = entry.get("kept_pairs")
        if described:
            lines.append(f"pairs sharing their source with another pair: {described['repeated_source_pairs']:,}")
            lines.append("words per sentence   " + "  ".join(f"{b:>6}" for b in described["source_words"]))
            lines.append(f"  {source:<18} " + "  ".join(f"{n:>6,}" for n in described["source_words"].values()))
            lines.append(f"  {target:<18} " + "  ".join(f"{n:>6,}" for n in described["target_words"].values()))
        if "held_out_overlap_dropped" in entry:
            lines.append(f"training pairs dropped for sharing a sentence with a held-out set: "
                         f"{entry['held_out_overlap_dropped']:,}")
        if "train_pairs" in entry:
            lines.append(f"training pairs {entry['train_pairs']:,} (after weight: {entry['train_pairs_weighted']:,})")
        lines.append("")
    lines.append("## Splits")
    lines.extend(f"  {name:<28} {size:>8,}" for name, size in data.report["splits"].items())
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, default=Path("data/multi30k"), help="verified Multi30k cache")
    parser.add_argument("--mirror", type=Path, help="local Multi30k mirror (else $MT_MULTI30K_MIRROR, else download)")
    parser.add_argument("--json", type=Path, help="also write the full report (with every count) here")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        data = prepare_data(config.sources, config.source, config.target, config.data.cleaning_rules(),
                            args.data_dir, args.mirror)
    except (ConfigError, CorpusError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(render(data, config.source, config.target))
    if args.json:
        args.json.write_text(json.dumps(data.report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
