//! # amai-llm
//!
//! What Amai knows about the OpenAI and Anthropic HTTP APIs, for the LLM recording
//! and replay proxy and the CLI. Pure: no NATS, no async runtime, no HTTP server.
//!
//! - [`endpoint`]: the proxied endpoints, their API, upstream and upstream path;
//! - [`canonical`]: ignored fields and the request hash (SHA-256 over RFC 8785 JSON);
//! - [`diff`]: field-level differences between two JSON bodies, and the nearest one;
//! - [`sse`]: a byte-exact server-sent-events splitter and an event parser;
//! - [`stream`]: per-endpoint classification of stream events and the stream's outcome;
//! - [`usage`]: token usage and model of an answer, streamed or not;
//! - [`errors`]: error answers in each API's own error format;
//! - [`headers`]: which response headers are recorded and which request headers forwarded;
//! - [`cassette`]: the cassette export format (a session's recordings as JSON).
#![warn(missing_docs)]

pub mod canonical;
pub mod cassette;
pub mod diff;
pub mod endpoint;
pub mod errors;
pub mod headers;
pub mod sse;
pub mod stream;
pub mod usage;

pub use amai_proto::v1 as proto;
pub use endpoint::{Api, Endpoint};
