//! The catch-all TCP listener of one jail: every TCP connection the jail opens to
//! a destination its policy allows is redirected here by the jail's nft table
//! (every other one is refused at its SYN by the table and logged through NFLOG,
//! see `nflog`). The listener reads the original destination
//! (`SO_ORIGINAL_DST`), decides by the policy again (a connection dialling the
//! listener's port directly is not allowed), logs the attempt, and either
//! forwards the bytes both ways to the real target or resets the connection at
//! once (`SO_LINGER` 0, so the client sees `ECONNRESET` right after its
//! handshake completed): a name resolving onto the host, a target that does not
//! answer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::SockRef;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::log::{Protocol, Verdict};
use super::policy::Decision;
use super::Context;

/// How long connecting to an allowed target may take before the jail's
/// connection is reset.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts and handles connections until the task is aborted (which aborts the
/// connections in flight too).
pub(crate) async fn serve(listener: TcpListener, context: Arc<Context>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(handle(stream, peer, context.clone()));
                }
                Err(error) => {
                    tracing::warn!(jail = %context.jail_id, %error, "jail tcp listener: accept failed");
                    // Out of file descriptors and the like: do not spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn handle(client: TcpStream, peer: SocketAddr, context: Arc<Context>) {
    let original = SockRef::from(&client)
        .original_dst_v4()
        .map(|address| address.as_socket());
    let destination = match original {
        Ok(Some(destination)) => destination,
        Ok(None) | Err(_) => {
            let detail = match original {
                Err(error) => format!("no original destination ({error}), reset"),
                Ok(_) => "original destination is not an IP address, reset".to_owned(),
            };
            context.log.record(
                &context.jail_id,
                Protocol::Tcp,
                "(unknown)".to_owned(),
                Verdict::Denied,
                detail,
            );
            reset(client);
            return;
        }
    };
    let shown = destination.to_string();
    let (shown, targets, what, by_name) = match context.rules.decide(destination) {
        Decision::Deny { reason } => {
            let shown = match context.rules.name_of(destination.ip()) {
                Some(name) => format!("{name}:{}", destination.port()),
                None => shown,
            };
            context.log.record(
                &context.jail_id,
                Protocol::Tcp,
                shown,
                Verdict::Denied,
                format!("{reason}, reset (from {peer})"),
            );
            reset(client);
            return;
        }
        Decision::Proxy(proxy) => (shown, Ok(vec![proxy]), "the LLM proxy".to_owned(), false),
        Decision::Connect(target) => (
            shown,
            Ok(vec![target]),
            "the allowlisted address".to_owned(),
            false,
        ),
        Decision::ConnectName { name, port } => {
            // A name is not a way onto the host: its loopback and unspecified
            // addresses are never used (an address of the host's other
            // interfaces is caught after connecting, see `connect`).
            let resolved = context.resolver.resolve(&name, port).await;
            let shown = format!("{name}:{port}");
            if let Ok(addresses) = &resolved {
                if !addresses.is_empty() && addresses.iter().all(|a| on_this_host(a.ip())) {
                    context.log.record(
                        &context.jail_id,
                        Protocol::Tcp,
                        shown,
                        Verdict::Denied,
                        format!("{name} resolves only to loopback or unspecified addresses ({addresses:?}): not a way onto this host, reset"),
                    );
                    reset(client);
                    return;
                }
            }
            let resolved = resolved.map(|addresses| {
                addresses
                    .into_iter()
                    .filter(|a| !on_this_host(a.ip()))
                    .collect()
            });
            (
                shown,
                resolved,
                format!("{name} (synthetic {destination})"),
                true,
            )
        }
    };
    let targets = match targets {
        Ok(targets) if !targets.is_empty() => targets,
        Ok(_) | Err(_) => {
            let why = match targets {
                Err(error) => error.to_string(),
                Ok(_) => "no addresses".to_owned(),
            };
            context.log.record(
                &context.jail_id,
                Protocol::Tcp,
                shown,
                Verdict::Allowed,
                format!("allowed, but resolving {what} on the host failed ({why}), reset"),
            );
            reset(client);
            return;
        }
    };
    match connect(&targets, by_name).await {
        Ok((upstream, target)) => {
            context.log.record(
                &context.jail_id,
                Protocol::Tcp,
                shown,
                Verdict::Allowed,
                format!("forwarded to {what} at {target} (from {peer})"),
            );
            forward(client, upstream).await;
        }
        Err(Refused::ThisHost(why)) => {
            context.log.record(
                &context.jail_id,
                Protocol::Tcp,
                shown,
                Verdict::Denied,
                format!("{what} leads onto this host ({why}), reset"),
            );
            reset(client);
        }
        Err(Refused::Unreachable(why)) => {
            context.log.record(
                &context.jail_id,
                Protocol::Tcp,
                shown,
                Verdict::Allowed,
                format!("allowed, but connecting to {what} failed ({why}), reset"),
            );
            reset(client);
        }
    }
}

/// Addresses a name never resolves to for a jail.
fn on_this_host(ip: std::net::IpAddr) -> bool {
    ip.is_loopback() || ip.is_unspecified()
}

/// Why [`connect`] gave up.
enum Refused {
    /// Every target that answered was an address of this host.
    ThisHost(String),
    /// No target answered.
    Unreachable(String),
}

/// Connects to the first of `targets` that answers within [`CONNECT_TIMEOUT`].
/// With `not_this_host`, a connection that turns out to go to an address of this
/// host (the kernel picked the destination itself as source: a local route) is
/// reset before any byte of the jail's goes through: an allowlisted name must
/// not resolve its way onto the host's services.
async fn connect(
    targets: &[SocketAddr],
    not_this_host: bool,
) -> Result<(TcpStream, SocketAddr), Refused> {
    let mut failures = Vec::new();
    let mut host_addresses = 0;
    for target in targets {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await {
            Ok(Ok(stream)) => {
                let local = stream.local_addr().map(|a| a.ip()).ok();
                if not_this_host && local == Some(target.ip()) {
                    reset(stream);
                    host_addresses += 1;
                    failures.push(format!("{target}: an address of this host"));
                    continue;
                }
                return Ok((stream, *target));
            }
            Ok(Err(error)) => failures.push(format!("{target}: {error}")),
            Err(_) => failures.push(format!("{target}: timed out")),
        }
    }
    let why = failures.join("; ");
    Err(if host_addresses == targets.len() {
        Refused::ThisHost(why)
    } else {
        Refused::Unreachable(why)
    })
}

async fn forward(mut client: TcpStream, mut upstream: TcpStream) {
    // Errors here are the peers closing or resetting; nothing to report.
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

/// Closes `stream` with a reset rather than a FIN.
fn reset(stream: TcpStream) {
    if let Err(error) = SockRef::from(&stream).set_linger(Some(Duration::ZERO)) {
        tracing::warn!(%error, "jail tcp listener: SO_LINGER 0 failed, closing normally");
    }
    drop(stream);
}
