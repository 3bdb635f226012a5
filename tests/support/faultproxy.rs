//! A fault proxy on a free 127.0.0.1 port in front of a broker: every
//! connection it takes is forwarded byte for byte to the broker's port
//! until a fault is injected.
//!
//! Faults: **cut** (every open connection closed at once, new ones closed
//! as soon as taken, until [`Proxy::resume`]); **stall** (the next read in
//! one direction has its first byte forwarded and the rest held for a
//! while, the TCP connection kept open: a packet stopped mid-way);
//! **loss** (each chunk, with a given probability, held back for a
//! retransmission timeout of 200 ms doubling at each further loss in a row,
//! as TCP delivers a stream over a link that drops that share of its
//! packets — an emulation at the stream's level, for kernels without
//! `sch_netem`). Invariant: bytes are never reordered, altered or dropped
//! while a connection lives; a fault delays or closes, nothing else. Each
//! fault that took effect is counted, so a test can tell it happened.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Which way bytes go through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// From the client to the broker.
    Up,
    /// From the broker to the client.
    Down,
}

#[derive(Default)]
struct State {
    stop: AtomicBool,
    cut: AtomicBool,
    /// An armed stall: the next read in that direction is held this long.
    stall: Mutex<Option<(Dir, Duration)>>,
    /// Emulated loss: (probability, generator state).
    loss: Mutex<Option<(f64, u64)>>,
    /// Open connections (number, client side, broker side), shut down at a
    /// cut; a connection's pumps take it out when it ends.
    open: Mutex<Vec<(usize, TcpStream, TcpStream)>>,
    /// Connections taken (and forwarded).
    connections: AtomicUsize,
    /// Connections closed by a cut.
    cut_closed: AtomicUsize,
    /// Connections closed as soon as taken, during a cut.
    refused: AtomicUsize,
    /// Stalls that held bytes mid-packet.
    stalls: AtomicUsize,
    /// Chunks held back by emulated loss.
    losses: AtomicUsize,
}

/// A running proxy; stops (closing every connection) when dropped.
pub struct Proxy {
    pub port: u16,
    state: Arc<State>,
}

impl Proxy {
    /// A proxy to the broker on `upstream` (127.0.0.1).
    pub fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy listener");
        let port = listener.local_addr().expect("proxy port").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let state = Arc::new(State::default());
        let st = state.clone();
        std::thread::spawn(move || {
            while !st.stop.load(Ordering::SeqCst) {
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                if st.cut.load(Ordering::SeqCst) {
                    st.refused.fetch_add(1, Ordering::SeqCst);
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let _ = client.set_nonblocking(false);
                // The broker down (restarting): the client sees its
                // connection closed, as it would see it refused.
                let Ok(up) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let _ = (client.set_nodelay(true), up.set_nodelay(true));
                let (Ok(c2), Ok(u2), Ok(c3), Ok(u3)) = (
                    client.try_clone(),
                    up.try_clone(),
                    client.try_clone(),
                    up.try_clone(),
                ) else {
                    continue;
                };
                let n = st.connections.fetch_add(1, Ordering::SeqCst);
                {
                    // Under the lock a cut takes: a connection taken while
                    // a cut began is closed here, not forwarded.
                    let mut open = st.open.lock().expect("open");
                    if st.cut.load(Ordering::SeqCst) {
                        st.refused.fetch_add(1, Ordering::SeqCst);
                        let _ = (client.shutdown(Shutdown::Both), up.shutdown(Shutdown::Both));
                        continue;
                    }
                    open.push((n, c3, u3));
                }
                let (a, b) = (st.clone(), st.clone());
                std::thread::spawn(move || pump(n, client, u2, Dir::Up, &a));
                std::thread::spawn(move || pump(n, up, c2, Dir::Down, &b));
            }
        });
        Proxy { port, state }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Cuts the link: closes every connection, and each new one as it comes.
    pub fn cut(&self) {
        let open = {
            let mut open = self.state.open.lock().expect("open");
            self.state.cut.store(true, Ordering::SeqCst);
            std::mem::take(&mut *open)
        };
        for (_, client, up) in open {
            let _ = up.shutdown(Shutdown::Both);
            if client.shutdown(Shutdown::Both).is_ok() {
                self.state.cut_closed.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    /// Ends a cut: connections are forwarded again.
    pub fn resume(&self) {
        self.state.cut.store(false, Ordering::SeqCst);
    }

    /// Arms a stall: the next read going `dir` forwards one byte and holds
    /// the rest for `hold`.
    pub fn stall(&self, dir: Dir, hold: Duration) {
        *self.state.stall.lock().expect("stall") = Some((dir, hold));
    }

    /// Emulated loss of `share` (0..1) of the chunks, from `seed`; `None`
    /// ends it.
    pub fn loss(&self, share: Option<f64>, seed: u64) {
        *self.state.loss.lock().expect("loss") = share.map(|s| (s, seed | 1));
    }

    /// (connections taken, connections closed by cuts or refused during
    /// them, stalls that held bytes, chunks held back by loss).
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let s = &self.state;
        (
            s.connections.load(Ordering::SeqCst),
            s.cut_closed.load(Ordering::SeqCst) + s.refused.load(Ordering::SeqCst),
            s.stalls.load(Ordering::SeqCst),
            s.losses.load(Ordering::SeqCst),
        )
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        self.cut();
    }
}

/// Sleeps `d`, or less if the proxy stops or cuts.
fn hold(st: &State, d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end && !st.stop.load(Ordering::SeqCst) && !st.cut.load(Ordering::SeqCst)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How long emulated loss holds this chunk back (zero if it is not lost).
fn loss_delay(st: &State) -> Duration {
    let mut guard = st.loss.lock().expect("loss");
    let Some((share, seed)) = guard.as_mut() else {
        return Duration::ZERO;
    };
    let mut delay = Duration::ZERO;
    let mut rto = Duration::from_millis(200);
    // xorshift64: each loss in a row doubles the timeout (TCP's back-off).
    loop {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        if (*seed >> 11) as f64 / (1u64 << 53) as f64 >= *share || rto > Duration::from_secs(13) {
            return delay;
        }
        st.losses.fetch_add(1, Ordering::SeqCst);
        delay += rto;
        rto *= 2;
    }
}

/// Copies `from` to `to` with the faults of `dir`, until either end closes.
fn pump(n: usize, mut from: TcpStream, mut to: TcpStream, dir: Dir, st: &State) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if st.stop.load(Ordering::SeqCst) || st.cut.load(Ordering::SeqCst) {
            break;
        }
        let stall = {
            let mut armed = st.stall.lock().expect("stall");
            match *armed {
                Some((d, h)) if d == dir && n >= 2 => {
                    *armed = None;
                    Some(h)
                }
                _ => None,
            }
        };
        let mut from_byte = 0;
        if let Some(h) = stall {
            st.stalls.fetch_add(1, Ordering::SeqCst);
            if to.write_all(&buf[..1]).is_err() {
                break;
            }
            hold(st, h);
            from_byte = 1;
        }
        hold(st, loss_delay(st));
        if st.cut.load(Ordering::SeqCst) || to.write_all(&buf[from_byte..n]).is_err() {
            break;
        }
    }
    st.open.lock().expect("open").retain(|(m, _, _)| *m != n);
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on a free 127.0.0.1 port (for the test's lifetime).
    fn echo() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("echo listener");
        let port = listener.local_addr().expect("echo port").port();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let Ok(mut back) = conn.try_clone() else {
                        return;
                    };
                    let mut conn = conn;
                    let _ = std::io::copy(&mut conn, &mut back);
                });
            }
        });
        port
    }

    fn connect(p: &Proxy) -> TcpStream {
        let c = TcpStream::connect(("127.0.0.1", p.port)).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        c
    }

    fn echoed(c: &mut TcpStream, bytes: &[u8]) -> Vec<u8> {
        c.write_all(bytes).expect("write");
        let mut back = vec![0u8; bytes.len()];
        c.read_exact(&mut back).expect("echo");
        back
    }

    /// Read until the proxy closes the connection.
    fn closed(c: &mut TcpStream) -> bool {
        let mut b = [0u8; 64];
        loop {
            match c.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) => return e.kind() != std::io::ErrorKind::WouldBlock,
            }
        }
    }

    #[test]
    fn the_proxy_stalls_mid_packet_delays_for_loss_and_cuts_without_altering_a_byte() {
        let p = Proxy::start(echo());
        let mut c = connect(&p);
        assert_eq!(echoed(&mut c, b"hello"), b"hello");
        // A stall: the first byte goes through, the rest comes after.
        p.stall(Dir::Up, Duration::from_millis(300));
        c.write_all(b"world!").expect("write");
        let mut first = [0u8; 1];
        c.read_exact(&mut first).expect("first byte");
        assert_eq!(&first, b"w");
        assert_eq!(p.counts().2, 1, "the stall held bytes");
        let mut rest = [0u8; 5];
        c.read_exact(&mut rest).expect("the rest");
        assert_eq!(&rest, b"orld!");
        // Loss: chunks held back, every byte delivered in order.
        p.loss(Some(0.5), 7);
        for i in 0..10u8 {
            assert_eq!(echoed(&mut c, &[i; 100]), vec![i; 100]);
        }
        p.loss(None, 0);
        assert!(p.counts().3 > 0, "some chunks were held back");
        // A cut: the open connection closed, a new one closed as taken…
        p.cut();
        assert!(closed(&mut c), "the open connection is closed");
        let mut during = connect(&p);
        assert!(closed(&mut during), "a new one is closed");
        assert_eq!(p.counts().1, 2);
        // …until the link is back.
        p.resume();
        let mut after = connect(&p);
        assert_eq!(echoed(&mut after, b"back"), b"back");
    }
}
