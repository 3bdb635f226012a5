//! A real PostgreSQL server (Debian 12's `postgresql-15`) on a free
//! 127.0.0.1 port, in a fresh temporary directory, stopped and removed when
//! dropped.
//!
//! `initdb` makes a cluster with the superuser `sargs`, trust authentication
//! and UTF8; `postgres` listens on 127.0.0.1 only, its Unix socket lives in
//! the temporary directory, and it logs to `postgres.log` there (quoted in
//! every panic). The binaries come from `/usr/lib/postgresql/<version>/bin`,
//! 15 preferred; without them the test fails telling to run
//! `scripts/install-deps --test`.
//!
//! PostgreSQL refuses to run as root, and the tests run as root in CI: then
//! the temporary directory is given to `nobody` and `initdb` and `postgres`
//! run as `nobody` through `setpriv` (which execs, so the child process is
//! the postmaster itself and `kill` reaches it). The parent of the temporary
//! directory (`$TMPDIR`, or `/tmp`) must be searchable by `nobody`. The
//! clients (`createdb`, `psql`) run as the caller and connect over TCP.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::mosquitto::free_port;

/// A running PostgreSQL server.
pub struct Postgres {
    child: Option<Child>,
    pub port: u16,
    bin: PathBuf,
    /// The uid and gid the server runs as when the tests run as root.
    user: Option<(u32, u32)>,
    dir: tempfile::TempDir,
}

/// How long the server may take to accept connections.
const READY: Duration = Duration::from_secs(30);

impl Postgres {
    /// Starts a new server in a fresh directory under the system's temporary
    /// directory.
    /// Starts a new server in the build's temporary folder, not /tmp: the
    /// kill -9 test asserts that nothing under /tmp looks like plaintext
    /// video, and a database's files hold whatever other tests stored.
    pub fn start() -> Postgres {
        let parent = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("postgres");
        std::fs::create_dir_all(&parent).expect("postgres parent folder");
        Postgres::start_in(&parent)
    }

    /// Starts a new server in a fresh directory under `parent`.
    pub fn start_in(parent: &Path) -> Postgres {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("sargs-pg-")
            .tempdir_in(parent)
            .expect("temporary directory for PostgreSQL");
        // SAFETY: geteuid has no preconditions.
        let user = (unsafe { libc::geteuid() } == 0).then(|| {
            let id = |flag: &str| -> u32 {
                let out = Command::new("id").args([flag, "nobody"]).output();
                let out = out.expect("id nobody");
                String::from_utf8_lossy(&out.stdout)
                    .trim()
                    .parse()
                    .expect("uid/gid of nobody")
            };
            let ids = (id("-u"), id("-g"));
            std::os::unix::fs::chown(dir.path(), Some(ids.0), Some(ids.1))
                .expect("chown the PostgreSQL directory to nobody");
            ids
        });
        let mut pg = Postgres {
            child: None,
            port: 0,
            bin,
            user,
            dir,
        };
        let data = pg.data();
        let out = pg
            .as_server_user("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "sargs", "--auth=trust", "-E", "UTF8", "--locale=C"])
            .args(["--no-sync", "--no-instructions"])
            .output()
            .expect("initdb");
        check(&out, "initdb", "");
        let mut last = String::new();
        for _ in 0..10 {
            // A port free when asked may be taken by another test process
            // before postgres binds it: then another one is tried.
            match pg.try_start(free_port()) {
                Ok(()) => return pg,
                Err(e) if e.contains("already in use") => last = e,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("PostgreSQL found no free port: {last}");
    }

    /// Kills the server if it runs, and starts it again on its port with its
    /// data (recovering as after a crash).
    pub fn restart(&mut self) {
        self.kill();
        // Backends of a killed postmaster exit soon after it; until then the
        // new postmaster refuses the data directory.
        let end = Instant::now() + READY;
        loop {
            match self.try_start(self.port) {
                Ok(()) => return,
                Err(e) if Instant::now() > end => panic!("{e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// The URL of the database `postgres`.
    pub fn url(&self) -> String {
        self.url_of("postgres")
    }

    /// The URL of database `db`.
    pub fn url_of(&self, db: &str) -> String {
        format!("postgres://sargs@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates an empty database `name`; returns its URL.
    pub fn create_db(&self, name: &str) -> String {
        let out = self.client("createdb").arg(name).output();
        let out = out.expect("createdb");
        check(&out, &format!("createdb {name}"), &self.log());
        self.url_of(name)
    }

    /// Runs `sql` in database `db` with `psql` (stopping at the first
    /// error); returns what it printed, unaligned and without headers.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let mut psql = self.client("psql");
        psql.args("-X -q -A -t -v ON_ERROR_STOP=1".split(' '));
        let out = psql.args(["-d", db, "-c", sql]).output().expect("psql");
        check(&out, &format!("psql -d {db} -c {sql:?}"), &self.log());
        String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
    }

    /// Kills the postmaster (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The directory holding the data directory, the socket and the log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir().join("postgres.log")).unwrap_or_default()
    }

    fn data(&self) -> PathBuf {
        self.dir().join("data")
    }

    fn try_start(&mut self, port: u16) -> Result<(), String> {
        let log_path = self.dir().join("postgres.log");
        let mut log = std::fs::OpenOptions::new();
        let log = log.create(true).append(true).open(&log_path);
        let log = log.expect("postgres.log");
        let from = log.metadata().map(|m| m.len() as usize).unwrap_or(0);
        let mut cmd = self.as_server_user("postgres");
        cmd.arg("-D").arg(self.data()).arg("-k").arg(self.dir());
        cmd.args("-c listen_addresses=127.0.0.1 -c fsync=on -p".split(' '));
        let child = cmd.arg(port.to_string()).stdout(Stdio::null()).stderr(log);
        let child = child.spawn().expect("postgres");
        self.child = Some(child);
        self.port = port;
        let new_log = || {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            text.get(from..).unwrap_or_default().to_owned()
        };
        let start = Instant::now();
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return Err(format!(
                    "postgres on port {port} exited ({status}):\n{}",
                    new_log()
                ));
            }
            // Ready once it says so (after binding its port) and it answers.
            if new_log().contains("ready to accept connections") {
                let mut isready = self.client("pg_isready");
                let ready = isready.args(["-q", "-d", "postgres"]).status();
                if ready.is_ok_and(|s| s.success()) {
                    return Ok(());
                }
            }
            if start.elapsed() > READY {
                self.kill();
                return Err(format!(
                    "postgres did not accept connections on {port}:\n{}",
                    new_log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A server program, run as `nobody` when the tests run as root.
    fn as_server_user(&self, program: &str) -> Command {
        let mut cmd = match self.user {
            Some((uid, gid)) => {
                let mut c = Command::new("setpriv");
                c.args([format!("--reuid={uid}"), format!("--regid={gid}")]);
                c.args(["--clear-groups", "--"]).arg(self.bin.join(program));
                c
            }
            None => Command::new(self.bin.join(program)),
        };
        // A working directory it may enter; English log lines, waited for.
        cmd.current_dir(self.dir())
            .env("LC_ALL", "C")
            .stdin(Stdio::null());
        cmd
    }

    /// A client program connecting over TCP as `sargs`.
    fn client(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.args(["-h", "127.0.0.1", "-U", "sargs", "-p"]);
        cmd.arg(self.port.to_string()).stdin(Stdio::null());
        cmd
    }
}

impl Drop for Postgres {
    /// Immediate shutdown (SIGQUIT: the postmaster ends its backends, then
    /// itself), SIGKILL if that takes too long; the directory goes after.
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            // SAFETY: kill has no memory preconditions; the pid is our
            // child's, not yet waited for.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGQUIT) };
        }
        let end = Instant::now() + Duration::from_secs(10);
        while let Some(Ok(None)) = self.child.as_mut().map(|c| c.try_wait()) {
            if Instant::now() > end {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
    }
}

/// `/usr/lib/postgresql/15/bin`, or the newest version installed.
fn bin_dir() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("postgres").exists() && bin.join("psql").exists())
        .collect();
    found.sort_by_key(|(v, _)| (*v == 15, *v));
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "no PostgreSQL server in {}/*/bin (Debian packages postgresql-15 and \
             postgresql-client-15): run scripts/install-deps --test",
            root.display()
        ),
    }
}

/// Panics with what `what` printed, and the server's log, if it failed.
fn check(out: &Output, what: &str, log: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}\n--- server log ---\n{log}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
