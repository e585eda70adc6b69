{{/*
The chart's name, truncated to 63 characters (the limit of a DNS label and a label value).
*/}}
{{- define "kvscale.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every object's name: the release name, with the chart name appended unless the
release name already contains it; truncated to 63 characters.
*/}}
{{- define "kvscale.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
A name with a suffix, still within 63 characters: the prefix is shortened, the suffix kept.
*/}}
{{- define "kvscale.suffixed" -}}
{{- $suffix := index . 1 }}
{{- $prefix := include "kvscale.fullname" (index . 0) | trunc (int (sub 62 (len $suffix))) | trimSuffix "-" }}
{{- printf "%s-%s" $prefix $suffix }}
{{- end }}

{{- define "kvscale.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Standard labels on every object the chart makes.
*/}}
{{- define "kvscale.labels" -}}
helm.sh/chart: {{ include "kvscale.chart" . }}
{{ include "kvscale.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kvscale
{{- end }}

{{/*
The operator pods' selector: stable across upgrades (a Deployment's selector is immutable).
*/}}
{{- define "kvscale.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kvscale.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "kvscale.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kvscale.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "kvscale.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "kvscale.metricsServiceName" -}}
{{- include "kvscale.suffixed" (list . "metrics") }}
{{- end }}

{{/*
The Prometheus series selector of this release's operator: the ServiceMonitor's job is the
metrics Service's name, in the release's namespace.
*/}}
{{- define "kvscale.operatorSeries" -}}
job="{{ include "kvscale.metricsServiceName" . }}", namespace="{{ .Release.Namespace }}"
{{- end }}

{{/*
Labels of the engine pods the operator renders (operator/kvscale_operator/reconciler/render.py).
*/}}
{{- define "kvscale.enginePodLabels" -}}
app.kubernetes.io/name: kvscale-engine
app.kubernetes.io/managed-by: kvscale
{{- end }}

{{/*
Whether the cluster serves a monitoring.coreos.com/v1 kind: `helm template` learns it from
`--api-versions monitoring.coreos.com/v1/<Kind>`, `helm install` from the API server.
*/}}
{{- define "kvscale.hasMonitoring" -}}
{{- $root := index . 0 }}
{{- if $root.Capabilities.APIVersions.Has (printf "monitoring.coreos.com/v1/%s" (index . 1)) }}true{{ end }}
{{- end }}

{{/*
The namespaces whose engine pods a NetworkPolicy protects.
*/}}
{{- define "kvscale.networkPolicyNamespaces" -}}
{{- $namespaces := .Values.networkPolicy.namespaces | default .Values.operator.watchNamespaces }}
{{- if not $namespaces }}
{{- fail "networkPolicy.namespaces: list the namespaces of the engine pods to protect (NetworkPolicies are namespaced), or set operator.watchNamespaces" }}
{{- end }}
{{- toJson $namespaces }}
{{- end }}
