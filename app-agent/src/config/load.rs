//! The agent's configuration: where it lives, its defaults, overrides from
//! the command line, and validation with precise diagnostics.
//!
//! Validation runs twice: on the file as written (so positions point into
//! the file) and on the text after overrides (an error found only then is
//! blamed on the override).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use alumet::config::{duration, ConfigError, ConfigTable};
use alumet::pipeline::PipelineConfig;
use alumet::plugin::{ParsedDocument, PluginMetadata, ENABLED_KEY};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::config::diagnostics::{self, ConfigDiagnostic, Origin};

/// Default file name, in the working directory.
pub const DEFAULT_CONFIG_FILE: &str = "alumet-config.toml";

/// The `[agent]` table.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentOptions {
    /// Buffers waiting between sources and transforms.
    pub source_queue_capacity: usize,
    /// Buffers waiting in front of each output.
    pub output_queue_capacity: usize,
    /// Attempts to write a batch before giving it up.
    pub max_write_attempts: u32,
    /// First delay between two attempts (doubles each time).
    #[serde(with = "duration")]
    pub retry_initial_delay: Duration,
    /// Longest delay between two attempts.
    #[serde(with = "duration")]
    pub retry_max_delay: Duration,
    /// Run `exec`'s command in a cgroup of its own (when the cgroups plugin runs).
    pub exec_in_cgroup: bool,
    /// Parent of `exec`'s cgroup (path in the hierarchy); empty: the agent's
    /// own cgroup, else the root when run as root.
    pub exec_cgroup_parent: String,
    /// `exec` and `watch` poll every source at least this often, so that a
    /// short command gets enough points ("0s": each source's own interval).
    #[serde(with = "duration")]
    pub exec_poll_interval: Duration,
}

/// The default `exec_poll_interval`: ten points a second, so that the plot
/// and the CSV of a 1 s command have ten (RAPL updates every millisecond;
/// NVML wants at least 50 ms).
pub const DEFAULT_EXEC_POLL_INTERVAL: Duration = Duration::from_millis(100);

impl Default for AgentOptions {
    fn default() -> Self {
        let p = PipelineConfig::default();
        Self {
            source_queue_capacity: p.source_queue_capacity,
            output_queue_capacity: p.output_queue_capacity,
            max_write_attempts: p.max_write_attempts,
            retry_initial_delay: p.retry_initial_delay,
            retry_max_delay: p.retry_max_delay,
            exec_in_cgroup: true,
            exec_cgroup_parent: String::new(),
            exec_poll_interval: DEFAULT_EXEC_POLL_INTERVAL,
        }
    }
}

impl AgentOptions {
    /// The pipeline configuration of `exec` and `watch`: every source polled
    /// at least every `exec_poll_interval`.
    pub fn exec_pipeline_config(&self) -> PipelineConfig {
        PipelineConfig {
            max_poll_interval: Some(self.exec_poll_interval).filter(|d| !d.is_zero()),
            ..self.pipeline_config()
        }
    }

    /// Checks every value against its range (`alumet::limits`), so that a
    /// start or a reload never meets one that cannot work.
    pub fn check_limits(&self) -> Result<(), ConfigError> {
        use alumet::limits::{CountRange, POLL_INTERVAL, QUEUE_CAPACITY, RETRY_DELAY};
        QUEUE_CAPACITY.check("source_queue_capacity", self.source_queue_capacity)?;
        QUEUE_CAPACITY.check("output_queue_capacity", self.output_queue_capacity)?;
        CountRange::new(1, 100).check("max_write_attempts", self.max_write_attempts)?;
        RETRY_DELAY.check("retry_initial_delay", self.retry_initial_delay)?;
        RETRY_DELAY.check("retry_max_delay", self.retry_max_delay)?;
        if self.retry_max_delay < self.retry_initial_delay {
            return Err(ConfigError::Invalid {
                key: "retry_max_delay".into(),
                reason: "must be at least retry_initial_delay".into(),
            });
        }
        POLL_INTERVAL
            .or_zero("each source's own poll interval")
            .check("exec_poll_interval", self.exec_poll_interval)
    }

    /// The pipeline configuration these options describe.
    pub fn pipeline_config(&self) -> PipelineConfig {
        PipelineConfig {
            source_queue_capacity: self.source_queue_capacity,
            output_queue_capacity: self.output_queue_capacity,
            max_write_attempts: self.max_write_attempts,
            retry_initial_delay: self.retry_initial_delay,
            retry_max_delay: self.retry_max_delay,
            ..PipelineConfig::default()
        }
    }
}

const AGENT_DOCS: &[(&str, &str)] = &[
    (
        "source_queue_capacity",
        "Buffers waiting between the sources and the transforms. When full, points are dropped and counted (alumet_dropped_points).",
    ),
    (
        "output_queue_capacity",
        "Buffers waiting in front of each output. A slow output drops (and counts) points past this; it never slows the others.",
    ),
    (
        "max_write_attempts",
        "Attempts to write the same batch when an output fails with a retryable error (1 = no retry).",
    ),
    ("retry_initial_delay", "Delay before the first retry; it doubles at each attempt."),
    ("retry_max_delay", "Longest delay between two attempts."),
    (
        "exec_in_cgroup",
        "Run the command of `exec` in a cgroup of its own, so that every process it starts is measured however short-lived (needs the cgroups plugin; else its process tree is measured).",
    ),
    (
        "exec_cgroup_parent",
        "Where that cgroup is created, as a path in the hierarchy (e.g. \"/user.slice\"); \"\": under the agent's own cgroup, else the root when run as root.",
    ),
    (
        "exec_poll_interval",
        "`exec` and `watch` poll every source at least this often, so that a short command gets enough points (a 1 s command: ten); \"0s\": each source's own poll_interval.",
    ),
];

/// Command-line overrides.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--set KEY=VALUE`, in order.
    pub set: Vec<String>,
    /// `--plugins a,b`: enable exactly these.
    pub plugins: Option<Vec<String>>,
    /// `--output-file PATH`: the CSV output path (enables csv).
    pub output_file: Option<PathBuf>,
}

impl Overrides {
    fn describe(&self) -> String {
        let mut parts: Vec<String> = self.set.iter().map(|s| format!("--set {s}")).collect();
        if let Some(p) = &self.plugins {
            parts.push(format!("--plugins {}", p.join(",")));
        }
        if let Some(o) = &self.output_file {
            parts.push(format!("--output-file {}", o.display()));
        }
        parts.join(" ")
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug)]
pub enum ConfigFailure {
    /// The configuration is invalid (exit 2).
    Invalid(Box<ConfigDiagnostic>),
    /// The file could not be read or written.
    Io(PathBuf, std::io::Error),
}

impl std::fmt::Display for ConfigFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigFailure::Invalid(d) => d.fmt(f),
            ConfigFailure::Io(path, e) => write!(
                f,
                "cannot read the configuration file {}: {e}",
                path.display()
            ),
        }
    }
}

impl From<Box<ConfigDiagnostic>> for ConfigFailure {
    fn from(d: Box<ConfigDiagnostic>) -> Self {
        ConfigFailure::Invalid(d)
    }
}

/// A loaded, validated configuration.
#[derive(Debug)]
pub struct LoadedConfig {
    /// The file it came from.
    pub path: PathBuf,
    /// The effective document (file + overrides).
    pub effective_text: String,
    /// `[agent]`.
    pub agent: AgentOptions,
    /// Each known plugin's table (without `enabled`) and whether it is enabled.
    pub plugins: Vec<(PluginMetadata, ConfigTable, bool)>,
    /// Whether the CSV path came from `--output-file` (then failing to open it is fatal).
    pub output_file_requested: bool,
    /// The command-line overrides that changed the file's text, if any
    /// (then an error is blamed on them, not on a line of the file).
    pub overridden_by: Option<String>,
}

impl LoadedConfig {
    /// The diagnostic for plugin `plugin`'s rejection `error` of its
    /// section: at the offending key's line when the file sets it.
    pub fn plugin_diagnostic(&self, plugin: &str, error: &alumet::plugin::PluginError) -> String {
        use alumet::plugin::PluginError;
        let message = match error {
            PluginError::Config(e) => format!("[plugins.{plugin}] {e}"),
            other => format!("[plugins.{plugin}] {other}"),
        };
        let key = match error {
            PluginError::Config(ConfigError::Invalid { key, .. }) => key.as_str(),
            _ => "",
        };
        let origin = match &self.overridden_by {
            Some(what) => Origin::Override(what.clone()),
            None => diagnostics::file(&self.path),
        };
        let Ok(document) = ParsedDocument::parse(&self.effective_text) else {
            return format!("invalid configuration: {}: {message}", self.path.display());
        };
        let mut path = vec!["plugins", plugin];
        path.extend(key.split('.').filter(|k| !k.is_empty()));
        diagnostics::at_key(origin, &document, &self.effective_text, &path, message).to_string()
    }
}

impl LoadedConfig {
    /// Whether plugin `name` is enabled (it may still turn out unable to run).
    pub fn is_enabled(&self, name: &str) -> bool {
        self.plugins
            .iter()
            .any(|(m, _, enabled)| m.name == name && *enabled)
    }

    /// `[plugins.NAME]` as its plugin reads it (defaults where it does not parse).
    pub fn section<C: serde::de::DeserializeOwned + Default>(&self, name: &str) -> C {
        self.plugins
            .iter()
            .find(|(meta, _, _)| meta.name == name)
            .and_then(|(_, table, _)| alumet::config::deserialize_config::<C>(table.clone()).ok())
            .unwrap_or_default()
    }

    /// The machine, as the roots of `[plugins.rapl]` describe it (the
    /// host's /proc and /sys by default): bare metal or a virtual machine.
    pub fn machine_kind(&self) -> alumet_kernelfs::virt::MachineKind {
        let rapl: plugin_rapl::RaplConfig = self.section("rapl");
        alumet_kernelfs::virt::detect(&rapl.proc_root, &rapl.sysfs_root)
    }
}

/// `--config`, else `$ALUMET_CONFIG` (handled by clap), else `./alumet-config.toml`.
pub fn resolve_path(cli: Option<PathBuf>) -> PathBuf {
    cli.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_FILE))
}

/// The default document, with comments, as `config regen` writes it.
/// `only`: enable exactly these plugins (others are written disabled).
pub fn default_document(
    plugins: &[PluginMetadata],
    only: Option<&[String]>,
) -> Result<String, String> {
    use toml_edit::{value, DocumentMut, Item, Table};

    let mut doc = DocumentMut::new();
    doc.decor_mut().set_prefix(concat!(
        "# Alumet agent configuration, as written by `alumet-agent config regen`.\n",
        "# Every key shows its default. Durations are strings: \"500us\", \"10ms\", \"1s\", \"2m\".\n",
        "# Each plugin's README (plugin-NAME/README.md) documents its keys and metrics.\n\n",
    ));
    let agent = toml::to_string(&AgentOptions::default()).map_err(|e| e.to_string())?;
    let agent: DocumentMut = agent
        .parse()
        .map_err(|e: toml_edit::TomlError| e.to_string())?;
    let mut agent_table = agent.as_table().clone();
    agent_table.set_implicit(false);
    agent_table
        .decor_mut()
        .set_prefix("# Options of the agent itself: queues and retries of the pipeline.\n");
    add_key_docs(&mut agent_table, AGENT_DOCS);
    doc.insert("agent", Item::Table(agent_table));

    let mut all_plugins = Table::new();
    all_plugins.set_implicit(true);
    for meta in plugins {
        let config = (meta.default_config)().map_err(|e| format!("plugin {}: {e}", meta.name))?;
        let text = toml::to_string(&config).map_err(|e| format!("plugin {}: {e}", meta.name))?;
        let parsed: DocumentMut = text
            .parse()
            .map_err(|e: toml_edit::TomlError| e.to_string())?;
        let mut table = Table::new();
        let enabled = match only {
            Some(list) => list.iter().any(|p| p == meta.name),
            None => crate::config::plugins::enabled_by_default(meta.name),
        };
        table.insert(ENABLED_KEY, value(enabled));
        for (k, v) in parsed.as_table().iter() {
            table.insert(k, v.clone());
        }
        let mut docs: Vec<(&str, &str)> =
            vec![(ENABLED_KEY, "Whether the agent runs this plugin.")];
        docs.extend_from_slice((meta.config_docs)());
        add_key_docs(&mut table, &docs);
        table
            .decor_mut()
            .set_prefix(format!("\n# {}: {}\n", meta.name, meta.description));
        all_plugins.insert(meta.name, Item::Table(table));
    }
    doc.insert("plugins", Item::Table(all_plugins));
    Ok(doc.to_string())
}

fn add_key_docs(table: &mut toml_edit::Table, docs: &[(&str, &str)]) {
    for (key, help) in docs {
        // `names.enabled`: a key of sub-table `names`.
        if let Some((sub, rest)) = key.split_once('.') {
            if let Some(sub) = table.get_mut(sub).and_then(|item| item.as_table_mut()) {
                add_key_docs(sub, &[(rest, help)]);
            }
            continue;
        }
        // A sub-table is written as its own `[a.b]` header: its comment goes
        // above the header, not above the (invisible) key.
        if let Some(sub) = table.get_mut(key).and_then(|item| item.as_table_mut()) {
            sub.decor_mut().set_prefix(format!("\n# {help}\n"));
        } else if let Some(mut k) = table.key_mut(key) {
            k.leaf_decor_mut().set_prefix(format!("# {help}\n"));
        }
    }
}

/// The shape of the whole file, for validation with spans.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileShape {
    #[serde(default)]
    agent: AgentOptions,
    #[serde(default)]
    plugins: BTreeMap<Spanned<String>, Spanned<BTreeMap<String, Spanned<toml::Value>>>>,
}

struct Validated {
    agent: AgentOptions,
    table: toml::Table,
}

fn validate(
    text: &str,
    origin: &Origin,
    plugins: &[PluginMetadata],
) -> Result<Validated, Box<ConfigDiagnostic>> {
    let toml_error =
        |e: toml::de::Error| Box::new(diagnostics::from_toml_error(origin.clone(), text, &e));
    let document = ParsedDocument::parse(text).map_err(toml_error)?;
    let table: toml::Table = document.deserialize().map_err(toml_error)?;
    let shape: FileShape = document.deserialize().map_err(toml_error)?;
    if let Err(e) = shape.agent.check_limits() {
        let key = match &e {
            ConfigError::Invalid { key, .. } => key.as_str(),
            _ => "",
        };
        let message = format!("[agent] {e}");
        return Err(Box::new(diagnostics::at_key(
            origin.clone(),
            &document,
            text,
            &["agent", key],
            message,
        )));
    }
    let names: Vec<&str> = plugins.iter().map(|m| m.name).collect();
    for (name, section) in &shape.plugins {
        if !names.contains(&name.get_ref().as_str()) {
            return Err(Box::new(diagnostics::unknown_name(
                origin.clone(),
                text,
                Some(name.span()),
                "plugin",
                name.get_ref(),
                &names,
            )));
        }
        if let Some(enabled) = section.get_ref().get(ENABLED_KEY) {
            if !enabled.get_ref().is_bool() {
                let span = enabled.span();
                let (line, col) = diagnostics::line_col(text, span.start);
                return Err(Box::new(ConfigDiagnostic {
                    origin: origin.clone(),
                    position: Some((line, col)),
                    line_text: text.lines().nth(line - 1).map(str::to_owned),
                    span_len: span.len(),
                    message: format!("`plugins.{}.enabled` must be a boolean", name.get_ref()),
                    help: Some("write `enabled = true` or `enabled = false`".into()),
                }));
            }
        }
    }
    for meta in plugins {
        (meta.check_config_in_document)(&document).map_err(|e| {
            Box::new(diagnostics::from_toml_error_also_valid(
                origin.clone(),
                text,
                &e,
                &[ENABLED_KEY],
            ))
        })?;
    }
    Ok(Validated {
        agent: shape.agent,
        table,
    })
}

/// Applies the overrides to the document text.
fn apply_overrides(
    text: &str,
    overrides: &Overrides,
    plugins: &[PluginMetadata],
) -> Result<String, Box<ConfigDiagnostic>> {
    use toml_edit::{value, DocumentMut, Item};

    if overrides.set.is_empty() && overrides.plugins.is_none() && overrides.output_file.is_none() {
        return Ok(text.to_owned());
    }
    let override_error = |what: &str, message: String, help: Option<String>| {
        Box::new(ConfigDiagnostic {
            origin: Origin::Override(what.to_owned()),
            position: None,
            line_text: None,
            span_len: 1,
            message,
            help,
        })
    };
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| override_error("", e.to_string(), None))?;
    for assignment in &overrides.set {
        let Some((key, raw_value)) = assignment.split_once('=') else {
            return Err(override_error(
                assignment,
                "expected KEY=VALUE".into(),
                Some("e.g. --set plugins.csv.output_path=\"out.csv\"".into()),
            ));
        };
        let path: Vec<&str> = key.trim().split('.').map(str::trim).collect();
        if path.iter().any(|p| p.is_empty()) {
            return Err(override_error(
                assignment,
                format!("invalid key `{key}`"),
                None,
            ));
        }
        // A value that is not valid TOML is taken as a string, so that
        // `--set plugins.csv.output_path=out.csv` works without shell quoting.
        let raw_value = raw_value.trim();
        let parsed: toml_edit::Value = raw_value
            .parse()
            .unwrap_or_else(|_| toml_edit::Value::from(raw_value));
        let mut table = doc.as_table_mut();
        for (i, part) in path.iter().enumerate() {
            if i + 1 == path.len() {
                table.insert(part, Item::Value(parsed.clone()));
                break;
            }
            let entry = table.entry(part).or_insert_with(|| {
                let mut t = toml_edit::Table::new();
                t.set_implicit(true);
                Item::Table(t)
            });
            table = match entry.as_table_mut() {
                Some(t) => t,
                None => {
                    return Err(override_error(
                        assignment,
                        format!("`{}` is not a table", path[..=i].join(".")),
                        None,
                    ))
                }
            };
        }
    }
    if let Some(list) = &overrides.plugins {
        let names: Vec<&str> = plugins.iter().map(|m| m.name).collect();
        for wanted in list {
            if !names.contains(&wanted.as_str()) {
                let mut d = diagnostics::unknown_name(
                    Origin::Override(format!("--plugins {}", list.join(","))),
                    "",
                    None,
                    "plugin",
                    wanted,
                    &names,
                );
                d.position = None;
                return Err(Box::new(d));
            }
        }
        for name in &names {
            let enabled = list.iter().any(|w| w == name);
            match plugin_table(&mut doc, name) {
                Some(t) => {
                    t.insert(ENABLED_KEY, value(enabled));
                }
                None => {
                    return Err(override_error(
                        "--plugins",
                        "`plugins` is not a table".into(),
                        None,
                    ))
                }
            }
        }
    }
    if let Some(path) = &overrides.output_file {
        let Some(t) = plugin_table(&mut doc, "csv") else {
            return Err(override_error(
                "--output-file",
                "`plugins.csv` is not a table".into(),
                None,
            ));
        };
        t.insert("output_path", value(path.to_string_lossy().into_owned()));
        t.insert(ENABLED_KEY, value(true));
    }
    Ok(doc.to_string())
}

/// `[plugins.NAME]` of `doc`, created if absent.
fn plugin_table<'d>(
    doc: &'d mut toml_edit::DocumentMut,
    name: &str,
) -> Option<&'d mut toml_edit::Table> {
    use toml_edit::Item;
    let plugins = doc
        .as_table_mut()
        .entry("plugins")
        .or_insert_with(|| {
            let mut t = toml_edit::Table::new();
            t.set_implicit(true);
            Item::Table(t)
        })
        .as_table_mut()?;
    plugins
        .entry(name)
        .or_insert_with(|| Item::Table(toml_edit::Table::new()))
        .as_table_mut()
}

/// Reads (or creates with defaults) the file, applies overrides, validates.
pub fn load(
    path: &Path,
    overrides: &Overrides,
    plugins: &[PluginMetadata],
) -> Result<LoadedConfig, ConfigFailure> {
    let file_text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let text = default_document(plugins, None)
                .map_err(|e| ConfigFailure::Io(path.to_owned(), std::io::Error::other(e)))?;
            match std::fs::write(path, &text) {
                Ok(()) => log::info!(
                    "no configuration file at {}: wrote the default configuration there",
                    path.display()
                ),
                Err(e) => log::warn!(
                    "no configuration file at {} and cannot create it ({e}): using the defaults",
                    path.display()
                ),
            }
            text
        }
        Err(e) => return Err(ConfigFailure::Io(path.to_owned(), e)),
    };
    load_text(path, &file_text, overrides, plugins)
}

/// Like [`load`], for a document already read (or the defaults, for
/// `doctor`, which writes nothing): `path` is where it came from.
pub fn load_text(
    path: &Path,
    file_text: &str,
    overrides: &Overrides,
    plugins: &[PluginMetadata],
) -> Result<LoadedConfig, ConfigFailure> {
    let file_origin = diagnostics::file(path);
    let validated = validate(file_text, &file_origin, plugins)?;
    let effective_text = apply_overrides(file_text, overrides, plugins)?;
    let overridden_by = (effective_text != file_text).then(|| overrides.describe());
    let validated = if effective_text == file_text {
        validated
    } else {
        validate(
            &effective_text,
            &Origin::Override(overrides.describe()),
            plugins,
        )
        .map_err(|mut d| {
            // Positions in the rewritten text mean nothing to the user.
            d.position = None;
            d.line_text = None;
            d
        })?
    };
    warn_if_secrets_exposed(path, &validated.table);

    let plugin_tables = validated
        .table
        .get("plugins")
        .and_then(|p| p.as_table())
        .cloned()
        .unwrap_or_default();
    let plugins = plugins
        .iter()
        .map(|meta| {
            let mut table = plugin_tables
                .get(meta.name)
                .and_then(|t| t.as_table())
                .cloned()
                .unwrap_or_default();
            let enabled = table
                .remove(ENABLED_KEY)
                .and_then(|v| v.as_bool())
                .unwrap_or_else(|| crate::config::plugins::enabled_by_default(meta.name));
            (*meta, table, enabled)
        })
        .collect();
    Ok(LoadedConfig {
        path: path.to_owned(),
        effective_text,
        agent: validated.agent,
        plugins,
        output_file_requested: overrides.output_file.is_some(),
        overridden_by,
    })
}

/// Whether a key holds a secret (its value is never shown). `headers` is
/// the OTLP output's inline request headers, which carry API keys.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    matches!(
        k.as_str(),
        "token" | "password" | "secret" | "api_key" | "headers"
    ) || k.ends_with("_token")
        || k.ends_with("_password")
        || k.ends_with("_secret")
}

/// Paths (dotted) of the non-empty secrets in a table.
pub fn secret_paths(table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
    for (k, v) in table {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => secret_paths(t, &path, out),
            toml::Value::String(s) if is_secret_key(k) && !s.is_empty() => out.push(path),
            _ => {}
        }
    }
}

/// Replaces every secret value with `<redacted>`.
pub fn redact(table: &mut toml::Table) {
    for (k, v) in table.iter_mut() {
        match v {
            toml::Value::Table(t) => redact(t),
            toml::Value::String(s) if is_secret_key(k) && !s.is_empty() => *s = "<redacted>".into(),
            _ => {}
        }
    }
}

fn warn_if_secrets_exposed(path: &Path, table: &toml::Table) {
    use std::os::unix::fs::PermissionsExt;
    let mut secrets = Vec::new();
    secret_paths(table, "", &mut secrets);
    if secrets.is_empty() {
        return;
    }
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            log::warn!(
                "{} holds a secret ({}) and is readable by other users: run `chmod 600 {}`, or move the secret to an environment variable or a file",
                path.display(),
                secrets.join(", "),
                path.display()
            );
        }
    }
}
