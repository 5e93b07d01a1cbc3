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

{{/*
Fails an install or upgrade (not helm template, which has no cluster) when the
release namespace lacks pod-security.kubernetes.io/enforce: privileged: the
agent runs with hostNetwork, a hostPath and NET_ADMIN/NET_RAW, which the
baseline and restricted Pod Security levels reject, so its pods would never be
created. Helm cannot label the namespace it creates (--create-namespace), and
the release namespace must exist before the release: create it from
deploy/namespace.yaml, or label it, first.
*/}}
{{- define "egressd.checkNamespace" -}}
{{- if .Values.podSecurity.checkNamespace -}}
{{- if lookup "v1" "Namespace" "" "kube-system" -}}
{{- $ns := lookup "v1" "Namespace" "" .Release.Namespace -}}
{{- $labels := dict -}}
{{- if $ns -}}{{- $labels = $ns.metadata.labels | default dict -}}{{- end -}}
{{- if ne (get $labels "pod-security.kubernetes.io/enforce") "privileged" -}}
{{- fail (printf "namespace %s lacks the label pod-security.kubernetes.io/enforce=privileged, without which the agent's pods (hostNetwork, hostPath, NET_ADMIN) are refused under the baseline or restricted Pod Security level. Create or label it first: kubectl create namespace %s; kubectl label namespace %s pod-security.kubernetes.io/enforce=privileged (or kubectl apply -f deploy/namespace.yaml), then install without --create-namespace. Set podSecurity.checkNamespace=false to skip this check." .Release.Namespace .Release.Namespace .Release.Namespace) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
