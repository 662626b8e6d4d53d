output "events_url" {
  description = "URL to POST events to."
  value       = module.capi.events_url
}

output "meta_token_secret" {
  description = "Secret to add the Meta access token to."
  value       = module.capi.meta_token_secret
}

output "add_meta_token_command" {
  description = "The command that reads the Meta access token at a silent prompt and adds it to its secret: eval \"$(terraform output -raw add_meta_token_command)\"."
  value       = module.capi.meta_token_secret == null ? null : "read -rs META_TOKEN && printf '%s' \"$META_TOKEN\" | gcloud secrets versions add ${module.capi.meta_token_secret} --project=${var.project_id} --data-file=- && unset META_TOKEN"
}

output "destination_token_secrets" {
  description = "With destinations: the secret to add each destination's token to, by name."
  value       = module.capi.destination_token_secrets
}

output "ingest_key_secret" {
  description = "Secret to add caller keys to (when public_access is true)."
  value       = module.capi.ingest_key_secret
}

output "add_ingest_key_command" {
  description = "With public_access: the command that puts a new random ingest key into its secret (run it once)."
  value       = module.capi.ingest_key_secret == null ? null : "openssl rand -hex 32 | tr -d '\\n' | gcloud secrets versions add ${module.capi.ingest_key_secret} --project=${var.project_id} --data-file=-"
}

output "read_ingest_key_command" {
  description = "With public_access: the command that prints the ingest key to give your callers (sGTM tag, webhook)."
  value       = module.capi.ingest_key_secret == null ? null : "gcloud secrets versions access latest --secret=${module.capi.ingest_key_secret} --project=${var.project_id}"
}

output "replay_now_command" {
  description = "Runs the dead-letter replay now instead of waiting for its schedule."
  value       = "gcloud scheduler jobs run ${module.capi.replay_job} --location=${var.region} --project=${var.project_id}"
}

output "quality_now_command" {
  description = "Runs capi_quality now (its answer is in the function's logs: dataset quality lines)."
  value       = "gcloud scheduler jobs run ${module.capi.quality_job} --location=${var.region} --project=${var.project_id}"
}

output "shopify_signing_key_secret" {
  description = "With create_shopify_signing_key = true in the module block: the secret to add Shopify's webhook signing key to (docs/orders.md#shop-webhooks)."
  value       = module.capi.shopify_signing_key_secret
}

output "woocommerce_signing_key_secret" {
  description = "With create_woocommerce_signing_key = true in the module block: the secret to add the WooCommerce webhook secret to (docs/orders.md#shop-webhooks)."
  value       = module.capi.woocommerce_signing_key_secret
}
