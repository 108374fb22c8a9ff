-- Argo CD health check for prunejob.io/PruneJob. Install it in argocd-cm as
--   resource.customizations.health.prunejob.io_PruneJob: |
--     <this file>
-- (argocd-cm-patch.yaml does exactly that). It reads the same status the
-- kstatus conditions describe, so Flux and Argo CD agree.
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
local phase = obj.status.phase
local reason = obj.status.reason or ""
local message = obj.status.message or ""
if phase == "Succeeded" then
  hs.status = "Healthy"
elseif phase == "Failed" then
  hs.status = "Degraded"
elseif reason == "SecretNotFound" or reason == "ImagePullBackOff" or reason == "Unschedulable" then
  hs.status = "Degraded"
elseif phase == "Running" then
  hs.status = "Progressing"
else
  hs.status = "Progressing"
end
hs.message = reason .. ": " .. message
return hs
