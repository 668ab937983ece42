//! The boot tests' harness: finds host-ctl, the agent and the host tools
//! (`programs`), gives each test a scratch directory (`fixture`) in which
//! it builds busybox app roots and writes manifests (`pod`), runs host-ctl
//! (`process`), checks things inside the guest (`checks`) and, at the end,
//! that nothing outlived its pods (`leftovers`).
//!
//! A missing prerequisite is a failure that says how to fix it (`make
//! deps`, `make build`), never a quiet skip.

pub mod binaries;
pub mod checks;
pub mod containerd;
pub mod fixture;
pub mod images;
pub mod leftovers;
pub mod net;
pub mod pod;
pub mod pool;
pub mod process;
pub mod programs;
pub mod terminal;
pub mod tmux;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use binaries::euid_probe;
pub use checks::{assert_checks, check, equals, erofs, list_cell, table_and_json_agree};
pub use fixture::{fixture_pods, Fixture};
pub use pod::PodSpec;
pub use process::{run_with_limit, send_signal, Outcome, Running};
pub use programs::{programs, Programs};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}

/// The time a boot test allows one pod: generous for a loaded CI host
/// under TCG.
pub const POD_LIMIT: Duration = Duration::from_secs(240);

/// The time a command that talks to a running pod may take.
pub const CMD: Duration = Duration::from_secs(60);
