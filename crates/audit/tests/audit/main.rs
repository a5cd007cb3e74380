//! The auditor against deployments built in memory with the core's own
//! APIs: honest ones, tampered ones (each tamper case caught at the exact
//! event or checkpoint), key validity, partial selections, and the report's
//! schema. One test binary; nothing is timed here (`amai bench` measures).

mod common;

mod honest;
mod input;
mod keys;
mod schema;
mod selection;
mod tamper;
