//! The host-side rules of one jail network: one nftables table per jail
//! (`table inet amai_jail_<short id>`, the same short id as its Docker network
//! `amai-jail-<short id>`), written as nft script and applied atomically with the
//! `nft` CLI, deleted as a whole, and listed for orphan cleanup.
//!
//! The table's comment attributes it: `amai.jail=<jail id>`, preceded by
//! `amai.scope=<scope> ` when the network has a scope (a scope has no spaces,
//! see [`crate::Scope`]), e.g. `comment "amai.scope=dep-a amai.jail=jail-1"`.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::Stdio;

use tokio::io::AsyncWriteExt;

/// The prefix of every table this module creates.
pub const TABLE_PREFIX: &str = "amai_jail_";
/// The nft family of the tables.
pub(crate) const TABLE_FAMILY: &str = "inet";
/// The prefix of the table comment's word naming the jail.
const COMMENT_PREFIX: &str = "amai.jail=";
/// The prefix of the table comment's word naming the scope.
const SCOPE_COMMENT_PREFIX: &str = "amai.scope=";
/// The longest table comment nft accepts.
pub(crate) const MAX_COMMENT_LEN: usize = 128;

/// The longest jail id whose table comment (with `scope`) nft accepts.
pub(crate) fn max_jail_id_len(scope: Option<&str>) -> usize {
    let scope_len = scope.map_or(0, |scope| SCOPE_COMMENT_PREFIX.len() + scope.len() + 1);
    MAX_COMMENT_LEN.saturating_sub(COMMENT_PREFIX.len() + scope_len)
}

/// What the rules of one jail need to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableSpec {
    /// The table name (with [`TABLE_PREFIX`]).
    pub(crate) table: String,
    /// The jail id, kept in the table's comment.
    pub(crate) jail_id: String,
    /// The scope, kept in the table's comment when given.
    pub(crate) scope: Option<String>,
    /// The jail network's bridge interface.
    pub(crate) bridge: String,
    /// The bridge's (gateway) address.
    pub(crate) gateway: Ipv4Addr,
    /// The catch-all TCP listener's port on the gateway.
    pub(crate) tcp_port: u16,
    /// The DNS responder's UDP port on the gateway.
    pub(crate) dns_port: u16,
    /// The NFLOG group refused attempts are logged to (bound by the jail's
    /// reader before the table is installed), with the table's name as prefix.
    pub(crate) log_group: u16,
    /// The TCP destinations redirected to the catch-all listener (the policy's
    /// allowed ones); every other TCP connection is refused at its SYN.
    pub(crate) allowed_tcp: Vec<SocketAddrV4>,
}

impl TableSpec {
    /// The nft script creating the table (applied with `nft -f -`, atomically).
    ///
    /// - set `allowed_tcp` (`ipv4_addr . inet_service`): [`TableSpec::allowed_tcp`];
    /// - `prerouting` (nat, priority `dstnat - 10`, before Docker's): an IPv4 TCP
    ///   connection from the bridge to an address and port of `allowed_tcp` is
    ///   redirected to the catch-all listener, every UDP datagram to port 53 to
    ///   the DNS responder (so even a query sent to another server, or forwarded
    ///   by Docker's embedded resolver, reaches us);
    /// - `input` (filter, `filter - 10`): from the bridge only those two sockets
    ///   on the gateway address (and established/related traffic) are accepted;
    ///   other TCP gets a reset (a SYN is first logged to NFLOG group
    ///   [`TableSpec::log_group`], so the refusal is in the network log), IPv4 UDP
    ///   and ICMP are logged to the group too, and everything else from the
    ///   bridge (UDP, ICMP, IPv6) gets an ICMP port-unreachable;
    /// - `forward` (filter, `filter - 11`): everything from the bridge is logged
    ///   (TCP SYNs, UDP, ICMP) and rejected the same way;
    /// - `forward_in` (filter, `filter - 10`): everything to the bridge is
    ///   rejected (not logged: it is not the jail's attempt). It comes after every
    ///   jail's `forward`, so one jail's attempt on another is logged by the
    ///   first before the second's `forward_in` could reject it unlogged.
    ///
    /// A reject is final whatever other tables (Docker's) say.
    pub(crate) fn script(&self) -> String {
        let Self {
            table,
            jail_id,
            scope,
            bridge,
            gateway,
            tcp_port,
            dns_port,
            log_group,
            allowed_tcp,
        } = self;
        let scope = scope
            .as_deref()
            .map(|scope| format!("{SCOPE_COMMENT_PREFIX}{scope} "))
            .unwrap_or_default();
        let elements = if allowed_tcp.is_empty() {
            String::new()
        } else {
            let list = allowed_tcp
                .iter()
                .map(|address| format!("{} . {}", address.ip(), address.port()))
                .collect::<Vec<_>>()
                .join(", ");
            format!("\n    elements = {{ {list} }}")
        };
        let refuse = format!(
            "iifname \"{bridge}\" meta nfproto ipv4 tcp flags & (syn | ack) == syn log prefix \"{table}\" group {log_group}
    iifname \"{bridge}\" meta l4proto tcp counter reject with tcp reset
    iifname \"{bridge}\" meta nfproto ipv4 meta l4proto {{ udp, icmp }} log prefix \"{table}\" group {log_group}
    iifname \"{bridge}\" counter reject with icmpx port-unreachable"
        );
        format!(
            "table {TABLE_FAMILY} {table} {{
  comment \"{scope}{COMMENT_PREFIX}{jail_id}\"
  set allowed_tcp {{
    type ipv4_addr . inet_service{elements}
  }}
  chain prerouting {{
    type nat hook prerouting priority dstnat - 10; policy accept;
    iifname \"{bridge}\" meta nfproto ipv4 ip daddr . tcp dport @allowed_tcp redirect to :{tcp_port}
    iifname \"{bridge}\" meta nfproto ipv4 udp dport 53 redirect to :{dns_port}
  }}
  chain input {{
    type filter hook input priority filter - 10; policy accept;
    iifname \"{bridge}\" meta nfproto ipv4 ip daddr {gateway} tcp dport {tcp_port} accept
    iifname \"{bridge}\" meta nfproto ipv4 ip daddr {gateway} udp dport {dns_port} accept
    iifname \"{bridge}\" meta nfproto ipv4 ct state established,related accept
    {refuse}
  }}
  chain forward {{
    type filter hook forward priority filter - 11; policy accept;
    {refuse}
  }}
  chain forward_in {{
    type filter hook forward priority filter - 10; policy accept;
    oifname \"{bridge}\" counter reject with icmpx port-unreachable
  }}
}}
"
        )
    }
}

/// Why running `nft` failed.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// The `nft` binary could not be run.
    #[error("cannot run nft ({source}): install the nftables package (scripts/ensure-deps.sh docker does) and run as root")]
    Spawn {
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// `nft` ran and refused.
    #[error("nft {args} failed ({status}): {stderr}; jail networks need root (CAP_NET_ADMIN) and nf_tables")]
    Failed {
        /// The arguments given.
        args: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
}

/// Runs `nft args`, feeding `stdin`; returns stdout.
async fn nft(args: &[&str], stdin: Option<&str>) -> Result<String, NftError> {
    let mut child = tokio::process::Command::new("nft")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| NftError::Spawn { source })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .await
            .map_err(|source| NftError::Spawn { source })?;
        drop(pipe);
    }
    let output = child
        .wait_with_output()
        .await
        .map_err(|source| NftError::Spawn { source })?;
    if !output.status.success() {
        return Err(NftError::Failed {
            args: args.join(" "),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Creates the table (atomically: all rules or none).
pub(crate) async fn install(spec: &TableSpec) -> Result<(), NftError> {
    nft(&["-f", "-"], Some(&spec.script())).await.map(drop)
}

/// Deletes `table`; a table already gone counts as deleted.
pub(crate) async fn delete(table: &str) -> Result<(), NftError> {
    match nft(&["delete", "table", TABLE_FAMILY, table], None).await {
        Err(NftError::Failed { stderr, .. }) if stderr.contains("No such file or directory") => {
            Ok(())
        }
        other => other.map(drop),
    }
}

/// The text of `table` as `nft list table` prints it, or `None` when it does not
/// exist.
pub(crate) async fn list(table: &str) -> Result<Option<String>, NftError> {
    match nft(&["list", "table", TABLE_FAMILY, table], None).await {
        Ok(text) => Ok(Some(text)),
        Err(NftError::Failed { stderr, .. }) if stderr.contains("No such file or directory") => {
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

/// One listed table with [`TABLE_PREFIX`] and what its comment attributes it to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OwnedTable {
    /// The table name.
    pub(crate) name: String,
    /// The jail of its comment, if it has one.
    pub(crate) jail: Option<String>,
    /// The scope of its comment, if it has one.
    pub(crate) scope: Option<String>,
}

impl OwnedTable {
    /// The short id shared with the table's Docker network and bridge.
    pub(crate) fn short_id(&self) -> &str {
        self.name.strip_prefix(TABLE_PREFIX).unwrap_or(&self.name)
    }
}

/// Every table with [`TABLE_PREFIX`], each with the jail id and scope of its
/// comment (if it has them).
pub(crate) async fn owned_tables() -> Result<Vec<OwnedTable>, NftError> {
    let listing = nft(&["list", "tables", TABLE_FAMILY], None).await?;
    let mut tables = Vec::new();
    for line in listing.lines() {
        let Some(name) = line.trim().strip_prefix("table inet ") else {
            continue;
        };
        if !name.starts_with(TABLE_PREFIX) {
            continue;
        }
        // A table deleted since the listing has nothing to attribute.
        let Some(listing) = list(name).await? else {
            continue;
        };
        let (jail, scope) = attribution(&listing);
        tables.push(OwnedTable {
            name: name.to_owned(),
            jail: jail.map(str::to_owned),
            scope: scope.map(str::to_owned),
        });
    }
    Ok(tables)
}

/// The jail id and the scope in a listed table's
/// `comment "[amai.scope=<scope> ]amai.jail=<id>"`.
fn attribution(listing: &str) -> (Option<&str>, Option<&str>) {
    let Some(comment) = listing
        .lines()
        .find_map(|line| line.trim().strip_prefix("comment \"")?.strip_suffix('"'))
    else {
        return (None, None);
    };
    let mut jail = None;
    let mut scope = None;
    for word in comment.split(' ') {
        if let Some(id) = word.strip_prefix(COMMENT_PREFIX) {
            jail = Some(id);
        } else if let Some(id) = word.strip_prefix(SCOPE_COMMENT_PREFIX) {
            scope = Some(id);
        }
    }
    (jail, scope)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> TableSpec {
        TableSpec {
            table: "amai_jail_0123456789".into(),
            jail_id: "jail-1".into(),
            scope: None,
            bridge: "amai0123456789".into(),
            gateway: Ipv4Addr::new(172, 18, 0, 1),
            tcp_port: 40000,
            dns_port: 40001,
            log_group: 1234,
            allowed_tcp: vec![
                SocketAddrV4::new(Ipv4Addr::new(172, 18, 0, 1), 8088),
                SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 1), 443),
            ],
        }
    }

    #[test]
    fn the_script_redirects_allowed_tcp_and_dns_and_logs_and_rejects_the_rest() {
        let script = spec().script();
        assert!(script.starts_with("table inet amai_jail_0123456789 {"));
        assert!(script.contains("comment \"amai.jail=jail-1\""));
        assert!(script.contains("elements = { 172.18.0.1 . 8088, 198.18.0.1 . 443 }"));
        assert!(script.contains("ip daddr . tcp dport @allowed_tcp redirect to :40000"));
        assert_eq!(
            script
                .matches("log prefix \"amai_jail_0123456789\" group 1234")
                .count(),
            4,
            "{script}"
        );
        assert!(script.contains(
            "tcp flags & (syn | ack) == syn log prefix \"amai_jail_0123456789\" group 1234"
        ));
        let empty = TableSpec {
            allowed_tcp: Vec::new(),
            ..spec()
        }
        .script();
        assert!(!empty.contains("elements"), "{empty}");
        assert!(script.contains("udp dport 53 redirect to :40001"));
        assert!(script.contains("ip daddr 172.18.0.1 tcp dport 40000 accept"));
        assert!(script.contains("oifname \"amai0123456789\" counter reject"));
        assert!(!script.contains(" drop"), "denials reject, never drop");
    }

    #[test]
    fn the_comment_names_the_jail() {
        let listing = "table inet amai_jail_x {\n\tcomment \"amai.jail=abc\"\n\tchain input {\n";
        assert_eq!(attribution(listing), (Some("abc"), None));
        assert_eq!(attribution("table inet amai_jail_x {\n}"), (None, None));
    }

    #[test]
    fn a_scoped_table_names_its_scope_and_jail() {
        let script = TableSpec {
            scope: Some("dep-a".into()),
            ..spec()
        }
        .script();
        assert!(script.contains("comment \"amai.scope=dep-a amai.jail=jail-1\""));
        // nft lists the table with the comment as written.
        assert_eq!(attribution(&script), (Some("jail-1"), Some("dep-a")));
        assert_eq!(attribution(&spec().script()), (Some("jail-1"), None));
        let table = OwnedTable {
            name: "amai_jail_0123456789".into(),
            jail: None,
            scope: None,
        };
        assert_eq!(table.short_id(), "0123456789");
    }

    #[test]
    fn the_longest_jail_id_fills_the_comment_exactly() {
        let scope = "s".repeat(crate::scope::MAX_SCOPE_LEN);
        for scope in [None, Some(scope.as_str())] {
            let jail_id = "j".repeat(max_jail_id_len(scope));
            let script = TableSpec {
                jail_id: jail_id.clone(),
                scope: scope.map(str::to_owned),
                ..spec()
            }
            .script();
            let comment = script
                .lines()
                .find_map(|line| line.trim().strip_prefix("comment \"")?.strip_suffix('"'))
                .unwrap_or_default();
            assert_eq!(comment.len(), MAX_COMMENT_LEN, "{scope:?}");
        }
        assert_eq!(max_jail_id_len(None), 118);
        assert_eq!(max_jail_id_len(Some("dep-a")), 101);
    }
}
