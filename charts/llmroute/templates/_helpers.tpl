{{- define "llmroute.name" -}}llmroute-operator{{- end -}}

{{- define "llmroute.labels" -}}
app.kubernetes.io/name: llmroute
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "llmroute.selector" -}}
app.kubernetes.io/name: llmroute
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "llmroute.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "llmroute.tlsSecret" -}}llmroute-operator-tls{{- end -}}
