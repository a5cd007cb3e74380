//! The reader of one jail's NFLOG group: the jail's nft table logs every
//! attempt it refuses (a TCP SYN to a destination that is not allowed, a non-DNS
//! UDP datagram, an ICMP message) to this group with `log group <n>`, and this
//! module reads those packets from a `NETLINK_NETFILTER` socket (`netlink-sys`;
//! the few nfnetlink_log messages and attributes needed are encoded and parsed
//! here) and appends a
//! [`Verdict::Denied`] entry for each to the jail's network log.
//!
//! # Groups
//!
//! A group is an nfnetlink_log instance of the host's network namespace, and the
//! kernel lets one socket at a time bind it (binding a group another socket holds
//! fails with `EPERM`, whichever process holds it; binding it again on the same
//! socket with `EBUSY`). [`NflogReader::bind`] starts from a group derived from
//! the jail id (its SHA-256, in [`FIRST_GROUP`]..=65535) and probes the next ones
//! (at most [`MAX_PROBES`]) until a bind succeeds, so the group is ours alone
//! among concurrent jails of this and of any other process until the socket
//! closes (the kernel then destroys the instance). The table is installed only
//! after the bind, with the group the bind got. (The kernel also answers `EPERM`
//! to a process without `CAP_NET_ADMIN`; such a process gets
//! [`NflogError::NoFreeGroup`] after the probes, and could not install the
//! table anyway.)
//!
//! # One entry per attempt
//!
//! The TCP rules log only the SYN (`tcp flags & (syn | ack) == syn`); the client
//! gets a reset and gives up, so one connection attempt is one logged packet. UDP
//! and ICMP have no such first packet: the reader logs a flow (protocol, source
//! and destination address and port, or ICMP echo id) once per
//! [`DEDUPE_WINDOW`], so a client retrying the same datagram (busybox `tftp`) or
//! a `ping -c 3` is one entry.

use std::collections::HashMap;
use std::io;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use netlink_sys::protocols::NETLINK_NETFILTER;
use netlink_sys::{AsyncSocket, SocketAddr, TokioSocket};

use super::log::{Protocol, Verdict};
use super::Context;

/// The lowest group a jail network uses (lower ones are left to the host's own
/// `NFLOG` users, which tend to pick small numbers).
pub const FIRST_GROUP: u16 = 1024;
/// How many NFLOG groups a jail network tries to bind before giving up.
pub const MAX_PROBES: u32 = 4096;
/// How long a UDP or ICMP flow is logged only once.
pub const DEDUPE_WINDOW: Duration = Duration::from_secs(5);
/// How many bytes of each packet the kernel copies to us: an IPv4 header with
/// options (at most 60) and the first bytes of the TCP/UDP/ICMP header.
const COPY_RANGE: u32 = 128;
/// The receive buffer: one datagram of the kernel's (which batches messages up
/// to a page or so) fits.
const RECV_BUFFER: usize = 65536;
/// The most flows remembered for deduplication before old ones are forgotten.
const MAX_FLOWS: usize = 4096;

// nfnetlink / nfnetlink_log constants (linux/netfilter/nfnetlink*.h).
const NFNL_SUBSYS_ULOG: u16 = 4;
const NFULNL_MSG_PACKET: u16 = 0;
const NFULNL_MSG_CONFIG: u16 = 1;
const NFULA_CFG_CMD: u16 = 1;
const NFULA_CFG_MODE: u16 = 2;
const NFULA_CFG_TIMEOUT: u16 = 4;
const NFULA_CFG_QTHRESH: u16 = 5;
const NFULNL_CFG_CMD_BIND: u8 = 1;
const NFULNL_COPY_PACKET: u8 = 2;
const NFULA_PAYLOAD: u16 = 9;
const NFULA_PREFIX: u16 = 10;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;
const NLA_TYPE_MASK: u16 = 0x3fff;

/// Why binding the NFLOG group of a jail network failed (see
/// [`crate::net::CreateNetworkError::Nflog`]).
#[derive(Debug, thiserror::Error)]
pub enum NflogError {
    /// The netlink socket could not be opened or used.
    #[error("NFLOG netlink socket: {step} failed: {source}; jail networks need root (CAP_NET_ADMIN) and nfnetlink_log")]
    Socket {
        /// What was being done.
        step: &'static str,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// Every group tried was taken (or the process may not bind any).
    #[error("no free NFLOG group for the jail network: the kernel refused all {tried} tried (EPERM: bound by other sockets, or this process lacks CAP_NET_ADMIN: run as root)")]
    NoFreeGroup {
        /// How many groups were tried.
        tried: usize,
    },
}

/// A bound NFLOG group and its socket; dropping it unbinds the group.
pub(crate) struct NflogReader {
    socket: TokioSocket,
    group: u16,
    /// The log prefix of the jail's rules; packets without it are not ours.
    prefix: String,
    flows: Mutex<HashMap<FlowKey, Instant>>,
}

impl NflogReader {
    /// Opens a socket and binds the first free group from the one derived from
    /// `seed` (see the module documentation). Needs a Tokio runtime.
    ///
    /// Only packets logged with `prefix` are read (the table's rules log with
    /// its name): should a group ever be shared with another table (one a
    /// crashed worker left behind, whose group is free again), its packets are
    /// not taken for this jail's.
    pub(crate) fn bind(seed: &[u8], prefix: String) -> Result<Self, NflogError> {
        let socket = open()?;
        let span = u32::from(u16::MAX - FIRST_GROUP) + 1;
        let start = seed
            .iter()
            .take(4)
            .fold(0u32, |acc, byte| (acc << 8) | u32::from(*byte))
            % span;
        let mut tried = 0;
        for offset in 0..MAX_PROBES.min(span) {
            let group = FIRST_GROUP + u16::try_from((start + offset) % span).unwrap_or(0);
            tried += 1;
            match request(&socket, group, &bind_attributes()) {
                Ok(()) => {}
                Err(error) if matches!(error.raw_os_error(), Some(libc::EPERM | libc::EBUSY)) => {
                    continue
                }
                Err(source) => {
                    return Err(NflogError::Socket {
                        step: "binding a group",
                        source,
                    })
                }
            }
            request(&socket, group, &mode_attributes()).map_err(|source| NflogError::Socket {
                step: "configuring the group",
                source,
            })?;
            return Ok(Self {
                socket,
                group,
                prefix,
                flows: Mutex::new(HashMap::new()),
            });
        }
        Err(NflogError::NoFreeGroup { tried })
    }

    /// The group bound.
    pub(crate) fn group(&self) -> u16 {
        self.group
    }

    /// Reads and logs packets until the task is aborted.
    pub(crate) async fn serve(self: Arc<Self>, context: Arc<Context>) {
        let mut buffer = Vec::with_capacity(RECV_BUFFER);
        loop {
            buffer.clear();
            let received = std::future::poll_fn(|cx| self.socket.poll_recv(cx, &mut buffer)).await;
            // From here to the next await nothing can abort us: what was
            // received is logged.
            let mut flows = self.flows.lock().unwrap_or_else(PoisonError::into_inner);
            match received {
                Ok(()) => log_packets(&buffer, &self.prefix, &mut flows, &context),
                Err(error) => {
                    if !recv_failed(&error, self.group, &context) {
                        return;
                    }
                }
            }
            self.drain_locked(&mut flows, &context);
        }
    }

    /// Logs every message waiting on the socket (without blocking): called by
    /// [`NflogReader::serve`], and when the network closes, so that an attempt
    /// refused before the close is in the log it returns.
    pub(crate) fn drain(&self, context: &Context) {
        // Held throughout, so a drain at close waits for the task's.
        let mut flows = self.flows.lock().unwrap_or_else(PoisonError::into_inner);
        self.drain_locked(&mut flows, context);
    }

    fn drain_locked(&self, flows: &mut HashMap<FlowKey, Instant>, context: &Context) {
        let mut buffer = Vec::with_capacity(RECV_BUFFER);
        loop {
            buffer.clear();
            match self.socket.socket_ref().recv(&mut buffer, 0) {
                Ok(_) => log_packets(&buffer, &self.prefix, flows, context),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) => {
                    if !recv_failed(&error, self.group, context) {
                        return;
                    }
                }
            }
        }
    }
}

impl std::fmt::Debug for NflogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NflogReader")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

/// Whether reading may go on after `error`.
fn recv_failed(error: &io::Error, group: u16, context: &Context) -> bool {
    if error.raw_os_error() == Some(libc::ENOBUFS) {
        // The kernel dropped messages for a full buffer: the refusals happened,
        // their entries are lost.
        tracing::warn!(jail = %context.jail_id, group, "jail nflog reader: socket buffer overran, some refused attempts are not logged");
        true
    } else if error.kind() == io::ErrorKind::Interrupted {
        true
    } else {
        tracing::warn!(jail = %context.jail_id, group, %error, "jail nflog reader: recv failed, stopping");
        false
    }
}

/// Logs the packets of one received datagram.
fn log_packets(
    buffer: &[u8],
    prefix: &str,
    flows: &mut HashMap<FlowKey, Instant>,
    context: &Context,
) {
    for packet in packets(buffer, prefix) {
        if let Some(attempt) = Attempt::parse(packet) {
            record(flows, &attempt, context);
        }
    }
}

/// Appends `attempt` to the log, unless it is a UDP or ICMP flow of `flows` seen
/// within [`DEDUPE_WINDOW`].
fn record(flows: &mut HashMap<FlowKey, Instant>, attempt: &Attempt, context: &Context) {
    if attempt.protocol != Protocol::Tcp {
        let now = Instant::now();
        if flows
            .get(&attempt.flow)
            .is_some_and(|seen| now.duration_since(*seen) < DEDUPE_WINDOW)
        {
            return;
        }
        if flows.len() >= MAX_FLOWS {
            flows.retain(|_, seen| now.duration_since(*seen) < DEDUPE_WINDOW);
            if flows.len() >= MAX_FLOWS {
                flows.clear();
            }
        }
        flows.insert(attempt.flow, now);
    }
    let destination = match attempt.flow.destination_port {
        Some(port) => {
            let host = context
                .rules
                .name_of(attempt.flow.destination.into())
                .map_or_else(|| attempt.flow.destination.to_string(), str::to_owned);
            format!("{host}:{port}")
        }
        None => attempt.flow.destination.to_string(),
    };
    let reason = match attempt.protocol {
        Protocol::Tcp => match attempt.flow.destination_port {
            Some(port) => match context
                .rules
                .decide((attempt.flow.destination, port).into())
            {
                super::policy::Decision::Deny { reason } => reason,
                _ => "not redirected",
            },
            None => "not in the allowlist",
        },
        _ => "only TCP and DNS leave a jail",
    };
    let how = match attempt.protocol {
        Protocol::Tcp => "refused at the SYN with a reset",
        _ => "rejected with ICMP port-unreachable",
    };
    context.log.record(
        &context.jail_id,
        attempt.protocol,
        destination,
        Verdict::Denied,
        format!("{reason}, {how} (from {})", attempt.flow.source_with_port()),
    );
}

/// What identifies a flow for deduplication (TCP is not deduplicated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FlowKey {
    protocol: u8,
    source: Ipv4Addr,
    source_port: Option<u16>,
    destination: Ipv4Addr,
    destination_port: Option<u16>,
    /// The ICMP type and echo id.
    icmp: Option<(u8, u16)>,
}

impl FlowKey {
    fn source_with_port(&self) -> String {
        match self.source_port {
            Some(port) => format!("{}:{port}", self.source),
            None => self.source.to_string(),
        }
    }
}

/// One logged packet.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Attempt {
    protocol: Protocol,
    flow: FlowKey,
}

impl Attempt {
    /// Parses an IPv4 packet (TCP, UDP or ICMP); anything else is `None`.
    fn parse(packet: &[u8]) -> Option<Self> {
        let first = *packet.first()?;
        if first >> 4 != 4 {
            return None;
        }
        let header = usize::from(first & 0x0f) * 4;
        let number = *packet.get(9)?;
        let source = Ipv4Addr::from(<[u8; 4]>::try_from(packet.get(12..16)?).ok()?);
        let destination = Ipv4Addr::from(<[u8; 4]>::try_from(packet.get(16..20)?).ok()?);
        let transport = packet.get(header..)?;
        let port = |at: usize| {
            transport
                .get(at..at + 2)
                .map(|bytes| u16::from_be_bytes([bytes[0], bytes[1]]))
        };
        let (protocol, source_port, destination_port, icmp) = match number {
            6 => (Protocol::Tcp, port(0), Some(port(2)?), None),
            17 => (Protocol::Udp, port(0), Some(port(2)?), None),
            1 => (
                Protocol::Icmp,
                None,
                None,
                Some((*transport.first()?, port(4).unwrap_or(0))),
            ),
            _ => return None,
        };
        Some(Self {
            protocol,
            flow: FlowKey {
                protocol: number,
                source,
                source_port,
                destination,
                destination_port,
                icmp,
            },
        })
    }
}

/// Opens a non-blocking `NETLINK_NETFILTER` socket (registered with the Tokio
/// runtime) bound to an address the kernel picks.
fn open() -> Result<TokioSocket, NflogError> {
    let error = |step| move |source| NflogError::Socket { step, source };
    let mut socket = TokioSocket::new(NETLINK_NETFILTER).map_err(error("socket"))?;
    socket.socket_mut().bind_auto().map_err(error("bind"))?;
    // A bigger receive buffer makes a flood of refused packets overrun later.
    socket
        .socket_ref()
        .set_rx_buf_sz(1usize << 20)
        .map_err(error("setting the receive buffer"))?;
    Ok(socket)
}

/// One netlink attribute, padded to 4 bytes.
fn attribute(kind: u16, value: &[u8]) -> Vec<u8> {
    let length = 4 + value.len();
    let mut out = Vec::with_capacity(length.next_multiple_of(4));
    out.extend_from_slice(&u16::try_from(length).unwrap_or(u16::MAX).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(length.next_multiple_of(4), 0);
    out
}

fn bind_attributes() -> Vec<u8> {
    attribute(NFULA_CFG_CMD, &[NFULNL_CFG_CMD_BIND])
}

fn mode_attributes() -> Vec<u8> {
    // struct nfulnl_msg_config_mode { __be32 copy_range; __u8 copy_mode; __u8 _pad; } (packed)
    let mut mode = COPY_RANGE.to_be_bytes().to_vec();
    mode.extend_from_slice(&[NFULNL_COPY_PACKET, 0]);
    let mut out = attribute(NFULA_CFG_MODE, &mode);
    // Send each packet at once rather than batching up to 100 for a second.
    out.extend(attribute(NFULA_CFG_QTHRESH, &1u32.to_be_bytes()));
    out.extend(attribute(NFULA_CFG_TIMEOUT, &0u32.to_be_bytes()));
    out
}

/// Sends a config message for `group` with `attributes` and waits for its
/// acknowledgement (the socket is non-blocking: the kernel answers a config
/// request synchronously, before `send` returns).
fn request(socket: &TokioSocket, group: u16, attributes: &[u8]) -> io::Result<()> {
    let socket = socket.socket_ref();
    let length = NLMSG_HDRLEN + NFGENMSG_LEN + attributes.len();
    let mut message = Vec::with_capacity(length);
    let length32 = u32::try_from(length).map_err(|_| io::Error::other("message too long"))?;
    message.extend_from_slice(&length32.to_ne_bytes());
    message.extend_from_slice(&((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG).to_ne_bytes());
    message.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    message.extend_from_slice(&u32::from(group).to_ne_bytes()); // sequence
    message.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
    message.extend_from_slice(&[
        u8::try_from(libc::AF_UNSPEC).unwrap_or_default(),
        0, // NFNETLINK_V0
    ]);
    message.extend_from_slice(&group.to_be_bytes());
    message.extend_from_slice(attributes);
    socket.send_to(&message, &SocketAddr::new(0, 0), 0)?;
    let mut buffer = Vec::with_capacity(RECV_BUFFER);
    loop {
        buffer.clear();
        socket.recv(&mut buffer, 0)?;
        for (kind, body) in messages(&buffer) {
            if kind == NLMSG_ERROR {
                let code = body
                    .get(..4)
                    .and_then(|bytes| <[u8; 4]>::try_from(bytes).ok())
                    .map(i32::from_ne_bytes)
                    .ok_or_else(|| io::Error::other("short netlink error message"))?;
                return if code == 0 {
                    Ok(())
                } else {
                    Err(io::Error::from_raw_os_error(-code))
                };
            }
        }
    }
}

/// The (type, body) of each netlink message in `buffer`.
fn messages(mut buffer: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while buffer.len() >= NLMSG_HDRLEN {
        let length = u32::from_ne_bytes([buffer[0], buffer[1], buffer[2], buffer[3]]);
        let length = usize::try_from(length).unwrap_or(usize::MAX);
        let kind = u16::from_ne_bytes([buffer[4], buffer[5]]);
        let Some(body) = buffer.get(NLMSG_HDRLEN..length) else {
            break;
        };
        out.push((kind, body));
        buffer = buffer.get(length.next_multiple_of(4)..).unwrap_or_default();
    }
    out
}

/// The payload (the IPv4 packet) of each NFLOG packet message in `buffer` that
/// carries the log prefix `prefix`.
fn packets<'a>(buffer: &'a [u8], prefix: &str) -> Vec<&'a [u8]> {
    let packet_type = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET;
    messages(buffer)
        .into_iter()
        .filter(|(kind, _)| *kind == packet_type)
        .filter_map(|(_, body)| {
            let mut attributes = body.get(NFGENMSG_LEN..)?;
            let mut payload = None;
            let mut ours = false;
            while attributes.len() >= 4 {
                let length = usize::from(u16::from_ne_bytes([attributes[0], attributes[1]]));
                let kind = u16::from_ne_bytes([attributes[2], attributes[3]]) & NLA_TYPE_MASK;
                if length < 4 {
                    return None;
                }
                let value = attributes.get(4..length)?;
                match kind {
                    NFULA_PAYLOAD => payload = Some(value),
                    NFULA_PREFIX => {
                        ours = value.split(|byte| *byte == 0).next() == Some(prefix.as_bytes())
                    }
                    _ => {}
                }
                attributes = attributes
                    .get(length.next_multiple_of(4)..)
                    .unwrap_or_default();
            }
            payload.filter(|_| ours)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4(protocol: u8, transport: &[u8]) -> Vec<u8> {
        let mut packet = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, protocol, 0, 0];
        packet.extend_from_slice(&[172, 18, 0, 2, 10, 0, 0, 7]);
        packet.extend_from_slice(transport);
        packet
    }

    fn message(payload: &[u8]) -> Vec<u8> {
        let mut body = vec![2, 0, 0, 7];
        body.extend(attribute(10, b"prefix\0"));
        body.extend(attribute(NFULA_PAYLOAD, payload));
        let length = NLMSG_HDRLEN + body.len();
        let mut out = Vec::new();
        out.extend_from_slice(&u32::try_from(length).expect("small").to_ne_bytes());
        out.extend_from_slice(&(NFNL_SUBSYS_ULOG << 8).to_ne_bytes());
        out.extend_from_slice(&[0; 10]);
        out.extend(body);
        out
    }

    #[test]
    fn packets_are_found_and_parsed() {
        let tcp = ipv4(6, &[0x9c, 0x40, 0x1f, 0x90, 0, 0, 0, 0]);
        let udp = ipv4(17, &[0x9c, 0x41, 0x27, 0x0f]);
        let icmp = ipv4(1, &[8, 0, 0, 0, 0x12, 0x34, 0, 1]);
        let mut buffer = message(&tcp);
        buffer.extend(message(&udp));
        buffer.extend(message(&icmp));
        assert!(packets(&buffer, "other").is_empty(), "another table's");
        let found: Vec<_> = packets(&buffer, "prefix")
            .into_iter()
            .filter_map(Attempt::parse)
            .collect();
        assert_eq!(found.len(), 3);
        assert_eq!(found[0].protocol, Protocol::Tcp);
        assert_eq!(found[0].flow.destination, Ipv4Addr::new(10, 0, 0, 7));
        assert_eq!(found[0].flow.destination_port, Some(8080));
        assert_eq!(found[0].flow.source_with_port(), "172.18.0.2:40000");
        assert_eq!(found[1].protocol, Protocol::Udp);
        assert_eq!(found[1].flow.destination_port, Some(9999));
        assert_eq!(found[2].protocol, Protocol::Icmp);
        assert_eq!(found[2].flow.destination_port, None);
        assert_eq!(found[2].flow.icmp, Some((8, 0x1234)));
    }

    /// Needs root (CAP_NET_ADMIN), like every jail network.
    #[tokio::test]
    async fn a_bound_group_is_skipped_and_free_again_once_closed() {
        let seed = uuid::Uuid::new_v4();
        let seed = seed.as_bytes();
        let first = NflogReader::bind(seed, "a".into()).expect("NFLOG needs root");
        let second = NflogReader::bind(seed, "b".into()).expect("a second group");
        assert_ne!(first.group(), second.group());
        assert!(first.group() >= FIRST_GROUP && second.group() >= FIRST_GROUP);
        let taken = first.group();
        drop(first);
        let third = NflogReader::bind(seed, "c".into()).expect("the first group again");
        assert_eq!(third.group(), taken, "closing the socket frees its group");
    }

    #[test]
    fn truncated_or_foreign_packets_are_ignored() {
        assert_eq!(Attempt::parse(&[]), None);
        assert_eq!(Attempt::parse(&[0x60; 40]), None, "IPv6");
        assert_eq!(Attempt::parse(&ipv4(6, &[0, 1])), None, "no port");
        assert_eq!(Attempt::parse(&ipv4(47, &[0; 8])), None, "GRE");
        assert!(packets(&[1, 2, 3], "prefix").is_empty());
    }
}
