//! Loading the kernel modules host-ctl chose for the pod, in the order it
//! worked out (dependencies first), with `finit_module`.

use std::fs::File;

use nix::errno::Errno;
use nix::kmod::{finit_module, ModuleInitFlags};

use crate::error::{Context, SysError};

/// Loads each module in order. A module that is already loaded (or built
/// in, which host-ctl normally leaves out) is not an error. Returns how many
/// were newly loaded.
pub(super) fn load_all(paths: &[String]) -> Result<usize, SysError> {
    let mut loaded = 0;
    for path in paths {
        let file = File::open(path).context(|| format!("opening kernel module {path}"))?;
        match finit_module(&file, c"", ModuleInitFlags::empty()) {
            Ok(()) => loaded += 1,
            Err(Errno::EEXIST) => log::debug!("{path}: already loaded"),
            Err(errno) => {
                return Err(SysError {
                    context: format!("loading kernel module {path}"),
                    errno,
                })
            }
        }
    }
    Ok(loaded)
}
