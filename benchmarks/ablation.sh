#!/bin/bash
# Ablation of BiPointNet's fixes on plain binarization (issue 18): ModelNet40,
# 512 points, 15 epochs, one cosine schedule, batch 32, Adam 1e-3, no
# augmentation, no dropout, bf16 (the default path), one thread.
cd "$(dirname "$0")/.."
for m in bnn bnn+ema bnn+lsr bipointnet fp; do
  n=abl_p512_e15_${m//+/_}
  python3 examples/modelnet.py --model pointnet --method $m --dataset modelnet40 \
    --root ../shared/data/ModelNet40 --num-points 512 --epochs 15 --batch-size 32 \
    --lr 0.001 --no-augment --model-kwargs '{"dropout": 0.0}' --threads 1 --quiet \
    --out ../runs/$n --resume > ../runs/$n.log 2>&1
done
