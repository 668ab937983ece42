//! The pod: its live state, and the life of its apps.
//!
//! It owns what the host asks about (each app's status, its log buffer of
//! output the host has not persisted yet, the pod's phase, the event log,
//! the boot timeline) and the apps' life: each one started in manifest
//! order once its root is assembled, watched, restarted as its policy
//! says, and stopped at shutdown, after which every mount is taken down.
//! State is split per app, each part behind its own small lock, so a slow
//! reader of one never stalls the others. It starts processes through the
//! process subsystem and mounts through storage; it knows nothing of RPC
//! or of boot.

mod error;
mod events;
mod logbuf;
mod sandbox;
mod shutdown;
mod state;
mod supervisor;

pub use error::PodError;
pub use events::interface_stats;
pub use logbuf::{Chunk, Item, LogBuffer, Piece, Stream};
pub use sandbox::{add_app, remove_app};
pub use shutdown::stop;
pub use state::{AppRecord, Pod};
pub use supervisor::start_apps;
