//! What the command line shows: tables, sizes, signal names, terminal
//! modes and message formatting. A leaf: it uses no other part of
//! host-ctl.

pub mod detach_keys;
pub mod notes;
pub mod progress;
pub mod signals;
pub mod table;
pub mod template;
pub mod terminal;
pub mod text;
