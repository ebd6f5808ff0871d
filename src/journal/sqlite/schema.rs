//! Versioned migrations for the SQLite backend (`migrations/sqlite/`), run by refinery at open
//! and by `wharf migrate`.

use rusqlite::Connection;

mod embedded {
    refinery::embed_migrations!("migrations/sqlite");
}

/// Applies every migration newer than the database. Returns the names of those applied, so
/// that `wharf migrate` can say "up to date" when there were none.
pub fn migrate(conn: &mut Connection) -> Result<Vec<String>, refinery::Error> {
    let report = embedded::migrations::runner().run(conn)?;
    Ok(report
        .applied_migrations()
        .iter()
        .map(|migration| migration.to_string())
        .collect())
}
