# What an operator watches: the functions' OpenTelemetry metrics (CHIMERA_TELEMETRY_EXPORTER=gcp,
# see functions.tf), Cloud Tasks' own queue depth, one dashboard and the alert policies.
#
# The metric names are the contract in shared/telemetry.py: the Cloud Monitoring exporter files
# each under workload.googleapis.com/<name>, on the generic_task resource (a Cloud Run function,
# named by the GCP resource detector's faas.name and faas.instance), and turns an attribute's
# dots into underscores in its label (error.code -> metric.label.error_code).
# tests/unit/test_terraform.py checks every name used here against that contract.

locals {
  otel_metrics = "workload.googleapis.com"
  otel_series  = "resource.type=\"generic_task\""
}

resource "google_monitoring_dashboard" "operations" {
  project        = var.project_id
  dashboard_json = templatefile("${path.module}/dashboards/operations.json.tftpl", { environment = var.environment })

  depends_on = [google_project_service.api]
}

resource "google_monitoring_alert_policy" "step_latency_p99" {
  project      = var.project_id
  display_name = "Chimera step latency p99 (${var.environment})"
  combiner     = "OR"

  conditions {
    display_name = "p99 step latency above ${var.step_latency_p99_threshold_ms} ms, by vendor"

    condition_threshold {
      filter          = "metric.type=\"${local.otel_metrics}/chimera.tool.duration\" AND ${local.otel_series}"
      comparison      = "COMPARISON_GT"
      threshold_value = var.step_latency_p99_threshold_ms / 1000 # the histogram is in seconds
      duration        = "600s"

      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_PERCENTILE_99"
        group_by_fields      = ["metric.label.vendor"]
      }

      trigger {
        count = 1
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "A vendor's p99 step latency is close to the dispatch deadline (${var.dispatch_deadline}s): tasks will start to time out and retry. Check the vendor's status, the dashboard's vendor request latency and the tool function's logs (label vendor)."
  }

  alert_strategy {
    auto_close = "86400s"
  }

  notification_channels = var.notification_channels

  depends_on = [google_project_service.api]
}

resource "google_monitoring_alert_policy" "queue_backlog" {
  project      = var.project_id
  display_name = "Chimera queue backlog (${var.environment})"
  combiner     = "OR"

  conditions {
    display_name = "Queue depth above ${var.queue_backlog_threshold} tasks"

    condition_threshold {
      filter          = "metric.type=\"cloudtasks.googleapis.com/queue/depth\" AND resource.type=\"cloud_tasks_queue\" AND resource.label.queue_id=one_of(${join(", ", [for name in keys(local.queues) : "\"${name}\""])})"
      comparison      = "COMPARISON_GT"
      threshold_value = var.queue_backlog_threshold
      duration        = "600s"

      aggregations {
        alignment_period     = "60s"
        per_series_aligner   = "ALIGN_MAX"
        cross_series_reducer = "REDUCE_MAX"
        group_by_fields      = ["resource.label.queue_id"]
      }

      trigger {
        count = 1
      }
    }
  }

  conditions {
    display_name = "Oldest task older than ${var.queue_oldest_task_age_threshold_s} s"

    condition_threshold {
      filter          = "metric.type=\"${local.otel_metrics}/chimera.queue.oldest_task_age\" AND ${local.otel_series}"
      comparison      = "COMPARISON_GT"
      threshold_value = var.queue_oldest_task_age_threshold_s
      duration        = "300s"

      aggregations {
        alignment_period     = "60s"
        per_series_aligner   = "ALIGN_MAX"
        cross_series_reducer = "REDUCE_MAX"
        group_by_fields      = ["metric.label.queue"]
      }

      trigger {
        count = 1
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "A Chimera queue is backing up, or a task waits too long: its target function is failing (tasks retrying), throttled by the queue's rate limits, or a vendor is down. See the queue in Cloud Tasks, the dashboard's breaker and error charts, and the target function's logs."
  }

  alert_strategy {
    auto_close = "86400s"
  }

  notification_channels = var.notification_channels

  depends_on = [google_project_service.api]
}

resource "google_monitoring_alert_policy" "parked_runs" {
  project      = var.project_id
  display_name = "Chimera run parked (${var.environment})"
  combiner     = "OR"

  conditions {
    display_name = "A run was parked"

    condition_threshold {
      filter          = "metric.type=\"${local.otel_metrics}/chimera.runs\" AND ${local.otel_series} AND metric.label.outcome=\"parked\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"

      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
      }

      trigger {
        count = 1
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "A Chimera run is parked and waits for a person. Open the console's parked runs (`chimera ui` against this project's Firestore), or `chimera runs list --status parked`, and read the run's events."
  }

  alert_strategy {
    auto_close = "86400s"
  }

  notification_channels = var.notification_channels

  depends_on = [google_project_service.api]
}

resource "google_monitoring_alert_policy" "breaker_open" {
  project      = var.project_id
  display_name = "Chimera circuit breaker open (${var.environment})"
  combiner     = "OR"

  conditions {
    display_name = "A vendor's breaker open for ${var.breaker_open_alert_after_s} s"

    condition_threshold {
      # 0 closed, 1 half-open, 2 open: above 1.5 is open (thresholds compare GT or LT only).
      filter          = "metric.type=\"${local.otel_metrics}/chimera.breaker.state\" AND ${local.otel_series}"
      comparison      = "COMPARISON_GT"
      threshold_value = 1.5
      duration        = "${var.breaker_open_alert_after_s}s"

      aggregations {
        alignment_period     = "60s"
        per_series_aligner   = "ALIGN_MAX"
        cross_series_reducer = "REDUCE_MAX"
        group_by_fields      = ["metric.label.vendor"]
      }

      trigger {
        count = 1
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "A vendor failed often enough that Chimera stopped calling it (label vendor): its steps wait and retry until the breaker closes. Check the vendor's status page and the dashboard's tool errors by code."
  }

  alert_strategy {
    auto_close = "86400s"
  }

  notification_channels = var.notification_channels

  depends_on = [google_project_service.api]
}
