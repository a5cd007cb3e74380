//! Gateway integration tests against a real nats-server (one test binary).

mod append;
mod audit;
mod auth;
mod blobs;
mod catalog;
mod common;
mod flow;
mod garbage;
mod holes;
mod jail;
mod llm;
mod queries;
mod reads;
mod trust;
