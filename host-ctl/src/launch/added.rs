//! Apps added to and removed from a running sandbox pod (`host-ctl app
//! add|rm`, and the containers of a Kubernetes pod through the shim).
//!
//! Adding plans the app's root as `run` plans a pod's (an image, a root
//! directory or a root archive), binds its layers and host volumes into
//! the pod's apps share, asks the agent to start it, and then records it
//! in the pod's manifest (so `logs`, `attach`, `exec` and a restarted
//! monitor know it) and keeps its request beside the manifest for the
//! removal. Removing asks the agent first (it refuses while the app runs
//! or its output is not all persisted), then unbinds and forgets, its
//! output too, as `docker rm` does.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kvmpod_api::addapp::AddApp;
use kvmpod_api::layout;
use kvmpod_api::manifest::{PodManifest, VolumeKind};
use kvmpod_api::protocol::{AddAppRequest, AppStatus, RemoveAppRequest, StatusRequest};

use super::roots::{self, Store};
use super::LaunchError;
use crate::agent::{self, AgentClient};
use crate::image::ImageStore;
use crate::pod::apps_share::{self, AppBind};
use crate::pod::monitor::read_manifest;
use crate::pod::record::{self, AppSummary};
use crate::pod::{PodError, StoredPod, VmLaunch};

/// Where an added app's request is kept: `<pod>/added/<app>.json`.
fn request_path(pod: &StoredPod, app: &str) -> PathBuf {
    pod.dir.path.join("added").join(format!("{app}.json"))
}

fn agent_error(what: &str) -> impl FnOnce(ttrpc::Error) -> LaunchError + '_ {
    move |e| match e {
        ttrpc::Error::RpcStatus(s) => LaunchError::Host(format!("{what}: {}", s.message())),
        e => LaunchError::Host(format!("{what}: {e}")),
    }
}

/// Adds the one app of manifest `path` to running sandbox pod `pod` and
/// starts it; returns its status as the agent has it.
pub async fn add_app(
    state_dir: &Path,
    pod: &StoredPod,
    path: &Path,
) -> Result<AppStatus, LaunchError> {
    let client = pod.client().await?;
    let _apps = record::lock_apps(&pod.dir)?;
    let current = read_manifest(&pod.dir)?;
    if !current.sandbox {
        return Err(LaunchError::Host(format!(
            "pod {} is not a sandbox: apps can only be added to a pod whose manifest says \"sandbox\": true",
            pod.dir.id
        )));
    }
    let mut added = kvmpod_api::validate::load_added(path, &current.volumes)?;
    let (roots, digests) = roots::plan(&mut added, state_dir, Store::Write)?;
    let spec = AddApp {
        layers: roots.apps.values().next().map_or(0, Vec::len),
        pod: added,
    };
    let apps: Vec<&str> = current.apps.iter().map(|a| a.name.as_str()).collect();
    let volumes: Vec<&str> = current.volumes.iter().map(|v| v.name.as_str()).collect();
    spec.check(&apps, &volumes)
        .map_err(|e| LaunchError::Host(e.to_string()))?;
    let app = spec.pod.apps[0].name.clone();
    if !digests.is_empty() {
        ImageStore::open(state_dir)?.lease(&pod.dir.id, &digests)?;
    }
    apps_share::bind_app(&pod.dir, &app, &binds(&spec, &roots))?;
    let text = serde_json::to_string(&spec)
        .map_err(|e| LaunchError::Host(format!("encoding the request: {e}")))?;
    let mut req = AddAppRequest::new();
    req.spec = text.clone();
    let status = match client
        .add_app(agent::deadline(Duration::from_secs(30)), &req)
        .await
    {
        Ok(st) => st,
        Err(e) => match added_anyway(&client, &app).await {
            // The answer was lost, not the app: it is the pod's.
            Some(st) => st,
            None => {
                apps_share::unbind_app(&pod.dir, &app);
                return Err(agent_error(&format!("adding app {app:?}"))(e));
            }
        },
    };
    remember(pod, &spec.pod, &text)?;
    Ok(status)
}

/// After an AddApp that failed: app `app`'s status if the agent has it
/// after all (the reply, not the request, was lost).
async fn added_anyway(client: &AgentClient, app: &str) -> Option<AppStatus> {
    let st = client
        .status(
            agent::deadline(Duration::from_secs(10)),
            &StatusRequest::new(),
        )
        .await
        .ok()?;
    st.apps.into_iter().find(|a| a.name == app)
}

/// The app's layers (top first) and its host volumes, as binds into its
/// directory of the apps share.
fn binds(spec: &AddApp, roots: &roots::RootsPlan) -> Vec<AppBind> {
    let app = &spec.pod.apps[0].name;
    let mut out: Vec<AppBind> = roots
        .apps
        .values()
        .flatten()
        .enumerate()
        .map(|(i, n)| AppBind {
            source: roots.layers[*n].clone(),
            target: layout::added_app_layer(app, i),
            read_only: true,
        })
        .collect();
    for v in &spec.pod.volumes {
        if let (VolumeKind::Host, Some(source)) = (v.kind, &v.source) {
            out.push(AppBind {
                source: source.clone(),
                target: layout::added_app_volume(app, &v.name),
                read_only: spec.pod.exported_read_only(v),
            });
        }
    }
    out
}

/// Records an added app in the pod's manifest and record, and keeps its
/// request for its removal.
fn remember(pod: &StoredPod, added: &PodManifest, request: &str) -> Result<(), LaunchError> {
    let app = &added.apps[0].name;
    let kept = request_path(pod, app);
    write(&kept, request.as_bytes())?;
    change_manifest(pod, |m| {
        m.apps.extend(added.apps.iter().cloned());
        m.volumes.extend(added.volumes.iter().cloned());
    })?;
    record::update(&pod.dir, |r| {
        if !r.apps.iter().any(|a| &a.name == app) {
            r.apps.push(AppSummary::pending(app));
        }
    })?;
    Ok(())
}

/// Removes added app `app` from running pod `pod`: it must have exited,
/// unless `force` (then the agent kills it first).
pub async fn remove_app(pod: &StoredPod, app: &str, force: bool) -> Result<(), LaunchError> {
    let client = pod.client().await?;
    let _apps = record::lock_apps(&pod.dir)?;
    let kept = request_path(pod, app);
    let spec: AddApp = match fs::read(&kept) {
        Ok(b) => serde_json::from_slice(&b).map_err(|source| PodError::BadFile {
            path: kept.clone(),
            source,
        })?,
        Err(_) => {
            return Err(LaunchError::Host(format!(
                "pod {} has no added app {app:?} (only apps added with `host-ctl app add` can be removed)",
                pod.dir.id
            )))
        }
    };
    let mut req = RemoveAppRequest::new();
    req.app = app.to_string();
    req.force = force;
    match client
        .remove_app(agent::deadline(Duration::from_secs(60)), &req)
        .await
    {
        Ok(_) => {}
        // Gone from the agent already (a removal whose host side did not
        // finish): finish it.
        Err(ttrpc::Error::RpcStatus(s)) if s.code() == ttrpc::Code::NOT_FOUND => {}
        Err(e) => return Err(agent_error(&format!("removing app {app:?}"))(e)),
    }
    apps_share::unbind_app(&pod.dir, app);
    change_manifest(pod, |m| {
        m.apps.retain(|a| a.name != app);
        m.volumes
            .retain(|v| !spec.pod.volumes.iter().any(|own| own.name == v.name));
    })?;
    record::update(&pod.dir, |r| r.apps.retain(|a| a.name != app))?;
    let _ = fs::remove_file(&kept);
    // As `docker rm` takes a container's logs: the name is free again.
    let max_files = VmLaunch::read(&pod.dir)
        .map(|l| l.log_rotation.max_files)
        .unwrap_or_default();
    let files = pod.dir.app_logs(app, max_files);
    for f in std::iter::once(&files.current).chain(&files.rotated) {
        let _ = fs::remove_file(f);
    }
    Ok(())
}

/// Changes the pod's manifest under its record's lock, and writes it
/// whole (a new file renamed over the old).
fn change_manifest(
    pod: &StoredPod,
    change: impl FnOnce(&mut PodManifest),
) -> Result<(), LaunchError> {
    let mut result = Ok(());
    record::update(&pod.dir, |_| {
        result = (|| {
            let mut m = read_manifest(&pod.dir)?;
            change(&mut m);
            let text = serde_json::to_vec_pretty(&m).map_err(|source| PodError::BadFile {
                path: pod.dir.manifest(),
                source,
            })?;
            let tmp = pod.dir.manifest().with_extension("json.tmp");
            write(&tmp, &text)?;
            fs::rename(&tmp, pod.dir.manifest()).map_err(|source| LaunchError::Write {
                path: pod.dir.manifest(),
                source,
            })
        })();
    })?;
    result
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), LaunchError> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|source| LaunchError::Write {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    fs::write(path, bytes).map_err(|source| LaunchError::Write {
        path: path.to_path_buf(),
        source,
    })
}
