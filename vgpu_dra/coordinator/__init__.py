"""Adapter: the compute coordinator (the loop, its tenant loaders, its flag), shared by
the node agent (`kubelet-plugin`) and the legacy device plugin (`device-plugin`)."""
