//! Builds kvmpod's stage1 guest image: a newc cpio archive holding the agent
//! as `/init` and the kernel modules a pod's VM needs (in load order). The
//! bench's baseline VM also uses it to put a busybox root in an initramfs.

pub mod archive;
pub mod compression;
pub mod initramfs;
pub mod kernel;
pub mod modules;
pub mod tree;

pub use initramfs::{build_archive, write_initramfs, Compression, InitramfsSpec, KernelModules};
