{{/* The chart's name, truncated to Kubernetes' 63-character limit. */}}
{{- define "lakehouse.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The prefix of every object name: <release>-<chart>, or the release alone when it already holds the chart name. */}}
{{- define "lakehouse.fullname" -}}
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

{{/* Labels every object carries. */}}
{{- define "lakehouse.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "lakehouse.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mongo-cdc-lakehouse
{{- end -}}

{{/* Selector labels of one component; call with (dict "root" $ "component" "cdc-service"). */}}
{{- define "lakehouse.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lakehouse.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Labels of one component's objects and pods. */}}
{{- define "lakehouse.componentLabels" -}}
{{ include "lakehouse.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "lakehouse.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "lakehouse.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name must name an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "lakehouse.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "lakehouse.sparkImage" -}}
{{- printf "%s:%s" .Values.sparkImage.repository (default .Chart.AppVersion .Values.sparkImage.tag) -}}
{{- end -}}

{{/* The lake root every component uses. */}}
{{- define "lakehouse.lakeRoot" -}}
{{- default "/data/lake" .Values.lake.uri -}}
{{- end -}}

{{- define "lakehouse.claimName" -}}
{{- default (printf "%s-lake" (include "lakehouse.fullname" .)) .Values.lake.persistence.existingClaim -}}
{{- end -}}

{{- define "lakehouse.saslEnabled" -}}
{{- if hasPrefix "SASL" .Values.kafka.securityProtocol -}}true{{- end -}}
{{- end -}}

{{/* Non-secret Kafka settings for one service's ConfigMap; call with (dict "root" $ "prefix" "CDC_"). */}}
{{- define "lakehouse.kafkaConfig" -}}
{{- $kafka := .root.Values.kafka -}}
{{ .prefix }}KAFKA__BOOTSTRAP_SERVERS: {{ required "kafka.bootstrapServers is required" $kafka.bootstrapServers | quote }}
{{ .prefix }}KAFKA__SECURITY_PROTOCOL: {{ $kafka.securityProtocol | quote }}
{{- if include "lakehouse.saslEnabled" .root }}
{{ .prefix }}KAFKA__SASL_MECHANISM: {{ $kafka.sasl.mechanism | quote }}
{{ .prefix }}KAFKA__SASL_USERNAME: {{ required "kafka.sasl.username is required with a SASL security protocol" $kafka.sasl.username | quote }}
{{- end }}
{{- if $kafka.tls.caSecret.name }}
{{ .prefix }}KAFKA__SSL_CA_LOCATION: {{ printf "/etc/lakehouse/kafka-ca/%s" $kafka.tls.caSecret.key | quote }}
{{- end }}
{{- end -}}

{{/* Secret Kafka settings as env entries: the SASL password from its existing Secret. */}}
{{- define "lakehouse.kafkaSecretEnv" -}}
{{- $kafka := .root.Values.kafka -}}
{{- if include "lakehouse.saslEnabled" .root }}
- name: {{ .prefix }}KAFKA__SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ required "kafka.sasl.passwordSecret.name is required with a SASL security protocol" $kafka.sasl.passwordSecret.name }}
      key: {{ $kafka.sasl.passwordSecret.key }}
{{- end }}
{{- end -}}

{{/* A user-supplied env map rendered as ConfigMap data. */}}
{{- define "lakehouse.extraConfig" -}}
{{- range $name, $value := . }}
{{ $name }}: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{/* Volumes of every pod; call with (dict "root" $ "lake" true "mongo" false): the lake for its users, the MongoDB CA for cdc-service. */}}
{{- define "lakehouse.volumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .root.Values.tmpSizeLimit }}
- name: home
  emptyDir:
    sizeLimit: 64Mi
{{- if .lake }}
- name: lake
{{- if .root.Values.lake.persistence.enabled }}
  persistentVolumeClaim:
    claimName: {{ include "lakehouse.claimName" .root }}
{{- else }}
  emptyDir: {}
{{- end }}
{{- end }}
{{- if .root.Values.kafka.tls.caSecret.name }}
- name: kafka-ca
  secret:
    secretName: {{ .root.Values.kafka.tls.caSecret.name }}
{{- end }}
{{- if and .mongo .root.Values.mongo.tls.caSecret.name }}
- name: mongo-ca
  secret:
    secretName: {{ .root.Values.mongo.tls.caSecret.name }}
{{- end }}
{{- end -}}

{{- define "lakehouse.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: home
  mountPath: /home/lakehouse
{{- if .lake }}
- name: lake
  mountPath: /data
{{- end }}
{{- if .root.Values.kafka.tls.caSecret.name }}
- name: kafka-ca
  mountPath: /etc/lakehouse/kafka-ca
  readOnly: true
{{- end }}
{{- if and .mongo .root.Values.mongo.tls.caSecret.name }}
- name: mongo-ca
  mountPath: /etc/lakehouse/mongo-ca
  readOnly: true
{{- end }}
{{- end -}}

{{/* Pod-level settings shared by every workload. */}}
{{- define "lakehouse.podSpecCommon" -}}
serviceAccountName: {{ include "lakehouse.serviceAccountName" . }}
automountServiceAccountToken: {{ .Values.serviceAccount.automountToken }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
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
{{- end -}}

{{/* Pod metadata of one component: labels and annotations (a config checksum restarts pods on change). */}}
{{- define "lakehouse.podMetadata" -}}
labels:
  {{- include "lakehouse.selectorLabels" . | nindent 2 }}
  {{- with .root.Values.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
annotations:
  checksum/config: {{ include (print .root.Template.BasePath "/configmap.yaml") .root | sha256sum }}
  {{- with .root.Values.podAnnotations }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end -}}

{{/* HTTP probe on the metrics port; call with (dict "root" $ "path" "/healthz" "probe" .Values.x.livenessProbe). */}}
{{- define "lakehouse.httpProbe" -}}
httpGet:
  path: {{ .path }}
  port: http
{{- toYaml .probe | nindent 0 }}
{{- end -}}

{{/* Secret env of every bronze-writer container (run, compact, vacuum): SASL password, object-store options and keys. */}}
{{- define "lakehouse.bronzeSecretEnv" -}}
{{- include "lakehouse.kafkaSecretEnv" (dict "root" . "prefix" "BRONZE_") }}
{{- if .Values.lake.storageOptionsSecret.name }}
- name: BRONZE_LAKE__STORAGE_OPTIONS
  valueFrom:
    secretKeyRef:
      name: {{ .Values.lake.storageOptionsSecret.name }}
      key: {{ .Values.lake.storageOptionsSecret.key }}
{{- end }}
{{- include "lakehouse.objectStoreSecretEnv" (dict "root" . "prefix" "BRONZE_LAKE__STORAGE_OPTIONS__") }}
{{- end -}}

{{/* The object store's non-secret options as ConfigMap data; call with (dict "root" $ "prefix" "BRONZE_LAKE__STORAGE_OPTIONS__"). */}}
{{- define "lakehouse.objectStoreConfig" -}}
{{- $store := .root.Values.lake.objectStore -}}
{{- if .root.Values.lake.uri }}
{{- with $store.endpoint }}
{{ $.prefix }}AWS_ENDPOINT_URL: {{ . | quote }}
{{- end }}
{{- with $store.region }}
{{ $.prefix }}AWS_REGION: {{ . | quote }}
{{- end }}
{{ .prefix }}AWS_VIRTUAL_HOSTED_STYLE_REQUEST: {{ (not $store.pathStyle) | toString | quote }}
{{ .prefix }}AWS_ALLOW_HTTP: {{ $store.allowHttp | toString | quote }}
{{- end }}
{{- end -}}

{{/* The object store's key pair as env entries from its existing Secret. */}}
{{- define "lakehouse.objectStoreSecretEnv" -}}
{{- $secret := .root.Values.lake.objectStore.credentialsSecret -}}
{{- if and .root.Values.lake.uri $secret.name }}
- name: {{ .prefix }}AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ $secret.name }}
      key: {{ $secret.accessKeyIdKey }}
- name: {{ .prefix }}AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $secret.name }}
      key: {{ $secret.secretAccessKeyKey }}
{{- end }}
{{- end -}}

{{/*
A CronJob running one command of our images against the lake. Call with a dict:
root, name, component, schedule, timeZone, command (list), spark (bool: Spark image),
configMap (suffix), env (rendered env entries or ""), resources, concurrencyPolicy,
startingDeadlineSeconds, activeDeadlineSeconds, backoffLimit, successfulJobsHistoryLimit,
failedJobsHistoryLimit.
*/}}
{{- define "lakehouse.cronJob" -}}
{{- $root := .root -}}
{{- $component := dict "root" $root "component" .component -}}
apiVersion: batch/v1
kind: CronJob
metadata:
  name: {{ include "lakehouse.fullname" $root }}-{{ .name }}
  labels:
    {{- include "lakehouse.componentLabels" $component | nindent 4 }}
spec:
  schedule: {{ .schedule | quote }}
  {{- with .timeZone }}
  timeZone: {{ . | quote }}
  {{- end }}
  concurrencyPolicy: {{ .concurrencyPolicy }}
  startingDeadlineSeconds: {{ .startingDeadlineSeconds }}
  successfulJobsHistoryLimit: {{ .successfulJobsHistoryLimit }}
  failedJobsHistoryLimit: {{ .failedJobsHistoryLimit }}
  jobTemplate:
    metadata:
      labels:
        {{- include "lakehouse.componentLabels" $component | nindent 8 }}
    spec:
      backoffLimit: {{ .backoffLimit }}
      activeDeadlineSeconds: {{ .activeDeadlineSeconds }}
      template:
        metadata:
          {{- include "lakehouse.podMetadata" $component | nindent 10 }}
        spec:
          {{- include "lakehouse.podSpecCommon" $root | nindent 10 }}
          restartPolicy: Never
          containers:
            - name: {{ .name }}
              image: {{ ternary (include "lakehouse.sparkImage" $root) (include "lakehouse.image" $root) .spark }}
              imagePullPolicy: {{ ternary $root.Values.sparkImage.pullPolicy $root.Values.image.pullPolicy .spark }}
              command:
                {{- toYaml .command | nindent 16 }}
              envFrom:
                - configMapRef:
                    name: {{ include "lakehouse.fullname" $root }}-{{ .configMap }}
              {{- with .env }}
              env:
                {{- . | nindent 16 }}
              {{- end }}
              resources:
                {{- toYaml .resources | nindent 16 }}
              securityContext:
                {{- toYaml $root.Values.containerSecurityContext | nindent 16 }}
              volumeMounts:
                {{- include "lakehouse.volumeMounts" (dict "root" $root "lake" true) | nindent 16 }}
          volumes:
            {{- include "lakehouse.volumes" (dict "root" $root "lake" true) | nindent 12 }}
{{- end -}}
