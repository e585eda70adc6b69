{{/*
The capacity alerts as Prometheus rule groups: the one source both the PrometheusRule
(prometheusrule.yaml) and the rule unit tests (tests/unit/test_alert_rules.py renders this
with `helm template` and runs `promtool check rules` and `promtool test rules` on it) use.

Series: the operator's (`kvscale_operator_*`, `kvscale_autoscaler_*`, labelled namespace and
name of the InferenceDeployment; scraped with honorLabels so that `namespace` stays the CR's)
and the sidecars' (`kvscale_engine_*`, labelled name by the PodMonitor). docs/metrics.md lists
them; docs/runbooks.md has a section per alert.
*/}}
{{- define "kvscale.alertGroups" -}}
{{- $alerts := .Values.prometheusRule.alerts }}
{{- $runbook := .Values.prometheusRule.runbookBaseUrl }}
{{- $operator := include "kvscale.operatorSeries" . }}
{{- $extra := .Values.prometheusRule.additionalAlertLabels -}}
groups:
  - name: kvscale.capacity
    rules:
      {{- with $alerts.kvCacheSaturatedAtMaxReplicas }}
      {{- if .enabled }}
      - alert: KVScaleKVCacheSaturatedAtMaxReplicas
        expr: |-
          max by (namespace, name) (kvscale_autoscaler_occupancy_ratio) >= {{ .occupancy }}
          and on (namespace, name)
          sum by (namespace, name) (rate(kvscale_autoscaler_decisions_total{reason="limited_by_max"}[5m])) > 0
          unless on (namespace, name)
          max by (namespace, name) (kvscale_autoscaler_advisory) == 1
        for: {{ .for }}
        labels:
          severity: {{ .severity }}
          {{- with $extra }}{{ toYaml . | nindent 10 }}{{ end }}
        annotations:
          summary: {{ `InferenceDeployment {{ $labels.namespace }}/{{ $labels.name }} is at maxReplicas with a full KV cache.` | quote }}
          description: {{ printf "%s %s" `KV-cache occupancy is {{ $value | humanizePercentage }} and the autoscaler wants more replicas than maxReplicas allows:` "new requests wait and running ones get preempted. Raise spec.scaling.maxReplicas (and check for free GPUs) or shed load." | quote }}
          runbook_url: {{ printf "%s#kvscalekvcachesaturatedatmaxreplicas" $runbook | quote }}
      {{- end }}
      {{- end }}
      {{- with $alerts.preemptionStorm }}
      {{- if .enabled }}
      - alert: KVScalePreemptionStorm
        expr: |-
          sum by (namespace, name) (rate(kvscale_engine_preemptions_total[5m])) > {{ .preemptionsPerSecond }}
        for: {{ .for }}
        labels:
          severity: {{ .severity }}
          {{- with $extra }}{{ toYaml . | nindent 10 }}{{ end }}
        annotations:
          summary: {{ `Engines of {{ $labels.namespace }}/{{ $labels.name }} are preempting requests.` | quote }}
          description: {{ printf "%s %s" `The engine pods preempt {{ $value | humanize }} requests per second:` "their KV blocks are freed and recomputed (or swapped to CPU), so latency climbs while throughput falls. The KV cache is overcommitted; see whether the autoscaler can add replicas." | quote }}
          runbook_url: {{ printf "%s#kvscalepreemptionstorm" $runbook | quote }}
      {{- end }}
      {{- end }}
      {{- with $alerts.sustainedWaitingQueue }}
      {{- if .enabled }}
      - alert: KVScaleSustainedWaitingQueue
        expr: |-
          avg by (namespace, name) (avg_over_time(kvscale_engine_requests{state="waiting"}[5m])) > {{ .waitingPerPod }}
        for: {{ .for }}
        labels:
          severity: {{ .severity }}
          {{- with $extra }}{{ toYaml . | nindent 10 }}{{ end }}
        annotations:
          summary: {{ `Requests keep waiting in {{ $labels.namespace }}/{{ $labels.name }}.` | quote }}
          description: {{ printf "%s %s" `On average {{ $value | humanize }} requests per engine pod have been waiting for KV-cache space` "for a sustained period: users see long time-to-first-token. Capacity is short of demand." | quote }}
          runbook_url: {{ printf "%s#kvscalesustainedwaitingqueue" $runbook | quote }}
      {{- end }}
      {{- end }}
      {{- with $alerts.occupancyReportsMissing }}
      {{- if .enabled }}
      - alert: KVScaleOccupancyReportsMissing
        expr: |-
          max by (namespace, name) (kvscale_autoscaler_unreported_pods) > 0
        for: {{ .for }}
        labels:
          severity: {{ .severity }}
          {{- with $extra }}{{ toYaml . | nindent 10 }}{{ end }}
        annotations:
          summary: {{ `Occupancy reports of {{ $labels.namespace }}/{{ $labels.name }} are stale or missing.` | quote }}
          description: {{ printf "%s %s" `{{ $value }} ready engine pod(s) have no fresh occupancy report` "(sidecar unreachable, engine unhealthy, report stale or invalid). The autoscaler counts them as full and holds scale-down while this lasts." | quote }}
          runbook_url: {{ printf "%s#kvscaleoccupancyreportsmissing" $runbook | quote }}
      {{- end }}
      {{- end }}
      {{- with $alerts.desiredReplicasNotReached }}
      {{- if .enabled }}
      - alert: KVScaleDesiredReplicasNotReached
        expr: |-
          max by (namespace, name) (kvscale_autoscaler_desired_replicas)
          > on (namespace, name)
          max by (namespace, name) (kvscale_autoscaler_ready_replicas)
          unless on (namespace, name)
          max by (namespace, name) (kvscale_autoscaler_advisory) == 1
        for: {{ .for }}
        labels:
          severity: {{ .severity }}
          {{- with $extra }}{{ toYaml . | nindent 10 }}{{ end }}
        annotations:
          summary: {{ `{{ $labels.namespace }}/{{ $labels.name }} has fewer ready replicas than desired.` | quote }}
          description: {{ printf "%s %s" `The autoscaler wants {{ $value }} replicas but fewer are ready:` "pods are pending (no free GPUs or no node fits), crash-looping, or still loading the model. The condition ScalingLimited (reason PodsUnschedulable) carries the scheduler's words." | quote }}
          runbook_url: {{ printf "%s#kvscaledesiredreplicasnotreached" $runbook | quote }}
      {{- end }}
      {{- end }}
      {{- with $alerts.scalingFlapping }}
      {{- if .enabled }}
      - alert: KVScaleScalingFlapping
        expr: |-
          sum by (namespace, name) (increase(kvscale_autoscaler_scale_actions_total{direction="up"}[{{ .window }}])) >= {{ .changesPerDirection }}
          and on (namespace, name)
          sum by (namespace, name) (increase(kvscale_autoscaler_scale_actions_total{direction="down"}[{{ .window }}])) >= {{ .changesPerDirection }}
        for: {{ .for }}
        labels:
          severity: {{ .severity }}
          {{- with $extra }}{{ toYaml . | nindent 10 }}{{ end }}
        annotations:
          summary: {{ `The autoscaler of {{ $labels.namespace }}/{{ $labels.name }} is flapping.` | quote }}
          description: {{ printf "%s%s%s" `It scaled up {{ $value | humanize }} times in the last ` .window " and scaled down as often: each scale-up starts pods that load the model, each scale-down drops warm caches. Widen the tolerance or lengthen scaleDownDelaySeconds." | quote }}
          runbook_url: {{ printf "%s#kvscalescalingflapping" $runbook | quote }}
      {{- end }}
      {{- end }}
  - name: kvscale.operator
    rules:
      {{- with $alerts.operatorNotReconciling }}
      {{- if .enabled }}
      - alert: KVScaleOperatorNotReconciling
        expr: |-
          absent(kvscale_operator_leader{ {{- $operator -}} })
          or
          max(kvscale_operator_leader{ {{- $operator -}} }) < 1
          or
          (
            sum(rate(kvscale_operator_reconciles_total{ {{- $operator -}}, result="error"}[10m])) > 0
            unless
            sum(rate(kvscale_operator_reconciles_total{ {{- $operator -}}, result="ok"}[10m])) > 0
          )
        for: {{ .for }}
        labels:
          severity: {{ .severity }}
          {{- with $extra }}{{ toYaml . | nindent 10 }}{{ end }}
        annotations:
          summary: "The kvscale operator is not reconciling."
          description: "No operator replica is scraped, none holds the leader Lease, or every reconcile pass fails: InferenceDeployments are neither reconciled nor scaled, and capacity is frozen at its current size."
          runbook_url: {{ printf "%s#kvscaleoperatornotreconciling" $runbook | quote }}
      {{- end }}
      {{- end }}
      {{- with $alerts.autoscalerLoopFailing }}
      {{- if .enabled }}
      - alert: KVScaleAutoscalerLoopFailing
        expr: |-
          sum by (namespace, name) (rate(kvscale_autoscaler_loop_errors_total[5m])) > 0
          unless on (namespace, name)
          sum by (namespace, name) (rate(kvscale_autoscaler_decisions_total[5m])) > 0
        for: {{ .for }}
        labels:
          severity: {{ .severity }}
          {{- with $extra }}{{ toYaml . | nindent 10 }}{{ end }}
        annotations:
          summary: {{ `The autoscaler of {{ $labels.namespace }}/{{ $labels.name }} fails every tick.` | quote }}
          description: {{ printf "%s %s" `Its loop fails {{ $value | humanize }} times per second and has decided nothing for 5 minutes:` "the deployment's size is frozen. The operator's log and the CR's Events say why (API errors, permissions)." | quote }}
          runbook_url: {{ printf "%s#kvscaleautoscalerloopfailing" $runbook | quote }}
      {{- end }}
      {{- end }}
{{- end }}
