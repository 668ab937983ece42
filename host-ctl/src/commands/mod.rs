//! The subcommands that act on existing pods.

pub mod args;
pub mod attach;
pub mod events;
pub mod exec;
pub mod kill;
pub mod list;
pub mod logs;
pub mod port_forward;
pub mod rm;
pub mod stats;
pub mod status;
pub mod stop;

/// `--format`: for people, or for programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}
