variable "project_id" {
  description = "Google Cloud project that runs capi."
  type        = string
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a Google Cloud project id (6-30 lowercase letters, digits, hyphens)."
  }
}

variable "region" {
  description = "Region of the functions, the source bucket and the Scheduler job."
  type        = string
  default     = "europe-west1"
}

variable "name" {
  description = "Prefix of every resource name (functions, service accounts, secrets, buckets)."
  type        = string
  default     = "capi"
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,20}$", var.name))
    error_message = "name must be 2-21 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "pixel_id" {
  description = "Meta pixel / dataset id (META_PIXEL_ID): one destination, its token in the meta_token secret. Leave null and use destinations for several pixels."
  type        = string
  default     = null
  validation {
    condition     = var.pixel_id == null || can(regex("^[0-9]+$", var.pixel_id))
    error_message = "pixel_id must be digits."
  }
}

variable "destinations" {
  description = "Several pixels (META_DESTINATIONS, docs/destinations.md): one entry per Meta dataset; the module creates a token secret per entry (and an app secret when app_secret is true). Use instead of pixel_id."
  type = list(object({
    name                 = string
    pixel_id             = string
    hosts                = optional(list(string))
    forward_events       = optional(string)
    test_event_code      = optional(string)
    app_secret           = optional(bool, false)
    token_secret_version = optional(string, "latest")
  }))
  default = []
  validation {
    condition     = alltrue([for d in var.destinations : can(regex("^[a-z0-9][a-z0-9-]{0,29}$", d.name))])
    error_message = "destinations: each name must be 1-30 lowercase letters, digits or hyphens (it names the token secret)."
  }
  validation {
    condition     = length(distinct([for d in var.destinations : d.name])) == length(var.destinations)
    error_message = "destinations: names must be unique."
  }
  validation {
    condition     = alltrue([for d in var.destinations : can(regex("^[0-9]+$", d.pixel_id))])
    error_message = "destinations: each pixel_id must be digits."
  }
  validation {
    condition = alltrue(flatten([for d in var.destinations : [
      for h in coalesce(d.hosts, []) : can(regex("^(\\*\\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$", h))
    ]]))
    error_message = "destinations: each host must be a lowercase host name such as shop.example.com, or *.example.com (no scheme, port or path)."
  }
  validation {
    condition     = alltrue([for d in var.destinations : can(regex("^(latest|[0-9]+)$", d.token_secret_version))])
    error_message = "destinations: token_secret_version must be \"latest\" or a version number."
  }
}

variable "meta_token_secret_version" {
  description = "Version of the Meta access token secret the function reads: a number (pinned, recommended in production: rotation = add a version, bump this) or \"latest\"."
  type        = string
  default     = "latest"
  validation {
    condition     = can(regex("^(latest|[0-9]+)$", var.meta_token_secret_version))
    error_message = "meta_token_secret_version must be \"latest\" or a version number."
  }
}

variable "create_app_secret" {
  description = "Create a secret for the Meta app secret, so capi sends appsecret_proof (META_APP_SECRET_SECRET)."
  type        = bool
  default     = false
}

variable "create_ingest_key" {
  description = "Create a secret for caller ingest keys (INGEST_API_KEY_SECRET). Required when public_access is true."
  type        = bool
  default     = false
}

variable "public_access" {
  description = "Let anyone reach capi_events (allUsers invoker): for callers that cannot mint Google ID tokens, such as a server-side GTM container outside Google Cloud. Requires create_ingest_key."
  type        = bool
  default     = false
}

variable "invoker_members" {
  description = "IAM members allowed to call capi_events with an ID token (e.g. serviceAccount:sgtm@p.iam.gserviceaccount.com)."
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for m in var.invoker_members : can(regex("^(user|serviceAccount|group|domain):", m))])
    error_message = "invoker_members entries must start with user:, serviceAccount:, group: or domain: (use public_access for allUsers)."
  }
}

variable "callers_inside_google_cloud" {
  description = "true when every caller runs inside Google Cloud (same project / VPC) or comes through a load balancer: ingress becomes ALLOW_INTERNAL_AND_GCLB. false (default) allows callers anywhere (ALLOW_ALL)."
  type        = bool
  default     = false
}

variable "forward_events" {
  description = "FORWARD_EVENTS: comma list of event names to forward, or \"*\". Empty keeps capi's default (the mapped conversion events, no page_view)."
  type        = string
  default     = ""
}

variable "event_name_map" {
  description = "EVENT_NAME_MAP: extra or overriding GA4 -> Meta event names."
  type        = map(string)
  default     = {}
}

variable "default_country" {
  description = "DEFAULT_COUNTRY: ISO 3166 alpha-2 region for national phone numbers and postal codes when neither event nor profile says (empty: none)."
  type        = string
  default     = ""
  validation {
    condition     = can(regex("^([A-Za-z]{2})?$", var.default_country))
    error_message = "default_country must be empty or a 2-letter ISO code such as US."
  }
}

variable "profile_collection" {
  description = "PROFILE_COLLECTION: Firestore collection of user profiles; empty turns enrichment off."
  type        = string
  default     = "users"
}

variable "firestore_database" {
  description = "FIRESTORE_DATABASE: Firestore database id."
  type        = string
  default     = "(default)"
}

variable "create_firestore_database" {
  description = "Create the Firestore database (Native mode). Leave false when the project already has it."
  type        = bool
  default     = false
}

variable "firestore_location" {
  description = "Location of the Firestore database when create_firestore_database is true."
  type        = string
  default     = "eur3"
}

variable "deadletter_collection" {
  description = "DEADLETTER_COLLECTION: Firestore collection for events kept for replay. Default: \"<name>_deadletter\" (capi_deadletter for the default name), so two deployments in one project keep their dead letters apart."
  type        = string
  default     = null
  validation {
    condition     = var.deadletter_collection == null || try(length(var.deadletter_collection) > 0, false)
    error_message = "deadletter_collection must not be empty (leave it unset for \"<name>_deadletter\")."
  }
}

variable "idempotency_collection" {
  description = "IDEMPOTENCY_COLLECTION: Firestore collection for the optional 48 h idempotency guard; empty turns it off (with delivery = \"queue\": NAME_idempotency, the guard the queue needs)."
  type        = string
  default     = ""
}

variable "browser_collection" {
  description = "BROWSER_COLLECTION: Firestore collection of the hashed keys remembered per browser (enhanced event coverage, only with ad_user_data consent); empty turns it off. A TTL policy on its expire_at field deletes a browser's keys browser_ttl_days after their last change."
  type        = string
  default     = ""
}

variable "browser_ttl_days" {
  description = "BROWSER_TTL_DAYS: days a browser's remembered keys live after their last change (the expire_at TTL field)."
  type        = number
  default     = 90
  validation {
    condition     = var.browser_ttl_days >= 1 && var.browser_ttl_days <= 400 && floor(var.browser_ttl_days) == var.browser_ttl_days
    error_message = "browser_ttl_days must be a whole number of days, 1..400."
  }
}

variable "order_dedup_hours" {
  description = "ORDER_DEDUP_HOURS: with idempotency_collection, a second Purchase for the same order and pixel within this many hours is skipped (duplicate_order)."
  type        = number
  default     = 48
  validation {
    condition     = var.order_dedup_hours >= 1 && var.order_dedup_hours <= 672
    error_message = "order_dedup_hours must be between 1 and 672 (28 days)."
  }
}

variable "create_shopify_signing_key" {
  description = "Create a secret for the key Shopify signs order webhooks with (SHOPIFY_SIGNING_KEY_SECRET), for POST /webhooks/shopify. Shopify cannot mint Google ID tokens: the function needs public_access (and so create_ingest_key)."
  type        = bool
  default     = false
}

variable "create_woocommerce_signing_key" {
  description = "Create a secret for the WooCommerce webhook secret (WOOCOMMERCE_SIGNING_KEY_SECRET), for POST /webhooks/woocommerce. WooCommerce cannot mint Google ID tokens: the function needs public_access (and so create_ingest_key)."
  type        = bool
  default     = false
}

variable "meta_api_version" {
  description = "META_API_VERSION: Graph API version."
  type        = string
  default     = "v26.0"
  validation {
    condition     = can(regex("^v[0-9]+\\.[0-9]+$", var.meta_api_version))
    error_message = "meta_api_version must look like v26.0."
  }
}

variable "meta_test_event_code" {
  description = "META_TEST_EVENT_CODE: send every event as a test event (empty in production)."
  type        = string
  default     = ""
}

variable "limited_data_use" {
  description = "LIMITED_DATA_USE: off, or geo to send every event with Meta's Limited Data Use, Meta geolocating the user."
  type        = string
  default     = "off"
  validation {
    condition     = contains(["off", "geo"], var.limited_data_use)
    error_message = "limited_data_use must be off or geo."
  }
}

variable "log_level" {
  description = "LOG_LEVEL of the functions."
  type        = string
  default     = "INFO"
  validation {
    condition     = contains(["DEBUG", "INFO", "WARNING", "ERROR"], var.log_level)
    error_message = "log_level must be DEBUG, INFO, WARNING or ERROR."
  }
}

variable "max_instance_request_concurrency" {
  description = "Concurrent requests per instance (also the gunicorn THREADS). Above 1 needs at least 1 vCPU."
  type        = number
  default     = 8
  validation {
    condition     = var.max_instance_request_concurrency >= 1 && var.max_instance_request_concurrency <= 1000
    error_message = "max_instance_request_concurrency must be 1..1000."
  }
}

variable "max_instance_count" {
  description = "Upper bound of instances of capi_events (cost and Meta rate-limit guard)."
  type        = number
  default     = 20
  validation {
    condition     = var.max_instance_count >= 1
    error_message = "max_instance_count must be at least 1."
  }
}

variable "min_instance_count" {
  description = "Instances kept warm for capi_events (0 = scale to zero; 1 avoids cold starts)."
  type        = number
  default     = 0
}

variable "timeout_seconds" {
  description = "Request timeout of capi_events; must cover Meta retries (10 s) plus a dead-letter write."
  type        = number
  default     = 60
  validation {
    condition     = var.timeout_seconds >= 30 && var.timeout_seconds <= 3600
    error_message = "timeout_seconds must be 30..3600."
  }
}

variable "available_memory" {
  description = "Memory of each instance."
  type        = string
  default     = "512M"
}

variable "available_cpu" {
  description = "vCPUs of each instance (at least 1 when concurrency is above 1)."
  type        = string
  default     = "1"
}

variable "replay_schedule" {
  description = "Cron schedule of the dead-letter replay (Cloud Scheduler)."
  type        = string
  default     = "*/15 * * * *"
}

variable "replay_time_zone" {
  description = "Time zone of replay_schedule and quality_schedule."
  type        = string
  default     = "Etc/UTC"
}

variable "enable_apis" {
  description = "Enable the Google APIs capi needs (left enabled on destroy)."
  type        = bool
  default     = true
}

variable "source_dir" {
  description = "Directory holding main.py, requirements.txt and capi/ (the repository root)."
  type        = string
  default     = null
}

variable "labels" {
  description = "Labels put on every resource that takes them."
  type        = map(string)
  default     = {}
}

variable "quality_schedule" {
  description = "Cron schedule of capi_quality (Cloud Scheduler, in replay_time_zone). Meta's quality values are multi-day aggregates: once a day is enough."
  type        = string
  default     = "0 7 * * *"
}

variable "emq_alert_below" {
  description = "EMQ_ALERT_BELOW: capi_quality logs a WARNING (and the alert fires) for each event name whose Event Match Quality is below this (Meta's 0..10 scale)."
  type        = number
  default     = 6.0
  validation {
    condition     = var.emq_alert_below >= 0 && var.emq_alert_below <= 10
    error_message = "emq_alert_below must be 0..10."
  }
}

variable "dedup_alert_below" {
  description = "DEDUP_ALERT_BELOW: capi_quality logs a WARNING (and the alert fires) for each event name whose browser events Meta deduplicated against the server's are below this percentage."
  type        = number
  default     = 50
  validation {
    condition     = var.dedup_alert_below >= 0 && var.dedup_alert_below <= 100
    error_message = "dedup_alert_below must be 0..100."
  }
}

variable "alert_email" {
  description = "Email address that receives capi's alerts (a Cloud Monitoring email notification channel is created). Empty: no channel is created; add your own with notification_channels."
  type        = string
  default     = ""
  validation {
    condition     = var.alert_email == "" || can(regex("^[^@\\s]+@[^@\\s]+$", var.alert_email))
    error_message = "alert_email must be an email address or empty."
  }
}

variable "notification_channels" {
  description = "Existing Cloud Monitoring notification channel ids (projects/P/notificationChannels/N) that also receive capi's alerts."
  type        = list(string)
  default     = []
}

variable "no_forward_alert_hours" {
  description = "The \"nothing forwarded\" alert fires when capi_events answered requests for this many hours and forwarded no event to Meta."
  type        = number
  default     = 6
  validation {
    condition     = var.no_forward_alert_hours >= 1 && var.no_forward_alert_hours <= 72 && floor(var.no_forward_alert_hours) == var.no_forward_alert_hours
    error_message = "no_forward_alert_hours must be a whole number of hours, 1..72."
  }
}

variable "match_key_metrics" {
  description = "user_data keys that get a match-key coverage metric and dashboard chart (one log-based metric each)."
  type        = list(string)
  default     = ["em", "ph", "external_id", "fn", "ln", "client_ip_address", "client_user_agent", "fbp", "fbc"]
  validation {
    condition     = alltrue([for key in var.match_key_metrics : can(regex("^[a-z_]+$", key))])
    error_message = "match_key_metrics entries are user_data keys such as em or fbp."
  }
}

# -- queued delivery (DELIVERY=queue, docs/queue.md) ---------------------------------------------

variable "delivery" {
  description = "direct: capi_events sends to Meta and answers with Meta's result. queue: capi_events publishes to a Pub/Sub topic and answers 202; capi_deliver (a push subscription) sends in batches."
  type        = string
  default     = "direct"
  validation {
    condition     = contains(["direct", "queue"], var.delivery)
    error_message = "delivery must be direct or queue."
  }
}

variable "batch_window_ms" {
  description = "BATCH_WINDOW_MS: capi_deliver gathers the pushes of this window into one Graph call per pixel (at most 1000 events)."
  type        = number
  default     = 500
  validation {
    condition     = var.batch_window_ms >= 0 && var.batch_window_ms <= 10000
    error_message = "batch_window_ms must be between 0 and 10000."
  }
}

variable "deliver_request_concurrency" {
  description = "Pushes one capi_deliver instance serves at once: gathering needs many (gen2 defaults to 1). 250 covers 200 messages/s with a 500 ms window and Meta's latency."
  type        = number
  default     = 250
  validation {
    condition     = var.deliver_request_concurrency >= 1 && var.deliver_request_concurrency <= 1000
    error_message = "deliver_request_concurrency must be between 1 and 1000 (Cloud Run's bound)."
  }
}

variable "deliver_available_cpu" {
  description = "CPUs of a capi_deliver instance: a concurrency above 1 needs at least 1."
  type        = string
  default     = "1"
}

variable "deliver_available_memory" {
  description = "Memory of a capi_deliver instance (the bench measures it under load; docs/queue.md)."
  type        = string
  default     = "512Mi"
}

variable "deliver_max_instance_count" {
  description = "Upper bound of capi_deliver instances: fewer instances gather bigger batches."
  type        = number
  default     = 10
}

variable "queue_max_delivery_attempts" {
  description = "Pushes of a message before Pub/Sub moves it to the dead-letter topic (5-100), which capi_replay drains."
  type        = number
  default     = 20
  validation {
    condition     = var.queue_max_delivery_attempts >= 5 && var.queue_max_delivery_attempts <= 100
    error_message = "queue_max_delivery_attempts must be between 5 and 100 (Pub/Sub's bounds)."
  }
}

variable "queue_minimum_backoff" {
  description = "Pub/Sub's first wait before pushing a nacked message again."
  type        = string
  default     = "10s"
}

variable "queue_maximum_backoff" {
  description = "Pub/Sub's longest wait between pushes of a nacked message (at most 600s): with 20 attempts, a message rides out about two hours of Meta outage before the dead-letter topic."
  type        = string
  default     = "600s"
}
