PYTHON ?= python3

.PHONY: install test demo

install:
	bash scripts/install.sh

test: install
	$(PYTHON) -m pytest test -q

# The main job: train BiPointNet on the embedded synthetic shapes, then
# evaluate the best checkpoint (its JSON result is the last line). Batch 16:
# with batch 32 (13 steps an epoch) the BatchNorm statistics lag behind the
# binary weights and test accuracy jumps from epoch to epoch.
demo: install
	$(PYTHON) examples/modelnet.py --dataset synthetic --method bipointnet \
		--epochs 10 --batch-size 16 --out runs/demo
	$(PYTHON) examples/modelnet.py --eval runs/demo/best.pt
