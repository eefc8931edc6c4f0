{{/* vim: set filetype=mustache: */}}
{{/*
Chart name, truncated to the 63 characters a DNS label allows.
*/}}
{{- define "voice-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Fully qualified app name. A release named like the chart is not repeated ("voice-gateway", not
"voice-gateway-voice-gateway").
*/}}
{{- define "voice-gateway.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "voice-gateway.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Common labels (app.kubernetes.io/* recommended labels). Usage: include "voice-gateway.labels" (dict "ctx" $ "component" "operator")
*/}}
{{- define "voice-gateway.labels" -}}
helm.sh/chart: {{ include "voice-gateway.chart" .ctx }}
{{ include "voice-gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: voice-gateway
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "voice-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "voice-gateway.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end -}}

{{- define "voice-gateway.operator.fullname" -}}
{{- printf "%s-operator" (include "voice-gateway.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "voice-gateway.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create -}}
{{- default (include "voice-gateway.operator.fullname" .) .Values.operator.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.operator.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
Image reference "registry/repository:tag" or "...@digest". Usage: include "voice-gateway.image" (dict "image" .Values.images.gateway "ctx" $)
*/}}
{{- define "voice-gateway.image" -}}
{{- $tag := .image.tag | default .ctx.Chart.AppVersion | toString -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* Name of the VoiceGateway resource this release creates. */}}
{{- define "voice-gateway.resourceName" -}}
{{- default (include "voice-gateway.fullname" .) .Values.voiceGateway.name | trunc 52 | trimSuffix "-" -}}
{{- end -}}

{{/*
Whether to render Prometheus Operator objects: "auto" renders them only when the cluster serves
monitoring.coreos.com/v1; true forces them (e.g. for `helm template` into GitOps); false never.
Usage: include "voice-gateway.monitoringEnabled" (dict "enabled" .Values.monitoring.serviceMonitor.enabled "kind" "ServiceMonitor" "ctx" $)
*/}}
{{- define "voice-gateway.monitoringEnabled" -}}
{{- $e := .enabled -}}
{{- if eq (toString $e) "true" -}}
true
{{- else if and (eq (toString $e) "auto") (.ctx.Capabilities.APIVersions.Has (printf "monitoring.coreos.com/v1/%s" .kind)) -}}
true
{{- end -}}
{{- end -}}

{{/* Namespace where dashboards go (the Grafana sidecar's namespace when it watches only its own). */}}
{{- define "voice-gateway.dashboardsNamespace" -}}
{{- default .Release.Namespace .Values.monitoring.dashboards.namespace -}}
{{- end -}}
