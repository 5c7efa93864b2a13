{{/* The release's full name: the release name, unless it lacks the chart name. */}}
{{- define "agent-monitor.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels that select the pods: must not change between upgrades. */}}
{{- define "agent-monitor.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "agent-monitor.labels" -}}
{{ include "agent-monitor.selectorLabels" . }}
app.kubernetes.io/part-of: {{ .Chart.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "agent-monitor.serviceAccountName" -}}
{{- default (include "agent-monitor.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "agent-monitor.priorityClassName" -}}
{{- default (include "agent-monitor.fullname" .) .Values.priorityClass.name -}}
{{- end -}}
