#!/usr/bin/env bash
# The part-segmentation comparison on the embedded synthetic parts (issue
# 21): full precision, plain BNN and BiPointNet for each backbone, the same
# protocol for all, one after the other on one thread. Run folders live
# outside the work tree; an interrupted run continues with --resume, a
# finished one is skipped. The table goes to benchmarks/results/.
#
#   bash benchmarks/segmentation_synthetic.sh   # 30 epochs, 40 objects a category
#   EPOCHS=10 MODELS=pointnet bash benchmarks/segmentation_synthetic.sh
#
# EXTRA adds options to every run (words without spaces) and TAG names its
# folders <model>-<TAG>_<method>; TABLE=0 skips the table (see
# segmentation_per_category.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
EPOCHS="${EPOCHS:-30}"
PER_CATEGORY="${PER_CATEGORY:-40}"
RUNS="${RUNS:-../runs/segsyn_e${EPOCHS}_c${PER_CATEGORY}}"
read -r -a extra <<< "${EXTRA:-}"
for model in ${MODELS:-pointnet pointnet2 dgcnn}; do
  for method in ${METHODS:-fp bnn bipointnet}; do
    out="$RUNS/${model}${TAG:+-$TAG}_${method}"
    if [ -f "$out/results.json" ] && "$PYTHON" -c "import json, sys; \
sys.exit(not json.load(open(sys.argv[1]))['finished'])" "$out/results.json"
    then
      continue
    fi
    "$PYTHON" examples/segmentation.py --model "$model" --method "$method" \
      --synthetic-per-category "$PER_CATEGORY" --num-points 512 \
      --epochs "$EPOCHS" --batch-size 16 --lr 0.002 --threads 1 --quiet \
      ${extra[@]+"${extra[@]}"} --out "$out" --resume
  done
done
[ "${TABLE:-1}" = 0 ] && exit 0
# The table holds every run of this protocol in $RUNS, also those of
# earlier calls with other MODELS or METHODS.
folders=()
declare -A seen
for model in pointnet pointnet2 dgcnn; do
  for method in fp bnn bnn+ema bnn+lsr bipointnet ${METHODS:-}; do
    out="$RUNS/${model}_${method}"
    if [ -f "$out/results.json" ] && [ -z "${seen[$out]:-}" ]; then
      seen[$out]=1
      folders+=("$out")
    fi
  done
done
"$PYTHON" benchmarks/segmentation_table.py "${folders[@]}" \
  --out "benchmarks/results/segmentation_synthetic_e${EPOCHS}_c${PER_CATEGORY}"
