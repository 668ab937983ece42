//! lkvm's (kvmtool's) command line for a pod.
//!
//! Checked against kvmtool's `builtin-run.c` (the option table), `virtio/
//! 9p.c` (`--9p dir,tag`) and `virtio/net.c` (`mode=none`):
//!
//! * `--nodefaults` is essential: without it, and without a disk or
//!   initrd, kvmtool exports the host's `/` as 9p tag `hostfs` and appends
//!   its own kernel parameters; with it, `-p` is the whole command line.
//! * `--9p` splits its argument at the first comma, so a source path with a
//!   comma cannot be passed: such a source (and every read-only one, as
//!   kvmtool's 9p has no read-only option) is shared through an alias
//!   path, a bind mount host-ctl makes under the pod directory.
//! * kvmtool's 9p server resolves symlinks in the middle of a path on the
//!   host: a share can reach beyond its directory through one. Share only
//!   trees whose symlinks you trust.
//! * `--vsock` takes the guest CID; there is no Unix-socket (hybrid) mode.

use crate::vmspec::{VmSpec, Vsock};

/// 9p devices lkvm's one PCI bus leaves room for.
const MAX_9P_DEVICES: usize = 24;

/// The lkvm binary, unless `KVMPOD_LKVM` names another.
pub const LKVM: &str = "lkvm";

/// The argv (without the program), or why the pod cannot run under lkvm.
pub fn argv(spec: &VmSpec) -> Result<Vec<String>, String> {
    let Vsock::Kernel { cid } = spec.vsock else {
        return Err("lkvm has no hybrid (Unix socket) vsock: it needs the host's vhost-vsock (/dev/vhost-vsock)".into());
    };
    if spec.shares.len() > MAX_9P_DEVICES {
        return Err(format!(
            "lkvm has a single PCI bus: at most {MAX_9P_DEVICES} host volumes (this pod has {})",
            spec.shares.len()
        ));
    }
    let mut a: Vec<String> = vec![
        "run".into(),
        "--nodefaults".into(),
        "--name".into(),
        format!("kvmpod-{}", spec.name),
        "-k".into(),
        spec.kernel.to_string_lossy().into_owned(),
        "-i".into(),
        spec.initrd.to_string_lossy().into_owned(),
        "-p".into(),
        spec.cmdline.clone(),
        "-m".into(),
        spec.memory_mib.to_string(),
        "-c".into(),
        spec.cpus.to_string(),
        "--console".into(),
        "serial".into(),
        "-n".into(),
        "mode=none".into(),
    ];
    for share in &spec.shares {
        let source = share.source.to_string_lossy();
        if source.contains(',') {
            return Err(format!(
                "lkvm's --9p cannot carry a path with a comma ({source}); it must be shared through an alias"
            ));
        }
        if share.read_only {
            return Err(format!(
                "lkvm's --9p cannot export {source} read-only; it must be shared through a read-only alias"
            ));
        }
        a.push("--9p".into());
        a.push(format!("{source},{}", share.tag));
    }
    a.push("--vsock".into());
    a.push(cid.to_string());
    Ok(a)
}
