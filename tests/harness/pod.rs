//! Writing pod manifests: a builder for the common shapes (apps running a
//! shell script in the fixture's busybox root, host and empty volumes,
//! mount points), with any other manifest field set as JSON.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::fixture::Fixture;

pub struct PodSpec<'a> {
    fx: &'a Fixture,
    manifest: Value,
}

impl<'a> PodSpec<'a> {
    pub fn new(fx: &'a Fixture) -> Self {
        PodSpec {
            fx,
            manifest: json!({"volumes": [], "apps": []}),
        }
    }

    fn apps(&mut self) -> &mut Vec<Value> {
        self.manifest["apps"]
            .as_array_mut()
            .expect("apps is a list")
    }

    fn last_app(&mut self) -> &mut Value {
        self.apps()
            .last_mut()
            .expect("add an app before setting its fields")
    }

    /// Adds an app running `script` with `/bin/sh -c` in the busybox root.
    pub fn app(self, name: &str, script: &str) -> Self {
        let exec = json!(["/bin/sh", "-c", script]);
        self.app_exec(name, exec)
    }

    /// Adds an app with its own `exec` (a JSON list).
    pub fn app_exec(mut self, name: &str, exec: Value) -> Self {
        let root = self.fx.root();
        self.apps()
            .push(json!({"name": name, "rootfs": root, "exec": exec}));
        self
    }

    /// Sets a field of the last app added.
    pub fn set(mut self, field: &str, value: Value) -> Self {
        self.last_app()[field] = value;
        self
    }

    /// Sets a field of the pod.
    pub fn pod_field(mut self, field: &str, value: Value) -> Self {
        self.manifest[field] = value;
        self
    }

    /// Adds a volume (any JSON).
    pub fn volume(mut self, volume: Value) -> Self {
        self.manifest["volumes"]
            .as_array_mut()
            .expect("volumes is a list")
            .push(volume);
        self
    }

    /// Adds a host volume `name` sharing `source`.
    pub fn host_volume(self, name: &str, source: &Path) -> Self {
        self.volume(json!({"name": name, "kind": "host", "source": source}))
    }

    /// Mounts `volume` at `path` in the last app added.
    pub fn mount(self, volume: &str, path: &str) -> Self {
        self.mount_point(json!({"volume": volume, "path": path}))
    }

    /// Mounts `volume` read-only at `path` in the last app added.
    pub fn mount_ro(self, volume: &str, path: &str) -> Self {
        self.mount_point(json!({"volume": volume, "path": path, "readOnly": true}))
    }

    fn mount_point(mut self, mp: Value) -> Self {
        let app = self.last_app();
        if app.get("mountPoints").is_none() {
            app["mountPoints"] = json!([]);
        }
        app["mountPoints"]
            .as_array_mut()
            .expect("mountPoints is a list")
            .push(mp);
        self
    }

    /// The manifest as JSON.
    pub fn json(&self) -> &Value {
        &self.manifest
    }

    /// Writes the manifest as `<fixture>/<name>`.
    pub fn write(self, name: &str) -> PathBuf {
        self.fx.write_manifest(name, &self.manifest)
    }
}
