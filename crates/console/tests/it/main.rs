//! Console integration tests against a real nats-server, real workers and a
//! real gateway, all in process (one test binary).

mod auth;
mod browser;
mod common;
mod pages;
mod protection;
