//! `docs/settings.md`, generated from the settings' one declaration (the clap definition and
//! the config-file names). A test fails when the committed file is stale; `make docs`
//! rewrites it.

use std::fmt::Write;

use clap::CommandFactory;

use super::file::GUNICORN_NAMES;
use super::Settings;

/// The settings reference, as Markdown.
pub fn settings_markdown() -> String {
    let mut out = String::from(
        "# Settings\n\n\
         <!-- Generated from crates/ferrocorn/src/config by `make docs`; do not edit. -->\n\n\
         Every setting can be given on the command line, in `FERROCORN_CMD_ARGS` (or\n\
         `GUNICORN_CMD_ARGS`) as extra command-line arguments, or as a variable in a Python\n\
         config file (`-c FILE`; `./ferrocorn.conf.py` or `./gunicorn.conf.py` are read when\n\
         present). The command line wins over the environment, which wins over the file, which\n\
         wins over variables such as `WEB_CONCURRENCY`, which win over the defaults. In a config\n\
         file, Gunicorn's name for a setting works too. `ferrocorn --print-config` shows the\n\
         value every setting ends up with.\n\n",
    );
    let command = Settings::command();
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        if matches!(id, "help" | "version") {
            continue;
        }
        let _ = writeln!(out, "## `{id}`\n");
        let mut facts = Vec::new();
        let flags: Vec<String> = arg
            .get_short()
            .map(|s| format!("`-{s}`"))
            .into_iter()
            .chain(arg.get_long().map(|l| format!("`--{l}`")))
            .collect();
        let value = arg
            .get_value_names()
            .filter(|_| arg.get_action().takes_values())
            .and_then(|v| v.first())
            .map(|v| format!(" {v}"))
            .unwrap_or_default();
        if arg.is_positional() {
            facts.push(format!("Command line: `{}` (positional)", value.trim()));
        } else if !flags.is_empty() {
            facts.push(format!("Command line: {}{value}", flags.join(", ")));
        }
        let file_names: Vec<String> = match GUNICORN_NAMES.iter().find(|(ours, _)| *ours == id) {
            Some((_, theirs)) => vec![format!("`{id}`"), format!("`{theirs}` (Gunicorn's name)")],
            None if matches!(id, "config" | "check_config" | "print_config") => Vec::new(),
            None => vec![format!("`{id}`")],
        };
        if !file_names.is_empty() {
            facts.push(format!("Config file: {}", file_names.join(", ")));
        }
        if let Some(env) = arg.get_env() {
            facts.push(format!("Environment: `{}`", env.to_string_lossy()));
        }
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|d| d.to_string_lossy().into_owned())
            .collect();
        if !defaults.is_empty() && arg.get_action().takes_values() {
            facts.push(format!("Default: `{}`", defaults.join(",")));
        }
        let possible: Vec<String> = arg
            .get_possible_values()
            .iter()
            .map(|p| format!("`{}`", p.get_name()))
            .collect();
        if !possible.is_empty() && arg.get_action().takes_values() {
            facts.push(format!("Values: {}", possible.join(", ")));
        }
        for fact in facts {
            let _ = writeln!(out, "- {fact}");
        }
        let help = arg
            .get_long_help()
            .or_else(|| arg.get_help())
            .map(ToString::to_string)
            .unwrap_or_default();
        let _ = writeln!(out, "\n{}\n", help.trim());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/settings.md` must match the settings; `FERROCORN_WRITE_DOCS=1` rewrites it.
    #[test]
    fn settings_doc_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/settings.md");
        let want = settings_markdown();
        if std::env::var_os("FERROCORN_WRITE_DOCS").is_some() {
            std::fs::write(&path, &want).unwrap();
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "docs/settings.md is stale: run `make docs` and commit it"
        );
    }
}
