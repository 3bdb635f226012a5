//! The processes: Mosquitto, the `sqlite3` / `psql` session [`Sql`], where a
//! run's database is ([`DbRef`]), and the service ([`Service`]: a database
//! and an `hq.toml`; [`Running`]: `sargs-hq run` on them).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use crate::mosquitto;
use crate::postgres::Postgres;
use crate::{Backend, Knobs};

/// The service's MQTT client id.
pub const HQ_CLIENT: &str = "hq-bench";

/// Mosquitto on a free port with the bench's configuration: as the tests'
/// broker (`tests/support/mosquitto.rs`), plus subscriptions logged (to know
/// when a subscriber is ready) and `HQC_BROKER`'s lines.
pub struct Mosq {
    child: Child,
    pub port: u16,
    log: PathBuf,
}

impl Mosq {
    pub fn start(dir: &Path, extra: &str) -> Mosq {
        std::fs::create_dir_all(dir).expect("broker dir");
        for _ in 0..10 {
            let port = mosquitto::free_port();
            let conf = dir.join("mosquitto.conf");
            let log = dir.join("mosquitto.log");
            let mut text = format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n\
                 log_type information\nlog_type subscribe\nset_tcp_nodelay true\n\
                 max_connections -1\n{extra}\n"
            );
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } == 0 {
                text += "user root\n";
            }
            std::fs::write(&conf, text).expect("mosquitto.conf");
            let child = Command::new("/usr/sbin/mosquitto")
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("log"))
                .spawn()
                .expect("mosquitto (Debian package mosquitto)");
            let mut m = Mosq { child, port, log };
            let end = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(_)) = m.child.try_wait() {
                    break; // the port was taken: another one
                }
                if m.log_text().contains(" running")
                    && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                {
                    return m;
                }
                assert!(
                    Instant::now() < end,
                    "mosquitto did not start: {}",
                    m.log_text()
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        panic!("mosquitto found no free port");
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `client` has subscribed to `filter` (the broker logs it).
    pub fn wait_subscribed(&self, client: &str, filter: &str) {
        let end = Instant::now() + Duration::from_secs(30);
        let needle = format!(" {client} ");
        while Instant::now() < end {
            if self
                .log_text()
                .lines()
                .any(|l| l.contains(&needle) && l.trim_end().ends_with(filter))
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "{client} did not subscribe to {filter}:\n{}",
            self.log_text()
        );
    }

    /// PUBLISHes sent to `client` it has not acknowledged, by the log
    /// (`log_type debug` in HQC_BROKER; otherwise unknown).
    pub fn unacked(&self, client: &str) -> String {
        let log = self.log_text();
        let sent = format!("Sending PUBLISH to {client} ");
        let acked = format!("Received PUBACK from {client} ");
        let s = log.lines().filter(|l| l.contains(&sent)).count();
        if s == 0 {
            return "(unknown: HQC_BROKER without log_type debug) messages".into();
        }
        let a = log.lines().filter(|l| l.contains(&acked)).count();
        format!("{} messages", s - a)
    }

    /// Lines the broker logged about dropping messages.
    pub fn drops(&self) -> usize {
        self.log_text()
            .lines()
            .filter(|l| l.contains("dropped") || l.contains("dropping"))
            .count()
    }
}

impl Drop for Mosq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `sqlite3` or `psql` session: SQL in, result lines out.
pub struct Sql {
    child: Child,
    stdin: ChildStdin,
    out: BufReader<ChildStdout>,
}

impl Sql {
    pub fn sqlite(path: &Path) -> Sql {
        let mut s = Sql::spawn(
            Command::new("sqlite3")
                .args(["-batch", "-noheader", "-list"])
                .arg(path),
            "sqlite3 (Debian package sqlite3)",
        );
        s.lines(".timeout 30000");
        s
    }

    pub fn pg(port: u16, db: &str) -> Sql {
        let mut c = Command::new(pg_bin("psql"));
        c.args(["-h", "127.0.0.1", "-U", "sargs", "-p", &port.to_string()]);
        c.args(["-d", db, "-X", "-q", "-A", "-t"]);
        Sql::spawn(&mut c, "psql")
    }

    pub fn open(db: &DbRef) -> Sql {
        match db {
            DbRef::Sqlite(p) => Sql::sqlite(p),
            DbRef::Postgres { port, name } => Sql::pg(*port, name),
        }
    }

    fn spawn(c: &mut Command, what: &str) -> Sql {
        let mut child = c
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let stdin = child.stdin.take().expect("stdin");
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        Sql { child, stdin, out }
    }

    /// Runs `sql` (statements or one dot-command); its output lines.
    pub fn lines(&mut self, sql: &str) -> Vec<String> {
        writeln!(self.stdin, "{sql}\nSELECT '~end~';").expect("sql in");
        self.stdin.flush().expect("sql flush");
        let mut out = Vec::new();
        loop {
            let mut line = String::new();
            let n = self.out.read_line(&mut line).expect("sql out");
            assert!(n > 0, "the SQL session ended after {sql:?}");
            let line = line.trim_end().to_owned();
            if line == "~end~" {
                return out;
            }
            out.push(line);
        }
    }

    pub fn one(&mut self, sql: &str) -> String {
        self.lines(sql).into_iter().next().unwrap_or_default()
    }

    pub fn int(&mut self, sql: &str) -> i64 {
        let s = self.one(sql);
        s.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{sql}: {s:?} is not a number"))
    }
}

impl Drop for Sql {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn pg_bin(program: &str) -> PathBuf {
    let p = Path::new("/usr/lib/postgresql/15/bin").join(program);
    if p.exists() {
        p
    } else {
        PathBuf::from(program)
    }
}

/// Where a run's database is.
#[derive(Clone)]
pub enum DbRef {
    Sqlite(PathBuf),
    Postgres { port: u16, name: String },
}

impl DbRef {
    pub fn backend(&self) -> Backend {
        match self {
            DbRef::Sqlite(_) => Backend::Sqlite,
            DbRef::Postgres { .. } => Backend::Postgres,
        }
    }

    /// Bytes the database takes on disk (the SQLite file and its WAL).
    pub fn bytes(&self) -> u64 {
        match self {
            DbRef::Sqlite(p) => {
                let size = |p: PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
                size(p.clone()) + size(p.with_extension("db-wal"))
            }
            DbRef::Postgres { .. } => {
                Sql::open(self).int("SELECT pg_database_size(current_database());") as u64
            }
        }
    }
}

impl DbRef {
    /// Runs the SQL file `script` with `sqlite3 -bail` or `psql -v
    /// ON_ERROR_STOP=1` (its output discarded; stopping at the first
    /// error); seconds it took.
    pub fn run_script(&self, script: &Path) -> f64 {
        let mut c = match self {
            DbRef::Sqlite(p) => {
                let mut c = Command::new("sqlite3");
                c.arg("-bail").arg(p);
                c
            }
            DbRef::Postgres { port, name } => {
                let mut c = Command::new(pg_bin("psql"));
                c.args(["-h", "127.0.0.1", "-U", "sargs", "-p", &port.to_string()]);
                c.args(["-d", name, "-X", "-q", "-v", "ON_ERROR_STOP=1"]);
                c
            }
        };
        let t = Instant::now();
        let out = c
            .stdin(std::fs::File::open(script).expect("script"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("sqlite3 / psql");
        let secs = t.elapsed().as_secs_f64();
        assert!(
            out.status.success(),
            "{}: {}\n{}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        secs
    }
}

/// The bench's run of one database and one `hq.toml`.
pub struct Service {
    bin: PathBuf,
    pub dir: PathBuf,
    pub db: DbRef,
}

impl Service {
    /// A fresh database (a new SQLite file or PostgreSQL database `pg_name`)
    /// and `hq.toml` in `dir`, migrated by `check-config`.
    pub fn new(
        k: &Knobs,
        dir: &Path,
        backend: Backend,
        pg: &mut Option<Postgres>,
        pg_name: &str,
        broker: &str,
    ) -> Service {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).expect("dir");
        let (db, url) = match backend {
            Backend::Sqlite => (
                DbRef::Sqlite(dir.join("hq.db")),
                "sqlite://hq.db".to_owned(),
            ),
            Backend::Postgres => {
                let pg = pg.get_or_insert_with(|| {
                    eprintln!("== starting PostgreSQL");
                    Postgres::start()
                });
                let url = pg.create_db(pg_name);
                (
                    DbRef::Postgres {
                        port: pg.port,
                        name: pg_name.into(),
                    },
                    url,
                )
            }
        };
        std::fs::write(
            dir.join("hq.toml"),
            format!(
                "[broker]\nurl = \"{broker}\"\nclient_id = \"{HQ_CLIENT}\"\n\n[database]\nurl = \"{url}\"\n\n[api]\nlisten = \"\"\n"
            ),
        )
        .expect("hq.toml");
        let s = Service {
            bin: k.bin.clone(),
            dir: dir.to_owned(),
            db,
        };
        s.cli(&["check-config"]);
        s
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(args).arg("--config").arg(self.dir.join("hq.toml"));
        c.current_dir(&self.dir).env("SARGS_LOG", "warn");
        c
    }

    /// Enrols the bench's agent with its device key.
    pub fn enrol(&self, fleet: &crate::fleet::Fleet) {
        let key = fleet.key.public_key_b64();
        self.cli(&["agent", "add", crate::fleet::AGENT, "--device-key", &key]);
    }

    /// `sargs-hq ARGS --config hq.toml`: its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = self.command(args).output().unwrap_or_else(|e| {
            panic!(
                "{}: {e} (build it: cargo build --release -p sargs-hq)",
                self.bin.display()
            )
        });
        assert!(
            out.status.success(),
            "sargs-hq {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn run(&self) -> Running {
        let log = std::fs::File::create(self.dir.join("hq.log")).expect("log");
        let child = self
            .command(&["run"])
            .env("SARGS_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("sargs-hq run");
        Running {
            child,
            log: self.dir.join("hq.log"),
        }
    }

    pub fn report(&self) -> serde_json::Value {
        let out = self.cli(&["report", "--format", "json", "--to", "2100-01-01T00:00:00Z"]);
        serde_json::from_str(&out).expect("report json")
    }
}

pub struct Running {
    child: Child,
    log: PathBuf,
}

impl Running {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, as systemd stops it; it must exit cleanly (verified).
    pub fn stop(mut self) {
        // SAFETY: SIGTERM to our own child, not yet waited for.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let status = self.child.wait().expect("sargs-hq stops");
        crate::verify(status.success(), || {
            format!(
                "`sargs-hq run` stopped by SIGTERM: {status}; its log ends:\n{}",
                tail(&self.log(), 20)
            )
        });
    }

    /// Bytes it logged so far (to tell whether its log went silent).
    pub fn log_len(&self) -> u64 {
        std::fs::metadata(&self.log).map_or(0, |m| m.len())
    }

    /// Whether the process still runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM; whether it exits within `limit` (killed otherwise).
    pub fn stops_within(mut self, limit: Duration) -> bool {
        // SAFETY: SIGTERM to our own child, not yet waited for.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
