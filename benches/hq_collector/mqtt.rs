//! Publishing the agent's events, and watching the database for them.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use crate::fleet::{AGENT, TOPIC};
use crate::servers::{DbRef, Sql};

/// When each message was handed to the client: monotonic and wall clock (ns).
pub struct Published {
    pub at: Vec<Instant>,
    pub unix_ns: Vec<i128>,
    /// From the first publish to the last PUBACK.
    pub elapsed: Duration,
}

fn unix_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as i128
}

/// Set as the gate's count of commits: the publisher stops publishing.
pub const ABANDON: i64 = i64::MIN;

/// Publishes `payloads` QoS 1 on [`TOPIC`], `inflight` unacknowledged at
/// most, as fast as the broker takes them or at `rate` per second, and with
/// a `gate` (count, window) message `i` only once `i <= count + window`;
/// returns once every one is acknowledged by the broker, or at once when
/// the count is set to [`ABANDON`].
pub fn publish(
    port: u16,
    payloads: Vec<Vec<u8>>,
    inflight: u16,
    rate: Option<usize>,
    gate: Option<(Arc<AtomicI64>, i64)>,
) -> Published {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let n = payloads.len();
        let mut o = MqttOptions::new(
            format!("bench-pub-{}", std::process::id()),
            "127.0.0.1",
            port,
        );
        o.set_keep_alive(Duration::from_secs(30))
            .set_inflight(inflight)
            .set_max_packet_size(16 << 20, 16 << 20);
        let (client, mut eventloop) = AsyncClient::new(o, 1024);
        let mut net = rumqttc::NetworkOptions::new();
        net.set_tcp_nodelay(true);
        eventloop.set_network_options(net);
        let acked = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(tokio::sync::Notify::new());
        let (a, d) = (acked.clone(), done.clone());
        let poller = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        if a.fetch_add(1, Ordering::SeqCst) + 1 == n {
                            d.notify_one();
                        }
                    }
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
                    Ok(_) => {}
                    Err(e) => panic!("publisher: {e}"),
                }
            }
        });
        let mut at = Vec::with_capacity(n);
        let mut unix = Vec::with_capacity(n);
        let t0 = Instant::now();
        let mut abandoned = false;
        let tick = rate.map(|r| Duration::from_secs_f64(1.0 / r as f64));
        for (i, p) in payloads.into_iter().enumerate() {
            if let Some(tick) = tick {
                tokio::time::sleep_until((t0 + tick * i as u32).into()).await;
            }
            if let Some((committed, window)) = &gate {
                loop {
                    let c = committed.load(Ordering::SeqCst);
                    if c == ABANDON {
                        abandoned = true;
                        break;
                    }
                    if i as i64 <= c + window {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                if abandoned {
                    break;
                }
            }
            at.push(Instant::now());
            unix.push(unix_ns());
            client
                .publish(TOPIC, QoS::AtLeastOnce, false, p)
                .await
                .expect("publish");
        }
        if !abandoned && acked.load(Ordering::SeqCst) < n {
            tokio::time::timeout(Duration::from_secs(600), done.notified())
                .await
                .expect("the broker acknowledged every message");
        }
        let elapsed = t0.elapsed();
        let _ = client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), poller).await;
        Published {
            at,
            unix_ns: unix,
            elapsed,
        }
    })
}

/// The highest message index committed (messages are committed in the
/// order they were published): per camera, the highest sequence kept,
/// through the primary key.
pub fn committed_sql(cameras: usize) -> String {
    let values: Vec<String> = (0..cameras).map(|c| format!("({c})")).collect();
    format!(
        "SELECT COALESCE(MAX((m - 1) * {cameras} + k), -1) FROM (SELECT v.column1 AS k, \
         (SELECT MAX(sequence) FROM records r WHERE r.agent = '{AGENT}' AND r.camera = 'cam-' || v.column1) AS m \
         FROM (VALUES {}) AS v) AS t WHERE m IS NOT NULL;",
        values.join(",")
    )
}

/// A thread polling the database every `every`: when the highest message
/// index committed changed, until `stop`.
pub fn poll_commits(
    db: &DbRef,
    cameras: usize,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<(Instant, i64)>> {
    let (db, probe) = (db.clone(), committed_sql(cameras));
    std::thread::spawn(move || {
        let mut sql = Sql::open(&db);
        let mut seen: Vec<(Instant, i64)> = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            let h = sql.int(&probe);
            let t = Instant::now();
            if seen.last().is_none_or(|(_, last)| *last != h) {
                seen.push((t, h));
            }
            std::thread::sleep(every);
        }
        seen
    })
}

/// Milliseconds from each publish (from the `skip`th on) to the first poll
/// that saw it committed, up to the first one not seen committed.
pub fn commit_latencies(published: &[Instant], seen: &[(Instant, i64)], skip: usize) -> Vec<f64> {
    let mut out = Vec::new();
    let mut j = 0;
    for (i, at) in published.iter().enumerate() {
        while j < seen.len() && seen[j].1 < i as i64 {
            j += 1;
        }
        let Some((t, _)) = seen.get(j) else {
            break; // not seen committed
        };
        if i >= skip {
            out.push((*t - *at).as_secs_f64() * 1000.0);
        }
    }
    out
}
