locals {
  source_dir = coalesce(var.source_dir, abspath("${path.module}/.."))
  labels     = merge({ app = "capi" }, var.labels)

  # The function's own files only: never tests, terraform, virtualenvs or local files.
  function_files = concat(["main.py", "requirements.txt"], sort(tolist(fileset(local.source_dir, "capi/**/*.py"))))

  # The secrets capi reads, created without values (add them with `gcloud secrets versions
  # add`), and the variable that names each one to the code. With several destinations, each
  # has its own token secret (and app secret), named in META_DESTINATIONS instead.
  several = length(var.destinations) > 0
  queued  = var.delivery == "queue"
  destination_secrets = merge(
    { for d in var.destinations : "token-${d.name}" => "${var.name}-meta-token-${d.name}" },
    { for d in var.destinations : "app-secret-${d.name}" => "${var.name}-meta-app-secret-${d.name}" if d.app_secret },
  )
  secrets = merge(
    local.several ? {} : { meta_token = "${var.name}-meta-token" },
    var.create_app_secret && !local.several ? { app_secret = "${var.name}-meta-app-secret" } : {},
    var.create_ingest_key ? { ingest_key = "${var.name}-ingest-key" } : {},
    # The keys shops sign their order webhooks with (POST /webhooks/shopify, /webhooks/woocommerce).
    var.create_shopify_signing_key ? { shopify_signing_key = "${var.name}-shopify-signing-key" } : {},
    var.create_woocommerce_signing_key ? { woocommerce_signing_key = "${var.name}-woocommerce-signing-key" } : {},
    local.destination_secrets,
  )
  secret_env_names = {
    meta_token              = "META_ACCESS_TOKEN_SECRET"
    app_secret              = "META_APP_SECRET_SECRET"
    ingest_key              = "INGEST_API_KEY_SECRET"
    shopify_signing_key     = "SHOPIFY_SIGNING_KEY_SECRET"
    woocommerce_signing_key = "WOOCOMMERCE_SIGNING_KEY_SECRET"
  }
  # Only the token's version is pinnable: it is the one whose rotation needs a rollback path.
  secret_env = {
    for key, id in local.secrets : local.secret_env_names[key] =>
    "projects/${var.project_id}/secrets/${id}/versions/${key == "meta_token" ? var.meta_token_secret_version : "latest"}"
    if contains(keys(local.secret_env_names), key)
  }
  # META_DESTINATIONS: each destination with the full name of its own secrets.
  destinations_json = jsonencode([for d in var.destinations : merge(
    {
      name                = d.name
      pixel_id            = d.pixel_id
      access_token_secret = "projects/${var.project_id}/secrets/${local.secrets["token-${d.name}"]}/versions/${d.token_secret_version}"
    },
    d.app_secret ? { app_secret_secret = "projects/${var.project_id}/secrets/${local.secrets["app-secret-${d.name}"]}/versions/latest" } : {},
    d.test_event_code != null ? { test_event_code = d.test_event_code } : {},
    d.forward_events != null ? { forward_events = d.forward_events } : {},
    d.hosts != null ? { hosts = d.hosts } : {},
  )])

  # Environment of both functions: every variable capi's configuration reads is either set
  # here or deliberately left to its default (tests/test_terraform.py checks the list).
  environment = merge(
    {
      META_API_VERSION      = var.meta_api_version
      PROFILE_COLLECTION    = var.profile_collection
      FIRESTORE_DATABASE    = var.firestore_database
      DEADLETTER_COLLECTION = coalesce(var.deadletter_collection, "${var.name}_deadletter")
      LOG_LEVEL             = var.log_level
      GOOGLE_CLOUD_PROJECT  = var.project_id
      EMQ_ALERT_BELOW       = tostring(var.emq_alert_below)
      DEDUP_ALERT_BELOW     = tostring(var.dedup_alert_below)
      BROWSER_TTL_DAYS      = tostring(var.browser_ttl_days)
      ORDER_DEDUP_HOURS     = tostring(var.order_dedup_hours)
      # With no ingest key, capi refuses every request unless told that IAM guards it.
      ALLOW_UNAUTHENTICATED = var.create_ingest_key ? "false" : "true"
      # functions-framework's gunicorn threads = the requests one instance serves at once.
      THREADS = tostring(var.max_instance_request_concurrency)
    },
    local.several ? { META_DESTINATIONS = local.destinations_json } : { META_PIXEL_ID = var.pixel_id },
    var.forward_events != "" ? { FORWARD_EVENTS = var.forward_events } : {},
    length(var.event_name_map) > 0 ? { EVENT_NAME_MAP = jsonencode(var.event_name_map) } : {},
    var.default_country != "" ? { DEFAULT_COUNTRY = upper(var.default_country) } : {},
    # The guard is what keeps Pub/Sub's redelivery to another instance from reaching Meta twice:
    # delivery = "queue" turns it on (NAME_idempotency) when no collection is named.
    var.idempotency_collection != "" ? { IDEMPOTENCY_COLLECTION = var.idempotency_collection } : {},
    var.idempotency_collection == "" && local.queued ? { IDEMPOTENCY_COLLECTION = "${var.name}_idempotency" } : {},
    var.browser_collection != "" ? { BROWSER_COLLECTION = var.browser_collection } : {},
    var.meta_test_event_code != "" ? { META_TEST_EVENT_CODE = var.meta_test_event_code } : {},
    var.limited_data_use != "off" ? { LIMITED_DATA_USE = var.limited_data_use } : {},
    local.secret_env,
    # DELIVERY=queue (queue.tf): the topic capi_events publishes to, capi_deliver's window, and the
    # dead-letter subscription capi_replay drains.
    local.queued ? {
      DELIVERY                       = "queue"
      PUBSUB_TOPIC                   = "projects/${var.project_id}/topics/${var.name}-events"
      BATCH_WINDOW_MS                = tostring(var.batch_window_ms)
      PUBSUB_DEADLETTER_SUBSCRIPTION = "projects/${var.project_id}/subscriptions/${var.name}-deadletter"
    } : {},
  )

  # iam and cloudresourcemanager: the service accounts and the project's IAM bindings;
  # pubsub: Cloud Run functions' event plumbing (and queued delivery).
  apis = [
    "iam.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "cloudfunctions.googleapis.com",
    "run.googleapis.com",
    "cloudbuild.googleapis.com",
    "artifactregistry.googleapis.com",
    "secretmanager.googleapis.com",
    "firestore.googleapis.com",
    "cloudscheduler.googleapis.com",
    "storage.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "pubsub.googleapis.com",
  ]
}

resource "google_project_service" "apis" {
  for_each           = var.enable_apis ? toset(local.apis) : toset([])
  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}

# -- identities ------------------------------------------------------------------------

resource "google_service_account" "runtime" {
  project      = var.project_id
  account_id   = "${var.name}-runtime"
  display_name = "capi functions runtime"
}

resource "google_service_account" "scheduler" {
  project      = var.project_id
  account_id   = "${var.name}-scheduler"
  display_name = "capi scheduler (invokes capi_replay and capi_quality with OIDC)"
}

# Cloud Build builds the functions as this account: since 2024 new projects' default build
# account (Compute Engine's) may lack the roles, and an organization may have disabled it.
resource "google_service_account" "build" {
  project      = var.project_id
  account_id   = "${var.name}-build"
  display_name = "capi functions build (Cloud Build)"
}

# The roles Google lists for a custom build account (Cloud Run, "build service account"): build
# logs, the image in Artifact Registry, the source object and build cache in Cloud Storage. Not
# roles/cloudbuild.builds.builder: broader, and checkov (CKV_GCP_49) counts it as impersonating.
resource "google_project_iam_member" "build" {
  for_each = toset(["roles/logging.logWriter", "roles/artifactregistry.writer", "roles/storage.objectAdmin"])
  project  = var.project_id
  role     = each.value
  member   = "serviceAccount:${google_service_account.build.email}"
}

# Firestore: profiles (read), dead letters and idempotency records (write).
resource "google_project_iam_member" "runtime_datastore" {
  project = var.project_id
  role    = "roles/datastore.user"
  member  = "serviceAccount:${google_service_account.runtime.email}"
}

# Cloud Logging of the runtime account's structured logs.
resource "google_project_iam_member" "runtime_logging" {
  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = "serviceAccount:${google_service_account.runtime.email}"
}

# -- secrets (created empty: add versions with `gcloud secrets versions add`) ---------------

resource "google_secret_manager_secret" "capi" {
  for_each  = local.secrets
  project   = var.project_id
  secret_id = each.value
  labels    = local.labels
  replication {
    auto {}
  }
  depends_on = [google_project_service.apis]
}

# Secret accessor on these secrets only, never project-wide.
resource "google_secret_manager_secret_iam_member" "runtime_access" {
  for_each  = google_secret_manager_secret.capi
  project   = var.project_id
  secret_id = each.value.id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.runtime.email}"
}

# -- Firestore (optional) ----------------------------------------------------------------

resource "google_firestore_database" "main" {
  count                   = var.create_firestore_database ? 1 : 0
  project                 = var.project_id
  name                    = var.firestore_database
  location_id             = var.firestore_location
  type                    = "FIRESTORE_NATIVE"
  delete_protection_state = "DELETE_PROTECTION_ENABLED"
  depends_on              = [google_project_service.apis]
}

# Enhanced event coverage: Firestore deletes a browser's remembered keys once their expire_at
# (BROWSER_TTL_DAYS after their last change, capi/browsers.py) has passed.
resource "google_firestore_field" "browser_ttl" {
  count      = var.browser_collection != "" ? 1 : 0
  project    = var.project_id
  database   = var.firestore_database
  collection = var.browser_collection
  field      = "expire_at"
  ttl_config {}
  # A TTL field needs no single-field index: leaving it out keeps writes cheap.
  index_config {}
  depends_on = [google_project_service.apis, google_firestore_database.main]
}

# -- source --------------------------------------------------------------------------------

resource "google_storage_bucket" "logs" {
  #checkov:skip=CKV_GCP_62:This is the access-log bucket itself; logging it into itself would loop.
  project                     = var.project_id
  name                        = "${var.project_id}-${var.name}-logs"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false
  labels                      = local.labels
  versioning {
    enabled = true
  }
  lifecycle_rule {
    condition {
      age = 90
    }
    action {
      type = "Delete"
    }
  }
}

resource "google_storage_bucket" "source" {
  project                     = var.project_id
  name                        = "${var.project_id}-${var.name}-source"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = local.labels
  versioning {
    enabled = true
  }
  logging {
    log_bucket = google_storage_bucket.logs.name
  }
}

data "archive_file" "source" {
  type        = "zip"
  output_path = "${path.module}/.build/capi-source.zip"

  dynamic "source" {
    for_each = toset(local.function_files)
    content {
      content  = file("${local.source_dir}/${source.value}")
      filename = source.value
    }
  }
}

resource "google_storage_bucket_object" "source" {
  # The content hash in the name makes a code change redeploy the functions.
  name   = "capi-${data.archive_file.source.output_md5}.zip"
  bucket = google_storage_bucket.source.name
  source = data.archive_file.source.output_path
}

# -- functions -----------------------------------------------------------------------------

resource "google_cloudfunctions2_function" "events" {
  #checkov:skip=CKV_GCP_124:Callers outside Google Cloud (an sGTM container elsewhere, a shop back end) need ALLOW_ALL; set callers_inside_google_cloud = true for ALLOW_INTERNAL_AND_GCLB. Requests are still authenticated by IAM or the ingest key.
  project     = var.project_id
  location    = var.region
  name        = "${var.name}-events"
  description = "capi: GA4 / sGTM events -> Meta Conversions API"
  labels      = local.labels

  build_config {
    runtime         = "python312"
    entry_point     = "capi_events"
    service_account = google_service_account.build.id
    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.source.name
      }
    }
  }

  service_config {
    max_instance_count               = var.max_instance_count
    min_instance_count               = var.min_instance_count
    max_instance_request_concurrency = var.max_instance_request_concurrency
    available_memory                 = var.available_memory
    available_cpu                    = var.available_cpu
    timeout_seconds                  = var.timeout_seconds
    ingress_settings                 = var.callers_inside_google_cloud ? "ALLOW_INTERNAL_AND_GCLB" : "ALLOW_ALL"
    all_traffic_on_latest_revision   = true
    service_account_email            = google_service_account.runtime.email
    environment_variables            = local.environment
  }

  depends_on = [
    google_project_service.apis,
    google_secret_manager_secret_iam_member.runtime_access,
    google_project_iam_member.runtime_datastore,
    google_project_iam_member.build,
  ]

  lifecycle {
    precondition {
      condition     = !var.public_access || var.create_ingest_key
      error_message = "public_access = true needs create_ingest_key = true: a public function must check an ingest key."
    }
    precondition {
      condition     = (var.pixel_id != null) != (length(var.destinations) > 0)
      error_message = "Set exactly one of pixel_id (one pixel) and destinations (several pixels)."
    }
  }
}

resource "google_cloudfunctions2_function" "replay" {
  project     = var.project_id
  location    = var.region
  name        = "${var.name}-replay"
  description = "capi: re-send dead-lettered events (called by Cloud Scheduler)"
  labels      = local.labels

  build_config {
    runtime         = "python312"
    entry_point     = "capi_replay"
    service_account = google_service_account.build.id
    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.source.name
      }
    }
  }

  service_config {
    max_instance_count               = 1
    min_instance_count               = 0
    max_instance_request_concurrency = 1
    available_memory                 = var.available_memory
    available_cpu                    = var.available_cpu
    timeout_seconds                  = 540
    # Cloud Scheduler in the same project counts as internal traffic.
    ingress_settings               = "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision = true
    service_account_email          = google_service_account.runtime.email
    environment_variables          = local.environment
  }

  depends_on = [
    google_project_service.apis,
    google_secret_manager_secret_iam_member.runtime_access,
    google_project_iam_member.runtime_datastore,
    google_project_iam_member.build,
  ]
}

resource "google_cloudfunctions2_function" "quality" {
  project     = var.project_id
  location    = var.region
  name        = "${var.name}-quality"
  description = "capi: Meta's Event Match Quality per event name, daily (called by Cloud Scheduler)"
  labels      = local.labels

  build_config {
    runtime         = "python312"
    entry_point     = "capi_quality"
    service_account = google_service_account.build.id
    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.source.name
      }
    }
  }

  service_config {
    max_instance_count               = 1
    min_instance_count               = 0
    max_instance_request_concurrency = 1
    available_memory                 = var.available_memory
    available_cpu                    = var.available_cpu
    timeout_seconds                  = 120
    ingress_settings                 = "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision   = true
    service_account_email            = google_service_account.runtime.email
    environment_variables            = local.environment
  }

  depends_on = [
    google_project_service.apis,
    google_secret_manager_secret_iam_member.runtime_access,
    google_project_iam_member.build,
  ]
}

# -- who may call ----------------------------------------------------------------------------

# A gen2 function is served by Cloud Run: invoking it needs run.invoker on that service.
resource "google_cloud_run_service_iam_member" "events_invokers" {
  for_each = toset(var.invoker_members)
  project  = var.project_id
  location = var.region
  service  = google_cloudfunctions2_function.events.name
  role     = "roles/run.invoker"
  member   = each.value
}

resource "google_cloud_run_service_iam_member" "events_public" {
  #checkov:skip=CKV_GCP_102:Only with public_access = true, which requires an ingest key (precondition on the function): for callers that cannot mint Google ID tokens.
  count    = var.public_access ? 1 : 0
  project  = var.project_id
  location = var.region
  service  = google_cloudfunctions2_function.events.name
  role     = "roles/run.invoker"
  member   = "allUsers"
}

resource "google_cloud_run_service_iam_member" "replay_scheduler" {
  project  = var.project_id
  location = var.region
  service  = google_cloudfunctions2_function.replay.name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.scheduler.email}"
}

resource "google_cloud_scheduler_job" "replay" {
  project          = var.project_id
  region           = var.region
  name             = "${var.name}-replay"
  description      = "Re-send capi dead letters inside Meta's 7-day window"
  schedule         = var.replay_schedule
  time_zone        = var.replay_time_zone
  attempt_deadline = "540s"

  retry_config {
    retry_count = 1
  }

  http_target {
    http_method = "POST"
    uri         = google_cloudfunctions2_function.replay.service_config[0].uri
    oidc_token {
      service_account_email = google_service_account.scheduler.email
      audience              = google_cloudfunctions2_function.replay.service_config[0].uri
    }
  }

  depends_on = [google_project_service.apis, google_cloud_run_service_iam_member.replay_scheduler]
}

resource "google_cloud_run_service_iam_member" "quality_scheduler" {
  project  = var.project_id
  location = var.region
  service  = google_cloudfunctions2_function.quality.name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.scheduler.email}"
}

resource "google_cloud_scheduler_job" "quality" {
  project          = var.project_id
  region           = var.region
  name             = "${var.name}-quality"
  description      = "Read Meta's Event Match Quality per event name (values are multi-day aggregates: daily is enough)"
  schedule         = var.quality_schedule
  time_zone        = var.replay_time_zone
  attempt_deadline = "120s"

  # A refused token stays refused on a retry; the next day's run is the retry.
  retry_config {
    retry_count = 0
  }

  http_target {
    http_method = "POST"
    uri         = google_cloudfunctions2_function.quality.service_config[0].uri
    oidc_token {
      service_account_email = google_service_account.scheduler.email
      audience              = google_cloudfunctions2_function.quality.service_config[0].uri
    }
  }

  depends_on = [google_project_service.apis, google_cloud_run_service_iam_member.quality_scheduler]
}
