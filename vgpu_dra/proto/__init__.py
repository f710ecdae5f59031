"""Vendored kubelet plugin .proto files and their generated stubs (see README.md)."""
