{{/*
Names. The full name is the release name when it already says karta-admission, else
"<release>-<chart>"; it names the Service, so it stays a 63-character DNS label.
*/}}
{{- define "karta-admission.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "karta-admission.fullname" -}}
{{- $full := "" -}}
{{- if .Values.fullnameOverride -}}
{{- $full = .Values.fullnameOverride -}}
{{- else -}}
{{- $name := include "karta-admission.name" . -}}
{{- $full = ternary .Release.Name (printf "%s-%s" .Release.Name $name) (contains $name .Release.Name) -}}
{{- end -}}
{{- $full | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "karta-admission.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "karta-admission.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "karta-admission.selectorLabels" -}}
app.kubernetes.io/name: {{ include "karta-admission.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "karta-admission.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "karta-admission.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: admission-webhook
{{- end -}}

{{- define "karta-admission.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Object names shared by several templates and by the server's configuration. */}}
{{- define "karta-admission.tlsSecretName" -}}
{{- if eq .Values.certificates.mode "provided" -}}
{{- .Values.certificates.provided.secretName -}}
{{- else -}}
{{- printf "%s-tls" (include "karta-admission.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "karta-admission.certificateName" -}}
{{- printf "%s-tls" (include "karta-admission.fullname" .) -}}
{{- end -}}

{{- define "karta-admission.validatingWebhookName" -}}
{{- include "karta-admission.fullname" . -}}
{{- end -}}

{{- define "karta-admission.mutatingWebhookName" -}}
{{- include "karta-admission.fullname" . -}}
{{- end -}}

{{- define "karta-admission.definitionsConfigMapName" -}}
{{- printf "%s-definitions" (include "karta-admission.fullname" .) -}}
{{- end -}}

{{/* True (non-empty) when the pods mount a directory of extra definitions. */}}
{{- define "karta-admission.hasDefinitions" -}}
{{- if or .Values.definitions.extra .Values.definitions.existingConfigMap -}}true{{- end -}}
{{- end -}}

{{/* The directory the server reads its TLS files from, in every certificate mode. */}}
{{- define "karta-admission.tlsDir" -}}/run/karta-admission/tls{{- end -}}

{{/*
Namespaces never sent to the webhook: kube-system, the release namespace (the webhook must not
need itself to start) and the user's list.
*/}}
{{- define "karta-admission.excludedNamespaces" -}}
{{- $namespaces := concat (list "kube-system" .Release.Namespace) .Values.webhook.excludeNamespaces | uniq -}}
{{- toJson $namespaces -}}
{{- end -}}

{{/*
namespaceSelector for one webhook entry. Arguments: root context, the label operator and values
("In" ["enforce"], "NotIn" ["enforce","audit","off"]).
*/}}
{{- define "karta-admission.namespaceSelector" -}}
{{- $root := index . 0 -}}
matchExpressions:
  - key: kubernetes.io/metadata.name
    operator: NotIn
    values: {{ include "karta-admission.excludedNamespaces" $root }}
  - key: {{ $root.Values.namespaceModeLabel }}
    operator: {{ index . 1 }}
    values: {{ index . 2 | toJson }}
{{- end -}}

{{/* clientConfig for one webhook entry. Arguments: root context, path. */}}
{{- define "karta-admission.clientConfig" -}}
{{- $root := index . 0 -}}
service:
  name: {{ include "karta-admission.fullname" $root }}
  namespace: {{ $root.Release.Namespace }}
  path: {{ index . 1 }}
  port: {{ $root.Values.service.port }}
{{- if eq $root.Values.certificates.mode "provided" }}
{{- $ca := $root.Values.certificates.provided.caBundle }}
caBundle: {{ ternary ($ca | b64enc) $ca (hasPrefix "-----BEGIN" $ca) }}
{{- end }}
{{- end -}}

{{/* Metadata annotations of both webhook configurations. */}}
{{- define "karta-admission.webhookAnnotations" -}}
{{- if eq .Values.certificates.mode "certManager" -}}
annotations:
  cert-manager.io/inject-ca-from: {{ printf "%s/%s" .Release.Namespace (include "karta-admission.certificateName" .) }}
{{- end -}}
{{- end -}}

{{/* The server's configuration file (docs/configuration.md). */}}
{{/*
The validating entries that fail closed (failurePolicy Fail), as a JSON list of names. With
webhook.armAfterReady they are installed with Ignore and the server arms them once it is ready.
*/}}
{{- define "karta-admission.failClosedWebhooks" -}}
{{- $v := .Values -}}
{{- $names := list -}}
{{- if and (ne $v.mode "off") (eq (get $v.webhook.failurePolicy $v.mode) "Fail") -}}
{{- $names = append $names "validate.karta-admission.io" -}}
{{- end -}}
{{- if eq $v.webhook.failurePolicy.enforce "Fail" -}}
{{- $names = append $names "validate-enforce.karta-admission.io" -}}
{{- end -}}
{{- if eq $v.webhook.failurePolicy.audit "Fail" -}}
{{- $names = append $names "validate-audit.karta-admission.io" -}}
{{- end -}}
{{- toJson $names -}}
{{- end -}}

{{- define "karta-admission.config" -}}
{{- $v := .Values -}}
{{- $config := dict
  "mode" $v.mode
  "failurePolicy" $v.webhook.failurePolicy.enforce
  "namespaceModeLabel" $v.namespaceModeLabel
  "rules" $v.rules
  "gpu" (dict "resourcePatterns" $v.gpu.resourcePatterns "taintKeys" $v.gpu.taintKeys "nodeLabelKeys" $v.gpu.nodeLabelKeys)
  "kuberay" (dict "featureGates" $v.kuberay.featureGates)
  "definitions" (dict "directories" $v.definitions.directories)
  "cluster" (dict
    "watchKartas" $v.cluster.watchKartas
    "ownerCache" $v.cluster.ownerCache
    "auditIntervalSeconds" (int $v.cluster.auditIntervalSeconds)
    "auditNamespaces" $v.cluster.auditNamespaces
    "policyReports" $v.cluster.policyReports
    "excludeNamespaces" $v.webhook.excludeNamespaces)
-}}
{{- /* Without the mutating webhook no pod gets gang keys: no group objects either. */}}
{{- $gang := dict "scheduler" (ternary $v.gang.scheduler "none" $v.mutation.enabled) -}}
{{- if not (kindIs "invalid" $v.gang.schedulerName) -}}
{{- $_ := set $gang "schedulerName" $v.gang.schedulerName -}}
{{- end -}}
{{- if not (kindIs "invalid" $v.gang.scheduleTimeoutSeconds) -}}
{{- $_ := set $gang "scheduleTimeoutSeconds" (int $v.gang.scheduleTimeoutSeconds) -}}
{{- end -}}
{{- if eq (get $gang "scheduler") "custom" -}}
{{- $_ := set $gang "custom" (dict "labels" $v.gang.custom.labels "annotations" $v.gang.custom.annotations) -}}
{{- end -}}
{{- $_ := set $config "gang" $gang -}}
{{- $armed := include "karta-admission.failClosedWebhooks" . | fromJsonArray -}}
{{- if and $v.webhook.armAfterReady $armed (ne $v.validation "policy") -}}
{{- $_ := set (get $config "cluster") "armWebhooks" (dict "validatingWebhookConfiguration" (include "karta-admission.validatingWebhookName" .) "webhooks" $armed) -}}
{{- end -}}
{{- if eq $v.certificates.mode "selfManaged" -}}
{{- $selfManaged := dict
  "secretName" (include "karta-admission.tlsSecretName" .)
  "serviceName" (include "karta-admission.fullname" .)
  "namespace" .Release.Namespace
  "dir" (include "karta-admission.tlsDir" .)
  "validityDays" (int $v.certificates.selfManaged.validityDays)
  "renewBeforeDays" (int $v.certificates.selfManaged.renewBeforeDays)
-}}
{{- if ne $v.validation "policy" -}}
{{- $_ := set $selfManaged "validatingWebhookConfiguration" (include "karta-admission.validatingWebhookName" .) -}}
{{- end -}}
{{- if $v.mutation.enabled -}}
{{- $_ := set $selfManaged "mutatingWebhookConfiguration" (include "karta-admission.mutatingWebhookName" .) -}}
{{- end -}}
{{- $_ := set $config "certificates" (dict "selfManaged" $selfManaged) -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}

{{/* Checks across values that the schema cannot express; each failure says what to change. */}}
{{- define "karta-admission.validateValues" -}}
{{- $v := .Values -}}
{{- $sm := $v.certificates.selfManaged -}}
{{- if and (eq $v.certificates.mode "selfManaged") (ge (int $sm.renewBeforeDays) (int $sm.validityDays)) -}}
{{- fail (printf "certificates.selfManaged.renewBeforeDays (%d) must be less than validityDays (%d)" (int $sm.renewBeforeDays) (int $sm.validityDays)) -}}
{{- end -}}
{{- $pdb := $v.podDisruptionBudget -}}
{{- if and $pdb.enabled (gt (int $v.replicaCount) 1) (kindIs "invalid" $pdb.maxUnavailable) (not (kindIs "string" $pdb.minAvailable)) (ge (int $pdb.minAvailable) (int $v.replicaCount)) -}}
{{- fail (printf "podDisruptionBudget.minAvailable (%d) must be less than replicaCount (%d), or no node could ever be drained" (int $pdb.minAvailable) (int $v.replicaCount)) -}}
{{- end -}}
{{- if and (eq $v.gang.scheduler "custom") (not (or $v.gang.custom.labels $v.gang.custom.annotations)) -}}
{{- fail "gang.scheduler=custom needs at least one entry in gang.custom.labels or gang.custom.annotations" -}}
{{- end -}}
{{- if and (not $v.serviceAccount.create) (not $v.serviceAccount.name) $v.rbac.create -}}
{{- fail "rbac.create=true with serviceAccount.create=false needs serviceAccount.name (the account the roles are bound to)" -}}
{{- end -}}
{{- end -}}
