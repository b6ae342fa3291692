{{/* Chart name, truncated to the 63 characters Kubernetes names allow. */}}
{{- define "sonovec.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name; the release name when it already contains the chart name. */}}
{{- define "sonovec.fullname" -}}
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

{{- define "sonovec.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sonovec.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sonovec.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "sonovec.labels" -}}
helm.sh/chart: {{ include "sonovec.chart" . }}
{{ include "sonovec.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The server pods only (the bundled Redis has component=redis). */}}
{{- define "sonovec.serverSelectorLabels" -}}
{{ include "sonovec.selectorLabels" . }}
app.kubernetes.io/component: server
{{- end }}

{{- define "sonovec.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sonovec.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "sonovec.image" -}}
{{- $repo := required "image.repository is required: the registry path of your sonovec image" .Values.image.repository }}
{{- printf "%s:%s" $repo (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "sonovec.redisFullname" -}}
{{- printf "%s-redis" (include "sonovec.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Device passed to the server: cuda on GPU values unless set explicitly. */}}
{{- define "sonovec.device" -}}
{{- if and .Values.gpu.enabled (eq .Values.sonovec.device "auto") }}cuda{{ else }}{{ .Values.sonovec.device }}{{ end }}
{{- end }}

{{/* Values that cannot be combined; the schema says the same, this also guards --disable-openapi-validation. */}}
{{- define "sonovec.validate" -}}
{{- if and .Values.redis.bundled.enabled (or .Values.redis.url .Values.redis.existingSecret) }}
{{- fail "redis: set either redis.url/existingSecret (external) or redis.bundled.enabled, not both" }}
{{- end }}
{{- if and .Values.autoscaling.keda.enabled (not .Values.autoscaling.enabled) }}
{{- fail "autoscaling.keda.enabled needs autoscaling.enabled" }}
{{- end }}
{{- if and .Values.autoscaling.keda.enabled (not .Values.autoscaling.keda.serverAddress) }}
{{- fail "autoscaling.keda.serverAddress is required with autoscaling.keda.enabled" }}
{{- end }}
{{- if and .Values.gpu.enabled (eq .Values.sonovec.device "cpu") }}
{{- fail "gpu.enabled with sonovec.device=cpu would hold a GPU and not use it" }}
{{- end }}
{{- range $section := list "requests" "limits" }}
{{- range $key, $_ := (index $.Values.resources $section | default dict) }}
{{- if contains "gpu" $key }}
{{- fail (printf "resources.%s.%s: ask for GPUs with gpu.enabled/gpu.count, which sets the limit and the request together" $section $key) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
