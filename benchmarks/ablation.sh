#!/bin/bash
# The paper's ablation and method comparison on binary PointNet (issue 18):
# ModelNet40, 512 points, 15 epochs, one cosine schedule, batch 32, Adam
# 1e-3, no augmentation, no dropout, bf16 (the default path), one thread.
#   bash benchmarks/ablation.sh                  # BNN, +EMA, +LSR, BiPointNet, FP
#   bash benchmarks/ablation.sh xnor xnor+ema    # any methods, in order
# Run folders and logs go to ../runs/abl_p512_e15_<method>; the table:
#   python3 benchmarks/accuracy_table.py ../runs/abl_p512_e15_* \
#     --out benchmarks/results/ablation
cd "$(dirname "$0")/.."
methods=("$@")
[ ${#methods[@]} -eq 0 ] && methods=(bnn bnn+ema bnn+lsr bipointnet fp)
for m in "${methods[@]}"; do
  n=${m//++/pp}
  n=abl_p512_e15_${n//+/_}
  python3 examples/modelnet.py --model pointnet --method $m --dataset modelnet40 \
    --root ../shared/data/ModelNet40 --num-points 512 --epochs 15 --batch-size 32 \
    --lr 0.001 --no-augment --model-kwargs '{"dropout": 0.0}' --threads 1 --quiet \
    --out ../runs/$n --resume > ../runs/$n.log 2>&1
done
