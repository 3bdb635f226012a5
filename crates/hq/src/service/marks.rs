//! The markers of the values bound to a statement made at run time (a
//! multi-row `INSERT`, an `IN (…)` list).
//!
//! PostgreSQL numbers them: `$1`, `$2`, …. On SQLite they are written `?`
//! and bound in the order they appear: sqlx finds the value of each marker
//! by the marker's name, and SQLite finds a marker's name by a linear search
//! of the statement's markers, so a statement of k numbered markers costs
//! k² steps to bind. With 200 records of 17 values in one statement that
//! was a third of the collector's time (docs/BENCHMARKS.md, section 8); a
//! nameless `?` has no name to look up.
//!
//! Invariant: a statement built here uses one kind of marker throughout
//! (sqlx counts nameless markers apart from numbered ones, so `$1` followed
//! by `?` would bind the first value twice), and its values are bound in
//! the order of their markers in the text, which is also their numbers'
//! order.

use sqlx::AnyConnection;

/// How the database behind a connection marks bound values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marks {
    numbered: bool,
}

impl Marks {
    /// The markers `conn`'s database is written with.
    pub fn of(conn: &AnyConnection) -> Marks {
        Marks {
            numbered: conn.backend_name() != <sqlx::Sqlite as sqlx::Database>::NAME,
        }
    }

    /// The marker of the `n`th value bound (from 1).
    pub fn one(&self, n: usize) -> String {
        if self.numbered {
            format!("${n}")
        } else {
            "?".to_owned()
        }
    }

    /// `count` markers from the `first`th, separated by commas.
    pub fn list(&self, first: usize, count: usize) -> String {
        let all: Vec<String> = (first..first + count).map(|n| self.one(n)).collect();
        all.join(", ")
    }

    /// `(…), (…)`: `rows` tuples of `k` markers each, from the `first`th.
    pub fn tuples(&self, first: usize, rows: usize, k: usize) -> String {
        let all: Vec<String> = (0..rows)
            .map(|r| format!("({})", self.list(first + r * k, k)))
            .collect();
        all.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::Marks;

    #[test]
    fn postgresql_numbers_its_markers_and_sqlite_binds_them_in_order() {
        let pg = Marks { numbered: true };
        assert_eq!(pg.list(2, 3), "$2, $3, $4");
        assert_eq!(pg.tuples(1, 2, 2), "($1, $2), ($3, $4)");
        let sqlite = Marks { numbered: false };
        assert_eq!(sqlite.list(2, 3), "?, ?, ?");
        assert_eq!(sqlite.tuples(1, 2, 2), "(?, ?), (?, ?)");
        assert_eq!(sqlite.one(7), "?");
    }
}
