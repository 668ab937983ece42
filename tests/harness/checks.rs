//! Checks run inside the guest by a shell script. Each prints `CHECK <name>
//! ok` or `CHECK <name> FAIL <why>`, so one pod can prove many things and
//! a failure names itself.

/// `if CONDITION; then ok; else FAIL`.
pub fn check(name: &str, condition: &str) -> String {
    format!("if {condition}; then echo 'CHECK {name} ok'; else echo 'CHECK {name} FAIL'; fi; ")
}

/// A write to `path` that must fail with EROFS ("Read-only file system"),
/// not with any other error (a permission error proves nothing about
/// read-only). It needs no writable file of its own.
pub fn erofs(name: &str, path: &str) -> String {
    format!(
        "err=$( (echo evil > {path}) 2>&1 ) && echo 'CHECK {name} FAIL: write succeeded' || \
         case \"$err\" in *'Read-only file system'*) echo 'CHECK {name} ok';; \
         *) echo \"CHECK {name} FAIL: $err\";; esac; "
    )
}

/// `[ "$(COMMAND)" = 'EXPECTED' ]`, printing what it got when it fails.
pub fn equals(name: &str, command: &str, expected: &str) -> String {
    format!(
        "got=$({command}); if [ \"$got\" = '{expected}' ]; then echo 'CHECK {name} ok'; \
         else echo \"CHECK {name} FAIL: got [$got], want [{expected}]\"; fi; "
    )
}

/// Fails unless every named check printed ok and none printed FAIL; the
/// failure lists every check that did not pass.
pub fn assert_checks(stdout: &str, dump: &str, names: &[&str]) {
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| !stdout.contains(&format!("CHECK {n} ok")))
        .collect();
    let failed: Vec<&str> = stdout.lines().filter(|l| l.contains(" FAIL")).collect();
    assert!(
        missing.is_empty() && failed.is_empty(),
        "checks not passed: {missing:?}; failed lines: {failed:#?}\n{dump}"
    );
}

/// The value in `column` of the row of `host-ctl list`'s table whose ID
/// starts with `id_prefix`: columns are found by the header, so adding a
/// column to the table does not break what a test checks.
pub fn list_cell(table: &str, id_prefix: &str, column: &str) -> Option<String> {
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next()?.split_whitespace().collect();
    let at = header.iter().position(|h| *h == column)?;
    lines
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| {
            cells
                .first()
                .is_some_and(|c| id_prefix.starts_with(c) || c.starts_with(id_prefix))
        })
        .and_then(|cells| cells.get(at).map(|c| c.to_string()))
}

/// Checks that a listing's JSON carries what its table shows. `columns`
/// names each column of the table (its header must be exactly these, so a
/// new column must be named here) and the field that holds it in the JSON
/// (a dotted path; `?` at its end: present only when set, as `name`).
/// `items` are the JSON's listed items (an array's elements, or the rows
/// of a document), and there must be at least one.
pub fn table_and_json_agree(table: &str, items: &[serde_json::Value], columns: &[(&str, &str)]) {
    let names: Vec<&str> = columns.iter().map(|c| c.0).collect();
    let header: Vec<&str> = table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|words| words.first() == names.first())
        .unwrap_or_default();
    assert_eq!(header, names, "the table's columns:\n{table}");
    assert!(!items.is_empty(), "nothing listed in the JSON");
    for item in items {
        for (column, path) in columns {
            let (path, optional) = match path.strip_suffix('?') {
                Some(p) => (p, true),
                None => (*path, false),
            };
            let mut at = Some(item);
            for part in path.split('.') {
                at = at.and_then(|v| v.get(part));
            }
            assert!(
                at.is_some() || optional,
                "column {column}: the JSON has no {path}:\n{item:#}"
            );
        }
    }
}
