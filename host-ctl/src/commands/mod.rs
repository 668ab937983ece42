//! The subcommands, one thin module each: they parse nothing (clap does,
//! in `main.rs`), call the layers below, and print. Errors become anyhow
//! here and only here.

pub mod app;
pub mod args;
pub mod attach;
pub mod events;
pub mod exec;
pub mod generate;
pub mod image;
pub mod info;
pub mod inspect;
pub mod keeper;
pub mod kill;
pub mod list;
pub mod logs;
pub mod monitor;
pub mod pool;
pub mod port_forward;
pub mod prune;
pub mod rm;
pub mod run;
pub mod stage1;
pub mod stats;
pub mod status;
pub mod stop;
pub mod vmm_jail;
pub mod wait;

/// `--format`: for people, or for programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}
