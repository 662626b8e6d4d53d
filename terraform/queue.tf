# Queued delivery (delivery = "queue", docs/queue.md): capi_events publishes finished, hashed
# events to a topic; a push subscription calls capi_deliver with an OIDC token; capi_deliver
# acks what is delivered or finally refused and nacks the rest, which Pub/Sub pushes again
# with its backoff and, after queue_max_delivery_attempts, moves to a dead-letter topic that
# capi_replay drains. Nothing here exists with delivery = "direct".

data "google_project" "this" {
  count      = local.queued ? 1 : 0
  project_id = var.project_id
}

locals {
  # Google's own identity for Pub/Sub in this project: it mints the push OIDC tokens and moves
  # messages to the dead-letter topic.
  pubsub_agent = local.queued ? "serviceAccount:service-${data.google_project.this[0].number}@gcp-sa-pubsub.iam.gserviceaccount.com" : ""
}

resource "google_pubsub_topic" "events" {
  #checkov:skip=CKV_GCP_83:Pub/Sub encrypts messages at rest with Google-managed keys; they hold hashed events only, as the Firestore dead letters do.
  count   = local.queued ? 1 : 0
  project = var.project_id
  name    = "${var.name}-events"
  labels  = local.labels
  # Messages are kept by the subscription (7 days); the topic itself stores nothing.
  depends_on = [google_project_service.apis]
}

resource "google_pubsub_topic" "deadletter" {
  #checkov:skip=CKV_GCP_83:Pub/Sub encrypts messages at rest with Google-managed keys; they hold hashed events only, as the Firestore dead letters do.
  count      = local.queued ? 1 : 0
  project    = var.project_id
  name       = "${var.name}-deadletter"
  labels     = local.labels
  depends_on = [google_project_service.apis]
}

# -- identities and IAM ------------------------------------------------------------------------

resource "google_service_account" "pusher" {
  count        = local.queued ? 1 : 0
  project      = var.project_id
  account_id   = "${var.name}-pusher"
  display_name = "capi Pub/Sub push (invokes capi_deliver with OIDC)"
}

# capi_events publishes; capi_replay drains the dead letters: on these resources only.
resource "google_pubsub_topic_iam_member" "runtime_publish" {
  count   = local.queued ? 1 : 0
  project = var.project_id
  topic   = google_pubsub_topic.events[0].name
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${google_service_account.runtime.email}"
}

resource "google_pubsub_subscription_iam_member" "runtime_drain" {
  count        = local.queued ? 1 : 0
  project      = var.project_id
  subscription = google_pubsub_subscription.deadletter[0].name
  role         = "roles/pubsub.subscriber"
  member       = "serviceAccount:${google_service_account.runtime.email}"
}

# The push subscription's identity may call capi_deliver, and nothing else.
resource "google_cloud_run_service_iam_member" "deliver_pusher" {
  count    = local.queued ? 1 : 0
  project  = var.project_id
  location = var.region
  service  = google_cloudfunctions2_function.deliver[0].name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.pusher[0].email}"
}

# The Pub/Sub service agent mints the push's OIDC tokens as the pusher account...
resource "google_service_account_iam_member" "pubsub_agent_token" {
  count              = local.queued ? 1 : 0
  service_account_id = google_service_account.pusher[0].name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_agent
}

# ...and moves a message that failed queue_max_delivery_attempts times to the dead-letter topic:
# it publishes there and acknowledges on the push subscription.
resource "google_pubsub_topic_iam_member" "pubsub_agent_deadletter" {
  count   = local.queued ? 1 : 0
  project = var.project_id
  topic   = google_pubsub_topic.deadletter[0].name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_agent
}

resource "google_pubsub_subscription_iam_member" "pubsub_agent_deliver" {
  count        = local.queued ? 1 : 0
  project      = var.project_id
  subscription = google_pubsub_subscription.deliver[0].name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_agent
}

# -- the consumer --------------------------------------------------------------------------------

resource "google_cloudfunctions2_function" "deliver" {
  count       = local.queued ? 1 : 0
  project     = var.project_id
  location    = var.region
  name        = "${var.name}-deliver"
  description = "capi: queued events -> Meta in batches (Pub/Sub push)"
  labels      = local.labels

  build_config {
    runtime     = "python312"
    entry_point = "capi_deliver"
    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.source.name
      }
    }
  }

  service_config {
    max_instance_count = var.deliver_max_instance_count
    min_instance_count = 0
    # Gathering needs many pushes in one instance at once (gen2 defaults to one), and a
    # concurrency above one needs a whole CPU.
    max_instance_request_concurrency = var.deliver_request_concurrency
    available_cpu                    = var.deliver_available_cpu
    available_memory                 = var.deliver_available_memory
    # Past the push's ack deadline (60 s) Pub/Sub pushes again anyway.
    timeout_seconds = 120
    # Pub/Sub push in the same project counts as internal traffic.
    ingress_settings               = "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision = true
    service_account_email          = google_service_account.runtime.email
    # THREADS: functions-framework's gunicorn threads = the pushes one instance serves at once.
    environment_variables = merge(local.environment, { THREADS = tostring(var.deliver_request_concurrency) })
  }

  depends_on = [
    google_project_service.apis,
    google_secret_manager_secret_iam_member.runtime_access,
    google_project_iam_member.runtime_datastore,
  ]
}

# -- subscriptions -------------------------------------------------------------------------------

resource "google_pubsub_subscription" "deliver" {
  count   = local.queued ? 1 : 0
  project = var.project_id
  name    = "${var.name}-deliver"
  topic   = google_pubsub_topic.events[0].id
  labels  = local.labels

  # capi_deliver answers within its window, Meta's retries and a split (about 25 s at most).
  ack_deadline_seconds = 60
  # Meta takes events up to 7 days old: keep an undelivered message that long, never expire.
  message_retention_duration = "604800s"
  expiration_policy {
    ttl = ""
  }

  push_config {
    push_endpoint = google_cloudfunctions2_function.deliver[0].service_config[0].uri
    oidc_token {
      service_account_email = google_service_account.pusher[0].email
      audience              = google_cloudfunctions2_function.deliver[0].service_config[0].uri
    }
  }

  retry_policy {
    minimum_backoff = var.queue_minimum_backoff
    maximum_backoff = var.queue_maximum_backoff
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.deadletter[0].id
    max_delivery_attempts = var.queue_max_delivery_attempts
  }

  depends_on = [
    google_cloud_run_service_iam_member.deliver_pusher,
    google_service_account_iam_member.pubsub_agent_token,
    google_pubsub_topic_iam_member.pubsub_agent_deadletter,
  ]
}

# Pulled by capi_replay (PUBSUB_DEADLETTER_SUBSCRIPTION) on the replay schedule.
resource "google_pubsub_subscription" "deadletter" {
  count                      = local.queued ? 1 : 0
  project                    = var.project_id
  name                       = "${var.name}-deadletter"
  topic                      = google_pubsub_topic.deadletter[0].id
  labels                     = local.labels
  ack_deadline_seconds       = 120
  message_retention_duration = "604800s"
  expiration_policy {
    ttl = ""
  }
}
