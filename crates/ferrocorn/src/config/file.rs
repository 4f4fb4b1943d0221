//! Config files (`-c ferrocorn.conf.py`): the Python side executes the file and hands over its
//! variables; this module maps their names onto settings, as Gunicorn's config files name them.

use clap::CommandFactory;

use super::Settings;

/// A config-file variable's value, as the Python side normalises it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileValue {
    Bool(bool),
    Str(String),
    List(Vec<String>),
}

/// Gunicorn's config-file name for a setting, where it differs from ours (the flag's name with
/// `_` for `-`). Both names are accepted in config files.
pub const GUNICORN_NAMES: &[(&str, &str)] = &[
    ("app", "wsgi_app"),
    ("no_control_socket", "control_socket_disable"),
    ("preload", "preload_app"),
    ("keep_alive", "keepalive"),
    ("log_level", "loglevel"),
    ("access_logfile", "accesslog"),
    ("access_logformat", "access_log_format"),
    ("error_logfile", "errorlog"),
    ("reload_extra_file", "reload_extra_files"),
    ("uwsgi_allow_from", "uwsgi_allow_ips"),
];

/// Gunicorn settings that have no meaning here: accepted without effect, with a warning.
const IGNORED: &[&str] = &[
    "worker_tmp_dir",
    "sendfile",
    "strip_header_spaces",
    "check_config",
    "print_config",
    "spew",
    "tmp_upload_dir",
    "proc_name",
    "default_proc_name",
    "reload_engine",
    "initgroups",
    "ssl_version",
    "casefold_http_method",
    "permit_obsolete_folding",
    "permit_unconventional_http_method",
    "permit_unconventional_http_version",
    "header_map",
    "forwarder_headers",
    "enable_stdio_inheritance",
    "disable_redirect_access_to_syslog",
    "syslog",
    "syslog_addr",
    "syslog_prefix",
    "syslog_facility",
    "dogstatsd_tags",
    "statsd_prefix_worker",
    "paste",
    "raw_paste_global_conf",
    "worker_abort",
];

/// The settings a config file may name: (config name, flag without dashes, takes a value,
/// takes several values).
pub fn file_settings() -> Vec<FileSetting> {
    Settings::command()
        .get_arguments()
        .filter(|a| !matches!(a.get_id().as_str(), "help" | "version" | "config"))
        .map(|a| {
            let id = a.get_id().as_str().to_owned();
            let gunicorn = GUNICORN_NAMES
                .iter()
                .find(|(ours, _)| *ours == id)
                .map(|(_, theirs)| (*theirs).to_owned());
            FileSetting {
                flag: a.get_long().map(str::to_owned),
                takes_value: a.get_action().takes_values(),
                many: matches!(a.get_action(), clap::ArgAction::Append),
                name: id,
                gunicorn,
            }
        })
        .collect()
}

#[derive(Debug, Clone)]
pub struct FileSetting {
    /// Our config-file name (the flag with `_` for `-`).
    pub name: String,
    /// Gunicorn's name, where it differs.
    pub gunicorn: Option<String>,
    pub flag: Option<String>,
    pub takes_value: bool,
    pub many: bool,
}

impl FileSetting {
    fn is_named(&self, name: &str) -> bool {
        self.name == name || self.gunicorn.as_deref() == Some(name)
    }
}

/// Turns config-file variables into arguments; names that are not settings give warnings.
pub fn file_args(values: Vec<(String, FileValue)>) -> (Vec<String>, Vec<String>) {
    let settings = file_settings();
    let mut args = Vec::new();
    let mut positional = None;
    let mut warnings = Vec::new();
    for (name, value) in values {
        let Some(setting) = settings.iter().find(|s| s.is_named(&name)) else {
            if IGNORED.contains(&name.as_str()) {
                warnings.push(format!(
                    "setting {name:?} has no effect in ferrocorn; ignored"
                ));
            } else {
                warnings.push(format!("unknown setting {name:?} ignored"));
            }
            continue;
        };
        let Some(flag) = &setting.flag else {
            match value {
                FileValue::Str(app) => positional = Some(app),
                other => warnings.push(format!("{name} must be a string, not {other:?}")),
            }
            continue;
        };
        match (value, setting.takes_value) {
            (FileValue::Bool(true), false) => args.push(format!("--{flag}")),
            (FileValue::Bool(false), false) => {}
            (FileValue::Bool(b), true) => args.push(format!("--{flag}={b}")),
            (FileValue::Str(s), true) => args.push(format!("--{flag}={s}")),
            (FileValue::List(items), true) if setting.many => {
                args.extend(items.iter().map(|i| format!("--{flag}={i}")));
            }
            (FileValue::List(items), true) => args.push(format!("--{flag}={}", items.join(","))),
            (FileValue::Str(s), false) => match s.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => args.push(format!("--{flag}")),
                "false" | "0" | "no" | "off" | "" => {}
                _ => warnings.push(format!("{name} must be True or False, not {s:?}; ignored")),
            },
            (FileValue::List(_), false) => {
                warnings.push(format!("{name} must be True or False, not a list; ignored"));
            }
        }
    }
    if let Some(app) = positional {
        args.push("--".to_owned());
        args.push(app);
    }
    (args, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> FileValue {
        FileValue::Str(v.to_owned())
    }

    #[test]
    fn gunicorn_names_and_value_shapes() {
        let (args, warnings) = file_args(vec![
            (
                "bind".into(),
                FileValue::List(vec!["127.0.0.1:1".into(), "unix:/s".into()]),
            ),
            ("workers".into(), s("3")),
            ("preload_app".into(), FileValue::Bool(true)),
            ("daemon".into(), FileValue::Bool(false)),
            ("keepalive".into(), s("5")),
            (
                "forwarded_allow_ips".into(),
                FileValue::List(vec!["10.0.0.0/8".into(), "::1".into()]),
            ),
            ("wsgi_app".into(), s("pkg.mod:app")),
            ("worker_class".into(), s("sync")),
            ("wokers".into(), s("2")),
        ]);
        assert_eq!(
            args,
            [
                "--bind=127.0.0.1:1",
                "--bind=unix:/s",
                "--workers=3",
                "--preload",
                "--keep-alive=5",
                "--forwarded-allow-ips=10.0.0.0/8,::1",
                "--worker-class=sync",
                "--",
                "pkg.mod:app",
            ]
        );
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("\"wokers\""));
    }
}
