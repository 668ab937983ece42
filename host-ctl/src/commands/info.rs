//! `host-ctl info`: what this host gives pods, and why: the accelerator
//! and vsock transport `run` would choose, the hypervisors found, the
//! guest kernel and agent, the stage1 images, and what the state directory
//! holds. Every choice `run` says only when it changes is said here, always.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;

use super::Format;
use crate::image::ImageStore;
use crate::launch::host;
use crate::pod::{cache_dir, store};
use crate::pool::PoolSpec;
use crate::stage1::Stage1Store;
use crate::ui::table::bytes as human_bytes;
use crate::vmm::accel::{self, AccelRequest};
use crate::vmm::vsock::{self, VsockMode, VHOST_VSOCK_DEV};
use crate::vmm::{hypervisor, HypervisorKind};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Info {
    version: &'static str,
    /// `kvm` or `tcg`, as `run --accel auto` picks.
    accelerator: Chosen,
    /// `hybrid` or `vhost`, as `run --vsock auto` picks.
    vsock: Chosen,
    hypervisors: Vec<Found>,
    kernel: Found,
    /// The kernel release its modules are for.
    kernel_release: Option<String>,
    agent: Found,
    state_dir: PathBuf,
    /// Each stage1 image: its digest, kernel release and size.
    stage1_images: Vec<Stage1Info>,
    pods: usize,
    /// Bytes the pods' directories use (their logs, shares, writable
    /// layers), not counting what is mounted into them.
    pods_bytes: u64,
    images: usize,
    images_bytes: u64,
    cache_bytes: u64,
    /// VMs the warm pool keeps; 0 without a pool.
    pool_size: u32,
}

#[derive(Debug, Serialize)]
struct Chosen {
    choice: String,
    reason: String,
}

#[derive(Debug, Serialize)]
struct Found {
    name: String,
    /// Where it is; `None` when it is not found (see `problem`).
    path: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Stage1Info {
    digest: String,
    kernel: String,
    size: u64,
}

impl Found {
    fn of<E: std::fmt::Display>(name: &str, found: Result<PathBuf, E>) -> Found {
        match found {
            Ok(p) => Found {
                name: name.into(),
                path: Some(p),
                problem: None,
            },
            Err(e) => Found {
                name: name.into(),
                path: None,
                problem: Some(e.to_string()),
            },
        }
    }

    fn shown(&self) -> String {
        match (&self.path, &self.problem) {
            (Some(p), _) => p.display().to_string(),
            (None, Some(why)) => format!("not found: {why}"),
            (None, None) => "not found".into(),
        }
    }
}

pub fn run(state_dir: &Path, format: Format) -> Result<i32> {
    let info = gather(state_dir)?;
    if !format.print_one(&info)? {
        print_table(&info);
    }
    Ok(0)
}

fn gather(state_dir: &Path) -> Result<Info> {
    let accelerator = match accel::choose(AccelRequest::Auto) {
        Ok(c) => Chosen {
            choice: c.accel.name().into(),
            reason: c.reason,
        },
        Err(e) => Chosen {
            choice: "none".into(),
            reason: e.to_string(),
        },
    };
    let vsock = match vsock::choose(VsockMode::Auto, Path::new(VHOST_VSOCK_DEV)) {
        Ok((kind, why)) => Chosen {
            choice: kind.describe().into(),
            reason: why,
        },
        Err(e) => Chosen {
            choice: "none".into(),
            reason: e.to_string(),
        },
    };
    let hypervisors = [HypervisorKind::Qemu, HypervisorKind::Lkvm]
        .into_iter()
        .map(|k| Found::of(k.name(), hypervisor(k).program()))
        .collect();
    let kernel_found = host::kernel(None, None);
    let kernel_release = kernel_found.as_ref().ok().and_then(|k| {
        k.modules
            .as_deref()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
    });
    let kernel = Found::of("kernel", kernel_found.map(|k| k.image));
    let agent = Found::of("agent", host::agent(None));
    let stage1_images = Stage1Store::new(state_dir)
        .list()
        .unwrap_or_default()
        .into_iter()
        .map(|s| Stage1Info {
            digest: s.digest,
            kernel: s.kernel,
            size: s.size,
        })
        .collect();
    let pods = store::all_dirs(state_dir).unwrap_or_default();
    let images = ImageStore::existing(state_dir)
        .and_then(|s| s.list().ok())
        .unwrap_or_default();
    Ok(Info {
        version: env!("CARGO_PKG_VERSION"),
        accelerator,
        vsock,
        hypervisors,
        kernel,
        kernel_release,
        agent,
        state_dir: state_dir.to_path_buf(),
        stage1_images,
        pods: pods.len(),
        pods_bytes: pods.iter().map(|d| disk_usage(&d.path)).sum(),
        images: images.len(),
        images_bytes: disk_usage(&state_dir.join("images")),
        cache_bytes: disk_usage(&cache_dir(state_dir)),
        pool_size: PoolSpec::read(state_dir)
            .ok()
            .flatten()
            .map_or(0, |p| p.size),
    })
}

fn print_table(i: &Info) {
    let mut rows: Vec<(String, String)> = vec![
        ("host-ctl".into(), i.version.into()),
        (
            "accelerator".into(),
            format!("{}: {}", i.accelerator.choice, i.accelerator.reason),
        ),
        (
            "vsock".into(),
            format!("{}: {}", i.vsock.choice, i.vsock.reason),
        ),
    ];
    for h in &i.hypervisors {
        rows.push((h.name.clone(), h.shown()));
    }
    let release = i
        .kernel_release
        .as_deref()
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    rows.push(("kernel".into(), format!("{}{release}", i.kernel.shown())));
    rows.push(("agent".into(), i.agent.shown()));
    rows.push(("state directory".into(), i.state_dir.display().to_string()));
    let stage1_bytes: u64 = i.stage1_images.iter().map(|s| s.size).sum();
    rows.push((
        "stage1 images".into(),
        format!("{}, {}", i.stage1_images.len(), human_bytes(stage1_bytes)),
    ));
    rows.push((
        "pods".into(),
        format!("{}, {}", i.pods, human_bytes(i.pods_bytes)),
    ));
    rows.push((
        "images".into(),
        format!("{}, {}", i.images, human_bytes(i.images_bytes)),
    ));
    rows.push(("cache".into(), human_bytes(i.cache_bytes)));
    rows.push((
        "warm pool".into(),
        match i.pool_size {
            0 => "none".into(),
            n => format!("{n} VMs"),
        },
    ));
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in rows {
        println!("{k:<width$}  {v}");
    }
}

/// Bytes of the files under `path` on its own file system (what is mounted
/// under it, such as a pod's volumes, is not counted).
fn disk_usage(path: &Path) -> u64 {
    let Ok(top) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    let dev = top.dev();
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.dev() != dev {
                continue;
            }
            total += m.blocks() * 512;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_usage_counts_files_below_and_only_on_its_file_system() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/b/f"), vec![1u8; 64 * 1024]).unwrap();
        let used = disk_usage(dir.path());
        assert!(used >= 64 * 1024, "{used}");
        assert_eq!(disk_usage(&dir.path().join("missing")), 0);
    }
}
