//! How the host resolves an allowlisted name when the jail connects to it: the
//! [`Resolve`] trait, the host's resolver ([`SystemResolver`]) and a fixed table
//! ([`StaticResolver`], for tests and for deployments that pin addresses).

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};

use futures::future::BoxFuture;
use futures::FutureExt;

/// Resolves an allowlisted name on the host, only when the jail connects to it.
pub trait Resolve: fmt::Debug + Send + Sync {
    /// The addresses of `name` with `port`, in the order to try them.
    fn resolve(&self, name: &str, port: u16) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>>;
}

/// The host's resolver (`getaddrinfo` through `tokio::net::lookup_host`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, name: &str, port: u16) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>> {
        let target = format!("{name}:{port}");
        async move { Ok(tokio::net::lookup_host(target).await?.collect()) }.boxed()
    }
}

/// A fixed table of names; any other name does not resolve.
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    table: HashMap<String, Vec<IpAddr>>,
}

impl StaticResolver {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `ip` to the addresses of `name` (lowercased).
    pub fn with(mut self, name: impl Into<String>, ip: IpAddr) -> Self {
        self.table
            .entry(name.into().to_ascii_lowercase())
            .or_default()
            .push(ip);
        self
    }
}

impl Resolve for StaticResolver {
    fn resolve(&self, name: &str, port: u16) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>> {
        let found = self
            .table
            .get(&name.to_ascii_lowercase())
            .map(|ips| ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect());
        let name = name.to_owned();
        async move {
            found.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{name} is not in the static resolver's table"),
                )
            })
        }
        .boxed()
    }
}
