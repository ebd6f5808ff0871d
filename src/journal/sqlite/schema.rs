//! Versioned migrations for the SQLite journal, applied in order at open; the applied version
//! lives in `PRAGMA user_version`.

use rusqlite::Connection;

/// Every migration, in order; a migration's version is its position plus one.
const MIGRATIONS: &[(&str, &str)] = &[(
    "0001_init",
    include_str!("../../../migrations/sqlite/0001_init.sql"),
)];

/// Applies every migration newer than the database, each in its own transaction. Returns the
/// names of the migrations applied.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<Vec<&'static str>> {
    let current: u32 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    let mut applied = Vec::new();
    for (index, (name, sql)) in MIGRATIONS.iter().enumerate() {
        let version = index as u32 + 1;
        if version <= current {
            continue;
        }
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
        applied.push(*name);
    }
    Ok(applied)
}
