{{/*
Names are fixed ("vgpu-dra-<component>"): DeviceClasses, ClusterRoles and the webhook
configuration are cluster-scoped, so one installation per cluster is the only sane
layout, and the RBAC files in deploy/rbac/ and the tests use the same names.
*/}}

{{- define "vgpu-dra.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "vgpu-dra.labels" -}}
app.kubernetes.io/part-of: vgpu-dra
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Selector labels of one component: (dict "ctx" $ "name" "vgpu-dra-webhook") */}}
{{- define "vgpu-dra.selector" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- end -}}

{{/* "auto" unless the top-level mode forces legacy. */}}
{{- define "vgpu-dra.webhookMode" -}}
{{- if .Values.webhook.mode -}}{{ .Values.webhook.mode }}{{- else if eq .Values.mode "legacy" -}}legacy{{- else -}}auto{{- end -}}
{{- end -}}

{{/* The namespaces the webhook leaves alone: webhook.excludeNamespaces plus the release
namespace, comma-separated. The MutatingWebhookConfiguration's namespaceSelector and the
webhook's --exclude-namespaces get this same list. */}}
{{- define "vgpu-dra.webhookExcluded" -}}
{{- append .Values.webhook.excludeNamespaces .Release.Namespace | uniq | join "," -}}
{{- end -}}

{{/* The inventory ConfigMap is needed when a component runs on simulated discovery. */}}
{{- define "vgpu-dra.needsInventory" -}}
{{- if or (and .Values.kubeletPlugin.enabled (eq .Values.kubeletPlugin.discovery "simulated")) (and .Values.devicePlugin.enabled (eq .Values.devicePlugin.discovery "simulated")) .Values.controller.enabled -}}true{{- end -}}
{{- end -}}

{{/* "300s" -> "300" (the CLI takes seconds). */}}
{{- define "vgpu-dra.seconds" -}}
{{- . | toString | trimSuffix "s" -}}
{{- end -}}

{{/* apiServer as the env entries that replace the kubernetes Service's address for
in-cluster clients (client libraries and kube-scheduler read KUBERNETES_SERVICE_HOST/
PORT; an entry of the pod spec wins over the kubelet's own). Empty without
apiServer.host. One list item per line, for an `env:` list. */}}
{{- define "vgpu-dra.apiServerEnv" -}}
{{- with .Values.apiServer }}
{{- if .host }}
{{- if not .port }}{{ fail "apiServer.host needs apiServer.port" }}{{ end }}
- {name: KUBERNETES_SERVICE_HOST, value: {{ .host | quote }}}
- {name: KUBERNETES_SERVICE_PORT, value: {{ .port | toString | quote }}}
{{- end }}
{{- end }}
{{- end -}}

{{/* hostNetwork: true and the DNS policy that goes with it, for a pod spec. */}}
{{- define "vgpu-dra.hostNetwork" -}}
{{- if . }}
hostNetwork: true
dnsPolicy: ClusterFirstWithHostNet
{{- end }}
{{- end -}}

{{/* The simulated inventory as YAML text (given as an object or as text). */}}
{{- define "vgpu-dra.inventoryText" -}}
{{- if kindIs "string" .Values.simulatedInventory -}}
{{- .Values.simulatedInventory -}}
{{- else -}}
{{- toYaml .Values.simulatedInventory -}}
{{- end -}}
{{- end -}}

{{/* The NVIDIA resource names, as the flags the webhook, the extender and the device
plugin share (vgpu_dra/cli/hami.py). One list item per line, for an `args:` list. */}}
{{- define "vgpu-dra.resourceNameArgs" -}}
- --resource-name={{ .Values.resourceName }}
- --resource-mem={{ .Values.resourceMem }}
- --resource-mem-percentage={{ .Values.resourceMemPercentage }}
- --resource-cores={{ .Values.resourceCores }}
- --resource-priority={{ .Values.resourcePriority }}
{{- end -}}

{{/* Legacy mode: the vendors the extender and the device plugin serve. */}}
{{- define "vgpu-dra.vendorsArg" -}}
- --vendors={{ join "," .Values.legacyVendors }}
{{- end -}}

{{/* Legacy mode: the resources of the vendors served, for the scheduler's
managedResources, one name per line. NVIDIA's are the values above; the others are
vgpu_dra/core/hami/requests.py's DEFAULT_VENDORS (tests/integration/test_helm.py
compares them). */}}
{{- define "vgpu-dra.managedResourceNames" -}}
{{- $names := list -}}
{{- range .Values.legacyVendors -}}
{{- if eq . "nvidia" -}}
{{- $names = concat $names (list $.Values.resourceName $.Values.resourceMem $.Values.resourceCores $.Values.resourceMemPercentage $.Values.resourcePriority) -}}
{{- else if eq . "hygon" -}}
{{- $names = concat $names (list "hygon.com/dcunum" "hygon.com/dcumem" "hygon.com/dcucores") -}}
{{- else if eq . "amd" -}}
{{- $names = concat $names (list "amd.com/gpu" "amd.com/gpumem" "amd.com/gpucores") -}}
{{- end -}}
{{- end -}}
{{- range $names }}
{{- if . }}
{{ . }}
{{- end }}
{{- end -}}
{{- end -}}

{{/* Legacy mode: the users that may change a pod's scheduler-owned hami.io keys: the
extender's and the node agent's (device plugin's) service accounts, plus
webhook.annotationWriters. Comma-separated. */}}
{{- define "vgpu-dra.annotationWriters" -}}
{{- $sa := printf "system:serviceaccount:%s:" .Release.Namespace -}}
{{- concat (list (print $sa "vgpu-dra-extender") (print $sa "vgpu-dra-node-agent")) .Values.webhook.annotationWriters | uniq | join "," -}}
{{- end -}}

{{/* HAMi's filterdevices as the flags of both node plugins: cards listed by UUID or by
index are never published or used (nodeAgent.filterDevices). */}}
{{- define "vgpu-dra.filterDeviceArgs" -}}
{{- with .Values.nodeAgent.filterDevices }}
{{- if .uuid }}
- --filter-device-uuids={{ join "," .uuid }}
{{- end }}
{{- if .index }}
- --filter-device-indexes={{ join "," .index }}
{{- end }}
{{- end }}
{{- end -}}
