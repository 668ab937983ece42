//! Resolving an app's `user` and `group` the way its image defines them: in
//! the app's own `/etc/passwd` and `/etc/group`, read through the app root
//! without following links out of it.

use std::io::Read;
use std::os::fd::OwnedFd;

use kvmpod_api::manifest::App;

use nix::errno::Errno;
use nix::fcntl::OFlag;

use super::SpawnError;
use crate::error::SysError;
use crate::storage::{open_in_root, StorageError};

/// Who an app runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (from `/etc/group` membership of a named user).
    pub groups: Vec<u32>,
    pub home: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 7 || l.starts_with('#') {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_string(),
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 || l.starts_with('#') {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_string(),
                gid: f[2].parse().ok()?,
                members: f[3]
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(str::to_string)
                    .collect(),
            })
        })
        .collect()
}

fn numeric(s: &str) -> Option<u32> {
    if s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

/// Resolves `user` and `group` against the texts of `/etc/passwd` and
/// `/etc/group` (either may be empty when the image has none).
fn resolve_with(
    user: Option<&str>,
    group: Option<&str>,
    passwd: &str,
    groups: &str,
) -> Result<Identity, SpawnError> {
    let users = parse_passwd(passwd);
    let group_list = parse_group(groups);
    let user = user.unwrap_or("0");
    let entry = match numeric(user) {
        Some(uid) => users
            .iter()
            .find(|u| u.uid == uid)
            .cloned()
            .or(Some(PasswdEntry {
                name: String::new(),
                uid,
                gid: 0,
                home: if uid == 0 { "/root".into() } else { "/".into() },
            })),
        None => users.iter().find(|u| u.name == user).cloned(),
    }
    .ok_or_else(|| SpawnError::NoSuchUser(user.to_string()))?;

    let gid = match group {
        None => entry.gid,
        Some(g) => match numeric(g) {
            Some(gid) => gid,
            None => group_list
                .iter()
                .find(|e| e.name == g)
                .map(|e| e.gid)
                .ok_or_else(|| SpawnError::NoSuchGroup(g.to_string()))?,
        },
    };
    let mut supplementary: Vec<u32> = if entry.name.is_empty() {
        Vec::new()
    } else {
        group_list
            .iter()
            .filter(|e| e.members.contains(&entry.name))
            .map(|e| e.gid)
            .collect()
    };
    if !supplementary.contains(&gid) {
        supplementary.insert(0, gid);
    }
    Ok(Identity {
        uid: entry.uid,
        gid,
        groups: supplementary,
        home: if entry.home.is_empty() {
            "/".into()
        } else {
            entry.home
        },
    })
}

/// Reads a file of the app's image, or "" when it has none.
fn read_image_file(root: &OwnedFd, path: &'static str) -> Result<String, SpawnError> {
    match open_in_root(root, path, OFlag::O_RDONLY) {
        Ok(fd) => {
            let mut text = String::new();
            // Read from the descriptor the resolution opened: opening it
            // again (through /proc/self/fd) would cost a second open of the
            // file in the image's layer, over 9p.
            std::fs::File::from(fd)
                .read_to_string(&mut text)
                .map_err(|e| SpawnError::ReadImage {
                    file: path,
                    source: StorageError::Sys(SysError {
                        context: path.into(),
                        errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
                    }),
                })?;
            Ok(text)
        }
        Err(StorageError::Sys(SysError {
            errno: Errno::ENOENT,
            ..
        })) => Ok(String::new()),
        Err(source) => Err(SpawnError::ReadImage { file: path, source }),
    }
}

/// The identity `app`'s processes run with: its user and group resolved
/// inside its root, and its supplementary groups.
pub(super) fn resolve_app(root: &OwnedFd, app: &App) -> Result<Identity, SpawnError> {
    let mut id = resolve(root, app.user.as_deref(), app.group.as_deref())?;
    for g in &app.supplementary_gids {
        if !id.groups.contains(g) {
            id.groups.push(*g);
        }
    }
    Ok(id)
}

/// Resolves an app's identity inside its root.
fn resolve(
    root: &OwnedFd,
    user: Option<&str>,
    group: Option<&str>,
) -> Result<Identity, SpawnError> {
    let passwd = read_image_file(root, "/etc/passwd")?;
    let groups = read_image_file(root, "/etc/group")?;
    resolve_with(user, group, &passwd, &groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
web:x:1000:1000::/home/web:/bin/sh
broken line
";
    const GROUP: &str = "\
root:x:0:
adm:x:4:web,daemon
www:x:33:web
nogroup:x:65534:
web:x:1000:
";

    #[test]
    fn names_resolve_in_the_image() {
        let id = resolve_with(Some("nobody"), None, PASSWD, GROUP).unwrap();
        assert_eq!((id.uid, id.gid), (65534, 65534));
        assert_eq!(id.groups, [65534]);
        let id = resolve_with(Some("web"), Some("www"), PASSWD, GROUP).unwrap();
        assert_eq!((id.uid, id.gid, id.home.as_str()), (1000, 33, "/home/web"));
        assert_eq!(id.groups, [4, 33]);
    }

    #[test]
    fn numbers_need_no_entry() {
        let id = resolve_with(Some("4242"), Some("99"), "", "").unwrap();
        assert_eq!((id.uid, id.gid), (4242, 99));
        assert_eq!(id.groups, [99]);
        let id = resolve_with(None, None, "", "").unwrap();
        assert_eq!((id.uid, id.gid, id.home.as_str()), (0, 0, "/root"));
        // A known uid takes its passwd group and home.
        let id = resolve_with(Some("1000"), None, PASSWD, GROUP).unwrap();
        assert_eq!((id.gid, id.home.as_str()), (1000, "/home/web"));
    }

    #[test]
    fn unknown_names_are_errors() {
        assert_eq!(
            resolve_with(Some("ghost"), None, PASSWD, GROUP)
                .unwrap_err()
                .to_string(),
            "user \"ghost\" is not in the app's /etc/passwd"
        );
        assert_eq!(
            resolve_with(None, Some("ghosts"), PASSWD, GROUP).unwrap_err(),
            SpawnError::NoSuchGroup("ghosts".into())
        );
    }
}
