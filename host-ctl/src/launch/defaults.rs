//! An image's configuration as the defaults of the app that runs it, as
//! docker and podman apply them: Entrypoint and Cmd become the program
//! unless the app names one, the image's Env comes first and the app's own
//! variables override it, and WorkingDir, User and StopSignal apply where
//! the app leaves them out.

use kvmpod_api::manifest::{App, EnvVar};

use super::LaunchError;
use crate::image::ImageDefaults;

/// Fills in what `app` leaves out from its image's configuration.
pub fn apply(app: &mut App, image: &ImageDefaults) -> Result<(), LaunchError> {
    let args = std::mem::take(&mut app.args);
    if app.exec.is_empty() {
        // The Entrypoint, then the app's args or else the image's Cmd.
        let cmd = if args.is_empty() { &image.cmd } else { &args };
        app.exec = image.entrypoint.iter().chain(cmd).cloned().collect();
        if app.exec.is_empty() {
            return Err(LaunchError::Host(format!(
                "app {:?}: its image has no Entrypoint or Cmd; give the app an \"exec\" (or a command after the image)",
                app.name
            )));
        }
    } else {
        // `exec` replaced the Entrypoint, and with it the Cmd (docker's
        // --entrypoint): only the app's own args follow.
        app.exec.extend(args);
    }
    app.env = merged_env(&image.env, &app.env);
    if app.working_directory.is_none() {
        app.working_directory = image.working_dir.clone();
    }
    if app.user.is_none() {
        if let Some(user) = &image.user {
            // "user", "uid", "user:group" or "uid:gid".
            let (u, g) = match user.split_once(':') {
                Some((u, g)) => (u, Some(g)),
                None => (user.as_str(), None),
            };
            app.user = Some(u.to_string());
            if app.group.is_none() {
                app.group = g.map(str::to_string);
            }
        }
    }
    if app.stop_signal.is_none() {
        app.stop_signal = image.stop_signal.clone();
    }
    Ok(())
}

/// The image's `K=V` variables, then the app's, a later one replacing an
/// earlier one of the same name in place.
fn merged_env(image: &[String], app: &[EnvVar]) -> Vec<EnvVar> {
    let mut out: Vec<EnvVar> = Vec::new();
    let from_image = image.iter().filter_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
        (!k.is_empty()).then(|| EnvVar {
            name: k.to_string(),
            value: v.to_string(),
        })
    });
    for var in from_image.chain(app.iter().cloned()) {
        match out.iter_mut().find(|e| e.name == var.name) {
            Some(e) => e.value = var.value,
            None => out.push(var),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> ImageDefaults {
        ImageDefaults {
            entrypoint: vec!["/bin/entry".into()],
            cmd: vec!["--serve".into()],
            env: vec!["PATH=/usr/bin:/bin".into(), "MODE=image".into()],
            working_dir: Some("/srv".into()),
            user: Some("1000:100".into()),
            stop_signal: Some("SIGQUIT".into()),
            exposed_ports: vec![],
        }
    }

    #[test]
    fn an_app_takes_what_it_leaves_out_from_its_image() {
        let mut app = App {
            name: "web".into(),
            env: vec![EnvVar {
                name: "MODE".into(),
                value: "app".into(),
            }],
            ..App::default()
        };
        apply(&mut app, &image()).unwrap();
        assert_eq!(app.exec, ["/bin/entry", "--serve"]);
        assert_eq!(app.working_directory.as_deref(), Some("/srv"));
        assert_eq!(app.user.as_deref(), Some("1000"));
        assert_eq!(app.group.as_deref(), Some("100"));
        assert_eq!(app.stop_signal.as_deref(), Some("SIGQUIT"));
        let env: Vec<String> = app
            .env
            .iter()
            .map(|e| format!("{}={}", e.name, e.value))
            .collect();
        assert_eq!(env, ["PATH=/usr/bin:/bin", "MODE=app"]);
    }

    #[test]
    fn what_the_app_says_wins() {
        let mut app = App {
            name: "web".into(),
            exec: vec!["/bin/sh".into()],
            user: Some("nobody".into()),
            working_directory: Some("/".into()),
            ..App::default()
        };
        apply(&mut app, &image()).unwrap();
        assert_eq!(app.exec, ["/bin/sh"]);
        assert_eq!(app.user.as_deref(), Some("nobody"));
        assert_eq!(app.group, None);
        assert_eq!(app.working_directory.as_deref(), Some("/"));
    }

    #[test]
    fn args_replace_the_cmd_and_exec_replaces_both() {
        let mut app = App {
            name: "a".into(),
            args: vec!["--once".into()],
            ..App::default()
        };
        apply(&mut app, &image()).unwrap();
        assert_eq!(app.exec, ["/bin/entry", "--once"]);
        assert!(app.args.is_empty());
        let mut app = App {
            name: "a".into(),
            exec: vec!["/bin/sh".into()],
            args: vec!["-c".into(), "true".into()],
            ..App::default()
        };
        apply(&mut app, &image()).unwrap();
        assert_eq!(app.exec, ["/bin/sh", "-c", "true"]);
    }

    #[test]
    fn an_image_without_a_program_needs_one_from_the_app() {
        let mut app = App {
            name: "x".into(),
            ..App::default()
        };
        let e = apply(&mut app, &ImageDefaults::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("no Entrypoint or Cmd"), "{e}");
    }
}
