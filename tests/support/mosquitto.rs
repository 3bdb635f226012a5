//! A real Mosquitto broker on a free 127.0.0.1 port, plain or TLS with
//! client certificates made here (rcgen), stopped when dropped; and a small
//! MQTT client that records what arrives.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};

/// Certificates for a TLS broker and one client, as PEM files in a folder.
pub struct Pki {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Pki {
    pub fn make(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).expect("pki dir");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "sargs test CA");
        let ca =
            CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("ca");
        let leaf = |names: Vec<String>, cn: &str| {
            let key = KeyPair::generate().expect("key");
            let mut p = CertificateParams::new(names).expect("params");
            p.distinguished_name.push(rcgen::DnType::CommonName, cn);
            let cert = p.signed_by(&key, &ca).expect("signed");
            (cert.pem(), key.serialize_pem())
        };
        let (server_pem, server_key) = leaf(vec!["127.0.0.1".into(), "localhost".into()], "broker");
        let (client_pem, client_key) = leaf(vec!["gw-client".into()], "test-gw");
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).expect("pem");
            p
        };
        Pki {
            dir: dir.to_owned(),
            ca: write("ca.pem", &ca.pem()),
            server_cert: write("server.pem", &server_pem),
            server_key: write("server.key", &server_key),
            client_cert: write("client.pem", &client_pem),
            client_key: write("client.key", &client_key),
        }
    }
}

/// A running broker.
pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    conf: PathBuf,
    pub tls: bool,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl Broker {
    /// Starts Mosquitto in `dir` (plain, or TLS requiring a client
    /// certificate signed by `pki`'s CA).
    pub fn start(dir: &Path, pki: Option<&Pki>) -> Broker {
        Broker::start_conf(dir, pki, None, "allow_anonymous true\n")
    }

    /// Starts (or restarts) on a given port.
    pub fn start_on(dir: &Path, pki: Option<&Pki>, port: u16) -> Broker {
        Broker::start_conf(dir, pki, Some(port), "allow_anonymous true\n")
    }

    /// Starts with user names and passwords from `password_file` (made with
    /// `mosquitto_passwd`) and the access rules of `acl_file`; no anonymous
    /// clients.
    pub fn start_with_acl(dir: &Path, password_file: &Path, acl_file: &Path) -> Broker {
        let auth = format!(
            "allow_anonymous false\npassword_file {}\nacl_file {}\n",
            password_file.display(),
            acl_file.display()
        );
        Broker::start_conf(dir, None, None, &auth)
    }

    /// Starts on `port`, or on a free one: a port free when asked may be
    /// taken by another test process before mosquitto binds it, and then
    /// another one is tried.
    /// Anonymous, with extra `mosquitto.conf` lines.
    pub fn start_with_conf(dir: &Path, extra: &str) -> Broker {
        Broker::start_conf(dir, None, None, &format!("allow_anonymous true\n{extra}"))
    }

    fn start_conf(dir: &Path, pki: Option<&Pki>, port: Option<u16>, auth: &str) -> Broker {
        let mut last = String::new();
        for _ in 0..10 {
            match Broker::try_start(dir, pki, port.unwrap_or_else(free_port), auth) {
                Ok(b) => return b,
                Err(e) if port.is_none() => last = e,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("mosquitto found no free port: {last}");
    }

    fn try_start(dir: &Path, pki: Option<&Pki>, port: u16, auth: &str) -> Result<Broker, String> {
        let conf = dir.join(format!("mosquitto-{port}.conf"));
        let mut text = format!(
            "listener {port} 127.0.0.1\n{auth}persistence false\nlog_dest stderr\nset_tcp_nodelay true\nmax_connections -1\n"
        );
        // As root, mosquitto drops to its own user unless told to stay.
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            text += "user root\n";
        }
        if let Some(p) = pki {
            text += &format!(
                "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\nuse_identity_as_username true\n",
                p.ca.display(),
                p.server_cert.display(),
                p.server_key.display()
            );
        }
        std::fs::File::create(&conf)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .expect("mosquitto.conf");
        let log = std::fs::File::create(dir.join(format!("mosquitto-{port}.log"))).expect("log");
        let child = Command::new("/usr/sbin/mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("mosquitto (Debian package mosquitto; scripts/install-deps --test)");
        let mut b = Broker {
            child: Some(child),
            port,
            conf,
            tls: pki.is_some(),
        };
        // Listening once it says it runs (it exits if the port is taken),
        // and takes connections.
        let start = Instant::now();
        loop {
            if let Some(Ok(Some(status))) = b.child.as_mut().map(|c| c.try_wait()) {
                return Err(format!(
                    "mosquitto on port {port} exited ({status}):\n{}",
                    b.log()
                ));
            }
            if b.log().contains(" running")
                && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            {
                return Ok(b);
            }
            if start.elapsed() > Duration::from_secs(10) {
                return Err(format!("mosquitto did not listen on {port}:\n{}", b.log()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!(
            "{}://127.0.0.1:{}",
            if self.tls { "mqtts" } else { "mqtt" },
            self.port
        )
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn conf(&self) -> &Path {
        &self.conf
    }

    /// What the broker logged so far (one line per connect names the
    /// client and its protocol: `as sargs-gw (p5, …)` is MQTT 5, `p2` 3.1.1).
    pub fn log(&self) -> String {
        let log = self
            .conf
            .with_file_name(format!("mosquitto-{}.log", self.port));
        std::fs::read_to_string(log).unwrap_or_default()
    }
}

/// A broker that speaks MQTT 3.1.1 only, as such brokers answer an MQTT 5
/// client: a real Mosquitto behind a gate that refuses every MQTT 5 CONNECT
/// the way MQTT 3.1.1 §3.2.2.3 prescribes (CONNACK return code 0x01,
/// "unacceptable protocol version", then close) and passes every other
/// connection through untouched. It records the protocol level of each
/// CONNECT it saw.
pub struct Gate {
    pub port: u16,
    pub levels: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Gate {
    pub fn start(upstream: u16) -> Gate {
        use std::io::Read;
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").expect("gate listener");
        let port = listener.local_addr().expect("gate port").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let levels = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (seen, stopped) = (levels.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stopped.load(Ordering::SeqCst) {
                let mut client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                let _ = client.set_nonblocking(false);
                // The CONNECT: fixed header, remaining length, "MQTT", level.
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                let level = loop {
                    if client.read_exact(&mut byte).is_err() {
                        break None;
                    }
                    head.push(byte[0]);
                    // 0x10, length (1..4 bytes, high bit = more), 0x00 0x04 "MQTT", level
                    let len_bytes = head[1..].iter().take_while(|b| **b & 0x80 != 0).count() + 1;
                    if head.len() == 1 + len_bytes + 7 {
                        break head.last().copied();
                    }
                };
                let Some(level) = level else { continue };
                seen.lock().expect("levels").push(level);
                if level == 5 {
                    let _ = client.write_all(&[0x20, 0x02, 0x00, 0x01]);
                    continue; // dropped: closed
                }
                let Ok(mut up) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                if up.write_all(&head).is_err() {
                    continue;
                }
                let (Ok(mut c2), Ok(mut u2)) = (client.try_clone(), up.try_clone()) else {
                    continue;
                };
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c2, &mut u2);
                    let _ = u2.shutdown(std::net::Shutdown::Both);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut up, &mut client);
                    let _ = client.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        Gate { port, levels, stop }
    }

    pub fn levels(&self) -> Vec<u8> {
        self.levels.lock().expect("levels").clone()
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A test-side MQTT client: subscribes, publishes, and keeps what arrives.
pub struct Watcher {
    pub client: Client,
    rx: mpsc::Receiver<(String, Vec<u8>, bool)>,
    pub seen: Vec<(String, Vec<u8>, bool)>,
    /// The broker has answered the connection (CONNACK: accepted or refused).
    answered: Arc<AtomicBool>,
    /// The connection's thread has ended (after `disconnect`).
    ended: Arc<AtomicBool>,
}

impl Watcher {
    pub fn connect(port: u16, id: &str, pki: Option<&Pki>, topics: &[&str]) -> Watcher {
        Watcher::connect_opts(port, id, pki, None, true, topics)
    }

    /// Connects with a user name and password, with a clean or a persistent
    /// session.
    pub fn connect_as(
        port: u16,
        id: &str,
        (user, password): (&str, &str),
        clean_session: bool,
        topics: &[&str],
    ) -> Watcher {
        Watcher::connect_opts(
            port,
            id,
            None,
            Some((user, password)),
            clean_session,
            topics,
        )
    }

    fn connect_opts(
        port: u16,
        id: &str,
        pki: Option<&Pki>,
        credentials: Option<(&str, &str)>,
        clean_session: bool,
        topics: &[&str],
    ) -> Watcher {
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(5))
            .set_clean_session(clean_session)
            // Tests publish oversized messages on purpose.
            .set_max_packet_size(8 << 20, 8 << 20);
        if let Some((user, password)) = credentials {
            opts.set_credentials(user, password);
        }
        if let Some(p) = pki {
            let read = |p: &Path| std::fs::read(p).expect("pem");
            opts.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
                ca: read(&p.ca),
                alpn: None,
                client_auth: Some((read(&p.client_cert), read(&p.client_key))),
            }));
        }
        let (client, mut conn) = Client::new(opts, 64);
        let (tx, rx) = mpsc::channel();
        let resubscribe = client.clone();
        let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        let answered = Arc::new(AtomicBool::new(false));
        let ended = Arc::new(AtomicBool::new(false));
        let (connack, done) = (answered.clone(), ended.clone());
        std::thread::spawn(move || {
            for ev in conn.iter() {
                match ev {
                    // Subscribe at every (re)connect: a clean session forgets them.
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        for t in &topics {
                            let _ = resubscribe.try_subscribe(t.as_str(), QoS::AtLeastOnce);
                        }
                        connack.store(true, Ordering::SeqCst);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if tx
                            .send((p.topic.clone(), p.payload.to_vec(), p.retain))
                            .is_err()
                        {
                            break;
                        }
                    }
                    // disconnect() was called: no reconnecting.
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
                    Ok(_) => {}
                    Err(e) => {
                        if matches!(e, rumqttc::ConnectionError::ConnectionRefused(_)) {
                            connack.store(true, Ordering::SeqCst);
                        }
                        // Reconnects after a pause (the broker may be restarting).
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            }
            done.store(true, Ordering::SeqCst);
        });
        Watcher {
            client,
            rx,
            seen: Vec::new(),
            answered,
            ended,
        }
    }

    /// Waits until the broker has answered the connection (CONNACK),
    /// accepting or refusing it.
    pub fn wait_answered(&self, limit: Duration) -> bool {
        wait_for(limit, || self.answered.load(Ordering::SeqCst))
    }

    /// Waits until a message on a topic ending in `suffix` satisfies `pred`;
    /// returns its payload as JSON.
    pub fn wait(
        &mut self,
        suffix: &str,
        limit: Duration,
        mut pred: impl FnMut(&serde_json::Value) -> bool,
    ) -> Option<serde_json::Value> {
        let json = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).ok();
        for (t, p, _) in &self.seen {
            if t.ends_with(suffix) {
                if let Some(v) = json(p).filter(|v| pred(v)) {
                    return Some(v);
                }
            }
        }
        let end = Instant::now() + limit;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            let Ok(m) = self.rx.recv_timeout(left) else {
                break;
            };
            self.seen.push(m.clone());
            if m.0.ends_with(suffix) {
                if let Some(v) = json(&m.1).filter(|v| pred(v)) {
                    return Some(v);
                }
            }
        }
        None
    }

    /// Disconnects for good (the connection is not re-established): returns
    /// once the DISCONNECT has gone out and the connection is closed.
    pub fn disconnect(&self) {
        let _ = self.client.disconnect();
        assert!(
            wait_for(Duration::from_secs(10), || self
                .ended
                .load(Ordering::SeqCst)),
            "the MQTT client did not disconnect"
        );
    }

    pub fn publish(&self, topic: &str, payload: Vec<u8>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .expect("publish");
    }
}

/// Polls `cond` every 10 ms for up to `limit`.
fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}
