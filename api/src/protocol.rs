//! The agent protocol, generated at build time from `proto/agent.proto`.

#[allow(
    clippy::all,
    clippy::pedantic,
    missing_docs,
    unused_imports,
    unused_mut,
    unused_qualifications,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals
)]
pub mod agent {
    include!(concat!(env!("OUT_DIR"), "/agent.rs"));
}

#[allow(
    clippy::all,
    clippy::pedantic,
    missing_docs,
    unused_imports,
    unused_mut,
    unused_qualifications,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals
)]
pub mod agent_ttrpc {
    include!(concat!(env!("OUT_DIR"), "/agent_ttrpc.rs"));
}

pub use agent::*;

impl AppState {
    /// The name host-ctl shows and records.
    pub fn name(self) -> &'static str {
        match self {
            AppState::APP_STATE_PENDING => "pending",
            AppState::APP_STATE_RUNNING => "running",
            AppState::APP_STATE_EXITED => "exited",
            AppState::APP_STATE_FAILED => "failed",
            AppState::APP_STATE_RESTARTING => "restarting",
            AppState::APP_STATE_UNSPECIFIED => "unknown",
        }
    }

    /// Whether the app is over, so its exit code means something.
    pub fn is_done(self) -> bool {
        matches!(
            self,
            AppState::APP_STATE_EXITED | AppState::APP_STATE_FAILED
        )
    }
}

impl PodState {
    /// The name host-ctl shows.
    pub fn name(self) -> &'static str {
        match self {
            PodState::POD_STATE_STARTING => "starting",
            PodState::POD_STATE_RUNNING => "running",
            PodState::POD_STATE_EXITED => "exited",
            PodState::POD_STATE_FAILED => "failed",
            PodState::POD_STATE_STOPPING => "stopping",
            PodState::POD_STATE_UNSPECIFIED => "unknown",
        }
    }
}

impl EventKind {
    /// The name `host-ctl events` shows and prints in JSON.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::EVENT_KIND_APP_STARTED => "app-started",
            EventKind::EVENT_KIND_APP_EXITED => "app-exited",
            EventKind::EVENT_KIND_APP_FAILED => "app-failed",
            EventKind::EVENT_KIND_APP_OOM_KILLED => "app-oom-killed",
            EventKind::EVENT_KIND_APP_RESTARTING => "app-restarting",
            EventKind::EVENT_KIND_POD_STOPPING => "pod-stopping",
            EventKind::EVENT_KIND_POD_EXITED => "pod-exited",
            EventKind::EVENT_KIND_APP_OUTPUT_DROPPED => "app-output-dropped",
            EventKind::EVENT_KIND_APP_ADDED => "app-added",
            EventKind::EVENT_KIND_APP_REMOVED => "app-removed",
            EventKind::EVENT_KIND_UNSPECIFIED => "unknown",
        }
    }

    /// Whether the event ends an app's run (so its exit code means
    /// something).
    pub fn ends_app(self) -> bool {
        matches!(
            self,
            EventKind::EVENT_KIND_APP_EXITED | EventKind::EVENT_KIND_APP_FAILED
        )
    }
}
