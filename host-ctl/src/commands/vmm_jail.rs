//! `host-ctl vmm-jail ... -- PROGRAM ARGS` (hidden): runs a hypervisor in
//! its filesystem jail (see `vmm::Jail`). It replaces itself with PROGRAM,
//! so the hypervisor keeps this process's pid, process group and
//! parent-death signal.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::vmm::Jail;

pub fn run(args: &[OsString]) -> Result<i32> {
    let (jail, program) = Jail::parse(args)?;
    jail.enter().context("entering the hypervisor's jail")?;
    let Some((program, rest)) = program.split_first() else {
        bail!("vmm-jail: no program to run");
    };
    let err = Command::new(program)
        .args(rest)
        .envs(jail.env.iter().map(|(k, v)| (k, v)))
        .exec();
    Err(err).with_context(|| format!("running {} in its jail", program.to_string_lossy()))
}
