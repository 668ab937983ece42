//! `host-ctl wait POD...`: blocks until each pod has exited and prints its
//! exit status, one line per pod in the order given, as `podman wait`
//! does: the first non-zero app status in manifest order (128 + N for an
//! app killed by signal N), 0 when every app succeeded, and 125 for a pod
//! that ended before all its apps did (its VM died, or it never started).

use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use super::run::EXIT_HOST_ERROR;
use crate::pod::record::{PodRecord, State};
use crate::pod::store;

/// How often a pod's record is looked at again.
const POLL: Duration = Duration::from_millis(200);

pub async fn run(state_dir: &Path, ids: &[String]) -> Result<i32> {
    // Every ID is checked before waiting on any.
    let dirs = ids
        .iter()
        .map(|id| store::find(state_dir, id))
        .collect::<Result<Vec<_>, _>>()?;
    for dir in dirs {
        let rec = loop {
            let rec = store::reconcile(&dir)?;
            if rec.state == State::Exited {
                break rec;
            }
            tokio::time::sleep(POLL).await;
        };
        println!("{}", status(&rec));
    }
    Ok(0)
}

/// The exit status of an exited pod.
fn status(rec: &PodRecord) -> i32 {
    if rec.apps.is_empty() || rec.apps.iter().any(|a| a.exit_code.is_none()) {
        EXIT_HOST_ERROR
    } else {
        rec.exit_code()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::record::AppSummary;

    #[test]
    fn a_pod_s_status_is_its_first_failing_app_or_125_if_one_never_ended() {
        let dir = tempfile::tempdir().unwrap();
        let pd = crate::pod::PodDir::create(dir.path()).unwrap();
        let mut rec = PodRecord::new(&pd, Path::new("p"), true);
        rec.state = State::Exited;
        assert_eq!(status(&rec), EXIT_HOST_ERROR);
        let app = |code: Option<i32>| AppSummary {
            exit_code: code,
            ..AppSummary::pending("a")
        };
        rec.apps = vec![app(Some(0)), app(Some(3)), app(Some(4))];
        assert_eq!(status(&rec), 3);
        rec.apps = vec![app(Some(0)), app(Some(0))];
        assert_eq!(status(&rec), 0);
        rec.apps = vec![app(Some(0)), app(None)];
        assert_eq!(status(&rec), EXIT_HOST_ERROR);
    }
}
