PYTHON ?= python3

.PHONY: install test demo

install:
	bash scripts/install.sh

test: install
	$(PYTHON) -m pytest test -q

# The main job: train PointNet full precision, BiPointNet and plain BNN side
# by side on the embedded synthetic shapes (one process each, one thread per
# process), print their test accuracy in one table, then pack the BiPointNet
# model into bits and time it against FP32 (the last line is JSON). About
# 3-4 minutes on 2 cores. Real ModelNet40 (longer):
#   python3 examples/demo.py --root ../shared/data/ModelNet40
demo: install
	$(PYTHON) examples/demo.py --dataset synthetic --epochs 80 --num-points 128 \
		--batch-size 16 --lr 0.005 --out runs/demo
