//! The subcommands, one thin module each: they parse nothing (clap does,
//! in `main.rs`), call the layers below, and print. Errors become anyhow
//! here and only here.

pub mod app;
pub mod args;
pub mod attach;
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
    /// Prints `data` as JSON, or through the template (each element of an
    /// array on a line of its own, anything else once); `false` for a
    /// table, which the caller prints.
    pub fn print_data(&self, data: &impl serde::Serialize) -> anyhow::Result<bool> {
        match self {
            Format::Table => Ok(false),
            Format::Json => {
                println!("{}", serde_json::to_string_pretty(data)?);
                Ok(true)
            }
            Format::Template(t) => {
                match serde_json::to_value(data)? {
                    serde_json::Value::Array(items) => {
                        for item in &items {
                            println!("{}", t.render(item));
                        }
                    }
                    other => println!("{}", t.render(&other)),
                }
                Ok(true)
            }
        }
    }
}
