//! The upload bandwidth cap (`[offload] max_kib_s`) and the stop.
//!
//! Every request body is read through [`Paced`]: with a cap, each read hands
//! the HTTP client at most a tenth of a second's worth of bytes, after
//! sleeping until the bytes sent so far in this request fit the cap counted
//! from the request's start ([`ahead`]). So within a request the link never
//! carries more than the cap plus one slice, and the time between requests
//! (read-backs, the index) only lowers the average. Under a cap, a stop of
//! the agent ends a read with an error within one slice, so a slow capped
//! upload never holds up a shutdown; the object is then not in the store (an
//! S3 object appears whole or not at all) and the record stays queued, as
//! after a crash. Without a cap the upload under way goes at the link's
//! speed and is finished first, as before.

use std::io::{self, Read};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// Longest sleep between two looks at the stop.
const STEP: Duration = Duration::from_millis(100);
/// Smallest slice handed over per read, with a cap.
const MIN_SLICE: u64 = 1024;

/// How long a request that has sent `sent` bytes after `elapsed` must wait
/// before sending more, to keep to `rate` bytes per second.
pub fn ahead(sent: u64, rate: u64, elapsed: Duration) -> Duration {
    let due = Duration::from_secs_f64(sent as f64 / rate.max(1) as f64);
    due.saturating_sub(elapsed)
}

/// A request body read at no more than `rate` bytes per second (if given),
/// that then fails once `cancel` is cancelled.
pub struct Paced<'c, R> {
    inner: R,
    rate: Option<u64>,
    cancel: Option<&'c CancellationToken>,
    start: Instant,
    sent: u64,
}

impl<'c, R: Read> Paced<'c, R> {
    pub fn new(inner: R, rate: Option<u64>, cancel: Option<&'c CancellationToken>) -> Self {
        Paced {
            inner,
            rate,
            cancel,
            start: Instant::now(),
            sent: 0,
        }
    }

    fn stopping(&self) -> io::Result<()> {
        if self.rate.is_some() && self.cancel.is_some_and(CancellationToken::is_cancelled) {
            Err(io::Error::other("the agent is stopping"))
        } else {
            Ok(())
        }
    }
}

impl<R: Read> Read for Paced<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stopping()?;
        let mut len = buf.len();
        if let Some(rate) = self.rate {
            loop {
                let wait = ahead(self.sent, rate, self.start.elapsed());
                if wait.is_zero() {
                    break;
                }
                std::thread::sleep(wait.min(STEP));
                self.stopping()?;
            }
            let slice = usize::try_from((rate / 10).max(MIN_SLICE)).unwrap_or(usize::MAX);
            len = len.min(slice);
        }
        let n = self.inner.read(&mut buf[..len])?;
        self.sent += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_waits_until_what_it_sent_fits_the_cap() {
        let s = Duration::from_secs;
        // 1 MiB/s: 3 MiB sent after 2 s is 1 s ahead; after 3 s, on time.
        assert_eq!(ahead(3 << 20, 1 << 20, s(2)), s(1));
        assert_eq!(ahead(3 << 20, 1 << 20, s(3)), Duration::ZERO);
        assert_eq!(ahead(1 << 20, 1 << 20, s(5)), Duration::ZERO);
        assert_eq!(ahead(0, 1 << 20, Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn reads_are_sliced_under_a_cap_and_end_at_a_stop() {
        let data = vec![7u8; 64 << 10];
        let mut buf = vec![0u8; 64 << 10];
        // No cap: the reader's own sizes, and a stop waits for the end.
        let cancel = CancellationToken::new();
        cancel.cancel();
        let mut free = Paced::new(&data[..], None, Some(&cancel));
        assert_eq!(free.read(&mut buf).expect("read"), 64 << 10);
        // 80 KiB/s: slices of 8 KiB.
        let mut capped = Paced::new(&data[..], Some(80 << 10), None);
        assert_eq!(capped.read(&mut buf).expect("read"), 8 << 10);
        let cancel = CancellationToken::new();
        let mut stopped = Paced::new(&data[..], Some(80 << 10), Some(&cancel));
        assert_eq!(stopped.read(&mut buf).expect("read"), 8 << 10);
        cancel.cancel();
        let err = stopped.read(&mut buf).expect_err("stopped");
        assert!(err.to_string().contains("stopping"), "{err}");
    }
}
