# What make deploy prints at the end: the tag's settings and where the secrets are.
output "events_url" {
  description = "URL of capi_events: the sGTM tag's url field."
  value       = module.capi.events_url
}

output "meta_token_secret" {
  description = "Secret holding the Meta access token."
  value       = module.capi.meta_token_secret
}

output "ingest_key_secret" {
  description = "Secret holding the ingest key (the sGTM tag's ingestKey field)."
  value       = module.capi.ingest_key_secret
}

output "replay_job" {
  description = "Cloud Scheduler job of the replay."
  value       = module.capi.replay_job
}

output "quality_job" {
  description = "Cloud Scheduler job of capi_quality."
  value       = module.capi.quality_job
}

output "dashboard" {
  description = "Cloud Monitoring dashboard id."
  value       = module.capi.dashboard
}
