# The two quick-start commands (README): `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv

.PHONY: demo test

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[dev]'
	touch $@

# Builds the control plane once (cached in ~/.cache/vgpu-dra), then runs the demo: node
# agents and webhook on 2 simulated nodes, deploy/examples applied, a placement summary.
# As root with runc, one node is a real kubelet + containerd (its build cached too) and
# the examples placed there really run; `DEMO_ARGS=--real-node=off` never tries.
# `make demo DEMO_ARGS=--keep` leaves it running until Ctrl-C.
demo: $(VENV)/.installed
	$(VENV)/bin/vgpu-dra demo $(DEMO_ARGS)

test:
	bash .ci/run
