//! Signal names and numbers, as users write them (`TERM`, `SIGTERM`, `15`,
//! `RTMIN+3`): the manifest's `stopSignal` uses the same names, so they
//! live in `kvmpod-api`.

pub use kvmpod_api::signal::{name, parse, BadSignal};
