//! The delivery counters on `/metrics`, per sink: delivered, retried, failed for good,
//! silenced, and the pending backlog.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabel {
    pub sink: String,
}

/// Cheap to clone: the families are shared.
#[derive(Clone, Default)]
pub struct NotifyMetrics {
    pub delivered: Family<SinkLabel, Counter>,
    pub retries: Family<SinkLabel, Counter>,
    pub failed: Family<SinkLabel, Counter>,
    pub silenced: Family<SinkLabel, Counter>,
    pub pending: Family<SinkLabel, Gauge>,
}

impl NotifyMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "gpuwarden_notifications_delivered",
            "Notifications delivered, per sink",
            self.delivered.clone(),
        );
        registry.register(
            "gpuwarden_notification_retries",
            "Failed delivery attempts that will be retried, per sink",
            self.retries.clone(),
        );
        registry.register(
            "gpuwarden_notifications_failed",
            "Notifications given up on (rejected by the receiver or undelivered too long), per sink",
            self.failed.clone(),
        );
        registry.register(
            "gpuwarden_notifications_silenced",
            "Notifications held back by a silence, per sink",
            self.silenced.clone(),
        );
        registry.register(
            "gpuwarden_notifications_pending",
            "Notifications in the outbox waiting for delivery, per sink",
            self.pending.clone(),
        );
    }

    pub fn label(sink: &str) -> SinkLabel {
        SinkLabel { sink: sink.to_string() }
    }
}
