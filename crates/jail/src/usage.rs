//! Resource usage of a jail run, followed through the engine's stats stream
//! (`GET /containers/{id}/stats?stream=true`) while the container runs.
//!
//! The engine samples a running container about once a second, so a run shorter
//! than a second may report zeros, and the last CPU figure is the last sample's
//! (up to a second before the end). Peak memory is cgroup v1's `max_usage`
//! (the cgroup's own high-water mark, so it includes what happened between
//! samples), else the highest sampled `usage`; on cgroup v1 both count the page
//! cache, tmpfs pages of `/workspace` and `/tmp` included.

use std::sync::{Arc, Mutex};

use bollard::models::ContainerStatsResponse;
use bollard::query_parameters::StatsOptionsBuilder;
use futures::StreamExt;

use crate::engine::Engine;

/// What a run used, as far as the engine's samples tell.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// The highest memory use seen, in bytes.
    pub peak_memory_bytes: u64,
    /// CPU time consumed, in seconds (the last sample's total).
    pub cpu_seconds: f64,
    /// The most processes and threads seen at once.
    pub peak_pids: u64,
    /// How many samples the engine sent.
    pub samples: u32,
}

impl Usage {
    /// Folds one stats sample in.
    pub fn record(&mut self, sample: &ContainerStatsResponse) {
        let memory = sample.memory_stats.as_ref();
        let peak = memory
            .and_then(|m| m.max_usage)
            .or_else(|| memory.and_then(|m| m.usage));
        let cpu = sample
            .cpu_stats
            .as_ref()
            .and_then(|c| c.cpu_usage.as_ref())
            .and_then(|u| u.total_usage);
        let pids = sample.pids_stats.as_ref().and_then(|p| p.current);
        if [peak, cpu, pids]
            .iter()
            .all(|value| value.unwrap_or(0) == 0)
        {
            // The empty (all zero) sample the engine sends for a container not
            // running (yet or any more).
            return;
        }
        self.samples += 1;
        self.peak_memory_bytes = self.peak_memory_bytes.max(peak.unwrap_or(0));
        if let Some(cpu) = cpu.filter(|cpu| *cpu > 0) {
            self.cpu_seconds = cpu as f64 / 1e9;
        }
        self.peak_pids = self.peak_pids.max(pids.unwrap_or(0));
    }
}

/// Follows the stats stream of a container in a task until stopped.
pub(crate) struct UsageFollower {
    usage: Arc<Mutex<Usage>>,
    task: tokio::task::JoinHandle<()>,
}

impl UsageFollower {
    /// Subscribes to the stats of `container_id` (before or after its start).
    pub(crate) fn start(engine: &Engine, container_id: &str) -> Self {
        let usage = Arc::new(Mutex::new(Usage::default()));
        let options = StatsOptionsBuilder::new()
            .stream(true)
            .one_shot(false)
            .build();
        let mut stream = engine.docker().stats(container_id, Some(options)).boxed();
        let shared = Arc::clone(&usage);
        let container_id = container_id.to_owned();
        let task = tokio::spawn(async move {
            while let Some(sample) = stream.next().await {
                match sample {
                    Ok(sample) => {
                        if let Ok(mut usage) = shared.lock() {
                            usage.record(&sample);
                        }
                    }
                    Err(error) => {
                        tracing::debug!(%container_id, %error, "the stats stream of a jail ended with an error");
                        break;
                    }
                }
            }
        });
        Self { usage, task }
    }

    /// Stops following and returns what was seen.
    pub(crate) fn finish(self) -> Usage {
        self.task.abort();
        self.usage.lock().map(|usage| *usage).unwrap_or_default()
    }
}

impl Drop for UsageFollower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use bollard::models::{
        ContainerCpuStats, ContainerCpuUsage, ContainerMemoryStats, ContainerPidsStats,
    };

    use super::*;

    fn sample(max_usage: Option<u64>, usage: u64, cpu: u64, pids: u64) -> ContainerStatsResponse {
        ContainerStatsResponse {
            memory_stats: Some(ContainerMemoryStats {
                usage: Some(usage),
                max_usage,
                ..Default::default()
            }),
            cpu_stats: Some(ContainerCpuStats {
                cpu_usage: Some(ContainerCpuUsage {
                    total_usage: Some(cpu),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            pids_stats: Some(ContainerPidsStats {
                current: Some(pids),
                limit: None,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn peaks_and_the_last_cpu_total_are_kept() {
        let mut usage = Usage::default();
        usage.record(&sample(Some(900), 500, 1_000_000_000, 3));
        usage.record(&sample(Some(800), 100, 2_500_000_000, 1));
        usage.record(&ContainerStatsResponse::default());
        usage.record(&sample(Some(0), 0, 0, 0));
        assert_eq!(usage.peak_memory_bytes, 900);
        assert_eq!(usage.cpu_seconds, 2.5);
        assert_eq!(usage.peak_pids, 3);
        assert_eq!(usage.samples, 2);
    }

    #[test]
    fn without_max_usage_the_sampled_usage_counts() {
        let mut usage = Usage::default();
        usage.record(&sample(None, 700, 0, 0));
        usage.record(&sample(None, 300, 0, 0));
        assert_eq!(usage.peak_memory_bytes, 700);
    }
}
