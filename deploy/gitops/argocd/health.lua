-- Argo CD health check for kubundle.dev/AppBundle, from the AppBundle's status
-- (observedGeneration and the Ready / Reconciling / Stalled conditions). Install it in argocd-cm
-- under the key resource.customizations.health.kubundle.dev_AppBundle (see the README).
local hs = {status = "Progressing", message = "Waiting for kubundle to report status"}
if obj.status == nil then
  return hs
end
if obj.metadata.generation ~= nil and obj.status.observedGeneration ~= obj.metadata.generation then
  hs.message = "Waiting for kubundle to observe generation " .. tostring(obj.metadata.generation)
  return hs
end
local conditions = {}
if obj.status.conditions ~= nil then
  for _, c in ipairs(obj.status.conditions) do
    conditions[c.type] = c
  end
end
local stalled = conditions["Stalled"]
if stalled ~= nil and stalled.status == "True" then
  return {status = "Degraded", message = stalled.reason .. ": " .. (stalled.message or "")}
end
local ready = conditions["Ready"]
if ready ~= nil and ready.status == "True" then
  return {status = "Healthy", message = ready.message or "Ready"}
end
-- A canary waiting at a step for `kubectl kubundle promote`: a person's move, as Argo Rollouts'
-- paused rollouts are Suspended. (An aborted canary is Stalled: Degraded, above.)
local rollout = obj.status.rollout
if rollout ~= nil and rollout.phase == "Paused" then
  return {status = "Suspended", message = (ready and ready.message) or "waiting for promotion"}
end
local reconciling = conditions["Reconciling"]
if reconciling ~= nil and reconciling.status == "True" then
  return {status = "Progressing", message = reconciling.message or "Reconciling"}
end
if ready ~= nil then
  hs.message = (ready.reason or "") .. ": " .. (ready.message or "")
end
return hs
