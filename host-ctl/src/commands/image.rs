//! `host-ctl image import|pull|ls|inspect|rm|prune`: the OCI images pods run
//! from, kept in the image store under `<state_dir>/images`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};
use serde::Serialize;

use super::Format;
use crate::image::{ImageDefaults, ImageRecord, ImageStore, ImportEvent, PullEvent, PullOptions};
use crate::ui::progress::{self, Transfer};
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
    /// Pull an image from an OCI registry (the linux/amd64 image of a
    /// multi-arch one) and print its name and digest. Plain HTTP is used
    /// only for registries on this host (localhost, 127.0.0.0/8, ::1) or
    /// with --insecure; an image the store has is not downloaded again.
    Pull {
        /// host/repo:tag, host/repo@sha256:..., or repo:tag (Docker Hub);
        /// `http://` or `https://` before it chooses the protocol.
        #[arg(value_name = "REF")]
        reference: String,
        /// Allow plain HTTP to a registry that is not on this host.
        #[arg(long)]
        insecure: bool,
    },
    /// List the images.
    Ls {
        #[arg(long, default_value = "table")]
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
            let records = import(&store, &source, name.as_deref())
                .with_context(|| format!("importing {}", source.display()))?;
            for r in records {
                println!("{} {}", display_name(&r), r.digest);
            }
        }
        ImageCommand::Pull {
            reference,
            insecure,
        } => pull(&store, &reference, insecure)?,
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
        ImageCommand::Prune => prune(&store)?,
    }
    Ok(0)
}

/// Imports, showing on a terminal the archive read (bytes, rate, time
/// left) and then the layers applied.
fn import(
    store: &ImageStore,
    source: &Path,
    name: Option<&str>,
) -> Result<Vec<ImageRecord>, crate::image::ImageError> {
    let importing = progress::step(format!("importing {}", source.display()));
    let reading: Mutex<Option<Transfer>> = Mutex::new(None);
    let shown = |e: ImportEvent| {
        let mut reading = reading.lock().unwrap_or_else(|p| p.into_inner());
        match e {
            ImportEvent::Unpacking { size } => {
                *reading = Some(progress::transfer("archive", size));
            }
            ImportEvent::Read { bytes } => {
                if let Some(bar) = reading.as_ref() {
                    bar.advance(bytes);
                }
            }
            ImportEvent::Layer { index, count } => {
                // The archive was read whole before the first layer.
                *reading = None;
                importing.set(format!(
                    "importing {}: layer {} of {count}",
                    source.display(),
                    index + 1
                ));
            }
        }
    };
    store.import_reporting(source, name, &shown)
}

/// Prunes `store` (see `ImageStore::prune`) and says what went.
pub(super) fn prune(store: &ImageStore) -> Result<()> {
    let r = store.prune()?;
    println!(
        "removed {} image(s), {} snapshot(s), {} blob(s), {} leftover(s): {} freed",
        r.images.len(),
        r.snapshots,
        r.blobs,
        r.tmp,
        table::bytes(r.bytes_freed)
    );
    Ok(())
}

/// Pulls, with a bar per layer on a terminal (a line per blob when not)
/// on stderr, and `<name> <digest>` on stdout at the end, as `import`
/// prints.
fn pull(store: &ImageStore, reference: &str, insecure: bool) -> Result<()> {
    let fetching = progress::step(format!("pulling {reference}"));
    let bars = Mutex::new(BTreeMap::<String, Transfer>::new());
    let shown = |e: PullEvent<'_>| {
        let mut bars = bars.lock().unwrap_or_else(|p| p.into_inner());
        match e {
            PullEvent::Started { what, size } => {
                bars.insert(what.to_string(), progress::transfer(what, size));
            }
            PullEvent::Advanced { what, bytes } => {
                if let Some(bar) = bars.get(what) {
                    bar.advance(bytes);
                }
            }
            PullEvent::Fetched(f) => {
                let line = format!(
                    "pulled {} {} ({})",
                    f.what,
                    short_digest(&f.digest),
                    table::bytes(f.size)
                );
                match bars.remove(&f.what) {
                    Some(bar) => bar.done(&line),
                    None => progress::say(&line),
                }
            }
        }
    };
    let options = PullOptions {
        insecure,
        stop_on_signals: true,
        progress: &shown,
    };
    let pulled = store.pull(reference, &options);
    drop(bars);
    drop(fetching);
    let report = pulled?;
    if report.blobs == 0 {
        eprintln!("{reference}: the store has this image already");
    }
    println!("{} {}", display_name(&report.record), report.record.digest);
    Ok(())
}

fn ls(store: &ImageStore, format: Format) -> Result<()> {
    let records = store.list()?;
    if format.print_list(&records)? {
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
