//! Adding an app to a running sandbox pod (`"sandbox": true`): what
//! host-ctl prepares on the host and what the agent then does with it.
//!
//! The host binds the app's root layers and its own host volumes under the
//! pod's apps share (see [`crate::layout::added_app_layer`] and
//! [`crate::layout::added_app_volume`]) before it asks; the agent stacks
//! the layers under a writable layer of its own, mounts the volumes at
//! `/mnt/<volume>` as it does at boot, and starts the app. Nothing needs a
//! new virtio device, so it works under lkvm, which has no hot-plug.

use serde::{Deserialize, Serialize};

use crate::manifest::PodManifest;

/// An app to add, as the agent's AddApp request carries it (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddApp {
    /// A one-app manifest: the app, and the volumes it brings (host paths
    /// resolved, validated by host-ctl). Its mount points name these or
    /// the pod's own volumes.
    pub pod: PodManifest,
    /// How many read-only layers the app's root has in the apps share.
    pub layers: usize,
}

/// Why an added app is refused before anything is mounted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddAppError {
    #[error("an added app comes as a manifest of exactly one app, not {0}")]
    NotOneApp(usize),
    #[error("the pod already has an app named {0:?}")]
    AppExists(String),
    #[error("the pod already has a volume named {0:?}")]
    VolumeExists(String),
    #[error("app {app:?} mounts volume {volume:?}, which is neither its own nor the pod's")]
    NoVolume { app: String, volume: String },
    #[error("an app's root needs at least one layer")]
    NoLayers,
}

impl AddApp {
    /// Checks the request against the pod's app and volume names: the app
    /// and its volumes are new, and every mount point has a volume.
    pub fn check(&self, apps: &[&str], volumes: &[&str]) -> Result<(), AddAppError> {
        let [app] = &self.pod.apps[..] else {
            return Err(AddAppError::NotOneApp(self.pod.apps.len()));
        };
        if apps.contains(&app.name.as_str()) {
            return Err(AddAppError::AppExists(app.name.clone()));
        }
        if let Some(v) = self
            .pod
            .volumes
            .iter()
            .find(|v| volumes.contains(&v.name.as_str()))
        {
            return Err(AddAppError::VolumeExists(v.name.clone()));
        }
        for mp in &app.mount_points {
            let own = self.pod.volume(&mp.volume).is_some();
            if !own && !volumes.contains(&mp.volume.as_str()) {
                return Err(AddAppError::NoVolume {
                    app: app.name.clone(),
                    volume: mp.volume.clone(),
                });
            }
        }
        if self.layers == 0 {
            return Err(AddAppError::NoLayers);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{App, MountPoint, Volume, VolumeKind};

    fn add(name: &str, volumes: &[&str], mounts: &[&str]) -> AddApp {
        AddApp {
            pod: PodManifest {
                hostname: None,
                volumes: volumes
                    .iter()
                    .map(|v| Volume {
                        name: v.to_string(),
                        kind: VolumeKind::Empty,
                        source: None,
                        read_only: None,
                        mode: None,
                        uid: None,
                        gid: None,
                        size: None,
                    })
                    .collect(),
                apps: vec![App {
                    name: name.into(),
                    exec: vec!["/bin/true".into()],
                    mount_points: mounts
                        .iter()
                        .map(|m| MountPoint {
                            volume: m.to_string(),
                            path: format!("/{m}"),
                            read_only: false,
                            sub_path: None,
                        })
                        .collect(),
                    ..App::default()
                }],
                sandbox: false,
                network: Default::default(),
            },
            layers: 1,
        }
    }

    #[test]
    fn an_added_app_is_new_and_its_mounts_have_volumes() {
        let pod_apps = ["pause"];
        let pod_volumes = ["shared"];
        assert_eq!(
            add("web", &["cache"], &["cache", "shared"]).check(&pod_apps, &pod_volumes),
            Ok(())
        );
        assert_eq!(
            add("pause", &[], &[]).check(&pod_apps, &pod_volumes),
            Err(AddAppError::AppExists("pause".into()))
        );
        assert_eq!(
            add("web", &["shared"], &[]).check(&pod_apps, &pod_volumes),
            Err(AddAppError::VolumeExists("shared".into()))
        );
        let missing = add("web", &[], &["nowhere"]).check(&pod_apps, &pod_volumes);
        assert!(matches!(missing, Err(AddAppError::NoVolume { .. })));
        let mut none = add("web", &[], &[]);
        none.layers = 0;
        assert_eq!(
            none.check(&pod_apps, &pod_volumes),
            Err(AddAppError::NoLayers)
        );
        let mut two = add("web", &[], &[]);
        two.pod.apps.push(two.pod.apps[0].clone());
        assert_eq!(
            two.check(&pod_apps, &pod_volumes),
            Err(AddAppError::NotOneApp(2))
        );
    }
}
