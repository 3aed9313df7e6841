//! A registry of named plugins, loaded lazily.

use std::collections::BTreeMap;
use std::fmt;

/// The most plugins one registry holds.
pub const MAX_PLUGINS: usize = 64;

static GREETING: &str = "hello {world}";

/// A plugin's entry point.
pub trait Plugin: Send {
    /// The plugin's unique name.
    fn name(&self) -> &str;

    fn run(&mut self, input: &str) -> Result<String, Error>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    NotFound(String),
    Full,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotFound(name) => write!(f, "plugin not found: {name} (is it registered?)"),
            Error::Full => write!(f, "registry is full ({MAX_PLUGINS} plugins)"),
        }
    }
}

/// Plugins by name, in name order.
#[derive(Default)]
pub struct Registry {
    plugins: BTreeMap<String, Box<dyn Plugin>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a plugin, replacing one with the same name.
    #[must_use = "the registry may be full"]
    pub fn register(&mut self, plugin: Box<dyn Plugin>) -> Result<(), Error> {
        if self.plugins.len() >= MAX_PLUGINS {
            return Err(Error::Full);
        }
        self.plugins.insert(plugin.name().to_owned(), plugin);
        Ok(())
    }

    pub fn run(&mut self, name: &str, input: &str) -> Result<String, Error> {
        let plugin = self
            .plugins
            .get_mut(name)
            .ok_or_else(|| Error::NotFound(name.to_owned()))?;
        plugin.run(input)
    }
}

macro_rules! echo_plugin {
    ($name:ident) => {
        struct $name;
    };
}

echo_plugin!(Echo);

impl Plugin for Echo {
    fn name(&self) -> &str {
        "echo"
    }

    fn run(&mut self, input: &str) -> Result<String, Error> {
        Ok(format!("{GREETING}: {input}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_a_registered_plugin() {
        let mut registry = Registry::new();
        registry.register(Box::new(Echo)).unwrap();
        assert_eq!(registry.run("echo", "x").unwrap(), "hello {world}: x");
    }
}
