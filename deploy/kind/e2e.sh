#!/usr/bin/env bash
# Opt-in end-to-end run on kind, for machines with a container engine (not part of CI):
# build the image, create a kind cluster (deploy/kind/cluster.yaml), load the image,
# install the chart with a simulated inventory for the two workers, apply the example
# workloads in deploy/examples/, wait for them and print where they landed and which
# limits their containers got.
#
#   deploy/kind/e2e.sh              # everything, then delete the cluster
#   KEEP=1 deploy/kind/e2e.sh       # leave the cluster running
#
# Needs: docker (or podman with KIND_EXPERIMENTAL_PROVIDER=podman), kind >= 0.27,
# kubectl, helm (`vgpu-dra build-helm` prints a path to one). Settings (env):
#   CLUSTER   kind cluster name          (vgpu-dra)
#   NODE_IMAGE kind node image           (kindest/node:v1.36.1)
#   IMAGE     image to build and load    (ghcr.io/vgpu-dra/vgpu-dra:e2e)
#   HELM      helm binary                (helm on PATH)
#   TIMEOUT   wait timeout               (300s)
set -euo pipefail
cd "$(dirname "$0")/../.."

CLUSTER=${CLUSTER:-vgpu-dra}
NODE_IMAGE=${NODE_IMAGE:-kindest/node:v1.36.1}
IMAGE=${IMAGE:-ghcr.io/vgpu-dra/vgpu-dra:e2e}
HELM=${HELM:-helm}
TIMEOUT=${TIMEOUT:-300s}
KEEP=${KEEP:-0}
ENGINE=${KIND_EXPERIMENTAL_PROVIDER:-docker}
NS=vgpu-dra

step() { printf '\n== %s\n' "$*"; }
need() { command -v "$1" >/dev/null || { echo "e2e: '$1' not found ($2)" >&2; exit 2; }; }
need "$ENGINE" "a container engine is required for the kind e2e"
need kind "https://kind.sigs.k8s.io"
need kubectl "any kubectl within one minor of the node image"
need "$HELM" "or set HELM=\$(vgpu-dra build-helm)"

WORK=$(mktemp -d)
cleanup() {
  rm -rf "$WORK"
  if [ "$KEEP" != 1 ]; then
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  else
    echo "cluster kept: kubectl --context kind-$CLUSTER ..."
  fi
}
trap cleanup EXIT

step "building $IMAGE"
"$ENGINE" build -t "$IMAGE" .

step "kind cluster $CLUSTER ($NODE_IMAGE)"
if ! kind get clusters | grep -qx "$CLUSTER"; then
  kind create cluster --name "$CLUSTER" --image "$NODE_IMAGE" --config deploy/kind/cluster.yaml
fi
CTX="kind-$CLUSTER"
k() { kubectl --context "$CTX" "$@"; }
kind load docker-image "$IMAGE" --name "$CLUSTER"

step "simulated inventory for the workers"
mapfile -t WORKERS < <(k get nodes -l vgpu-dra.io/simulated-gpus=true -o name | sed 's|node/||' | sort)
[ "${#WORKERS[@]}" -ge 2 ] || { echo "e2e: expected 2 labelled workers" >&2; exit 1; }
# The demo's cluster (vgpu_dra/dev/data/demo-cluster.yaml: the examples are written for
# it) describes gpu-node-1 and gpu-node-2: rename them.
sed -e "s/name: gpu-node-1$/name: ${WORKERS[0]}/" -e "s/name: gpu-node-2$/name: ${WORKERS[1]}/" \
  vgpu_dra/dev/data/demo-cluster.yaml > "$WORK/inventory.yaml"
grep -q "${WORKERS[0]}" "$WORK/inventory.yaml"

step "helm install"
"$HELM" upgrade --install vgpu-dra deploy/helm/vgpu-dra --kube-context "$CTX" \
  --namespace "$NS" --create-namespace \
  --set image.repository="${IMAGE%:*}" --set image.tag="${IMAGE##*:}" \
  --set image.pullPolicy=Never \
  --set kubeletPlugin.discovery=simulated \
  --set-file simulatedInventory="$WORK/inventory.yaml" \
  --wait --timeout "$TIMEOUT"
k -n "$NS" rollout status daemonset/vgpu-dra-node-agent --timeout "$TIMEOUT"
k -n "$NS" rollout status deployment/vgpu-dra-webhook --timeout "$TIMEOUT"

step "waiting for ResourceSlices of both workers"
for node in "${WORKERS[@]}"; do
  deadline=$((SECONDS + ${TIMEOUT%s}))
  until k get resourceslices --field-selector "spec.nodeName=$node" -o name | grep -q .; do
    [ $SECONDS -lt $deadline ] || { echo "e2e: no ResourceSlice for $node" >&2; exit 1; }
    sleep 2   # poll with a deadline: slice names are not known in advance
  done
done
k get resourceslices -o wide

step "example workloads (deploy/examples)"
applied=()
for f in deploy/examples/*.yaml; do
  grep -q '^kind: SimulatedInventory' "$f" && continue   # the node agent's input, not an object
  echo "applying $f"
  k apply -f "$f"
  applied+=("$f")
done
[ "${#applied[@]}" -gt 0 ] || echo "(no workloads in deploy/examples yet)"
namespaces=()
for f in "${applied[@]}"; do
  # custom-columns works for one object and for a list; cluster-scoped ones print <none>
  while read -r ns; do namespaces+=("$ns"); done \
    < <(k get -f "$f" -o custom-columns=NS:.metadata.namespace --no-headers)
done
mapfile -t namespaces < <(printf '%s\n' "${namespaces[@]}" | grep -vx -e '' -e '<none>' | sort -u)
for ns in "${namespaces[@]}"; do
  for d in $(k -n "$ns" get deployments -o name); do
    k -n "$ns" rollout status "$d" --timeout "$TIMEOUT"
  done
  if k -n "$ns" get pods -o name | grep -q .; then
    # Pods labelled vgpu-dra.io/expected=pending stay pending on purpose (too big).
    k -n "$ns" wait --for=condition=Ready pods -l 'vgpu-dra.io/expected!=pending' \
      --timeout "$TIMEOUT"
  fi
done

step "result"
for ns in "${namespaces[@]}"; do
  k -n "$ns" get pods -o wide
  k -n "$ns" get resourceclaims -o wide 2>/dev/null || true
  for pod in $(k -n "$ns" get pods -o name); do
    echo "--- $ns/${pod#pod/}: limits seen inside the container"
    k -n "$ns" exec "${pod#pod/}" -- sh -c 'env | grep -E "^(CUDA_|NVIDIA_VISIBLE|GPU_CORE)" | sort' \
      || echo "(could not exec)"
  done
done
echo
echo "e2e: OK"
