output "events_url" {
  description = "URL of capi_events: POST events to it (or /validate, GET /healthz)."
  value       = google_cloudfunctions2_function.events.service_config[0].uri
}

output "replay_url" {
  description = "URL of capi_replay (internal ingress; called by Cloud Scheduler with OIDC)."
  value       = google_cloudfunctions2_function.replay.service_config[0].uri
}

output "quality_url" {
  description = "URL of capi_quality (internal ingress; called daily by Cloud Scheduler with OIDC)."
  value       = google_cloudfunctions2_function.quality.service_config[0].uri
}

output "replay_job" {
  description = "Cloud Scheduler job of the replay: run it by hand with gcloud scheduler jobs run <name> --location=<region> --project=<project>."
  value       = google_cloud_scheduler_job.replay.name
}

output "quality_job" {
  description = "Cloud Scheduler job of capi_quality: run it by hand with gcloud scheduler jobs run <name> --location=<region> --project=<project>."
  value       = google_cloud_scheduler_job.quality.name
}

output "dashboard" {
  description = "Cloud Monitoring dashboard id (Monitoring > Dashboards > capi)."
  value       = google_monitoring_dashboard.capi.id
}

output "runtime_service_account" {
  description = "Email of the functions' runtime service account."
  value       = google_service_account.runtime.email
}

output "build_service_account" {
  description = "Email of the service account Cloud Build builds the functions as."
  value       = google_service_account.build.email
}

output "scheduler_service_account" {
  description = "Email of the service account Cloud Scheduler uses to invoke capi_replay."
  value       = google_service_account.scheduler.email
}

output "meta_token_secret" {
  description = "Secret to add the Meta access token to: gcloud secrets versions add <id> --project=<project> --data-file=- (null with destinations: see destination_token_secrets)."
  value       = try(google_secret_manager_secret.capi["meta_token"].secret_id, null)
}

output "destination_token_secrets" {
  description = "With destinations: the secret to add each destination's Meta access token to, by destination name."
  value       = { for d in var.destinations : d.name => google_secret_manager_secret.capi["token-${d.name}"].secret_id }
}

output "destination_app_secret_secrets" {
  description = "With destinations: the secret to add each destination's app secret to (those with app_secret = true), by name."
  value       = { for d in var.destinations : d.name => google_secret_manager_secret.capi["app-secret-${d.name}"].secret_id if d.app_secret }
}

output "ingest_key_secret" {
  description = "Secret holding caller ingest keys (null when create_ingest_key is false)."
  value       = try(google_secret_manager_secret.capi["ingest_key"].secret_id, null)
}

output "app_secret_secret" {
  description = "Secret holding the Meta app secret (null when create_app_secret is false)."
  value       = try(google_secret_manager_secret.capi["app_secret"].secret_id, null)
}

output "shopify_signing_key_secret" {
  description = "Secret to add the Shopify webhook signing key to (null when create_shopify_signing_key is false); point the webhook at events_url + /webhooks/shopify."
  value       = try(google_secret_manager_secret.capi["shopify_signing_key"].secret_id, null)
}

output "woocommerce_signing_key_secret" {
  description = "Secret to add the WooCommerce webhook secret to (null when create_woocommerce_signing_key is false); point the webhook at events_url + /webhooks/woocommerce."
  value       = try(google_secret_manager_secret.capi["woocommerce_signing_key"].secret_id, null)
}

output "deliver_url" {
  description = "URL of capi_deliver (delivery = queue only; internal ingress; pushed to by Pub/Sub with OIDC)."
  value       = local.queued ? google_cloudfunctions2_function.deliver[0].service_config[0].uri : null
}

output "queue_topic" {
  description = "Pub/Sub topic capi_events publishes to (delivery = queue only)."
  value       = local.queued ? google_pubsub_topic.events[0].id : null
}

output "queue_deadletter_subscription" {
  description = "Subscription of the dead-letter topic that capi_replay drains (delivery = queue only)."
  value       = local.queued ? google_pubsub_subscription.deadletter[0].id : null
}
