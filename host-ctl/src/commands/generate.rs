//! What is generated from the same clap definitions as `--help`, so that
//! none of it disagrees with it: shell completion scripts (`host-ctl
//! completion SHELL`) and, with `host-ctl manpages DIR` (hidden; `make
//! install` runs both), a manual page per command: `host-ctl.1`,
//! `host-ctl-run.1`, `host-ctl-pool-start.1`, ... Hidden (internal)
//! commands are in neither.

use std::path::Path;

use anyhow::{Context, Result};

/// Prints `shell`'s completion script for `cmd` (without its hidden
/// commands, which completion would otherwise offer).
pub fn completion(cmd: &clap::Command, shell: clap_complete::Shell) -> Result<i32> {
    let mut visible = visible(cmd);
    let name = visible.get_name().to_string();
    clap_complete::generate(shell, &mut visible, name, &mut std::io::stdout());
    Ok(0)
}

/// `cmd` without its hidden subcommands, at every depth.
fn visible(cmd: &clap::Command) -> clap::Command {
    let mut out = cmd.clone();
    let hidden: Vec<String> = cmd
        .get_subcommands()
        .filter(|s| s.is_hide_set())
        .map(|s| s.get_name().to_string())
        .collect();
    if hidden.is_empty() && cmd.get_subcommands().all(|s| !s.has_subcommands()) {
        return out;
    }
    // clap cannot remove a subcommand: the command is built again with
    // its arguments and its visible subcommands.
    out = clap::Command::new(cmd.get_name().to_string())
        .args(cmd.get_arguments().cloned())
        .subcommand_required(cmd.is_subcommand_required_set());
    if let Some(about) = cmd.get_about() {
        out = out.about(about.clone());
    }
    if let Some(v) = cmd.get_version() {
        out = out.version(v.to_string());
    }
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        out = out.subcommand(visible(sub));
    }
    out
}

/// Writes `cmd`'s page and its subcommands' into `dir`.
pub fn manpages(cmd: &clap::Command, dir: &Path) -> Result<i32> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut cmd = cmd.clone();
    cmd.build();
    page(&cmd, cmd.get_name(), dir)?;
    Ok(0)
}

/// `cmd`'s page as `<name>.1`, then its visible subcommands' as
/// `<name>-<sub>.1`.
fn page(cmd: &clap::Command, name: &str, dir: &Path) -> Result<()> {
    let path = dir.join(format!("{name}.1"));
    let mut text = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .title(name)
        .render(&mut text)
        .with_context(|| format!("rendering {name}'s manual page"))?;
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        page(sub, &format!("{name}-{}", sub.get_name()), dir)?;
    }
    Ok(())
}
