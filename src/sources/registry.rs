//! The sources this server knows, by name.

use std::collections::BTreeMap;

use super::SharedSource;

#[derive(Default, Clone)]
pub struct Registry {
    sources: BTreeMap<String, SharedSource>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a source; a later source with the same name replaces the earlier one.
    pub fn insert(&mut self, source: SharedSource) {
        self.sources.insert(source.name().to_owned(), source);
    }

    pub fn get(&self, name: &str) -> Option<&SharedSource> {
        self.sources.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &SharedSource> {
        self.sources.values()
    }
}
