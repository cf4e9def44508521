PYTHON ?= python3

.PHONY: install test demo

install:
	bash scripts/install.sh

test: install
	$(PYTHON) -m pytest test -q

# The main job: train BiPointNet on the embedded synthetic shapes, then
# evaluate the best checkpoint (its JSON result is the last line).
demo: install
	$(PYTHON) examples/modelnet.py --dataset synthetic --method bipointnet \
		--epochs 10 --out runs/demo
	$(PYTHON) examples/modelnet.py --eval runs/demo/best.pt
