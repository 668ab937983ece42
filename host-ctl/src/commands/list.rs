//! `host-ctl list`: every pod, newest last.

use std::path::Path;

use anyhow::Result;

use super::Format;
use crate::pod::store;
use crate::ui::table;

pub fn run(state_dir: &Path, format: Format) -> Result<i32> {
    let records = store::all(state_dir)?;
    if format.print_list(&records)? {
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            let apps = r
                .apps
                .iter()
                .map(|a| a.name.as_str())
                .collect::<Vec<_>>()
                .join(",");
            let exit = if r.apps.iter().any(|a| a.exit_code.is_some()) {
                r.exit_code().to_string()
            } else {
                "-".into()
            };
            vec![
                r.id.chars().take(8).collect(),
                r.name.clone().unwrap_or_else(|| "-".into()),
                r.state.as_str().into(),
                r.created.clone(),
                if apps.is_empty() { "-".into() } else { apps },
                exit,
                r.ports(),
            ]
        })
        .collect();
    table::print(
        &["ID", "NAME", "STATE", "CREATED", "APPS", "EXIT", "PORTS"],
        &rows,
    );
    Ok(0)
}
