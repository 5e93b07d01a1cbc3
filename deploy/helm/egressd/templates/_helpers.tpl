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

{{/* Fails when config.httpAddr is reachable from other hosts and no token is set. */}}
{{- define "egressd.checkHTTPAddr" -}}
{{- $host := splitList ":" .Values.config.httpAddr | initial | join ":" | trimPrefix "[" | trimSuffix "]" -}}
{{- if and (not .Values.config.httpTokenSecret) (not (or (hasPrefix "127." $host) (eq $host "::1") (eq $host "localhost"))) -}}
{{- fail (printf "config.httpAddr %s is not a loopback address: set config.httpTokenSecret (a Secret with key token), or /status and /metrics would be open to other hosts (the agent refuses to start so)" .Values.config.httpAddr) -}}
{{- end -}}
{{- end -}}
