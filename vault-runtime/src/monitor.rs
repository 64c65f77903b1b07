//! A service's watch over itself, every few seconds: the consumer group's lag per partition,
//! and whether the group is stalled — lag present and nothing
//! committed for the stall time (docs/failures.md, "Stalls"). `/health` reports a stalled
//! worker as not ready, so an operator (or Kubernetes) sees a stage that has stopped moving
//! even when every dependency answers. (The dependencies are checked by [`crate::probe`].) Work
//! that must wait for a quiet group reads the last look ([`Status::last_look`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::config::Settings;
use crate::kafka::{self, PartitionProgress};
use crate::metrics::PartitionLabel;
use crate::status::Status;

/// How often the monitor looks.
const INTERVAL: Duration = Duration::from_secs(2);

/// Decides when a group is stalled from successive looks at its progress.
#[derive(Debug)]
pub(crate) struct StallDetector {
    stall_after: Duration,
    /// The committed total at the last look that saw progress (or no lag), and when.
    last_progress: Option<(i64, Instant)>,
}

impl StallDetector {
    pub(crate) fn new(stall_after: Duration) -> Self {
        Self {
            stall_after,
            last_progress: None,
        }
    }

    /// Takes a look; returns how long the group has been stalled, if it is.
    pub(crate) fn observe(
        &mut self,
        progress: &[PartitionProgress],
        now: Instant,
    ) -> Option<Duration> {
        let committed: i64 = progress.iter().map(|p| p.committed).sum();
        let lag: i64 = progress.iter().map(PartitionProgress::lag).sum();
        match self.last_progress {
            Some((before, since)) if lag > 0 && committed == before => {
                let waited = now.duration_since(since);
                (waited >= self.stall_after).then_some(waited)
            }
            _ => {
                self.last_progress = Some((committed, now));
                None
            }
        }
    }
}

/// Runs until `stop` turns true.
pub(crate) async fn run(
    settings: Settings,
    topic: String,
    status: Arc<Status>,
    mut stop: watch::Receiver<bool>,
) {
    let reader = match kafka::offsets_reader(&settings.kafka, &settings.kafka.consumer_group) {
        Ok(reader) => Arc::new(reader),
        Err(error) => {
            tracing::warn!(error = %format!("{error:#}"), "Cannot watch the consumer group's lag.");
            status.metrics.error("monitor");
            return;
        }
    };
    let mut detector = StallDetector::new(settings.stall_after);
    loop {
        let looked = {
            let reader = reader.clone();
            let topic = topic.clone();
            tokio::task::spawn_blocking(move || kafka::progress(&reader, &topic)).await
        };
        match looked {
            Ok(Ok(progress)) => {
                for p in &progress {
                    status
                        .metrics
                        .lag
                        .get_or_create(&PartitionLabel {
                            topic: topic.clone(),
                            partition: p.partition,
                        })
                        .set(p.lag());
                }
                let stalled = detector.observe(&progress, Instant::now());
                let lag: i64 = progress.iter().map(PartitionProgress::lag).sum();
                status.set_lag(lag);
                status.set_stalled(stalled.map(|waited| {
                    format!(
                        "no offset committed on {topic} for {}s while {lag} messages wait",
                        waited.as_secs()
                    )
                }));
            }
            Ok(Err(error)) => {
                tracing::debug!(error = %format!("{error:#}"), "Cannot read the consumer group's lag.");
                status.metrics.error("monitor");
            }
            Err(error) => tracing::warn!(%error, "The lag check panicked."),
        }
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            () = tokio::time::sleep(INTERVAL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(committed: i64, end: i64) -> Vec<PartitionProgress> {
        vec![PartitionProgress {
            partition: 0,
            committed,
            end,
        }]
    }

    #[test]
    fn a_group_with_lag_and_no_progress_is_stalled_after_the_stall_time() {
        let start = Instant::now();
        let mut detector = StallDetector::new(Duration::from_secs(30));
        assert_eq!(detector.observe(&at(10, 50), start), None);
        assert_eq!(
            detector.observe(&at(10, 60), start + Duration::from_secs(29)),
            None
        );
        assert_eq!(
            detector.observe(&at(10, 60), start + Duration::from_secs(31)),
            Some(Duration::from_secs(31))
        );
        // Progress clears it.
        assert_eq!(
            detector.observe(&at(11, 60), start + Duration::from_secs(32)),
            None
        );
    }

    #[test]
    fn a_quiet_group_without_lag_is_never_stalled() {
        let start = Instant::now();
        let mut detector = StallDetector::new(Duration::from_secs(1));
        assert_eq!(detector.observe(&at(10, 10), start), None);
        assert_eq!(
            detector.observe(&at(10, 10), start + Duration::from_secs(60)),
            None
        );
    }
}
