//! `host-ctl image import|ls|inspect|rm|prune`: the OCI images pods run
//! from, kept in the image store under `<state_dir>/images`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use super::Format;
use crate::image::{ImageDefaults, ImageRecord, ImageStore};
use crate::ui::table;

#[derive(Debug, clap::Subcommand)]
pub enum ImageCommand {
    /// Import the images of an OCI image layout (directory or tar, as
    /// `skopeo copy ... oci-archive:` writes) or a docker-archive (`docker
    /// save`, `podman save`), and print each one's name and digest.
    Import {
        /// The archive or OCI layout directory.
        #[arg(value_name = "FILE|DIR")]
        source: PathBuf,
        /// Name the image (the source must hold one), e.g. busybox:1.36.
        #[arg(long, value_name = "REF")]
        name: Option<String>,
    },
    /// List the images.
    Ls {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Print an image's record, config defaults and layer directories (JSON).
    Inspect {
        /// A name, a digest or a unique digest prefix.
        reference: String,
    },
    /// Remove images, and the layers no other image uses.
    Rm {
        #[arg(required = true, value_name = "REF")]
        references: Vec<String>,
        /// Remove them even while pods hold leases on them.
        #[arg(short, long)]
        force: bool,
    },
    /// Remove unnamed images no pod uses, unused layers and leftovers of
    /// interrupted imports.
    Prune,
}

/// What `inspect` prints.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Inspected {
    #[serde(flatten)]
    record: ImageRecord,
    config: ImageDefaults,
    layers: Vec<PathBuf>,
}

pub fn run(state_dir: &Path, cmd: ImageCommand) -> Result<i32> {
    let store = ImageStore::open(state_dir)?;
    match cmd {
        ImageCommand::Import { source, name } => {
            let records = store
                .import(&source, name.as_deref())
                .with_context(|| format!("importing {}", source.display()))?;
            for r in records {
                println!("{} {}", display_name(&r), r.digest);
            }
        }
        ImageCommand::Ls { format } => ls(&store, format)?,
        ImageCommand::Inspect { reference } => {
            let resolved = store.resolve(&reference)?;
            let record = store
                .list()?
                .into_iter()
                .find(|r| r.digest == resolved.digest)
                .with_context(|| {
                    format!("image {} vanished while being inspected", resolved.digest)
                })?;
            let out = Inspected {
                record,
                config: resolved.config,
                layers: resolved.layers,
            };
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        ImageCommand::Rm { references, force } => return rm(&store, &references, force),
        ImageCommand::Prune => {
            let r = store.prune()?;
            println!(
                "removed {} image(s), {} snapshot(s), {} blob(s), {} leftover(s): {} freed",
                r.images.len(),
                r.snapshots,
                r.blobs,
                r.tmp,
                table::bytes(r.bytes_freed)
            );
        }
    }
    Ok(0)
}

fn ls(store: &ImageStore, format: Format) -> Result<()> {
    let records = store.list()?;
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&records)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            vec![
                display_name(r),
                short_digest(&r.digest),
                table::bytes(r.size),
                r.created.clone(),
            ]
        })
        .collect();
    table::print(&["NAME", "DIGEST", "SIZE", "CREATED"], &rows);
    Ok(())
}

/// Removes each image; one that cannot be removed is reported and the
/// exit status is 1, the others are still removed.
fn rm(store: &ImageStore, references: &[String], force: bool) -> Result<i32> {
    let mut status = 0;
    for reference in references {
        match store.remove(reference, force) {
            Ok(r) => println!("removed {} {}", display_name(&r), r.digest),
            Err(e) => {
                eprintln!("host-ctl: error: {e}");
                status = 1;
            }
        }
    }
    Ok(status)
}

fn display_name(r: &ImageRecord) -> String {
    if r.names.is_empty() {
        "<none>".into()
    } else {
        r.names.join(",")
    }
}

/// The first 12 hex digits, as `docker images` shows them.
fn short_digest(digest: &str) -> String {
    digest
        .strip_prefix("sha256:")
        .unwrap_or(digest)
        .chars()
        .take(12)
        .collect()
}
