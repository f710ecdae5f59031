# vgpu-dra: one image for every component (`vgpu-dra <subcommand>`) plus libvgpu.so,
# which the node agent's init container copies to the host (/usr/local/vgpu).
#
#   docker build -t ghcr.io/vgpu-dra/vgpu-dra:0.1.0 .
#
# CI has no docker and no registry: `vgpu-dra build-image` builds this file unchanged with
# buildah on Debian bases made by debootstrap (LIB_BUILDER, PYTHON_IMAGE); docs/install.md.

# --- 1. libvgpu.so --------------------------------------------------------------------
# The library is preloaded into *user* containers, so it must load with their glibc,
# not ours: build it on an old glibc (manylinux2014 = glibc 2.17, gcc from devtoolset).
# Override for other architectures, e.g. --build-arg LIB_BUILDER=quay.io/pypa/manylinux2014_aarch64
ARG LIB_BUILDER=quay.io/pypa/manylinux2014_x86_64
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${LIB_BUILDER} AS libvgpu
WORKDIR /src/vgpu_hook
COPY vgpu_hook/ ./
RUN make clean && make build/libvgpu.so \
 && echo "libvgpu.so needs:" && (objdump -T build/libvgpu.so | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1)

# --- 2. the Python package as a wheel -------------------------------------------------
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY vgpu_dra/ vgpu_dra/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# --- 3. runtime -----------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.source="https://github.com/vgpu-dra/vgpu-dra" \
      org.opencontainers.image.description="Kubernetes DRA driver for shared GPUs (HAMi-compatible)" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=wheel /wheels/ /tmp/wheels/
RUN pip install --no-cache-dir /tmp/wheels/*.whl && rm -rf /tmp/wheels \
 && vgpu-dra --help > /dev/null
# Where the chart's init container copies the library from (nodeAgent.libraryInstall.sourcePath).
COPY --from=libvgpu /src/vgpu_hook/build/libvgpu.so /opt/vgpu-dra/lib/libvgpu.so
# The node agent runs privileged as root; the webhook, extender and controller run as
# 65532 (their pod securityContext), which needs nothing writable in the image.
ENTRYPOINT ["vgpu-dra"]
CMD ["--help"]
