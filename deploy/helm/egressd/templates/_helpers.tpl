{{- define "egressd.labels" -}}
app.kubernetes.io/name: egressd
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}
{{- define "egressd.selector" -}}
app.kubernetes.io/name: egressd
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{- define "egressd.httpPort" -}}
{{- splitList ":" .Values.config.httpAddr | last -}}
{{- end -}}
