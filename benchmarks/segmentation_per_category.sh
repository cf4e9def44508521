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
POINTNET_KWARGS='--model-kwargs={"local_features":"all"}'
for model in ${MODELS:-pointnet}; do
  for category in ${CATEGORIES:-$ALL}; do
    if [ "$model" = pointnet ]; then
      MODELS=pointnet TAG="all_$category" TABLE=0 \
        EXTRA="--categories $category $POINTNET_KWARGS" \
        bash benchmarks/segmentation_synthetic.sh
    else
      MODELS="$model" TAG="$category" TABLE=0 EXTRA="--categories $category" \
        bash benchmarks/segmentation_synthetic.sh
    fi
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
