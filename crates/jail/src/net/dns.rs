//! The DNS responder of one jail: a UDP socket on the gateway address that every
//! DNS query from the jail is redirected to. It logs every question (name and
//! type), answers allowlisted names with their synthetic address (type A) or an
//! empty answer (other types), and refuses every other name (`REFUSED`). It never
//! forwards a query anywhere.

use std::sync::Arc;

use simple_dns::rdata::{RData, A};
use simple_dns::{Packet, PacketFlag, ResourceRecord, CLASS, QTYPE, RCODE, TYPE};
use tokio::net::UdpSocket;

use super::log::{Protocol, Verdict};
use super::Context;

/// The TTL of synthetic answers, in seconds.
const ANSWER_TTL: u32 = 60;
/// The largest query read (EDNS buffers are rarely larger).
const MAX_QUERY: usize = 4096;

/// Answers queries on `socket` until the task is aborted.
pub(crate) async fn serve(socket: UdpSocket, context: Arc<Context>) {
    let mut buffer = vec![0u8; MAX_QUERY];
    loop {
        let (length, peer) = match socket.recv_from(&mut buffer).await {
            Ok(received) => received,
            Err(error) => {
                tracing::warn!(jail = %context.jail_id, %error, "jail dns responder: receive failed");
                continue;
            }
        };
        let Some(reply) = respond(&buffer[..length], &context) else {
            continue;
        };
        if let Err(error) = socket.send_to(&reply, peer).await {
            tracing::warn!(jail = %context.jail_id, %peer, %error, "jail dns responder: reply failed");
        }
    }
}

/// The reply to `query`, logging each of its questions; `None` when the datagram
/// is too short to carry a query id.
pub(crate) fn respond(query: &[u8], context: &Context) -> Option<Vec<u8>> {
    let packet = match Packet::parse(query) {
        Ok(packet) => packet,
        Err(error) => {
            context.log.record(
                &context.jail_id,
                Protocol::Dns,
                "(unparseable query)".to_owned(),
                Verdict::Denied,
                format!("format error: {error}"),
            );
            let id = u16::from_be_bytes([*query.first()?, *query.get(1)?]);
            let mut reply = Packet::new_reply(id);
            *reply.rcode_mut() = RCODE::FormatError;
            return reply.build_bytes_vec().ok();
        }
    };
    let mut reply = Packet::new_reply(packet.id());
    if packet.has_flags(PacketFlag::RECURSION_DESIRED) {
        reply.set_flags(PacketFlag::RECURSION_DESIRED);
    }
    reply.set_flags(PacketFlag::RECURSION_AVAILABLE);
    let mut refused = false;
    for question in &packet.questions {
        let name = question.qname.to_string().to_ascii_lowercase();
        let kind = query_type(question.qtype);
        match context.rules.answer(&name) {
            Some(address) => {
                let wants_a = matches!(question.qtype, QTYPE::TYPE(TYPE::A) | QTYPE::ANY);
                if wants_a {
                    reply.answers.push(ResourceRecord::new(
                        question.qname.clone(),
                        CLASS::IN,
                        ANSWER_TTL,
                        RData::A(A::from(address)),
                    ));
                }
                let detail = if wants_a {
                    format!("type {kind}: answered {address} (synthetic)")
                } else {
                    format!("type {kind}: allowlisted name, no records of this type")
                };
                context.log.record(
                    &context.jail_id,
                    Protocol::Dns,
                    name,
                    Verdict::Allowed,
                    detail,
                );
            }
            None => {
                refused = true;
                context.log.record(
                    &context.jail_id,
                    Protocol::Dns,
                    name,
                    Verdict::Denied,
                    format!("type {kind}: not in the allowlist, refused"),
                );
            }
        }
    }
    reply.questions = packet.questions.clone();
    if refused || packet.questions.is_empty() {
        reply.answers.clear();
        *reply.rcode_mut() = RCODE::Refused;
    }
    match reply.build_bytes_vec() {
        Ok(bytes) => Some(bytes),
        Err(error) => {
            tracing::warn!(jail = %context.jail_id, %error, "jail dns responder: building the reply failed");
            None
        }
    }
}

fn query_type(qtype: QTYPE) -> String {
    match qtype {
        QTYPE::TYPE(kind) => format!("{kind:?}"),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use amai_jail_spec::{Endpoint, Host, NetworkPolicy};
    use simple_dns::{Name, Question, QCLASS};

    use super::*;
    use crate::net::log::SharedLog;
    use crate::net::policy::{Rules, SYNTHETIC_BASE};
    use crate::net::resolve::StaticResolver;

    fn context() -> Context {
        let policy = NetworkPolicy::Allow(vec![Endpoint {
            host: Host::Dns("allowed.test".into()),
            port: 80,
        }]);
        Context {
            jail_id: "jail-1".into(),
            rules: Rules::new(&policy, None),
            log: SharedLog::default(),
            resolver: Arc::new(StaticResolver::new()),
        }
    }

    fn query(name: &str, kind: TYPE) -> Vec<u8> {
        let mut packet = Packet::new_query(7);
        packet.set_flags(PacketFlag::RECURSION_DESIRED);
        packet.questions.push(Question::new(
            Name::new_unchecked(name),
            kind.into(),
            QCLASS::CLASS(CLASS::IN),
            false,
        ));
        packet.build_bytes_vec().expect("query builds")
    }

    #[test]
    fn an_allowlisted_name_gets_its_synthetic_address() {
        let context = context();
        let reply = respond(&query("Allowed.test", TYPE::A), &context).expect("a reply");
        let reply = Packet::parse(&reply).expect("reply parses");
        assert_eq!(reply.id(), 7);
        assert_eq!(reply.rcode(), RCODE::NoError);
        assert_eq!(reply.answers.len(), 1);
        assert_eq!(reply.answers[0].rdata, RData::A(A::from(SYNTHETIC_BASE)));
        let log = context.log.snapshot();
        assert_eq!(
            log.find(Protocol::Dns, "allowed.test", Verdict::Allowed)
                .count(),
            1
        );
    }

    #[test]
    fn other_types_of_an_allowlisted_name_are_empty() {
        let context = context();
        let reply = respond(&query("allowed.test", TYPE::AAAA), &context).expect("a reply");
        let reply = Packet::parse(&reply).expect("reply parses");
        assert_eq!(reply.rcode(), RCODE::NoError);
        assert!(reply.answers.is_empty());
    }

    #[test]
    fn other_names_are_refused_and_logged() {
        let context = context();
        let reply = respond(&query("elsewhere.test", TYPE::A), &context).expect("a reply");
        let reply = Packet::parse(&reply).expect("reply parses");
        assert_eq!(reply.rcode(), RCODE::Refused);
        assert!(reply.answers.is_empty());
        let log = context.log.snapshot();
        assert_eq!(
            log.find(Protocol::Dns, "elsewhere.test", Verdict::Denied)
                .count(),
            1
        );
    }

    #[test]
    fn garbage_gets_a_format_error() {
        let context = context();
        let reply = respond(&[0, 9, 1], &context).expect("a reply");
        let reply = Packet::parse(&reply).expect("reply parses");
        assert_eq!(reply.id(), 9);
        assert_eq!(reply.rcode(), RCODE::FormatError);
        assert_eq!(context.log.snapshot().denied(), 1);
        assert_eq!(respond(&[0], &context), None);
    }
}
