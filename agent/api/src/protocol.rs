//! The agent protocol, generated at build time from `proto/agent.proto`.

#[allow(
    clippy::all,
    clippy::pedantic,
    missing_docs,
    unused_imports,
    unused_mut,
    unused_qualifications,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals
)]
pub mod agent {
    include!(concat!(env!("OUT_DIR"), "/agent.rs"));
}

#[allow(
    clippy::all,
    clippy::pedantic,
    missing_docs,
    unused_imports,
    unused_mut,
    unused_qualifications,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals
)]
pub mod agent_ttrpc {
    include!(concat!(env!("OUT_DIR"), "/agent_ttrpc.rs"));
}

pub use agent::*;
