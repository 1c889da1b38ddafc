#!/usr/bin/env bash
# A short training run on a CUDA machine, for docs/training.md: target tokens/s (bf16 autocast, cuDNN RNNs,
# pinned batches) and the validation BLEU of the first epochs, to compare with the 2-core CPU runs of the
# same config (runs/<name>/metrics.jsonl). The machine needs PyTorch with CUDA, sentencepiece, sacrebleu,
# pyyaml, tqdm and defusedxml; no network: the corpora travel with the code.
#
#   bash scripts/gpu_training_check.sh MULTI30K_MIRROR_DIR TATOEBA_TSV_GZ [EPOCHS] [OUT_DIR]
set -euo pipefail
mirror=$1 tatoeba=$2 epochs=${3:-3} out=${4:-runs/gpu-check}
expected=../shared/data/tatoeba/deu-eng.tsv.gz  # the path training/configs/de-en.yaml names
if [ ! -e "$expected" ]; then mkdir -p "$(dirname "$expected")" && cp "$tatoeba" "$expected"; fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'bf16', torch.cuda.is_bf16_supported())"
rm -rf "$out"
python -m training.train --config training/configs/de-en.yaml --run-dir "$out" --mirror "$mirror" \
  --set train.device=cuda train.precision=auto train.epochs="$epochs" train.patience=100
python - "$out/metrics.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    print(f"epoch {r['epoch']}: {r['target_tokens_per_s']:,.0f} target tokens/s, {r['epoch_seconds']:.0f} s, "
          f"val BLEU (greedy) {r['val_bleu']:.2f}, {r['device']} {r['precision']}")
PY
