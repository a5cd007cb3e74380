//! The crate's tests, given/when/then.

mod harness;
