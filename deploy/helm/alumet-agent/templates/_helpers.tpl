{{/* Names and labels. */}}
{{- define "alumet-agent.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "alumet-agent.fullname" -}}
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

{{- define "alumet-agent.selectorLabels" -}}
app.kubernetes.io/name: {{ include "alumet-agent.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "alumet-agent.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "alumet-agent.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: node-agent
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "alumet-agent.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "alumet-agent.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "alumet-agent.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Whether plugin NAME runs: its `enabled` key in .Values.config, else the
agent's default (influxdb, prometheus and opentelemetry are off by default).
Usage: include "alumet-agent.enabled" (list . "rapl") → "true" or "".
*/}}
{{- define "alumet-agent.enabled" -}}
{{- $root := index . 0 }}
{{- $name := index . 1 }}
{{- $plugins := (($root.Values.config | default dict).plugins | default dict) }}
{{- $section := index $plugins $name | default dict }}
{{- if hasKey $section "enabled" }}
{{- if $section.enabled }}true{{ end }}
{{- else if not (has $name (list "influxdb" "prometheus" "opentelemetry")) }}true
{{- end }}
{{- end }}

{{/* The container runs as uid 0: rapl reads energy_uj, which only root may read. */}}
{{- define "alumet-agent.runAsRoot" -}}
{{- if and (include "alumet-agent.enabled" (list . "rapl")) (eq .Values.rapl.access "root") }}true{{ end }}
{{- end }}

{{/* Pod names from the API server: RBAC and a service account token. */}}
{{- define "alumet-agent.kubernetesNames" -}}
{{- $names := ((index (.Values.config.plugins | default dict) "cgroups" | default dict).names | default dict) }}
{{- $on := ternary $names.enabled true (hasKey $names "enabled") }}
{{- if and (include "alumet-agent.enabled" (list . "cgroups")) $on (ne (toString (default "auto" $names.kubernetes)) "off") }}true{{ end }}
{{- end }}

{{/* The Prometheus endpoint listens on the pod's IP. */}}
{{- define "alumet-agent.metricsOnPodIP" -}}
{{- if and (include "alumet-agent.enabled" (list . "prometheus")) .Values.prometheus.listenOnPodIP }}true{{ end }}
{{- end }}

{{/* CAP_PERFMON for rapl's perf_event interface. */}}
{{- define "alumet-agent.perfmon" -}}
{{- $rapl := index (.Values.config.plugins | default dict) "rapl" | default dict }}
{{- if and (include "alumet-agent.enabled" (list . "rapl")) .Values.rapl.perfmon (ne (toString (default "auto" $rapl.interface)) "powercap") }}true{{ end }}
{{- end }}

{{/* Settings that cannot work together: one line naming the values. */}}
{{- define "alumet-agent.validate" -}}
{{- if and (eq .Values.rapl.access "group") (kindIs "invalid" .Values.rapl.groupId) (include "alumet-agent.enabled" (list . "rapl")) }}
{{- fail "rapl.access is \"group\" but rapl.groupId is not set: give the gid that may read energy_uj on the hosts" }}
{{- end }}
{{- if and .Values.rapl.perfmon (ne .Values.rapl.access "root") }}
{{- fail "rapl.perfmon needs rapl.access \"root\": Kubernetes puts a capability added to a non-root container in its bounding set only, where perf_event_open cannot use it" }}
{{- end }}
{{- if and .Values.prometheus.serviceMonitor.enabled .Values.prometheus.podMonitor.enabled }}
{{- fail "prometheus.serviceMonitor.enabled and prometheus.podMonitor.enabled: choose one (both would scrape every agent twice)" }}
{{- end }}
{{- if and (or .Values.prometheus.serviceMonitor.enabled .Values.prometheus.podMonitor.enabled) (not (include "alumet-agent.metricsOnPodIP" .)) }}
{{- fail "prometheus.serviceMonitor/podMonitor need config.plugins.prometheus.enabled and prometheus.listenOnPodIP (a loopback endpoint cannot be scraped)" }}
{{- end }}
{{- if and .Values.prometheus.serviceMonitor.enabled (not .Values.prometheus.service.enabled) }}
{{- fail "prometheus.serviceMonitor.enabled needs prometheus.service.enabled (it selects the Service)" }}
{{- end }}
{{- end }}

{{/* Where the host's filesystems and the secrets are mounted in the container. */}}
{{- define "alumet-agent.paths" -}}
proc: /host/proc
sys: /host/sys
cgroup: /host/sys/fs/cgroup
config: /etc/alumet
run: /run/alumet
data: /var/lib/alumet
secrets: /var/run/secrets/alumet
serviceAccount: /var/run/secrets/kubernetes.io/serviceaccount
{{- end }}

{{/*
The configuration keys the chart sets (they depend on the pod's mounts and
Secrets); merged over .Values.config.
*/}}
{{- define "alumet-agent.managedConfig" -}}
{{- $p := include "alumet-agent.paths" . | fromYaml }}
plugins:
  procfs:
    proc_root: {{ $p.proc }}
  cgroups:
    cgroup_root: {{ $p.cgroup }}
    proc_root: {{ $p.proc }}
    names:
      token_file: {{ printf "%s/token" $p.serviceAccount }}
      ca_file: {{ printf "%s/ca.crt" $p.serviceAccount }}
      node_name: ""
  rapl:
    sysfs_root: {{ $p.sys }}
    proc_root: {{ $p.proc }}
  hwmon:
    sysfs_root: {{ $p.sys }}
  {{- with .Values.redfish.passwordSecret.name }}
  redfish:
    password_file: {{ printf "%s/redfish-password/%s" $p.secrets $.Values.redfish.passwordSecret.key }}
  {{- end }}
  cpu-power-model:
    proc_root: {{ $p.proc }}
    sys_root: {{ $p.sys }}
  energy-attribution:
    proc_root: {{ $p.proc }}
  {{- if or .Values.prometheus.bearerTokenSecret.name .Values.prometheus.tlsSecret.name }}
  prometheus:
    {{- with .Values.prometheus.bearerTokenSecret.name }}
    bearer_token_file: {{ printf "%s/prometheus-token/%s" $p.secrets $.Values.prometheus.bearerTokenSecret.key }}
    {{- end }}
    {{- with .Values.prometheus.tlsSecret.name }}
    tls_cert_file: {{ printf "%s/prometheus-tls/tls.crt" $p.secrets }}
    tls_key_file: {{ printf "%s/prometheus-tls/tls.key" $p.secrets }}
    {{- end }}
  {{- end }}
  {{- with .Values.opentelemetry.headersSecret.name }}
  opentelemetry:
    headers_file: {{ printf "%s/opentelemetry-headers/%s" $p.secrets $.Values.opentelemetry.headersSecret.key }}
  {{- end }}
  influxdb:
    host_tag: ""
    {{- with .Values.influxdb.tokenSecret.name }}
    token_file: {{ printf "%s/influxdb-token/%s" $p.secrets $.Values.influxdb.tokenSecret.key }}
    {{- end }}
{{- end }}

{{/*
TOML: a table's scalar and array keys, then its sub-tables, each under its
header. Keys are sorted (Go templates range over maps in key order). A table
holding only sub-tables gets no header of its own; an empty table gets one.
A null value is left out (the agent's default applies).
Usage: include "alumet-agent.toml.table" (dict "path" "" "table" $map)
*/}}
{{- define "alumet-agent.toml.table" -}}
{{- $path := .path }}
{{- $table := .table }}
{{- $scalars := 0 }}
{{- $subtables := 0 }}
{{- range $k, $v := $table }}
{{- if kindIs "map" $v }}{{ $subtables = add1 $subtables }}{{ else if not (kindIs "invalid" $v) }}{{ $scalars = add1 $scalars }}{{ end }}
{{- end }}
{{- if and $path (or $scalars (not $subtables)) }}

[{{ $path }}]
{{- end }}
{{- range $k, $v := $table }}
{{- if not (or (kindIs "map" $v) (kindIs "invalid" $v)) }}
{{ include "alumet-agent.toml.key" $k }} = {{ include "alumet-agent.toml.value" (dict "v" $v "key" (printf "%s.%s" $path $k)) }}
{{- end }}
{{- end }}
{{- range $k, $v := $table }}
{{- if kindIs "map" $v }}
{{- $sub := include "alumet-agent.toml.key" $k }}
{{- if $path }}{{ $sub = printf "%s.%s" $path $sub }}{{ end }}
{{- include "alumet-agent.toml.table" (dict "path" $sub "table" $v) }}
{{- end }}
{{- end }}
{{- end }}

{{/* A bare key, or a quoted one when it has other characters than A-Za-z0-9_-. */}}
{{- define "alumet-agent.toml.key" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . }}{{ . }}{{ else }}{{ toJson . }}{{ end }}
{{- end }}

{{/*
A value: strings as TOML basic strings (JSON's escapes are TOML's), whole
numbers as integers (Helm reads every YAML number as a float; the agent
accepts an integer where it wants a float), arrays, inline tables.
*/}}
{{- define "alumet-agent.toml.value" -}}
{{- $v := .v }}
{{- $key := .key }}
{{- if kindIs "string" $v }}{{ toJson $v }}
{{- else if kindIs "bool" $v }}{{ $v }}
{{- else if or (kindIs "float64" $v) (kindIs "float32" $v) }}
{{- if eq (float64 (int64 $v)) (float64 $v) }}{{ int64 $v }}{{ else }}{{ $v }}{{ end }}
{{- else if or (kindIs "int" $v) (kindIs "int64" $v) (kindIs "int32" $v) (kindIs "uint64" $v) }}{{ $v }}
{{- else if kindIs "slice" $v }}
{{- $items := list }}
{{- range $v }}{{ $items = append $items (include "alumet-agent.toml.value" (dict "v" . "key" $key)) }}{{ end -}}
[{{ join ", " $items }}]
{{- else if kindIs "map" $v }}
{{- $items := list }}
{{- range $k, $x := $v }}{{ if not (kindIs "invalid" $x) }}{{ $items = append $items (printf "%s = %s" (include "alumet-agent.toml.key" $k) (include "alumet-agent.toml.value" (dict "v" $x "key" $key))) }}{{ end }}{{ end -}}
{ {{- join ", " $items -}} }
{{- else }}
{{- fail (printf "config%s: a value of kind %s cannot be written in TOML" $key (kindOf $v)) }}
{{- end }}
{{- end }}

{{/* The agent's whole configuration file. */}}
{{- define "alumet-agent.configToml" -}}
{{- $config := deepCopy (.Values.config | default dict) }}
{{- $config = mustMergeOverwrite $config (include "alumet-agent.managedConfig" . | fromYaml) -}}
# The Alumet agent's configuration, rendered by the Helm chart alumet-agent
# from its values (`config`); the keys that depend on the pod are the chart's.
# Keys not written keep the agent's defaults (alumet-config.toml).
{{- include "alumet-agent.toml.table" (dict "path" "" "table" $config) }}
{{ end }}

{{/*
The scrape settings a ServiceMonitor endpoint and a PodMonitor endpoint
share: interval, HTTPS when the endpoint has a certificate, the bearer token
from the same Secret as the agent's, and a `node` label from the pod's node.
*/}}
{{- define "alumet-agent.monitorEndpoint" -}}
{{- $root := .root }}
{{- $m := .m -}}
path: /metrics
interval: {{ $m.interval }}
scrapeTimeout: {{ $m.scrapeTimeout }}
scheme: {{ ternary "https" "http" (not (empty $root.Values.prometheus.tlsSecret.name)) }}
{{- with $m.tlsConfig }}
tlsConfig:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $root.Values.prometheus.bearerTokenSecret.name }}
authorization:
  type: Bearer
  credentials:
    name: {{ . }}
    key: {{ $root.Values.prometheus.bearerTokenSecret.key }}
{{- end }}
relabelings:
  - sourceLabels: [__meta_kubernetes_pod_node_name]
    targetLabel: node
    action: replace
  {{- with $m.relabelings }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with $m.metricRelabelings }}
metricRelabelings:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
