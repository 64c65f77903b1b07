{{/*
Names, labels and the per-component wiring shared by the templates.
*/}}

{{- define "vaultline.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "vaultline.fullname" -}}
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

{{- define "vaultline.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "vaultline.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Values.image.tag | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: vaultline
{{- end -}}

{{- define "vaultline.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vaultline.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "vaultline.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "vaultline.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "vaultline.secretName" -}}
{{- default (printf "%s-credentials" (include "vaultline.fullname" .)) .Values.credentials.existingSecret -}}
{{- end -}}

{{- define "vaultline.image" -}}
{{- printf "%s:%s" .Values.image.repository .Values.image.tag -}}
{{- end -}}

{{/*
What each component is: its binary, the topics it reads and writes (keys of kafka.topics),
the Postgres role it connects as (a key of postgres.users; none for datagen), whether it
uses Redis, serves /metrics and serves the read API (API_TOKEN). In pipeline order.
*/}}
{{- define "vaultline.components" -}}
- name: datagen
  binary: datagen
  destination: raw
  redis: true
- name: stg
  binary: service-stg
  source: raw
  destination: enriched
  role: stg
  redis: true
  metrics: true
- name: dds
  binary: service-dds
  source: enriched
  destination: counters
  role: dds
  metrics: true
- name: cdm
  binary: service-cdm
  source: counters
  destination: tags
  role: cdm
  metrics: true
  api: true
{{- end -}}

{{/* A secretKeyRef env entry: dict "name" ENV "key" SECRET_KEY "root" $ */}}
{{- define "vaultline.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "vaultline.secretName" .root }}
      key: {{ .key }}
      optional: true
{{- end -}}

{{/* The CA certificate volume and its mount, when kafka.caCert.secretName is set. */}}
{{- define "vaultline.caPath" -}}
/etc/vaultline/kafka-ca/ca.crt
{{- end -}}

{{- define "vaultline.volumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- if .Values.kafka.caCert.secretName }}
- name: kafka-ca
  secret:
    secretName: {{ .Values.kafka.caCert.secretName }}
    items:
      - key: {{ .Values.kafka.caCert.key }}
        path: ca.crt
{{- end }}
{{- end -}}

{{- define "vaultline.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if .Values.kafka.caCert.secretName }}
- name: kafka-ca
  mountPath: /etc/vaultline/kafka-ca
  readOnly: true
{{- end }}
{{- end -}}

{{/* Environment every program gets beyond the ConfigMap: the Kafka password when SASL is on. */}}
{{- define "vaultline.kafkaSecretEnv" -}}
{{- if .Values.kafka.sasl.enabled }}
{{ include "vaultline.secretEnv" (dict "name" "KAFKA_PASSWORD" "key" "kafka-password" "root" .) }}
{{- end }}
{{- end -}}

{{/* The pod-level scheduling settings every workload shares. */}}
{{- define "vaultline.podScheduling" -}}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
