//! End-to-end tests: the real `amai` binary (`amai up`, `amai worker`,
//! `amai gateway` and the client commands) against a real nats-server.
//! Each test gets its own nats-server, temp dir and ports.

mod as_of;
mod audit;
mod catalog;
mod crash;
mod export;
mod jail;
mod least_privilege;
mod llm;
mod rebuild;
mod scale_out;
mod tamper;
mod trust;
mod util;
mod walkthrough;
mod witness;
