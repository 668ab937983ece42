//! Builds kvmpod's guest initramfs: a newc cpio archive holding the agent as
//! `/init`, the validated pod manifest, the kernel modules the pod needs (in
//! load order) and every app's root.

pub mod archive;
pub mod compression;
pub mod initramfs;
pub mod kernel;
pub mod modules;
pub mod tree;

pub use initramfs::{build_archive, write_initramfs, Compression, InitramfsSpec, KernelModules};
