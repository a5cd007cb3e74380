//! The crate's tests, given/when/then.

mod governance;
mod harness;
mod health;
mod lifecycle;
mod policy;
mod sanction;
