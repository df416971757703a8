//! The CLI's commands, by concept; `main.rs` dispatches and holds the shared loading helpers.

pub(crate) mod args;
pub(crate) mod files;
pub(crate) mod inspect;
