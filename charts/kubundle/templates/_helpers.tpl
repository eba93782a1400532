{{/* Name of the chart, overridable. */}}
{{- define "kubundle.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects. */}}
{{- define "kubundle.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "kubundle.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "kubundle.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "kubundle.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "kubundle.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels that select the operator's pods. */}}
{{- define "kubundle.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubundle.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "kubundle.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kubundle.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "kubundle.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The rules the operator needs where AppBundles live. Each verb is used by the code:
     appbundles: get/list/watch (its cache); appbundles/status: patch (server-side apply of status);
     appbundles/finalizers: update (children's ownerReferences set blockOwnerDeletion, which clusters
     with the OwnerReferencesPermissionEnforcement admission plugin check);
     deployments, services: list/watch (the cache), get (where the cache cannot say), create/patch
     (server-side apply), delete (only a canary's NAME-canary pair once spec.rollout is removed,
     with a UID precondition; the AppBundle's own go with it by garbage collection);
     events.k8s.io events: create (one Event per change; no series are updated). */}}
{{- define "kubundle.rules" -}}
- apiGroups: [kubundle.dev]
  resources: [appbundles]
  verbs: [get, list, watch]
- apiGroups: [kubundle.dev]
  resources: [appbundles/status]
  verbs: [patch]
- apiGroups: [kubundle.dev]
  resources: [appbundles/finalizers]
  verbs: [update]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, watch, create, patch, delete]
# The optional children (spec.autoscaling, spec.disruptionBudget): delete too, to remove the one a
# spec no longer asks for (only objects the AppBundle controls and kubundle labelled).
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list, watch, create, patch, delete]
# spec.http: an Ingress, or a Gateway API HTTPRoute (watched only where the Gateway API is installed).
- apiGroups: [networking.k8s.io]
  resources: [ingresses]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create]
# Pods, listed (never watched, never written) only while an AppBundle's rollout makes no progress,
# to name the reason in its status (CrashLoopBackOff, ErrImagePull, OOMKilled, Unschedulable).
- apiGroups: [""]
  resources: [pods]
  verbs: [list]
# Rollout history: each rolled-out spec recorded as a ControllerRevision owned by its AppBundle.
# list (only when recording a new spec), create, patch (renumber a spec rolled back to), delete
# (beyond spec.revisionHistoryLimit), get (the stable revision's spec a canary runs beside, once
# per revision); never watched.
- apiGroups: [apps]
  resources: [controllerrevisions]
  verbs: [get, list, create, patch, delete]
# ConfigMaps the pods use: watched as metadata (is one missing? did it change?), read (get) only for
# AppBundles with spec.rolloutOnConfigChange, when it changed. Secrets likewise, only where
# configRollouts.secrets grants it: listing Secrets reveals their contents, so least privilege
# leaves them out by default.
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch]
{{- if .Values.configRollouts.secrets }}
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch]
{{- end }}
{{- end }}

{{/* Cluster-scoped reads (get only). Namespaces: whether one is being deleted, asked only when a
ConfigMap or Secret the pods need went missing (the namespace controller deletes them with
everything else): then nothing is written or reported. IngressClasses: whether the class an
Ingress names exists, asked only while it waits for an address. Gateways (in any namespace: a shared
Gateway usually lives in its own): the address, scheme and port of the route's URL, and whether
the Gateway exists, read when an AppBundle with an HTTPRoute is reconciled. */}}
{{- define "kubundle.clusterScopedRules" -}}
- apiGroups: [""]
  resources: [namespaces]
  {{- if .Values.watchNamespace }}
  resourceNames: [{{ .Values.watchNamespace }}]
  {{- end }}
  verbs: [get]
- apiGroups: [networking.k8s.io]
  resources: [ingressclasses]
  verbs: [get]
- apiGroups: [gateway.networking.k8s.io]
  resources: [gateways]
  verbs: [get]
{{- end }}
