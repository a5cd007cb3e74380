//! The decisions of one jail's network policy: what a TCP destination seen at the
//! gateway maps to (the LLM proxy, an allowlisted address, an allowlisted name, or
//! nothing), which names the DNS responder answers, and the synthetic addresses it
//! answers them with. Pure: no sockets.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

use amai_jail_spec::{Endpoint, Host, NetworkPolicy};

/// The first synthetic address handed out for allowlisted names (198.18.0.0/15 is
/// reserved for benchmarking, RFC 2544, so it never names a real host).
pub const SYNTHETIC_BASE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// How many allowlisted names one jail may have (the size of 198.18.0.0/15 less
/// the network and broadcast addresses).
pub const MAX_SYNTHETIC_NAMES: usize = (1 << 17) - 2;

/// Where a TCP connection the jail opened goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// To the LLM proxy on the host.
    Proxy(SocketAddr),
    /// To this allowlisted address.
    Connect(SocketAddr),
    /// To this allowlisted name (resolved on the host when connecting).
    ConnectName {
        /// The name.
        name: String,
        /// The port.
        port: u16,
    },
    /// Nowhere.
    Deny {
        /// Why, for the log.
        reason: &'static str,
    },
}

/// The compiled policy of one jail.
#[derive(Debug, Clone)]
pub(crate) struct Rules {
    /// The gateway address and port the jail is told the LLM proxy is at, and
    /// where the proxy really listens; `None` when the jail has no LLM session.
    proxy: Option<(SocketAddr, SocketAddr)>,
    /// Allowlisted IP endpoints.
    addresses: Vec<SocketAddr>,
    /// Allowlisted names, each with its synthetic address and allowed ports.
    names: BTreeMap<String, (Ipv4Addr, Vec<u16>)>,
    /// The reverse of `names`.
    synthetic: BTreeMap<Ipv4Addr, String>,
}

impl Rules {
    /// Compiles `policy`. `proxy` is `(what the jail dials, where the proxy
    /// listens)`. `NetworkPolicy::None` compiles to "deny everything".
    pub(crate) fn new(policy: &NetworkPolicy, proxy: Option<(SocketAddr, SocketAddr)>) -> Self {
        let endpoints: &[Endpoint] = match policy {
            NetworkPolicy::Allow(endpoints) => endpoints,
            NetworkPolicy::None | NetworkPolicy::LlmOnly => &[],
        };
        let proxy = match policy {
            NetworkPolicy::None => None,
            NetworkPolicy::LlmOnly | NetworkPolicy::Allow(_) => proxy,
        };
        let mut addresses = Vec::new();
        let mut names: BTreeMap<String, (Ipv4Addr, Vec<u16>)> = BTreeMap::new();
        for endpoint in endpoints {
            match &endpoint.host {
                Host::Ip(ip) => addresses.push(SocketAddr::new(*ip, endpoint.port)),
                Host::Dns(name) => names
                    .entry(name.to_ascii_lowercase())
                    .or_insert_with(|| (Ipv4Addr::UNSPECIFIED, Vec::new()))
                    .1
                    .push(endpoint.port),
            }
        }
        let mut synthetic = BTreeMap::new();
        for (index, (name, (address, _))) in names.iter_mut().enumerate() {
            *address = synthetic_address(index);
            synthetic.insert(*address, name.clone());
        }
        Self {
            proxy,
            addresses,
            names,
            synthetic,
        }
    }

    /// The number of allowlisted names.
    pub(crate) fn name_count(&self) -> usize {
        self.names.len()
    }

    /// Decides a connection to `destination` (the original destination).
    pub(crate) fn decide(&self, destination: SocketAddr) -> Decision {
        if let Some((dialed, real)) = self.proxy {
            if destination == dialed {
                return Decision::Proxy(real);
            }
        }
        if self.addresses.contains(&destination) {
            return Decision::Connect(destination);
        }
        if let IpAddr::V4(ip) = destination.ip() {
            if let Some(name) = self.synthetic.get(&ip) {
                let allowed = self
                    .names
                    .get(name)
                    .is_some_and(|(_, ports)| ports.contains(&destination.port()));
                return if allowed {
                    Decision::ConnectName {
                        name: name.clone(),
                        port: destination.port(),
                    }
                } else {
                    Decision::Deny {
                        reason: "port not in the allowlist for this name",
                    }
                };
            }
        }
        Decision::Deny {
            reason: "not in the allowlist",
        }
    }

    /// Every IPv4 TCP destination [`Rules::decide`] does not deny: the proxy as
    /// the jail dials it, the allowlisted IPv4 endpoints, and each allowlisted
    /// name's synthetic address with each of its ports. The jail's nft table
    /// redirects exactly these to the catch-all listener and refuses the rest.
    /// (Allowlisted IPv6 endpoints are not here: the jail has no IPv6.)
    pub(crate) fn allowed_tcp(&self) -> Vec<SocketAddrV4> {
        let mut out: Vec<SocketAddrV4> = self
            .proxy
            .iter()
            .map(|(dialed, _)| *dialed)
            .chain(self.addresses.iter().copied())
            .filter_map(|address| match address {
                SocketAddr::V4(address) => Some(address),
                SocketAddr::V6(_) => None,
            })
            .collect();
        for (address, ports) in self.names.values() {
            out.extend(ports.iter().map(|port| SocketAddrV4::new(*address, *port)));
        }
        out.sort();
        out.dedup();
        out
    }

    /// The name behind a synthetic address, if it is one.
    pub(crate) fn name_of(&self, ip: IpAddr) -> Option<&str> {
        match ip {
            IpAddr::V4(ip) => self.synthetic.get(&ip).map(String::as_str),
            IpAddr::V6(_) => None,
        }
    }

    /// The synthetic address the DNS responder answers for `name` (any case, with
    /// or without the trailing dot), or `None` when the name is not allowlisted.
    pub(crate) fn answer(&self, name: &str) -> Option<Ipv4Addr> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.names.get(&name).map(|(address, _)| *address)
    }
}

fn synthetic_address(index: usize) -> Ipv4Addr {
    let offset = u32::try_from(index).unwrap_or(u32::MAX);
    Ipv4Addr::from(u32::from(SYNTHETIC_BASE).saturating_add(offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(host: Host, port: u16) -> Endpoint {
        Endpoint { host, port }
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("socket address")
    }

    #[test]
    fn llm_only_reaches_only_the_proxy() {
        let rules = Rules::new(
            &NetworkPolicy::LlmOnly,
            Some((addr("172.18.0.1:8088"), addr("127.0.0.1:9000"))),
        );
        assert_eq!(
            rules.decide(addr("172.18.0.1:8088")),
            Decision::Proxy(addr("127.0.0.1:9000"))
        );
        assert!(matches!(
            rules.decide(addr("172.18.0.1:4222")),
            Decision::Deny { .. }
        ));
        assert_eq!(rules.answer("example.test"), None);
        assert_eq!(
            rules.allowed_tcp(),
            vec![SocketAddrV4::new(Ipv4Addr::new(172, 18, 0, 1), 8088)]
        );
    }

    #[test]
    fn an_allowlist_reaches_the_proxy_too_when_there_is_one() {
        let policy = NetworkPolicy::Allow(vec![endpoint(Host::Dns("a.test".into()), 443)]);
        let proxy = Some((addr("172.18.0.1:8088"), addr("127.0.0.1:9000")));
        assert_eq!(
            Rules::new(&policy, proxy).decide(addr("172.18.0.1:8088")),
            Decision::Proxy(addr("127.0.0.1:9000"))
        );
        assert!(matches!(
            Rules::new(&policy, None).decide(addr("172.18.0.1:8088")),
            Decision::Deny { .. }
        ));
    }

    #[test]
    fn none_denies_even_the_proxy() {
        let rules = Rules::new(
            &NetworkPolicy::None,
            Some((addr("172.18.0.1:8088"), addr("127.0.0.1:9000"))),
        );
        assert!(matches!(
            rules.decide(addr("172.18.0.1:8088")),
            Decision::Deny { .. }
        ));
    }

    #[test]
    fn allowlists_match_address_and_port() {
        let policy = NetworkPolicy::Allow(vec![
            endpoint(Host::Ip("10.1.2.3".parse().expect("ip")), 443),
            endpoint(Host::Dns("b.test".into()), 80),
            endpoint(Host::Dns("a.test".into()), 443),
            endpoint(Host::Dns("a.test".into()), 8443),
        ]);
        let rules = Rules::new(&policy, None);
        assert_eq!(
            rules.decide(addr("10.1.2.3:443")),
            Decision::Connect(addr("10.1.2.3:443"))
        );
        assert!(matches!(
            rules.decide(addr("10.1.2.3:80")),
            Decision::Deny { .. }
        ));
        let a = rules.answer("A.test.").expect("a.test is allowlisted");
        let b = rules.answer("b.test").expect("b.test is allowlisted");
        assert_eq!(a, SYNTHETIC_BASE);
        assert_ne!(a, b);
        assert_eq!(rules.name_count(), 2);
        // Exactly what decide allows is what nft redirects.
        let allowed: Vec<String> = rules
            .allowed_tcp()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            allowed,
            [
                "10.1.2.3:443",
                "198.18.0.1:443",
                "198.18.0.1:8443",
                "198.18.0.2:80"
            ]
        );
        for address in rules.allowed_tcp() {
            assert!(!matches!(
                rules.decide(address.into()),
                Decision::Deny { .. }
            ));
        }
        assert_eq!(
            rules.decide(SocketAddr::new(a.into(), 8443)),
            Decision::ConnectName {
                name: "a.test".into(),
                port: 8443
            }
        );
        assert!(matches!(
            rules.decide(SocketAddr::new(a.into(), 80)),
            Decision::Deny { .. }
        ));
        assert_eq!(rules.name_of(b.into()), Some("b.test"));
        assert_eq!(rules.answer("c.test"), None);
    }
}
