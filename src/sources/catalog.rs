//! Every ledger table, once each, as the admin API lists and reads them: the tables
//! providers describe (`ledger_tables()`), merged by name.

use super::registry::PROVIDERS;
use crate::ledger::table::Column;
use crate::ledger::Table;

/// Every ledger table, once each, as the admin API lists and reads them: seed 000's `sales`,
/// then each provider's tables in [`PROVIDERS`] order. A table several providers write
/// (`payments`: Stripe, Paystack, PayPal) is one table whose columns are the union of what
/// they describe, in first-seen order; its key is the first description's.
pub fn ledger_catalog() -> &'static [&'static Table] {
    static CATALOG: std::sync::OnceLock<Vec<&'static Table>> = std::sync::OnceLock::new();
    CATALOG.get_or_init(|| {
        let described = std::iter::once(&crate::ledger::sale::SALES).chain(
            PROVIDERS
                .iter()
                .flat_map(|p| p.ledger_tables().iter().copied()),
        );
        merge_descriptions(described)
    })
}

/// Merges descriptions that share a name. The merged tables live for the whole process: they
/// are built once, and `Table` holds `'static` slices.
fn merge_descriptions<'a>(described: impl Iterator<Item = &'a Table>) -> Vec<&'static Table> {
    let mut merged: Vec<(&'static str, &'static [&'static str], Vec<Column>)> = Vec::new();
    for table in described {
        match merged.iter_mut().find(|(name, _, _)| *name == table.name) {
            Some((_, _, columns)) => {
                for column in table.columns {
                    if !columns.iter().any(|known| known.name == column.name) {
                        columns.push(*column);
                    }
                }
            }
            None => merged.push((table.name, table.key, table.columns.to_vec())),
        }
    }
    merged
        .into_iter()
        .map(|(name, key, columns)| {
            &*Box::leak(Box::new(Table {
                name,
                key,
                columns: Box::leak(columns.into_boxed_slice()),
            }))
        })
        .collect()
}

/// The ledger table named `name`.
pub fn ledger_table(name: &str) -> Option<&'static Table> {
    ledger_catalog()
        .iter()
        .copied()
        .find(|table| table.name == name)
}
