//! What a SIGHUP reload has to do, from the running configuration and the
//! new one: restart only the plugins whose `[plugins.NAME]` section changed
//! (and start or stop those enabled or disabled), or, when a section that
//! applies to the whole pipeline changed (`[agent]`: queues, retries),
//! restart everything and say which key forced it.

use alumet::config::ConfigTable;

use crate::config::load::LoadedConfig;

/// How the new configuration is applied.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// Only these plugins change; every other element keeps running.
    Plugins {
        /// Running plugins to stop (section changed, or disabled).
        stop: Vec<String>,
        /// Plugins to start, in the plugin order (section changed, or enabled).
        start: Vec<String>,
    },
    /// The whole pipeline restarts, because of this key (as `[agent] key`).
    Whole(String),
}

/// The plan for going from `old` to `new`; `running`: the plugins that
/// started (a plugin that could not run and whose section is unchanged is
/// not tried again).
pub fn plan(old: &LoadedConfig, new: &LoadedConfig, running: &[String]) -> Plan {
    if let Some(key) = changed_agent_key(old, new) {
        return Plan::Whole(format!("[agent] {key}"));
    }
    let sections = |c: &LoadedConfig| -> Vec<(String, ConfigTable, bool)> {
        c.plugins
            .iter()
            .map(|(m, t, e)| (m.name.to_owned(), t.clone(), *e))
            .collect()
    };
    plan_plugins(&sections(old), &sections(new), running)
}

/// The first key of `[agent]` whose value differs.
fn changed_agent_key(old: &LoadedConfig, new: &LoadedConfig) -> Option<String> {
    let table = |c: &LoadedConfig| alumet::config::serialize_config(&c.agent).unwrap_or_default();
    let (old, new) = (table(old), table(new));
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        // `exec_*` keys apply to `exec` and `watch` only: the service
        // has nothing to restart for them.
        .filter(|k| !k.starts_with("exec_"))
        .find(|k| old.get(*k) != new.get(*k))
        .cloned()
}

/// The plugin part of [`plan`], over `(name, section, enabled)` in plugin order.
fn plan_plugins(
    old: &[(String, ConfigTable, bool)],
    new: &[(String, ConfigTable, bool)],
    running: &[String],
) -> Plan {
    let mut stop = Vec::new();
    let mut start = Vec::new();
    for (name, table, enabled) in new {
        let is_running = running.contains(name);
        let before = old.iter().find(|(n, _, _)| n == name);
        let changed = before.is_none_or(|(_, t, e)| t != table || e != enabled);
        if !changed {
            continue;
        }
        if is_running {
            stop.push(name.clone());
        }
        if *enabled {
            start.push(name.clone());
        }
    }
    // A plugin that has left the list (cannot happen with a static list) stops too.
    for name in running {
        if !new.iter().any(|(n, _, _)| n == name) && !stop.contains(name) {
            stop.push(name.clone());
        }
    }
    Plan::Plugins { stop, start }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn section(name: &str, text: &str, enabled: bool) -> (String, ConfigTable, bool) {
        (name.to_owned(), toml::from_str(text).unwrap(), enabled)
    }

    #[test]
    fn only_changed_enabled_and_disabled_plugins_are_in_the_plan() {
        let old = [
            section("procfs", "poll = \"1s\"", true),
            section("csv", "path = \"a.csv\"", true),
            section("prometheus", "", false),
            section("rapl", "", true),
        ];
        let new = [
            section("procfs", "poll = \"2s\"", true),
            section("csv", "path = \"a.csv\"", true),
            section("prometheus", "", true),
            section("rapl", "", false),
        ];
        // rapl could not start: nothing to stop.
        let running = ["procfs".to_owned(), "csv".to_owned()];
        assert_eq!(
            plan_plugins(&old, &new, &running),
            Plan::Plugins {
                stop: vec!["procfs".into()],
                start: vec!["procfs".into(), "prometheus".into()],
            }
        );
        assert_eq!(
            plan_plugins(&old, &old, &running),
            Plan::Plugins {
                stop: vec![],
                start: vec![],
            },
            "nothing changed"
        );
    }
}
