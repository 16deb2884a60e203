{{/* Chart name, overridable. */}}
{{- define "portent.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name of the release's resources: RELEASE-portent, or RELEASE when it says portent. */}}
{{- define "portent.fullname" -}}
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

{{/* Labels every resource carries. */}}
{{- define "portent.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "portent.baseLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The release's portent, daemon or CronJob. */}}
{{- define "portent.baseLabels" -}}
app.kubernetes.io/name: {{ include "portent.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels that select the daemon's pods (not the CronJob's). */}}
{{- define "portent.selectorLabels" -}}
{{ include "portent.baseLabels" . }}
app.kubernetes.io/component: server
{{- end -}}

{{- define "portent.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "portent.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "portent.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Secret whose keys become environment variables; empty when there is none. */}}
{{- define "portent.secretName" -}}
{{- if .Values.secret.existingSecret -}}
{{- .Values.secret.existingSecret -}}
{{- else if or .Values.secret.apiToken .Values.secret.env -}}
{{- include "portent.fullname" . -}}
{{- end -}}
{{- end -}}

{{/* Non-empty when an API token is configured (PORTENT_API_TOKEN comes from the Secret). */}}
{{- define "portent.hasApiToken" -}}
{{- if or .Values.secret.existingSecret .Values.secret.apiToken -}}true{{- end -}}
{{- end -}}

{{/*
The config file: `config` with what the pod's layout decides (listen address, state
directory, where the API token comes from) set over it.
*/}}
{{- define "portent.config" -}}
{{- $c := deepCopy .Values.config -}}
{{- $server := dict "listen" (printf "0.0.0.0:%d" (int .Values.service.port)) -}}
{{- if include "portent.hasApiToken" . -}}
{{- $_ := set $server "bearer_token_env" "PORTENT_API_TOKEN" -}}
{{- end -}}
{{- $_ := set $c "server" (merge $server (default (dict) $c.server)) -}}
{{- $_ := set $c "storage" (merge (dict "dir" .Values.persistence.mountPath) (default (dict) $c.storage)) -}}
# portent's config, from the chart's `config` value (crates/portent-config/README.md).
{{ toYaml $c }}
{{- end -}}

{{/* Volumes and mounts the daemon and the CronJob share. */}}
{{- define "portent.configVolume" -}}
- name: config
  configMap:
    name: {{ include "portent.fullname" . }}
{{- end -}}

{{- define "portent.env" -}}
{{- with .Values.extraEnv }}
env:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with include "portent.secretName" . }}
envFrom:
  - secretRef:
      name: {{ . }}
{{- end }}
{{- end -}}

{{/*
The PrometheusRule's groups: what `portent rules --format kubernetes` writes for `config`
(crates/portent/src/rules.rs), built from the same defaults: without `models`, one model
`default` on every query; without a model's `queries`, every query in alias order; threshold
0.8. One group per model in alias order, one alert per query; then `portent-self`, the alerts
on portent's own health.
*/}}
{{- define "portent.ruleGroups" -}}
{{- $c := .Values.config -}}
{{- $r := .Values.prometheusRule -}}
{{- $allQueries := keys $c.queries | sortAlpha -}}
{{- $models := $c.models | default (dict "default" (dict)) -}}
{{- $seriesLabels := `{{ range $k, $v := $labels }}{{ if and (ne $k "query") (ne $k "model") (ne $k "alertname") (ne $k "severity") }}{{ $k }}="{{ $v }}" {{ end }}{{ end }}` -}}
{{- $groups := list -}}
{{- range $model := keys $models | sortAlpha -}}
{{- $m := get $models $model | default (dict) -}}
{{- $threshold := 0.8 -}}
{{- if hasKey $m "threshold" -}}{{- $threshold = $m.threshold -}}{{- end -}}
{{- $rules := list -}}
{{- range $query := $m.queries | default $allQueries -}}
{{- $q := get $c.queries $query -}}
{{- $expr := print "max_over_time(portent_anomaly_score{model=\"" $model "\",query=\"" $query "\"}[" $r.window "]) >= " $threshold -}}
{{- $summary := print "Anomalous " $query " (model " $model "): " $seriesLabels -}}
{{- $description := print "portent scored the result series of query " $query " (" (regexReplaceAll "\\s+" (trim $q.expr) " ") ") at " `{{ $value | printf "%.2f" }}` " within the last " $r.window ", at or above the threshold " $threshold " of model " $model ": it departs from what portent learnt as normal for it. The score is high at the onset of an anomaly and when it worsens, so this alert keeps firing until " $r.window " pass without a high score. Compare the series with portent_yhat_lower and portent_yhat_upper (its expected band)." -}}
{{- $labels := dict "severity" $r.severity "query" $query "model" $model -}}
{{- $annotations := dict "summary" $summary "description" $description -}}
{{- $rules = append $rules (dict "alert" "PortentAnomaly" "expr" $expr "for" (index $r "for") "labels" $labels "annotations" $annotations) -}}
{{- end -}}
{{- $groups = append $groups (dict "name" (print "portent-" $model) "rules" $rules) -}}
{{- end -}}
{{- /* portent's own health, the `portent-self` group (rules.rs, `self_alerts`). */ -}}
{{- $self := list -}}
{{- $sev := dict "severity" $r.severity -}}
{{- $self = append $self (dict "alert" "PortentSourceGap" "expr" "increase(portent_source_gaps_total[5m]) > 0" "for" "10m" "labels" $sev "annotations" (dict "summary" `portent gets no samples for query {{ $labels.query }}` "description" `Nine in ten or more of the series of query {{ $labels.query }} stopped arriving at once, tick after tick, for 10 minutes. portent reports this as a gap in its source, not as missing data on each series, and cannot score what it does not receive: check the Prometheus that remote_writes to portent (its queue, prometheus_remote_storage_* metrics) or the query's exporters.`)) -}}
{{- $self = append $self (dict "alert" "PortentSourceErrors" "expr" "increase(portent_source_errors_total[5m]) > 0" "for" "10m" "labels" $sev "annotations" (dict "summary" `portent's {{ $labels.source }} source keeps failing` "description" `portent's {{ $labels.source }} source kept failing for 10 minutes (pull: its queries to Prometheus; push: remote_write requests it refused as malformed or too large), so series are scored late or not at all. portent's log names each failure: check that Prometheus is up and reachable and the credentials, or what the sender writes.`)) -}}
{{- $self = append $self (dict "alert" "PortentPushBufferFull" "expr" `increase(portent_push_samples_dropped_total{reason="buffer_full"}[5m]) > 0` "for" "10m" "labels" $sev "annotations" (dict "summary" "portent's push buffer refuses samples" "description" `For 10 minutes portent's push buffer was full and dropped samples (portent_push_samples_dropped_total{reason="buffer_full"}): new series are refused and go unscored. Raise source.push.max_samples (memory: about 8 bytes a sample), narrow the push queries, or shard portent.`)) -}}
{{- $groups = append $groups (dict "name" "portent-self" "rules" $self) -}}
{{- toYaml $groups -}}
{{- end -}}
