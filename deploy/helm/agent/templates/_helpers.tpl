{{/* The chart's name, and the full name of its objects. */}}
{{- define "agent.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "agent.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "agent.selectorLabels" -}}
app.kubernetes.io/name: {{ include "agent.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "agent.labels" -}}
{{ include "agent.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- define "agent.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "agent.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "agent.tokenSecret" -}}
{{- printf "%s-token" (include "agent.fullname" .) }}
{{- end }}

{{- define "agent.etcdName" -}}
{{- printf "%s-etcd" (include "agent.fullname" .) }}
{{- end }}

{{/* etcd client URLs: the given ones, or the chart's own etcd's. */}}
{{- define "agent.etcdEndpoints" -}}
{{- if .Values.etcd.endpoints }}
{{- join "," .Values.etcd.endpoints }}
{{- else }}
{{- $name := include "agent.etcdName" . }}
{{- $urls := list }}
{{- range $i := until (int .Values.etcd.deploy.replicas) }}
{{- $urls = append $urls (printf "http://%s-%d.%s-peers.%s.svc:2379" $name $i $name $.Release.Namespace) }}
{{- end }}
{{- join "," $urls }}
{{- end }}
{{- end }}


{{/* The Secret whose ca.crt signed the API certificate (api.tls). */}}
{{- define "agent.caSecret" -}}
{{- .Values.api.tls.caSecretName | default .Values.api.tls.secretName }}
{{- end }}
