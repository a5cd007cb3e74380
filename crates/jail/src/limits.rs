//! The resource limits of one jail run ([`JailLimits`]) and their builder.

use std::time::Duration;

/// The resource limits of one jail run.
///
/// Build with [`JailLimits::builder`]; [`JailLimits::default`] gives the defaults
/// documented on each builder method.
#[derive(Debug, Clone, PartialEq)]
pub struct JailLimits {
    /// CPUs the container may use (Docker `NanoCpus` = `cpus * 1e9`).
    pub cpus: f64,
    /// Memory in bytes; swap is forbidden (`memory_swap` = `memory`).
    pub memory_bytes: u64,
    /// Most processes and threads alive at once in the container.
    pub pids: i64,
    /// Longest time the command may run before it is killed.
    pub wall_clock: Duration,
    /// Most bytes of stdout plus stderr kept; beyond it the container is killed.
    pub output_bytes: u64,
    /// Size of each of the `/tmp` and `/workspace` tmpfs volumes, in bytes (the
    /// spec's `disk`). Pages the jail writes are charged to its memory limit.
    pub tmpfs_bytes: u64,
}

impl Default for JailLimits {
    fn default() -> Self {
        Self {
            cpus: 1.0,
            memory_bytes: 256 * 1024 * 1024,
            pids: 128,
            wall_clock: Duration::from_secs(60),
            output_bytes: 1024 * 1024,
            tmpfs_bytes: 64 * 1024 * 1024,
        }
    }
}

impl JailLimits {
    /// A builder starting from the defaults.
    pub fn builder() -> JailLimitsBuilder {
        JailLimitsBuilder {
            limits: Self::default(),
        }
    }

    /// `cpus` as Docker's `NanoCpus`.
    pub fn nano_cpus(&self) -> i64 {
        (self.cpus * 1e9).round() as i64
    }
}

/// Builds [`JailLimits`]; every setter overrides one default.
#[derive(Debug, Clone)]
pub struct JailLimitsBuilder {
    limits: JailLimits,
}

impl JailLimitsBuilder {
    /// CPUs the container may use (default 1.0).
    pub fn cpus(mut self, cpus: f64) -> Self {
        self.limits.cpus = cpus;
        self
    }

    /// Memory in bytes, swap forbidden (default 256 MiB).
    pub fn memory_bytes(mut self, memory_bytes: u64) -> Self {
        self.limits.memory_bytes = memory_bytes;
        self
    }

    /// Most processes and threads at once (default 128).
    pub fn pids(mut self, pids: i64) -> Self {
        self.limits.pids = pids;
        self
    }

    /// Longest run time before the container is killed (default 60 s).
    pub fn wall_clock(mut self, wall_clock: Duration) -> Self {
        self.limits.wall_clock = wall_clock;
        self
    }

    /// Most bytes of stdout plus stderr kept (default 1 MiB).
    pub fn output_bytes(mut self, output_bytes: u64) -> Self {
        self.limits.output_bytes = output_bytes;
        self
    }

    /// Size of each of `/tmp` and `/workspace` (default 64 MiB).
    pub fn tmpfs_bytes(mut self, tmpfs_bytes: u64) -> Self {
        self.limits.tmpfs_bytes = tmpfs_bytes;
        self
    }

    /// The limits.
    pub fn build(self) -> JailLimits {
        self.limits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_overrides_only_what_it_sets() {
        let limits = JailLimits::builder().pids(16).cpus(0.5).build();
        assert_eq!(limits.pids, 16);
        assert_eq!(limits.nano_cpus(), 500_000_000);
        assert_eq!(limits.memory_bytes, JailLimits::default().memory_bytes);
    }
}
