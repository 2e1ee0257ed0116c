{{/* The chart's name, or nameOverride. */}}
{{- define "dragonpy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every resource name. Kept to 48 characters so that the longest
suffix ("-scheduler") and a StatefulSet's pod ordinal still fit in a DNS label.
*/}}
{{- define "dragonpy.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 48 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 48 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 48 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Kubernetes' recommended labels of one component: (dict "root" $ "component" NAME). */}}
{{- define "dragonpy.labels" -}}
{{ include "dragonpy.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Values.image.tag | default .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: dragonpy
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- end }}

{{/* The labels that select one component's pods; they never change on upgrade. */}}
{{- define "dragonpy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dragonpy.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "dragonpy.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* Where daemons and seeds reach the scheduler: its headless Service's DNS name. */}}
{{- define "dragonpy.schedulerAddress" -}}
{{ include "dragonpy.fullname" . }}-scheduler.{{ .Release.Namespace }}.svc.{{ .Values.clusterDomain }}:{{ .Values.scheduler.port }}
{{- end }}

{{/*
The upstream URL of a registry named as `dragonpy containerd-config` takes it, as
that command writes it into hosts.toml (and so as containerd names it to the
mirror): Docker Hub's API lives on registry-1.docker.io, a bare host means HTTPS.
*/}}
{{- define "dragonpy.registryURL" -}}
{{- if has . (list "docker.io" "registry-1.docker.io") }}
{{- "https://registry-1.docker.io" }}
{{- else if contains "://" . }}
{{- $url := urlParse . }}
{{- printf "%s://%s" $url.scheme $url.host }}
{{- else }}
{{- printf "https://%s" (splitList "/" . | first) }}
{{- end }}
{{- end }}

{{/* The flags every daemon and seed shares: its scheduler, store and registries. */}}
{{- define "dragonpy.peerArgs" -}}
- --scheduler
- {{ include "dragonpy.schedulerAddress" .root | quote }}
- --store
- /var/lib/dragonpy
- --store-capacity
- {{ .storeCapacity | quote }}
{{- range .root.Values.registries }}
- --registry
- {{ include "dragonpy.registryURL" . | quote }}
{{- end }}
- --log-level
- {{ .root.Values.logLevel | quote }}
{{- end }}

{{/* GET /healthy on a named port, with the probes' timings. */}}
{{- define "dragonpy.probes" -}}
livenessProbe:
  httpGet:
    path: /healthy
    port: {{ .port }}
  {{- toYaml .root.Values.probes.liveness | nindent 2 }}
readinessProbe:
  httpGet:
    path: /healthy
    port: {{ .port }}
  {{- toYaml .root.Values.probes.readiness | nindent 2 }}
{{- end }}

{{/*
A component's configuration file, from the chart's ConfigMap: (dict "root" $ "file"
NAME). The pod restarts when the ConfigMap changes, since Kubernetes sends no
SIGHUP.
*/}}
{{- define "dragonpy.configArgs" -}}
- --config
- /etc/dragonpy/{{ .file }}
{{- end }}

{{- define "dragonpy.configMount" -}}
- name: config
  mountPath: /etc/dragonpy
  readOnly: true
{{- end }}

{{- define "dragonpy.configVolume" -}}
- name: config
  configMap:
    name: {{ include "dragonpy.fullname" .root }}-config
    items:
      - key: {{ .file }}
        path: {{ .file }}
{{- end }}

{{- define "dragonpy.configChecksum" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- end }}
