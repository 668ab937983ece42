//! `rootfs-builder`: build, inspect and plan kvmpod stage1 images by hand.
//! host-ctl uses the same library; this CLI is for debugging and scripts.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use rootfs_builder::modules::ModuleIndex;
use rootfs_builder::{build_archive, write_initramfs, Compression, InitramfsSpec, KernelModules};

#[derive(Parser)]
#[command(
    name = "rootfs-builder",
    version,
    about = "Build kvmpod guest initramfs images"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build a stage1 guest image: the agent as /init and the kernel
    /// modules a pod's VM needs (host-ctl builds and caches the same with
    /// `host-ctl stage1 build`).
    Build {
        /// The static agent binary to install as /init.
        #[arg(long)]
        agent: PathBuf,
        /// The guest kernel's modules directory (/lib/modules/<version>).
        #[arg(long)]
        modules_dir: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = Codec::Gzip)]
        compression: Codec,
        /// Where to write the image.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Print the modules to load for NAMEs, dependencies first.
    Modules {
        #[arg(long)]
        modules_dir: PathBuf,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// List the entries of an initramfs image.
    List { image: PathBuf },
}

#[derive(Clone, Copy, ValueEnum)]
enum Codec {
    None,
    Gzip,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rootfs-builder: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Build {
            agent,
            modules_dir,
            compression,
            output,
        } => {
            let spec = InitramfsSpec {
                agent,
                modules: modules_dir.map(|dir| KernelModules {
                    dir,
                    wanted: rootfs_builder::initramfs::pod_modules(),
                }),
            };
            let archive = build_archive(&spec)?;
            let compression = match compression {
                Codec::None => Compression::None,
                Codec::Gzip => Compression::Gzip,
            };
            let len = write_initramfs(&archive, &output, compression)?;
            println!(
                "{}: {} entries, {len} bytes",
                output.display(),
                archive.len()
            );
        }
        Command::Modules { modules_dir, names } => {
            let index = ModuleIndex::load(&modules_dir)?;
            for m in index.resolve(&names)? {
                println!("{}", m.rel_path);
            }
        }
        Command::List { image } => {
            let entries = rootfs_builder::initramfs::read_initramfs(&image)
                .with_context(|| format!("reading {}", image.display()))?;
            for e in entries {
                println!(
                    "{:06o} {:>5} {:>5} {:>9} {}",
                    e.mode,
                    e.uid,
                    e.gid,
                    e.data.len(),
                    e.path
                );
            }
        }
    }
    Ok(())
}
