//! `host-ctl stage1 build|ls`: the stage1 guest images (the agent and the
//! kernel modules every pod boots from), built once per agent and kernel.

use crate::ui::progress;
use std::path::{Path, PathBuf};

use anyhow::Result;

use super::Format;
use crate::launch::host;
use crate::stage1::{Stage1, Stage1Store};
use crate::ui::table;

#[derive(Debug, clap::Subcommand)]
pub enum Stage1Command {
    /// Build the stage1 image for an agent and kernel (or find the one
    /// built before) and print its digest and path.
    Build {
        /// The guest agent binary [default: found next to host-ctl].
        #[arg(long)]
        agent: Option<PathBuf>,
        /// The guest kernel [default: the newest /boot/vmlinuz-*].
        #[arg(long)]
        kernel: Option<PathBuf>,
        /// Its modules [default: /lib/modules/<its version>].
        #[arg(long)]
        modules_dir: Option<PathBuf>,
        /// Gzip it (smaller, slower to boot under emulation).
        #[arg(long)]
        gzip: bool,
    },
    /// List the stage1 images.
    Ls {
        #[arg(long, default_value = "table")]
        format: Format,
    },
}

/// A stage1 image as `ls` lists it: its record and where it is.
#[derive(serde::Serialize)]
struct Listed<'a> {
    #[serde(flatten)]
    stage1: &'a Stage1,
    path: &'a Path,
}

pub fn run(state_dir: &Path, cmd: Stage1Command) -> Result<i32> {
    let store = Stage1Store::new(state_dir);
    match cmd {
        Stage1Command::Build {
            agent,
            kernel,
            modules_dir,
            gzip,
        } => {
            let agent = host::agent(agent.as_deref())?;
            let kernel = host::kernel(kernel.as_deref(), modules_dir.as_deref())?;
            let building = progress::step("building the boot image (initramfs)");
            let built = store.ensure(&agent, kernel.modules.as_deref(), gzip, true);
            drop(building);
            let s = built?;
            println!("{} {}", s.digest, s.path.display());
        }
        Stage1Command::Ls { format } => {
            let list = store.list()?;
            let listed: Vec<Listed> = list
                .iter()
                .map(|s| Listed {
                    stage1: s,
                    path: &s.path,
                })
                .collect();
            if !format.print_list(&listed)? {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|s| {
                        vec![
                            format!("{}:{}", s.name, s.version),
                            s.digest.chars().skip(7).take(12).collect(),
                            s.kernel.clone(),
                            table::bytes(s.size),
                            s.path.display().to_string(),
                        ]
                    })
                    .collect();
                table::print(&["NAME", "DIGEST", "KERNEL", "SIZE", "PATH"], &rows);
            }
        }
    }
    Ok(0)
}
