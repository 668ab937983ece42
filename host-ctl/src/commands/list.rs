//! `host-ctl list`: every pod, newest last.

use std::path::Path;

use anyhow::Result;

use serde::Serialize;

use super::Format;
use crate::pod::record::PodRecord;
use crate::pod::store;
use crate::ui::table;

/// A pod as `list` shows it: its record, and the columns the table works
/// out from it, so the JSON carries what the table shows.
#[derive(Serialize)]
struct Listed<'a> {
    #[serde(flatten)]
    record: &'a PodRecord,
    /// The pod's exit status so far (`wait`'s), once an app has ended.
    exit: Option<i32>,
    /// The published ports, as the table shows them.
    ports: String,
}

pub fn run(state_dir: &Path, format: Format) -> Result<i32> {
    let records = store::all(state_dir)?;
    let listed: Vec<Listed> = records
        .iter()
        .map(|r| Listed {
            record: r,
            exit: r
                .apps
                .iter()
                .any(|a| a.exit_code.is_some())
                .then(|| r.exit_code()),
            ports: r.ports(),
        })
        .collect();
    if format.print_list(&listed)? {
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = listed
        .iter()
        .map(|l| {
            let r = l.record;
            let apps = r
                .apps
                .iter()
                .map(|a| a.name.as_str())
                .collect::<Vec<_>>()
                .join(",");
            vec![
                r.id.chars().take(8).collect(),
                r.name.clone().unwrap_or_else(|| "-".into()),
                r.state.as_str().into(),
                r.created.clone(),
                if apps.is_empty() { "-".into() } else { apps },
                l.exit.map_or("-".into(), |c| c.to_string()),
                l.ports.clone(),
            ]
        })
        .collect();
    table::print(
        &["ID", "NAME", "STATE", "CREATED", "APPS", "EXIT", "PORTS"],
        &rows,
    );
    Ok(0)
}
