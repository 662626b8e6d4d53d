output "events_url" {
  description = "URL to POST events to."
  value       = module.capi.events_url
}

output "meta_token_secret" {
  description = "Secret to add the Meta access token to."
  value       = module.capi.meta_token_secret
}

output "ingest_key_secret" {
  description = "Secret to add caller keys to (when public_access is true)."
  value       = module.capi.ingest_key_secret
}
