//! The subcommands, one thin module each: they parse nothing (clap does,
//! in `main.rs`), call the layers below, and print. Errors become anyhow
//! here and only here.

pub mod app;
pub mod args;
pub mod attach;
pub mod cp;
pub mod events;
pub mod exec;
pub mod generate;
pub mod image;
pub mod info;
pub mod inspect;
pub mod keeper;
pub mod kill;
pub mod list;
pub mod logs;
pub mod monitor;
pub mod pool;
pub mod port_forward;
pub mod prune;
pub mod rm;
pub mod run;
pub mod said;
pub mod stage1;
pub mod stats;
pub mod status;
pub mod stop;
pub mod top;
pub mod vmm_jail;
pub mod wait;

use crate::ui::template::Template;

/// `--format`, the same on every command that lists or shows: `table`
/// for people, `json` for programs, or a template of fields
/// (`'{{.ID}}\t{{.State}}'`, see `ui::template`) filled in from that JSON,
/// a line per item listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Template(Template),
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "table" => Ok(Format::Table),
            "json" => Ok(Format::Json),
            t if t.contains("{{") => Template::parse(t)
                .map(Format::Template)
                .map_err(|e| e.to_string()),
            other => Err(format!(
                "{other:?}: give table, json or a template such as '{{{{.ID}}}} {{{{.State}}}}'"
            )),
        }
    }
}

impl Format {
    /// Prints a listing: `items` as a JSON array, or through the template
    /// a line per item; `false` for a table, which the caller prints.
    pub fn print_list<T: serde::Serialize>(&self, items: &[T]) -> anyhow::Result<bool> {
        self.print_rows(items, items)
    }

    /// Prints one thing (a pod's status, the host's info): its JSON, or
    /// the template's one line; `false` for a table.
    pub fn print_one(&self, item: &impl serde::Serialize) -> anyhow::Result<bool> {
        self.print_rows(item, std::slice::from_ref(item))
    }

    /// Prints a document with rows (a pod's stats and its apps): the JSON
    /// is all of `whole`; the template makes a line per row of `rows`.
    /// `false` for a table.
    pub fn print_rows<W, R>(&self, whole: &W, rows: &[R]) -> anyhow::Result<bool>
    where
        W: serde::Serialize + ?Sized,
        R: serde::Serialize,
    {
        let Some(text) = self.render_rows(whole, rows)? else {
            return Ok(false);
        };
        print!("{text}");
        Ok(true)
    }

    /// What [`Format::print_rows`] prints; `None` for a table.
    fn render_rows<W, R>(&self, whole: &W, rows: &[R]) -> serde_json::Result<Option<String>>
    where
        W: serde::Serialize + ?Sized,
        R: serde::Serialize,
    {
        Ok(Some(match self {
            Format::Table => return Ok(None),
            Format::Json => serde_json::to_string_pretty(whole)? + "\n",
            Format::Template(t) => rows
                .iter()
                .map(|row| Ok(t.render(&serde_json::to_value(row)?) + "\n"))
                .collect::<serde_json::Result<String>>()?,
        }))
    }

    /// Prints one item of a stream (an event) as a line: compact JSON, or
    /// the template's line; `false` for a table.
    pub fn print_streamed(&self, item: &impl serde::Serialize) -> anyhow::Result<bool> {
        match self {
            Format::Table => Ok(false),
            Format::Json => {
                println!("{}", serde_json::to_string(item)?);
                Ok(true)
            }
            Format::Template(t) => {
                println!("{}", t.render(&serde_json::to_value(item)?));
                Ok(true)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_the_whole_and_a_template_a_line_per_row() {
        let whole = serde_json::json!({"pool": {"size": 2}, "members": [{"id": "a"}, {"id": "b"}]});
        let rows = whole["members"].as_array().unwrap().clone();
        let json: Format = "json".parse().unwrap();
        let shown = json.render_rows(&whole, &rows).unwrap().unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&shown).unwrap(),
            whole
        );
        let template: Format = "{{.ID}}!".parse().unwrap();
        assert_eq!(
            template.render_rows(&whole, &rows).unwrap().unwrap(),
            "a!\nb!\n"
        );
        assert_eq!(Format::Table.render_rows(&whole, &rows).unwrap(), None);
        assert!("yaml".parse::<Format>().is_err());
    }
}
