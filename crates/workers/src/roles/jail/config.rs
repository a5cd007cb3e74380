//! The jail role's settings: how many jails run at once, where the LLM proxy
//! the jails reach listens, and when large outputs go to the blob store.

use std::net::SocketAddr;
use std::time::Duration;

/// Jails that run at once per instance when nothing is configured.
pub const DEFAULT_PARALLEL: usize = 2;
/// The LLM proxy's address when nothing is configured (the llm role's default).
pub const DEFAULT_LLM_PROXY: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8088);

/// Settings of the jail role (builder style).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JailConfig {
    /// Jails running at once in this instance; the rest wait in the stream.
    pub parallel: usize,
    /// Where the LLM proxy listens on this host (jails reach it through their
    /// network's forwarder).
    pub llm_proxy: SocketAddr,
    /// How often a running jail's input is reported in progress to JetStream.
    pub heartbeat: Duration,
    /// How long JetStream waits without progress before handing a run's input
    /// to another instance (which then records the run as orphaned).
    pub ack_wait: Duration,
}

impl Default for JailConfig {
    fn default() -> Self {
        Self {
            parallel: DEFAULT_PARALLEL,
            llm_proxy: DEFAULT_LLM_PROXY,
            heartbeat: Duration::from_secs(2),
            ack_wait: Duration::from_secs(10),
        }
    }
}

impl JailConfig {
    /// Settings from `AMAI_JAIL_PARALLEL` and `AMAI_LLM_ADDR`, defaults otherwise.
    pub fn from_env() -> Self {
        let mut config = Self::default();
        if let Some(n) = std::env::var("AMAI_JAIL_PARALLEL")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
        {
            config = config.parallel(n);
        }
        if let Some(addr) = std::env::var("AMAI_LLM_ADDR")
            .ok()
            .and_then(|v| v.parse::<SocketAddr>().ok())
        {
            config = config.llm_proxy(addr);
        }
        config
    }

    /// Jails running at once (at least 1).
    pub fn parallel(mut self, n: usize) -> Self {
        self.parallel = n.max(1);
        self
    }

    /// The LLM proxy's address on this host.
    pub fn llm_proxy(mut self, addr: SocketAddr) -> Self {
        self.llm_proxy = addr;
        self
    }

    /// Progress reports while a jail runs, and the silence after which its
    /// input is redelivered (tests shorten both).
    pub fn liveness(mut self, heartbeat: Duration, ack_wait: Duration) -> Self {
        self.heartbeat = heartbeat;
        self.ack_wait = ack_wait.max(heartbeat * 2);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_is_at_least_one_and_ack_wait_outlasts_two_heartbeats() {
        let c = JailConfig::default()
            .parallel(0)
            .liveness(Duration::from_secs(3), Duration::from_secs(1));
        assert_eq!(c.parallel, 1);
        assert_eq!(c.ack_wait, Duration::from_secs(6));
    }
}
