//! Apps added to and removed from a running sandbox pod, as rkt's app
//! sandbox (`rkt app add|start|rm`) and the CRI's containers of one pod
//! sandbox. An added app gets its root and volumes mounted (storage), a
//! record, and the same supervision as a booted app; a removed app must
//! have exited and its output be persisted by the host, so nothing it
//! wrote is lost with it.

use std::sync::Arc;
use std::time::Duration;

use kvmpod_api::addapp::AddApp;
use kvmpod_api::manifest::PodManifest;
use kvmpod_api::protocol::EventKind;

use super::state::{lock, AppRecord, Pod};
use super::supervisor::start_app;
use super::PodError;
use crate::storage;

/// How long removal waits for the host to persist an app's last output.
const OUTPUT_WAIT: Duration = Duration::from_secs(10);
/// How long a forced removal waits for the killed app to be over.
const EXIT_WAIT: Duration = Duration::from_secs(10);

/// Adds the app `req` describes and starts it. Returns its record: a
/// start failure is recorded there (and in the events), as at boot.
pub fn add_app(pod: &Arc<Pod>, req: AddApp) -> Result<Arc<AppRecord>, PodError> {
    if !pod.manifest.sandbox {
        return Err(PodError::NotSandbox);
    }
    let _member = lock(&pod.membership);
    if pod.is_stopping() {
        return Err(PodError::Stopping);
    }
    let apps: Vec<String> = pod.apps().iter().map(|a| a.name().to_string()).collect();
    let volumes = pod.volume_names();
    req.check(&names(&apps), &names(&volumes))?;
    storage::mount_added(&req.pod, req.layers)?;
    let Some(app) = req.pod.apps.into_iter().next() else {
        return Err(kvmpod_api::addapp::AddAppError::NotOneApp(0).into());
    };
    let record = pod.new_record(app);
    pod.push_app(Arc::clone(&record), req.pod.volumes);
    pod.events.push(
        EventKind::EVENT_KIND_APP_ADDED,
        record.name(),
        0,
        0,
        String::new(),
    );
    start_app(pod, &record);
    Ok(record)
}

/// Removes added app `name` once it is over and the host has all its
/// output; with `force`, kills it first (no restart follows). What is left
/// in its cgroup (a daemon it started) is killed, so its output can end;
/// then its root and volumes are unmounted and its cgroup removed.
pub async fn remove_app(pod: &Pod, name: &str, force: bool) -> Result<(), PodError> {
    if !pod.manifest.sandbox {
        return Err(PodError::NotSandbox);
    }
    if pod.manifest.apps.iter().any(|a| a.name == name) {
        return Err(PodError::BootApp(name.to_string()));
    }
    let app = pod
        .app(name)
        .ok_or_else(|| PodError::NoApp(name.to_string()))?;
    if force {
        app.set_removing();
        kill_cgroup(&app);
        let _ = tokio::time::timeout(EXIT_WAIT, app.wait()).await;
    }
    if !app.is_done() {
        return Err(PodError::StillRunning(name.to_string()));
    }
    app.set_removing();
    kill_cgroup(&app);
    persisted(&app)
        .await
        .then_some(())
        .ok_or_else(|| PodError::OutputPending(name.to_string()))?;
    let _member = lock(&pod.membership);
    if pod.app(name).is_none_or(|a| !Arc::ptr_eq(&a, &app)) {
        return Err(PodError::NoApp(name.to_string()));
    }
    let volumes = pod.drop_app(name);
    let taken = PodManifest {
        hostname: None,
        volumes,
        apps: vec![app.manifest.clone()],
        sandbox: true,
        network: Default::default(),
    };
    storage::unmount_added(&taken);
    if let Some(cg) = app.cgroup.get() {
        if let Err(e) = cg.remove() {
            log::warn!("removing app {name}: {e}");
        }
    }
    pod.events
        .push(EventKind::EVENT_KIND_APP_REMOVED, name, 0, 0, String::new());
    Ok(())
}

/// Kills whatever runs in the app's cgroup.
fn kill_cgroup(app: &AppRecord) {
    if let Some(cg) = app.cgroup.get() {
        if let Err(e) = cg.kill_all() {
            log::warn!("app {}: {e}", app.name());
        }
    }
}

fn names(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Waits (a while) until the host has persisted all of the app's output.
async fn persisted(app: &AppRecord) -> bool {
    let mut changes = app.logs.subscribe();
    let wait = async {
        while !app.logs.all_persisted() {
            if changes.changed().await.is_err() {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(OUTPUT_WAIT, wait).await;
    app.logs.all_persisted()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::Reaper;
    use crate::timeline::Timeline;
    use kvmpod_api::config::AgentConfig;

    fn pod(sandbox: bool) -> Arc<Pod> {
        let mut manifest = kvmpod_api::validate::parse(
            r#"{"apps": [{"name": "pause", "rootfs": "/", "exec": ["x"]}]}"#,
        )
        .unwrap();
        manifest.sandbox = sandbox;
        Pod::new(
            manifest,
            AgentConfig::default(),
            Timeline::default(),
            Reaper::new(),
        )
    }

    fn added(name: &str) -> AddApp {
        let pod = kvmpod_api::validate::parse(&format!(
            r#"{{"apps": [{{"name": "{name}", "rootfs": "/", "exec": ["y"]}}]}}"#
        ))
        .unwrap();
        AddApp { pod, layers: 1 }
    }

    #[test]
    fn only_a_sandbox_takes_new_apps_and_names_stay_unique() {
        let e = add_app(&pod(false), added("web")).err().unwrap();
        assert!(matches!(e, PodError::NotSandbox), "{e}");
        // Refused before anything is mounted.
        let e = add_app(&pod(true), added("pause")).err().unwrap();
        assert!(e.to_string().contains("already has an app named"), "{e}");
    }

    #[tokio::test]
    async fn only_added_apps_that_exited_are_removed() {
        let p = pod(true);
        let e = remove_app(&p, "pause", false).await.unwrap_err();
        assert!(matches!(e, PodError::BootApp(_)), "{e}");
        let e = remove_app(&p, "web", false).await.unwrap_err();
        assert!(matches!(e, PodError::NoApp(_)), "{e}");
        let web = p.new_record(added("web").pod.apps.remove(0));
        p.push_app(Arc::clone(&web), Vec::new());
        let e = remove_app(&p, "web", false).await.unwrap_err();
        assert!(matches!(e, PodError::StillRunning(_)), "{e}");
        let e = remove_app(&pod(false), "web", false).await.unwrap_err();
        assert!(matches!(e, PodError::NotSandbox), "{e}");
    }
}
