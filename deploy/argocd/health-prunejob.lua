-- Argo CD health check for prunejob.io/PruneJob. Install it in argocd-cm as
--   resource.customizations.health.prunejob.io_PruneJob: |
--     <this file>
-- (argocd-cm-patch.yaml does exactly that; a test checks the two agree). It reads the
-- Job-style conditions the operator writes (Complete, Failed, Suspended), falling back
-- to status.phase, so Argo CD agrees with `kubectl wait` and with kstatus (Flux).
local hs = {}
if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "waiting for the operator"
  return hs
end
if obj.metadata.generation ~= nil and obj.status.observedGeneration ~= obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "the operator has not seen the latest spec yet"
  return hs
end
local true_conditions = {}
if obj.status.conditions ~= nil then
  for _, condition in ipairs(obj.status.conditions) do
    if condition.status == "True" then
      true_conditions[condition.type] = true
    end
  end
end
local phase = obj.status.phase
local reason = obj.status.reason or ""
local message = obj.status.message or ""
if true_conditions["Complete"] or phase == "Succeeded" then
  hs.status = "Healthy"
elseif true_conditions["Failed"] or phase == "Failed" then
  hs.status = "Degraded"
elseif true_conditions["Suspended"] or phase == "Suspended" then
  hs.status = "Suspended"
elseif reason == "SecretNotFound" or reason == "ImagePullBackOff" or reason == "Unschedulable" then
  hs.status = "Degraded"
else
  hs.status = "Progressing"
end
hs.message = reason .. ": " .. message
return hs
