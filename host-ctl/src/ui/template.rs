//! `--format '{{.Field}}'`: the part of Go's templates that docker and
//! podman users put on listing commands, rendered against the JSON that
//! `--format json` prints. A template is text with field references,
//! `{{.ID}}` or `{{.Network.Mode}}`, matched to the JSON's keys without
//! regard to case (`.ExitCode` finds `exitCode`); `\t` and `\n` in the
//! text are a tab and a newline, as docker reads them.

use serde_json::Value;

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    /// A path of keys: `.A.B` is `["A", "B"]`; `.` alone is the whole.
    Field(Vec<String>),
}

/// Why a template was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("{{{{ without its }}}} in {0:?}")]
    Unclosed(String),
    #[error("{{{{{0}}}}} is not a field: write {{{{.Name}}}} (only fields are supported)")]
    NotAField(String),
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            push_text(&mut parts, &rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| TemplateError::Unclosed(text.to_string()))?;
            let action = after[..end].trim();
            let path = action
                .strip_prefix('.')
                .ok_or_else(|| TemplateError::NotAField(action.to_string()))?;
            if path.contains(|c: char| c.is_whitespace() || c == '{') {
                return Err(TemplateError::NotAField(action.to_string()));
            }
            let keys = path
                .split('.')
                .filter(|k| !k.is_empty())
                .map(str::to_string)
                .collect();
            parts.push(Part::Field(keys));
            rest = &after[end + 2..];
        }
        push_text(&mut parts, rest);
        Ok(Template { parts })
    }

    /// The template filled in from `value`. A field that is not there is
    /// `<no value>`, as Go prints it.
    pub fn render(&self, value: &Value) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Field(keys) => match lookup(value, keys) {
                    Some(Value::String(s)) => out.push_str(s),
                    Some(Value::Null) | None => out.push_str("<no value>"),
                    Some(v) => out.push_str(&v.to_string()),
                },
            }
        }
        out
    }
}

fn push_text(parts: &mut Vec<Part>, text: &str) {
    if !text.is_empty() {
        parts.push(Part::Text(text.replace("\\t", "\t").replace("\\n", "\n")));
    }
}

/// `keys` followed down from `value`, each matched without regard to case.
fn lookup<'a>(value: &'a Value, keys: &[String]) -> Option<&'a Value> {
    keys.iter().try_fold(value, |v, key| {
        let map = v.as_object()?;
        map.get(key.as_str()).or_else(|| {
            map.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_are_found_without_regard_to_case_and_nested() {
        let pod = json!({"id": "abc", "state": "running", "exitCode": 3,
                         "network": {"mode": "none"}, "apps": ["a"], "name": null});
        let t = Template::parse("{{.ID}}\\t{{ .State }} {{.ExitCode}} {{.Network.Mode}}").unwrap();
        assert_eq!(t.render(&pod), "abc\trunning 3 none");
        let t = Template::parse("{{.apps}}|{{.name}}|{{.missing}}|{{.Network}}").unwrap();
        assert_eq!(
            t.render(&pod),
            "[\"a\"]|<no value>|<no value>|{\"mode\":\"none\"}"
        );
        assert_eq!(Template::parse("plain").unwrap().render(&pod), "plain");
    }

    #[test]
    fn only_field_references_are_accepted() {
        assert_eq!(
            Template::parse("{{.ID").unwrap_err(),
            TemplateError::Unclosed("{{.ID".into())
        );
        let e = Template::parse("{{range .Apps}}").unwrap_err();
        assert_eq!(e, TemplateError::NotAField("range .Apps".into()));
        assert!(e.to_string().contains("{{.Name}}"), "{e}");
        assert!(Template::parse("{{json .}}").is_err());
    }
}
