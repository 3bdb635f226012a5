//! The PostgreSQL harness itself (`tests/support/postgres.rs`): a real
//! server on a free 127.0.0.1 port, separate databases, gone after kill,
//! back with its data after restart.

use std::net::TcpStream;

use crate::support::postgres::Postgres;

#[test]
fn postgres_harness_serves_separate_databases_and_is_gone_after_kill() {
    let mut pg = Postgres::start();
    let port = pg.port;
    assert_eq!(
        pg.url(),
        format!("postgres://sargs@127.0.0.1:{port}/postgres")
    );
    for (db, word) in [("alpha", "first"), ("beta", "second")] {
        let url = pg.create_db(db);
        assert_eq!(url, format!("postgres://sargs@127.0.0.1:{port}/{db}"));
        pg.psql(
            db,
            "create table t (id int primary key, word text not null)",
        );
        pg.psql(db, &format!("insert into t values (1, '{word}')"));
    }
    assert_eq!(pg.psql("alpha", "select id, word from t"), "1|first");
    assert_eq!(pg.psql("beta", "select id, word from t"), "1|second");
    assert_eq!(pg.psql("alpha", "show server_encoding"), "UTF8");

    pg.kill();
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port {port} still open after kill:\n{}",
        pg.log()
    );

    // What was committed survives the crash.
    pg.restart();
    assert_eq!(pg.port, port);
    assert_eq!(pg.psql("beta", "select word from t"), "second");
    let dir = pg.dir().to_owned();
    drop(pg);
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port {port} open after drop"
    );
    assert!(!dir.exists(), "{} left behind", dir.display());
}
