PYTHON ?= python3

.PHONY: install test demo

install:
	bash scripts/install.sh

test: install
	$(PYTHON) -m pytest test -q

demo: install
	$(PYTHON) examples/modelnet.py --dataset synthetic --epochs 10 --out runs/demo
