#!/usr/bin/env bash
# Part segmentation with one model per category, the protocol of
# BiPointNet's ShapeNet part results (its code trains one network per
# category, without the one-hot category): full precision, plain BNN and
# BiPointNet on each category of the embedded synthetic parts, through
# segmentation_synthetic.sh (same options, resumable). PointNet's head
# reads every per-point layer, as the paper's does. The table goes to
# benchmarks/results/.
#
#   bash benchmarks/segmentation_per_category.sh
#   CATEGORIES="chair rocket" METHODS="bnn bipointnet" MODELS=dgcnn \
#     bash benchmarks/segmentation_per_category.sh
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS="${EPOCHS:-30}"
PER_CATEGORY="${PER_CATEGORY:-80}"
export EPOCHS PER_CATEGORY
export RUNS="${RUNS:-../runs/segcat_e${EPOCHS}_c${PER_CATEGORY}}"
ALL="table chair lamp mug airplane rocket"
for model in ${MODELS:-pointnet}; do
  for category in ${CATEGORIES:-$ALL}; do
    tag="$category" extra=""
    if [ "$model" = pointnet ]; then  # Its head reads every layer.
      tag="all_$category" extra='--model-kwargs={"local_features":"all"}'
    fi
    MODELS="$model" TAG="$tag" TABLE=0 EXTRA="--categories $category $extra" \
      bash benchmarks/segmentation_synthetic.sh
  done
done
# The table holds every started run of this protocol in $RUNS.
folders=()
for prefix in pointnet-all_ pointnet2- dgcnn-; do
  for category in $ALL; do
    for method in fp bnn bipointnet ${METHODS:-}; do
      out="$RUNS/${prefix}${category}_${method}"
      [ -f "$out/results.json" ] && \
        [[ ! " ${folders[*]:-} " == *" $out "* ]] && folders+=("$out")
    done
  done
done
"${PYTHON:-python3}" benchmarks/segmentation_table.py "${folders[@]}" \
  --out "benchmarks/results/segmentation_per_category_e${EPOCHS}_c${PER_CATEGORY}"
