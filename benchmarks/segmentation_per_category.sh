#!/usr/bin/env bash
# Part segmentation with one model per category, the protocol of
# BiPointNet's ShapeNet part results (its code trains one network per
# category, without the one-hot category): full precision, plain BNN and
# BiPointNet on each category of the embedded synthetic parts, PointNet
# with every per-point layer in its head, through
# segmentation_synthetic.sh (same options, resumable). The table goes to
# benchmarks/results/.
#
#   bash benchmarks/segmentation_per_category.sh
#   CATEGORIES="chair rocket" METHODS="bnn bipointnet" bash benchmarks/segmentation_per_category.sh
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS="${EPOCHS:-30}"
PER_CATEGORY="${PER_CATEGORY:-80}"
export EPOCHS PER_CATEGORY
export RUNS="${RUNS:-../runs/segcat_e${EPOCHS}_c${PER_CATEGORY}}"
ALL="table chair lamp mug airplane rocket"
for category in ${CATEGORIES:-$ALL}; do
  MODELS=pointnet TAG="all_$category" TABLE=0 EXTRA="--categories \
$category --model-kwargs={\"local_features\":\"all\"}" \
    bash benchmarks/segmentation_synthetic.sh
done
# The table holds every started run of this protocol in $RUNS.
folders=()
for category in $ALL; do
  for method in fp bnn bipointnet ${METHODS:-}; do
    out="$RUNS/pointnet-all_${category}_${method}"
    [ -f "$out/results.json" ] && [[ ! " ${folders[*]:-} " == *" $out "* ]] \
      && folders+=("$out")
  done
done
"${PYTHON:-python3}" benchmarks/segmentation_table.py "${folders[@]}" \
  --out "benchmarks/results/segmentation_per_category_e${EPOCHS}_c${PER_CATEGORY}"
