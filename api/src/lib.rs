//! What host-ctl, rootfs-builder and the guest agent must agree on: the pod
//! manifest and its validation, the guest's file layout and ports, the
//! agent's configuration, the console lines the agent writes, the names of
//! boot timeline marks, the ttrpc protocol between host and agent and the
//! raw vsock streams beside it (app logs, exec and attach); and
//! the mount API calls both sides make.

pub mod addapp;
pub mod config;
pub mod console;
pub mod iostream;
pub mod layout;
pub mod limits;
pub mod logstream;
pub mod manifest;
pub mod mountapi;
pub mod network;
pub mod pool;
pub mod protocol;
pub mod signal;
pub mod tag;
pub mod timeline;
pub mod validate;

pub use manifest::PodManifest;
