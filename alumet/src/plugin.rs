//! The plugin contract.
//!
//! A plugin is a crate compiled into the agent. It describes itself with a
//! [`PluginMetadata`] (built by [`PluginMetadata::of`] from a type that
//! implements [`PluginDefinition`]), and the agent drives it through this
//! lifecycle, in this order:
//!
//! 1. `init(config)`: validate the configuration, no side effects;
//! 2. `start(ctx)`: register metrics and pipeline elements; fail here, with a
//!    message that says why and what to do, when the machine lacks what the
//!    plugin needs (the agent then goes on with the other plugins);
//! 3. `post_pipeline_start(handle)`: the pipeline runs; keep the control handle if needed;
//! 4. `stop()`: after the pipeline has drained and every output is closed.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{
    DeserializeOwned, DeserializeSeed, IgnoredAny, IntoDeserializer, MapAccess, Visitor,
};
use serde::{Deserializer, Serialize};

use crate::config::{deserialize_config, serialize_config, ConfigError, ConfigTable};
pub use crate::error::{BoxError, PluginError};
use crate::pipeline::builder::PluginStartContext;
use crate::pipeline::control::PipelineHandle;
use crate::pipeline::{PipelineBuilder, PipelineExtension};

/// A running plugin, as the agent drives it.
pub trait Plugin: Send {
    /// Registers metrics and pipeline elements. See the module documentation.
    fn start(&mut self, ctx: &mut PluginStartContext) -> Result<(), PluginError>;

    /// Called once the pipeline runs, with its control handle.
    fn post_pipeline_start(&mut self, _pipeline: &PipelineHandle) -> Result<(), PluginError> {
        Ok(())
    }

    /// Called after the pipeline has stopped and outputs are closed.
    fn stop(&mut self) -> Result<(), PluginError> {
        Ok(())
    }
}

// Starting a plugin is defined here, not in the pipeline, so that the
// pipeline depends on the plugin contract's errors only (`crate::error`)
// and this module alone depends on both.
impl PipelineBuilder {
    /// Starts a plugin (see [`Plugin::start`]); what it adds is kept only if it succeeds.
    pub fn start_plugin(&mut self, name: &str, plugin: &mut dyn Plugin) -> Result<(), PluginError> {
        self.with_plugin_context(name, |ctx| plugin.start(ctx))
    }
}

impl PipelineExtension<'_> {
    /// Starts a plugin into the running pipeline (see [`Plugin::start`]);
    /// what it adds is kept only if it succeeds, and runs at `commit`.
    pub fn start_plugin(&mut self, name: &str, plugin: &mut dyn Plugin) -> Result<(), PluginError> {
        self.with_plugin_context(name, |ctx| plugin.start(ctx))
    }
}

/// What a plugin crate implements so that [`PluginMetadata::of`] can describe it.
pub trait PluginDefinition: Plugin + Sized + 'static {
    /// Unique name: the `[plugins.NAME]` table and the `--plugins` selector.
    const NAME: &'static str;
    /// Version, usually `env!("CARGO_PKG_VERSION")`.
    const VERSION: &'static str;
    /// One line: what it measures or does.
    const DESCRIPTION: &'static str;
    /// The configuration; `Default` is what `config regen` writes.
    /// Use `#[serde(deny_unknown_fields, default)]` so typos are reported.
    type Config: Serialize + DeserializeOwned + Default;

    /// Validates the configuration and creates the plugin, without side effects.
    fn init(config: Self::Config) -> Result<Self, PluginError>;

    /// Whether the plugin can run on this machine with this configuration
    /// (for `plugins list`). Must be cheap and have no side effects.
    fn check_availability(_config: &Self::Config) -> Result<(), PluginError> {
        Ok(())
    }

    /// One line of help per top-level config key, `(key, help)`, written as
    /// comments by `config regen`.
    fn config_docs() -> &'static [(&'static str, &'static str)] {
        &[]
    }

    /// What the plugin would measure here, one line per sensor, channel or
    /// endpoint it found and what each will be reported as (for `doctor`).
    /// Reads only; may take as long as one poll of the plugin's sources.
    /// Most plugins have nothing to add beyond [`Self::check_availability`].
    fn inventory(_config: &Self::Config) -> Vec<String> {
        Vec::new()
    }
}

/// A type-erased description of a built-in plugin.
#[derive(Clone, Copy)]
pub struct PluginMetadata {
    /// Unique name.
    pub name: &'static str,
    /// Version.
    pub version: &'static str,
    /// One line for `plugins list`.
    pub description: &'static str,
    /// The default configuration as a TOML table.
    pub default_config: fn() -> Result<ConfigTable, ConfigError>,
    /// Creates the plugin from its configuration table.
    pub init: fn(ConfigTable) -> Result<Box<dyn Plugin>, PluginError>,
    /// Checks `[plugins.NAME]` inside a whole TOML document, so that errors
    /// carry the span (line and column) of the offending key or value.
    /// The `enabled` key is the agent's and is skipped.
    pub check_config_in_document: fn(&ParsedDocument<'_>) -> Result<(), toml::de::Error>,
    /// Whether the plugin can run here with this configuration.
    pub check_availability: fn(ConfigTable) -> Result<(), PluginError>,
    /// Help for each config key, `(key, help)`.
    pub config_docs: fn() -> &'static [(&'static str, &'static str)],
    /// What the plugin found here and how it will report it, one line each
    /// ([`PluginDefinition::inventory`]); empty when the table is invalid.
    pub inventory: fn(ConfigTable) -> Vec<String>,
}

impl fmt::Debug for PluginMetadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginMetadata")
            .field("name", &self.name)
            .field("version", &self.version)
            .finish()
    }
}

impl PluginMetadata {
    /// Describes plugin `P`.
    pub fn of<P: PluginDefinition>() -> Self {
        PluginMetadata {
            name: P::NAME,
            version: P::VERSION,
            description: P::DESCRIPTION,
            default_config: || serialize_config(&P::Config::default()),
            init: |table| {
                let config: P::Config = deserialize_config(table)?;
                Ok(Box::new(P::init(config)?))
            },
            check_config_in_document: |document| {
                document.plugin_section::<P::Config>(P::NAME).map(|_| ())
            },
            check_availability: |table| {
                let config: P::Config = deserialize_config(table)?;
                P::check_availability(&config)
            },
            config_docs: P::config_docs,
            inventory: |table| match deserialize_config::<P::Config>(table) {
                Ok(config) => P::inventory(&config),
                Err(_) => Vec::new(),
            },
        }
    }
}

/// The key of `[plugins.NAME]` that belongs to the agent, not the plugin.
pub const ENABLED_KEY: &str = "enabled";

/// A TOML document parsed once, with the spans of every key and value, so
/// that the agent's own keys and every plugin's section are checked without
/// parsing the text again for each (parsing is most of the cost of loading
/// a configuration: it was 15 % of the CPU time of a short `exec`).
pub struct ParsedDocument<'i> {
    root: toml::Spanned<toml::de::DeTable<'i>>,
}

impl<'i> ParsedDocument<'i> {
    /// Parses `text`; errors carry spans.
    pub fn parse(text: &'i str) -> Result<Self, toml::de::Error> {
        Ok(Self {
            root: toml::de::DeTable::parse(text)?,
        })
    }

    /// Deserializes the whole document into `T`.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, toml::de::Error> {
        T::deserialize(toml::de::Deserializer::from(self.root.clone()))
    }

    /// Where the value at `path` (e.g. `["plugins", "procfs",
    /// "poll_interval"]`) is written, as a byte range of the text; `None`
    /// if the document does not set it (its default applies). A check made
    /// after deserialization (a range, two keys that disagree) uses it to
    /// point at the line.
    pub fn span_of(&self, path: &[&str]) -> Option<std::ops::Range<usize>> {
        let (last, parents) = path.split_last()?;
        let mut table = self.root.get_ref();
        for part in parents {
            let value = table.iter().find(|(k, _)| k.get_ref() == part)?.1;
            match value.get_ref() {
                toml::de::DeValue::Table(t) => table = t,
                _ => return None,
            }
        }
        table
            .iter()
            .find(|(k, _)| k.get_ref() == last)
            .map(|(_, v)| v.span())
    }

    /// Deserializes `[plugins.<name>]` into `C`, skipping the `enabled` key,
    /// with errors that carry spans. An absent section gives `C::default()`.
    pub fn plugin_section<C: DeserializeOwned + Default>(
        &self,
        name: &str,
    ) -> Result<C, toml::de::Error> {
        use serde::de::IntoDeserializer;
        let entry = |table: &toml::de::DeTable<'i>, key: &str| {
            table
                .iter()
                .find(|(k, _)| k.get_ref() == key)
                .map(|(_, v)| v.clone())
        };
        let Some(plugins) = entry(self.root.get_ref(), "plugins") else {
            return Ok(C::default());
        };
        let section = match plugins.get_ref() {
            toml::de::DeValue::Table(table) => entry(table, name),
            // Not a table: let the section's deserializer say so, with the span.
            _ => Some(plugins),
        };
        match section {
            Some(value) => SectionSeed::<C>(PhantomData).deserialize(value.into_deserializer()),
            None => Ok(C::default()),
        }
    }
}

/// Deserializes `[plugins.<name>]` of a whole TOML document into `C`,
/// skipping the `enabled` key, with errors that carry spans. An absent
/// section gives `C::default()`.
pub fn deserialize_plugin_section<C: DeserializeOwned + Default>(
    document: &str,
    name: &str,
) -> Result<C, toml::de::Error> {
    ParsedDocument::parse(document)?.plugin_section(name)
}

/// Deserializes a plugin table into `C`, hiding the `enabled` key from it.
struct SectionSeed<C>(PhantomData<C>);

impl<'de, C: DeserializeOwned> DeserializeSeed<'de> for SectionSeed<C> {
    type Value = C;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<C, D::Error> {
        d.deserialize_map(SectionVisitor(PhantomData))
    }
}

struct SectionVisitor<C>(PhantomData<C>);

impl<'de, C: DeserializeOwned> Visitor<'de> for SectionVisitor<C> {
    type Value = C;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a plugin table")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<C, A::Error> {
        C::deserialize(FilteredMap { inner: map })
    }
}

/// A map (and deserializer of itself) that skips the `enabled` key.
struct FilteredMap<A> {
    inner: A,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for FilteredMap<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let mut seed = Some(seed);
        loop {
            // The caller's seed runs inside the inner map's key deserialization,
            // so an "unknown field" error gets the key's span.
            match self.inner.next_key_seed(KeySeed(&mut seed))? {
                None => return Ok(None),
                Some(Some(value)) => return Ok(Some(value)),
                Some(None) => {
                    self.inner.next_value::<IgnoredAny>()?;
                }
            }
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.inner.next_value_seed(seed)
    }
}

impl<'de, A: MapAccess<'de>> Deserializer<'de> for FilteredMap<A> {
    type Error = A::Error;
    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, A::Error> {
        visitor.visit_map(self)
    }
    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

/// Reads a key; `None` for the agent's `enabled` key (the caller's seed is
/// then kept for the next key), else the caller's seed applied to it.
struct KeySeed<'s, K>(&'s mut Option<K>);

impl<'de, K: DeserializeSeed<'de>> DeserializeSeed<'de> for KeySeed<'_, K> {
    type Value = Option<K::Value>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        let key = String::deserialize(d)?;
        if key == ENABLED_KEY {
            return Ok(None);
        }
        let Some(seed) = self.0.take() else {
            return Err(serde::de::Error::custom(
                "internal error: key seed used twice",
            ));
        };
        let key_de: serde::de::value::StringDeserializer<serde::de::value::Error> =
            key.into_deserializer();
        seed.deserialize(key_de)
            .map(Some)
            .map_err(|e| serde::de::Error::custom(e.to_string()))
    }
}

use serde::Deserialize;

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Default, Debug, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Conf {
        poll_interval: String,
        count: u32,
    }

    #[test]
    fn section_is_found_and_enabled_is_skipped() {
        let doc = "[plugins.other]\nx = 1\n[plugins.me]\nenabled = true\ncount = 3\n";
        let c: Conf = deserialize_plugin_section(doc, "me").unwrap();
        assert_eq!(c.count, 3);
        let absent: Conf = deserialize_plugin_section(doc, "nobody").unwrap();
        assert_eq!(absent, Conf::default());
    }

    #[test]
    fn unknown_key_error_points_at_the_key() {
        let doc = "[plugins.me]\nenabled = true\npol_interval = \"1s\"\n";
        let err = deserialize_plugin_section::<Conf>(doc, "me").unwrap_err();
        let span = err.span().expect("span");
        assert_eq!(&doc[span], "pol_interval");
        assert!(err.message().contains("poll_interval"), "{}", err.message());
    }

    #[test]
    fn wrong_type_error_points_at_the_value() {
        let doc = "[plugins.me]\ncount = \"three\"\n";
        let err = deserialize_plugin_section::<Conf>(doc, "me").unwrap_err();
        let span = err.span().expect("span");
        assert_eq!(&doc[span], "\"three\"");
    }
}
