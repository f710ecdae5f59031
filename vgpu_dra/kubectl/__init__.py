"""`kubectl vgpu`: a kubectl plugin (console script `kubectl-vgpu`) answering "who is
on this card?" (`cards`) and "why is my pod pending?" (`explain`). A process of its
own: flags and wiring in app.py, reads in cluster.py, decisions in core.occupancy and
core.explain, text/JSON/YAML in render.py."""
