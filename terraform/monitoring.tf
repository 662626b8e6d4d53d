# Operations: log-based metrics on capi's structured log lines, alert policies, a dashboard.
#
# Cloud Logging keeps each JSON line's fields under jsonPayload (`message` too, as
# jsonPayload.message) and lifts `severity` out to the entry's severity. The log lines and
# their fields are part of capi's contract (docs/operations.md, Log lines); tests/test_alerts.py checks
# that each filter below matches the line capi writes for its condition and not its neighbour.

locals {
  # The functions (capi_deliver too, with delivery = "queue") run as Cloud Run services; their
  # stdout is their log.
  capi_logs = "resource.type=\"cloud_run_revision\" AND (resource.labels.service_name=\"${var.name}-events\" OR resource.labels.service_name=\"${var.name}-replay\" OR resource.labels.service_name=\"${var.name}-quality\" OR resource.labels.service_name=\"${var.name}-deliver\")"

  # Every Logging query of the module, in one table.
  filters = {
    # One line per /events request.
    requests = "${local.capi_logs} AND jsonPayload.message=\"events processed\""
    # ... of which forwarded at least one event to Meta.
    forwarding = "${local.capi_logs} AND jsonPayload.message=\"events processed\" AND jsonPayload.forwarded>0"
    # One line per event name and outcome per request (capi/report.py).
    by_name = "${local.capi_logs} AND jsonPayload.message=\"events by name\" AND jsonPayload.count>0"
    # ... the forwarded ones, which carry match_keys.
    by_name_forwarded = "${local.capi_logs} AND jsonPayload.message=\"events by name\" AND jsonPayload.outcome=\"forwarded\""
    # Meta failed transiently or answered something unreadable: the events were kept.
    stored = "${local.capi_logs} AND jsonPayload.message=\"events stored for replay\" AND jsonPayload.stored>0"
    # Replay dropped a dead letter: too many attempts or refused by Meta (ERROR), or outside Meta's 7 days (WARNING).
    gave_up = "${local.capi_logs} AND (jsonPayload.message=\"dead letter dropped: too many attempts\" OR jsonPayload.message=\"dead letter dropped: refused by Meta\" OR jsonPayload.message=\"dead letter dropped: outside Meta's 7-day window\")"
    # Every failed Graph API call (each attempt), with Meta's error code.
    meta_errors = "${local.capi_logs} AND jsonPayload.message=\"Meta call failed\""
    # Meta refused the token, its permission or the pixel (delivery or capi_quality).
    meta_config = "${local.capi_logs} AND severity>=ERROR AND jsonPayload.error=\"meta_config\""
    # A secret (the token, an ingest key) cannot be read: capi_events answers 503.
    secret = "${local.capi_logs} AND severity>=ERROR AND jsonPayload.message=\"secret unavailable\""
    # capi_quality: one line per event name, and a WARNING per event name under EMQ_ALERT_BELOW.
    quality   = "${local.capi_logs} AND jsonPayload.message=\"dataset quality\" AND jsonPayload.score>=0"
    emq_below = "${local.capi_logs} AND severity>=WARNING AND jsonPayload.message=\"Event Match Quality below threshold\""
    # capi_quality's release-3 warnings, one per event name, each line with its fix.
    dedup_below    = "${local.capi_logs} AND severity>=WARNING AND jsonPayload.message=\"deduplication below threshold\""
    coverage_below = "${local.capi_logs} AND severity>=WARNING AND jsonPayload.message=\"event coverage below Meta's goal\""
    ip_diagnostic  = "${local.capi_logs} AND severity>=WARNING AND jsonPayload.message=\"Meta IP diagnostic\""
    # capi_quality could not read Meta's answer (token problems are meta_config's alert).
    quality_unavailable = "${local.capi_logs} AND jsonPayload.message=\"dataset quality unavailable\" AND NOT jsonPayload.error=\"meta_config\""
    # Meta's X-Ad-Api-Version-Warning: the version capi calls is being retired (one line per instance and version).
    api_version = "${local.capi_logs} AND severity>=WARNING AND jsonPayload.message=\"Meta API version warning\""
  }

  metric_prefix = "logging.googleapis.com/user/${var.name}"
  # PromQL names of the log-based metrics: the first / becomes :, the others and - become _.
  promql = "logging_googleapis_com:user_${replace(var.name, "-", "_")}"

  notification_channels = concat(google_monitoring_notification_channel.email[*].id, var.notification_channels)
}

# -- log-based metrics -----------------------------------------------------------------------

resource "google_logging_metric" "requests" {
  project     = var.project_id
  name        = "${var.name}/requests"
  description = "capi_events requests (one \"events processed\" line each), by HTTP status and error."
  filter      = local.filters.requests
  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"
    labels {
      key         = "status"
      value_type  = "STRING"
      description = "HTTP status capi answered"
    }
    labels {
      key         = "error"
      value_type  = "STRING"
      description = "meta_config, meta_unavailable, meta_refused, meta_unreadable, store_unavailable, or empty"
    }
  }
  label_extractors = {
    status = "EXTRACT(jsonPayload.status)"
    error  = "EXTRACT(jsonPayload.error)"
  }
}

resource "google_logging_metric" "forwarding_requests" {
  project     = var.project_id
  name        = "${var.name}/forwarding_requests"
  description = "capi_events requests that forwarded at least one event to Meta."
  filter      = local.filters.forwarding
  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"
  }
}

resource "google_logging_metric" "events" {
  project         = var.project_id
  name            = "${var.name}/events"
  description     = "Events by Meta event name and outcome (forwarded, stored, skipped, rejected, failed): the sum of the distribution is the number of events."
  filter          = local.filters.by_name
  value_extractor = "EXTRACT(jsonPayload.count)"
  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "DISTRIBUTION"
    unit        = "1"
    labels {
      key        = "event_name"
      value_type = "STRING"
    }
    labels {
      key        = "outcome"
      value_type = "STRING"
    }
  }
  label_extractors = {
    event_name = "EXTRACT(jsonPayload.event_name)"
    outcome    = "EXTRACT(jsonPayload.outcome)"
  }
  bucket_options {
    exponential_buckets {
      num_finite_buckets = 12
      growth_factor      = 2
      scale              = 1
    }
  }
}

# One metric per user_data key: a log-based metric cannot take a label from a map's keys.
# Coverage of key K for event name E = sum(match_keys/K) / sum(events{outcome="forwarded"}).
resource "google_logging_metric" "match_keys" {
  for_each        = toset(var.match_key_metrics)
  project         = var.project_id
  name            = "${var.name}/match_keys/${each.value}"
  description     = "Forwarded events that carried user_data.${each.value}, by event name."
  filter          = "${local.filters.by_name_forwarded} AND jsonPayload.match_keys.${each.value}>0"
  value_extractor = "EXTRACT(jsonPayload.match_keys.${each.value})"
  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "DISTRIBUTION"
    unit        = "1"
    labels {
      key        = "event_name"
      value_type = "STRING"
    }
  }
  label_extractors = {
    event_name = "EXTRACT(jsonPayload.event_name)"
  }
  bucket_options {
    exponential_buckets {
      num_finite_buckets = 12
      growth_factor      = 2
      scale              = 1
    }
  }
}

resource "google_logging_metric" "stored_for_replay" {
  project     = var.project_id
  name        = "${var.name}/stored_for_replay"
  description = "Requests whose events Meta did not take and capi stored for replay (\"events stored for replay\"), by destination (pixel)."
  filter      = local.filters.stored
  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"
    labels {
      key        = "destination"
      value_type = "STRING"
    }
  }
  label_extractors = {
    destination = "EXTRACT(jsonPayload.destination)"
  }
}

resource "google_logging_metric" "replay_gave_up" {
  project     = var.project_id
  name        = "${var.name}/replay_gave_up"
  description = "Dead letters replay dropped: too many attempts, refused by Meta, or outside Meta's 7-day window."
  filter      = local.filters.gave_up
  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"
    labels {
      key        = "reason"
      value_type = "STRING"
    }
  }
  label_extractors = {
    reason = "REGEXP_EXTRACT(jsonPayload.message, \"dead letter dropped: (.*)\")"
  }
}

resource "google_logging_metric" "meta_errors" {
  project     = var.project_id
  name        = "${var.name}/meta_errors"
  description = "Failed Graph API calls (every attempt), by Meta's error code and destination (pixel)."
  filter      = local.filters.meta_errors
  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"
    labels {
      key        = "meta_code"
      value_type = "STRING"
    }
    labels {
      key        = "destination"
      value_type = "STRING"
    }
  }
  label_extractors = {
    meta_code   = "EXTRACT(jsonPayload.meta_code)"
    destination = "EXTRACT(jsonPayload.destination)"
  }
}

resource "google_logging_metric" "api_version_warnings" {
  project     = var.project_id
  name        = "${var.name}/api_version_warnings"
  description = "Meta's X-Ad-Api-Version-Warning on a Graph API answer (one per instance and version), by the version called and the version to move to."
  filter      = local.filters.api_version
  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"
    labels {
      key        = "api_version"
      value_type = "STRING"
    }
    labels {
      key        = "move_to"
      value_type = "STRING"
    }
  }
  label_extractors = {
    api_version = "EXTRACT(jsonPayload.api_version)"
    move_to     = "EXTRACT(jsonPayload.move_to)"
  }
}

resource "google_logging_metric" "emq" {
  project         = var.project_id
  name            = "${var.name}/emq"
  description     = "Event Match Quality (0..10) per event name, from capi_quality's daily \"dataset quality\" lines."
  filter          = local.filters.quality
  value_extractor = "EXTRACT(jsonPayload.score)"
  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "DISTRIBUTION"
    unit        = "1"
    labels {
      key        = "event_name"
      value_type = "STRING"
    }
    labels {
      key        = "destination"
      value_type = "STRING"
    }
  }
  label_extractors = {
    event_name  = "EXTRACT(jsonPayload.event_name)"
    destination = "EXTRACT(jsonPayload.destination)"
  }
  bucket_options {
    linear_buckets {
      num_finite_buckets = 20
      width              = 0.5
      offset             = 0
    }
  }
}

# -- where alerts go -----------------------------------------------------------------------------

resource "google_monitoring_notification_channel" "email" {
  count        = var.alert_email != "" ? 1 : 0
  project      = var.project_id
  display_name = "capi alerts (${var.alert_email})"
  type         = "email"
  labels = {
    email_address = var.alert_email
  }
}

# -- alert policies ------------------------------------------------------------------------------
# Log-match policies notify at most once per rate-limit period; each documentation block is
# what the notification says, and docs/operations.md's runbook says the same at more length.

resource "google_monitoring_alert_policy" "meta_config" {
  project               = var.project_id
  display_name          = "capi: Meta refused the token or its permission"
  combiner              = "OR"
  severity              = "CRITICAL"
  notification_channels = local.notification_channels
  conditions {
    display_name = "a line with error meta_config"
    condition_matched_log {
      filter = local.filters.meta_config
    }
  }
  alert_strategy {
    notification_rate_limit {
      period = "3600s"
    }
    auto_close = "86400s"
  }
  documentation {
    mime_type = "text/markdown"
    content   = "Meta answered 190 (token invalid or expired), 10/200-299 (permission) or 100/33 (no such pixel). Events are stored for replay, not lost. The log line's `fix` says what to do (and `destination`, with several pixels, which one); docs/operations.md#runbook: rotate the token, then run the replay job by hand."
  }
}

resource "google_monitoring_alert_policy" "stored_for_replay" {
  project               = var.project_id
  display_name          = "capi: events stored for replay"
  combiner              = "OR"
  severity              = "WARNING"
  notification_channels = local.notification_channels
  conditions {
    display_name = "events stored for replay in the last 5 minutes"
    condition_threshold {
      filter          = "metric.type=\"${local.metric_prefix}/stored_for_replay\" AND resource.type=\"cloud_run_revision\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }
      trigger {
        count = 1
      }
    }
  }
  alert_strategy {
    auto_close = "3600s"
  }
  documentation {
    mime_type = "text/markdown"
    content   = "Meta failed transiently (or answered something unreadable) after retries; capi kept the events in Firestore and capi_replay re-sends them every 15 minutes. A lasting alert means Meta is down for capi: see the `events stored for replay` lines' `error`. docs/operations.md#runbook."
  }
  depends_on = [google_logging_metric.stored_for_replay]
}

resource "google_monitoring_alert_policy" "replay_gave_up" {
  project               = var.project_id
  display_name          = "capi: replay gave up on dead letters"
  combiner              = "OR"
  severity              = "ERROR"
  notification_channels = local.notification_channels
  conditions {
    display_name = "dead letters dropped in the last 15 minutes"
    condition_threshold {
      filter          = "metric.type=\"${local.metric_prefix}/replay_gave_up\" AND resource.type=\"cloud_run_revision\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period     = "900s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }
      trigger {
        count = 1
      }
    }
  }
  alert_strategy {
    auto_close = "86400s"
  }
  documentation {
    mime_type = "text/markdown"
    content   = "capi_replay deleted dead letters it could not deliver: after REPLAY_MAX_ATTEMPTS tries, or older than Meta's 7 days. These events are lost to Meta. The lines `dead letter dropped: ...` name each event_id. docs/operations.md#runbook."
  }
  depends_on = [google_logging_metric.replay_gave_up]
}

resource "google_monitoring_alert_policy" "api_version" {
  project               = var.project_id
  display_name          = "capi: Meta is retiring the Graph API version capi calls"
  combiner              = "OR"
  severity              = "WARNING"
  notification_channels = local.notification_channels
  conditions {
    display_name = "a Meta API version warning in the last hour"
    condition_threshold {
      filter          = "metric.type=\"${local.metric_prefix}/api_version_warnings\" AND resource.type=\"cloud_run_revision\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period     = "3600s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }
      trigger {
        count = 1
      }
    }
  }
  alert_strategy {
    auto_close = "604800s"
  }
  documentation {
    mime_type = "text/markdown"
    content   = "Meta answered with X-Ad-Api-Version-Warning: the META_API_VERSION capi calls is being retired or auto-upgraded. The line `Meta API version warning` names `move_to`; set META_API_VERSION (Terraform: meta_api_version) to it and deploy. docs/meta-capi.md §12 (Graph API version)."
  }
  depends_on = [google_logging_metric.api_version_warnings]
}

resource "google_monitoring_alert_policy" "secret" {
  project               = var.project_id
  display_name          = "capi: a secret cannot be read"
  combiner              = "OR"
  severity              = "CRITICAL"
  notification_channels = local.notification_channels
  conditions {
    display_name = "a secret unavailable line"
    condition_matched_log {
      filter = local.filters.secret
    }
  }
  alert_strategy {
    notification_rate_limit {
      period = "3600s"
    }
    auto_close = "86400s"
  }
  documentation {
    mime_type = "text/markdown"
    content   = "capi cannot read a Secret Manager secret (the Meta token or an ingest key): capi_events answers 503 and stores nothing, so callers must retry. The line's `secret` and `fix` say which and why (no version, or the runtime account lost secretAccessor). docs/operations.md#runbook."
  }
}

resource "google_monitoring_alert_policy" "emq_below" {
  project               = var.project_id
  display_name          = "capi: Event Match Quality below threshold"
  combiner              = "OR"
  severity              = "WARNING"
  notification_channels = local.notification_channels
  conditions {
    display_name = "an event name under EMQ_ALERT_BELOW"
    condition_matched_log {
      filter = local.filters.emq_below
      label_extractors = {
        event_name = "EXTRACT(jsonPayload.event_name)"
      }
    }
  }
  alert_strategy {
    notification_rate_limit {
      period = "86400s"
    }
    auto_close = "172800s"
  }
  documentation {
    mime_type = "text/markdown"
    content   = "Meta's Event Match Quality for an event name is under EMQ_ALERT_BELOW. Run capi_quality by hand and read `match_keys` (coverage per identifier), `dedupe` and `diagnostics` for that event name. docs/operations.md#read-capi_qualitys-answer."
  }
}

resource "google_monitoring_alert_policy" "dedup_below" {
  project               = var.project_id
  display_name          = "capi: browser and server events not deduplicated"
  combiner              = "OR"
  severity              = "WARNING"
  notification_channels = local.notification_channels
  conditions {
    display_name = "an event name under DEDUP_ALERT_BELOW % deduplicated"
    condition_matched_log {
      filter = local.filters.dedup_below
      label_extractors = {
        event_name = "EXTRACT(jsonPayload.event_name)"
      }
    }
  }
  alert_strategy {
    notification_rate_limit {
      period = "86400s"
    }
    auto_close = "172800s"
  }
  documentation {
    mime_type = "text/markdown"
    content   = "Meta deduplicated fewer of an event name's Pixel events against capi's than DEDUP_ALERT_BELOW percent, so conversions may count twice. The line's `server` / `browser` say which side lacks the id and `fix` says what to do: the Pixel's eventID must be sent as event_id, for the same Meta event name. docs/matching.md: the quality warnings."
  }
}

resource "google_monitoring_alert_policy" "coverage_below" {
  project               = var.project_id
  display_name          = "capi: event coverage below Meta's goal"
  combiner              = "OR"
  severity              = "WARNING"
  notification_channels = local.notification_channels
  conditions {
    display_name = "an event name under Meta's event coverage goal"
    condition_matched_log {
      filter = local.filters.coverage_below
      label_extractors = {
        event_name = "EXTRACT(jsonPayload.event_name)"
      }
    }
  }
  alert_strategy {
    notification_rate_limit {
      period = "86400s"
    }
    auto_close = "172800s"
  }
  documentation {
    mime_type = "text/markdown"
    content   = "Meta receives fewer server events than Pixel events for an event name (`percentage` under Meta's `goal`). The line's `fix`: send every event the Pixel sends through capi too (the sGTM trigger, FORWARD_EVENTS), with the same event_id. docs/matching.md: the quality warnings."
  }
}

resource "google_monitoring_alert_policy" "ip_diagnostic" {
  project               = var.project_id
  display_name          = "capi: Meta flags the client IP addresses"
  combiner              = "OR"
  severity              = "WARNING"
  notification_channels = local.notification_channels
  conditions {
    display_name = "Meta reports an IP diagnostic for an event name"
    condition_matched_log {
      filter = local.filters.ip_diagnostic
      label_extractors = {
        event_name = "EXTRACT(jsonPayload.event_name)"
      }
    }
  }
  alert_strategy {
    notification_rate_limit {
      period = "86400s"
    }
    auto_close = "172800s"
  }
  documentation {
    mime_type = "text/markdown"
    content   = "Meta's diagnostics flag the client_ip_address capi sends (IPv4 where the Pixel saw IPv6, or addresses that do not match the Pixel's). The line's `solution` is Meta's, `fix` capi's: run Meta's Parameter Builder on the site so the tag forwards its _fbi cookie (the browser's IPv6 address). docs/matching.md: the IP cookie."
  }
}

resource "google_monitoring_alert_policy" "quality_unavailable" {
  project               = var.project_id
  display_name          = "capi: Event Match Quality could not be read"
  combiner              = "OR"
  severity              = "WARNING"
  notification_channels = local.notification_channels
  conditions {
    display_name = "capi_quality could not read Meta's Dataset Quality API"
    condition_matched_log {
      filter = local.filters.quality_unavailable
    }
  }
  alert_strategy {
    notification_rate_limit {
      period = "86400s"
    }
    auto_close = "172800s"
  }
  documentation {
    mime_type = "text/markdown"
    content   = "capi_quality got no quality data (`no_data`), or an answer it could not read. Without it the EMQ alert cannot fire. docs/operations.md#read-capi_qualitys-answer."
  }
}

resource "google_monitoring_alert_policy" "nothing_forwarded" {
  project               = var.project_id
  display_name          = "capi: nothing forwarded for ${var.no_forward_alert_hours} h while requests arrive"
  combiner              = "OR"
  severity              = "CRITICAL"
  notification_channels = local.notification_channels
  conditions {
    display_name = "requests arrived and none forwarded an event"
    condition_prometheus_query_language {
      query               = "sum(increase(${local.promql}_requests[${var.no_forward_alert_hours}h])) > 0 unless sum(increase(${local.promql}_forwarding_requests[${var.no_forward_alert_hours}h])) > 0"
      duration            = "300s"
      evaluation_interval = "300s"
    }
  }
  alert_strategy {
    auto_close = "86400s"
  }
  documentation {
    mime_type = "text/markdown"
    content   = "capi_events answered requests but forwarded no event to Meta. Look at the `events processed` lines: `rejections` (invalid events: a changed tag or client), `skipped` (consent, FORWARD_EVENTS), `status` 502/503 and `error`. docs/operations.md#runbook."
  }
  depends_on = [google_logging_metric.requests, google_logging_metric.forwarding_requests]
}

# -- dashboard ---------------------------------------------------------------------------------------

locals {
  latency = "rate(run_googleapis_com:request_latencies_bucket{monitored_resource=\"cloud_run_revision\",service_name=\"${var.name}-events\"}[5m])"
  dashboard_charts = concat(
    [
      { title = "Events by outcome", queries = ["sum by (outcome) (increase(${local.promql}_events_sum[5m]))"] },
      { title = "Events by event name and outcome", queries = ["sum by (event_name, outcome) (increase(${local.promql}_events_sum[5m]))"] },
      { title = "Requests by status", queries = ["sum by (status) (increase(${local.promql}_requests[5m]))"] },
      { title = "Failed Meta calls by error code", queries = ["sum by (meta_code) (increase(${local.promql}_meta_errors[5m]))"] },
      { title = "Event Match Quality per event name (daily)", queries = ["sum by (event_name) (increase(${local.promql}_emq_sum[1d])) / sum by (event_name) (increase(${local.promql}_emq_count[1d]))"] },
      { title = "Latency of capi_events in ms: p50 and p95", queries = ["histogram_quantile(0.5, sum by (le) (${local.latency}))", "histogram_quantile(0.95, sum by (le) (${local.latency}))"] },
      { title = "Requests stored for replay, dead letters dropped", queries = ["sum(increase(${local.promql}_stored_for_replay[15m]))", "sum by (reason) (increase(${local.promql}_replay_gave_up[15m]))"] },
    ],
    [
      for key in var.match_key_metrics : {
        title   = "Match-key coverage: ${key} (share of forwarded events, per event name)"
        queries = ["sum by (event_name) (increase(${local.promql}_match_keys_${key}_sum[1h])) / sum by (event_name) (increase(${local.promql}_events_sum{outcome=\"forwarded\"}[1h]))"]
      }
    ],
  )
}

resource "google_monitoring_dashboard" "capi" {
  project = var.project_id
  dashboard_json = jsonencode({
    displayName = "capi"
    mosaicLayout = {
      columns = 12
      tiles = [
        for index, chart in local.dashboard_charts : {
          xPos   = (index % 2) * 6
          yPos   = floor(index / 2) * 4
          width  = 6
          height = 4
          widget = {
            title = chart.title
            xyChart = {
              dataSets = [for query in chart.queries : {
                plotType        = "LINE"
                timeSeriesQuery = { prometheusQuery = query }
              }]
            }
          }
        }
      ]
    }
  })
  depends_on = [google_logging_metric.events, google_logging_metric.match_keys, google_logging_metric.emq]
}
