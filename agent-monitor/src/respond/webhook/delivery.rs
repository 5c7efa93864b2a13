//! Delivery: a worker thread sends the outbox, oldest first, signed, and retries with bounded
//! exponential backoff and jitter until the endpoint answers 2xx (delete) or a 4xx other than
//! 408/429 (move to `dead/`). Everything else (connection refused, timeouts, 408, 429, 5xx, 3xx)
//! is retried, the same entry first, so that versions of a ticket arrive in order.
//!
//! The worker is a plain thread because the HTTP client (ureq) blocks: it never holds up the
//! tokio runtime that runs the pipeline.

use std::io::Read as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use super::error::WebhookError;
use super::outbox::{DeadRecord, Envelope, Outbox};
use super::sign::{HEADER_IDEMPOTENCY, HEADER_SIGNATURE, HEADER_TIMESTAMP, SigningKey, unix_secs};
use super::ticket::rfc3339;

/// At most this much of a refused response's body is kept in `dead/`.
const MAX_RESPONSE: u64 = 4096;

/// Exponential backoff with jitter: attempt n waits about `initial * 2^n`, at most `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
        }
    }
}

impl Backoff {
    /// The wait before retry number `attempt` (0 for the first retry): uniformly in
    /// `[d/2, d]` with `d = min(max, initial * 2^attempt)`, so that many monitors whose
    /// endpoint came back do not all retry at once.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX);
        let d = self.initial.saturating_mul(factor).min(self.max);
        let half = d / 2;
        let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(fastrand::u64(0..=nanos))
    }
}

/// Counters for metrics (monotonic since start).
#[derive(Debug, Default)]
pub struct DeliveryCounters {
    pub delivered: AtomicU64,
    pub retries: AtomicU64,
    pub dead: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl DeliveryCounters {
    /// The latest delivery error, cleared by the next success.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_error(&self, e: Option<String>) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = e;
    }
}

/// Wakes the worker (new entry) or stops it.
#[derive(Debug, Default)]
pub(crate) struct Signal {
    state: Mutex<(bool, u64)>,
    cv: Condvar,
}

impl Signal {
    pub(crate) fn wake(&self) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.1 = s.1.wrapping_add(1);
        self.cv.notify_all();
    }

    /// Clear a previous stop, for a new worker.
    pub(crate) fn rearm(&self) {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).0 = false;
    }

    pub(crate) fn stop(&self) {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).0 = true;
        self.cv.notify_all();
    }

    fn stopped(&self) -> bool {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).0
    }

    /// Wait up to `timeout`, or less when stopped or (if `wakeable`) woken. True when stopped.
    fn wait(&self, timeout: Duration, wakeable: bool) -> bool {
        let guard = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let gen0 = guard.1;
        let (guard, _) = self
            .cv
            .wait_timeout_while(guard, timeout, |s| {
                let (stopped, generation) = *s;
                let woken = wakeable && generation != gen0;
                !(stopped || woken)
            })
            .unwrap_or_else(PoisonError::into_inner);
        guard.0
    }
}

/// What the endpoint made of one attempt.
#[derive(Debug)]
pub(crate) enum Outcome {
    Delivered(u16),
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
    Refused {
        status: u16,
        response: String,
    },
}

/// Signs and posts one envelope.
pub(crate) struct Sender {
    agent: ureq::Agent,
    url: String,
    key: SigningKey,
}

impl Sender {
    pub(crate) fn new(url: &str, key: SigningKey, timeout: Duration) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(concat!("agent-monitor/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Self {
            agent,
            url: url.to_owned(),
            key,
        }
    }

    pub(crate) fn send(&self, env: &Envelope) -> Outcome {
        // Signed at send time: a receiver can refuse old timestamps while retries still pass.
        let ts = unix_secs(SystemTime::now()).to_string();
        let sig = self.key.sign(env.body.as_bytes(), &ts);
        let result = self
            .agent
            .post(&self.url)
            .header("Content-Type", "application/json")
            .header(HEADER_TIMESTAMP, &ts)
            .header(HEADER_SIGNATURE, &sig)
            .header(HEADER_IDEMPOTENCY, &env.idempotency_key)
            .send(env.body.as_bytes());
        let mut resp = match result {
            Ok(r) => r,
            Err(e) => {
                return Outcome::Retry {
                    reason: format!("POST {}: {e}", self.url),
                    retry_after: None,
                };
            }
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let mut body = Vec::new();
        let _ = resp
            .body_mut()
            .as_reader()
            .take(MAX_RESPONSE)
            .read_to_end(&mut body);
        let response = String::from_utf8_lossy(&body).into_owned();
        match status {
            200..=299 => Outcome::Delivered(status),
            408 | 429 => Outcome::Retry {
                reason: format!("POST {}: HTTP {status}: {}", self.url, response.trim()),
                retry_after,
            },
            400..=499 => Outcome::Refused { status, response },
            _ => Outcome::Retry {
                reason: format!("POST {}: HTTP {status}: {}", self.url, response.trim()),
                retry_after,
            },
        }
    }
}

/// The worker: runs until stopped.
pub(crate) struct Worker {
    pub(crate) outbox: Arc<Outbox>,
    pub(crate) sender: Sender,
    pub(crate) backoff: Backoff,
    pub(crate) idle_poll: Duration,
    pub(crate) counters: Arc<DeliveryCounters>,
    pub(crate) signal: Arc<Signal>,
}

impl Worker {
    pub(crate) fn run(&self) {
        let mut failures: u32 = 0;
        while !self.signal.stopped() {
            let batch = match self.outbox.pending() {
                Ok(b) => b,
                Err(e) => {
                    log::error!("webhook outbox: {e}");
                    self.counters.set_error(Some(e.to_string()));
                    if self.signal.wait(self.backoff.delay(failures), false) {
                        return;
                    }
                    failures = failures.saturating_add(1);
                    continue;
                }
            };
            if batch.is_empty() {
                if self.signal.wait(self.idle_poll, true) {
                    return;
                }
                continue;
            }
            for path in &batch {
                if !self.deliver_one(path, &mut failures) {
                    return;
                }
            }
        }
    }

    /// Deliver one entry, retrying until it is delivered or buried. False when stopped.
    fn deliver_one(&self, path: &Path, failures: &mut u32) -> bool {
        let mut attempts: u32 = 0;
        loop {
            if self.signal.stopped() {
                return false;
            }
            let env = match self.outbox.read(path) {
                Ok(env) => env,
                Err(WebhookError::Outbox { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    return true;
                }
                Err(e @ WebhookError::Envelope { .. }) => {
                    self.bury(path, None, String::new(), e.to_string(), attempts);
                    return true;
                }
                Err(e) => {
                    self.fail(&e.to_string(), None, failures, attempts);
                    if self.signal.wait(self.backoff.delay(*failures - 1), false) {
                        return false;
                    }
                    continue;
                }
            };
            attempts = attempts.saturating_add(1);
            match self.sender.send(&env) {
                Outcome::Delivered(status) => {
                    log::info!(
                        "webhook: ticket {} v{} delivered (HTTP {status}, attempt {attempts})",
                        env.ticket_id,
                        env.version
                    );
                    if let Err(e) = self.outbox.complete(path) {
                        // Sent, but still on disk: it will be sent again with the same
                        // idempotency key, which the receiver drops.
                        log::error!("webhook: {e}");
                    }
                    self.counters.delivered.fetch_add(1, Ordering::Relaxed);
                    self.counters.set_error(None);
                    *failures = 0;
                    return true;
                }
                Outcome::Refused { status, response } => {
                    let reason = format!("HTTP {status} from {}", self.sender.url);
                    self.bury(path, Some(status), response, reason, attempts);
                    return true;
                }
                Outcome::Retry {
                    reason,
                    retry_after,
                } => {
                    self.fail(
                        &format!(
                            "ticket {} v{} not delivered, kept in the outbox: {reason}",
                            env.ticket_id, env.version
                        ),
                        Some(&env),
                        failures,
                        attempts,
                    );
                    let delay = self.backoff.delay(*failures - 1);
                    let delay = retry_after.map_or(delay, |ra| ra.clamp(delay, self.backoff.max));
                    if self.signal.wait(delay, false) {
                        return false;
                    }
                }
            }
        }
    }

    fn fail(&self, msg: &str, env: Option<&Envelope>, failures: &mut u32, attempts: u32) {
        *failures = failures.saturating_add(1);
        self.counters.retries.fetch_add(1, Ordering::Relaxed);
        self.counters.set_error(Some(msg.to_owned()));
        // Every failure is logged, but the backoff bounds how often (at most once per `max`
        // once the endpoint has been down for a while).
        log::warn!(
            "webhook: {msg} (attempt {attempts}{})",
            env.map_or(String::new(), |e| format!(", key {}", e.idempotency_key))
        );
    }

    fn bury(
        &self,
        path: &Path,
        status: Option<u16>,
        response: String,
        reason: String,
        attempts: u32,
    ) {
        let record = DeadRecord {
            url: self.sender.url.clone(),
            status,
            response,
            reason: reason.clone(),
            attempts,
            at: rfc3339(SystemTime::now()),
        };
        match self.outbox.bury(path, &record) {
            Ok(dead) => {
                self.counters.dead.fetch_add(1, Ordering::Relaxed);
                self.counters.set_error(Some(reason.clone()));
                log::error!(
                    "webhook: {} refused ({reason}): moved to {} for a person to look at",
                    path.display(),
                    dead.display()
                );
            }
            Err(e) => {
                // Could not move it: it stays pending and is tried again later.
                log::error!("webhook: {reason}, and moving it to dead/ failed: {e}");
                let _ = self.signal.wait(self.backoff.max, false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_backoff_is_bounded_and_jittered() {
        let b = Backoff::default();
        for attempt in 0..40 {
            let d = b.delay(attempt);
            let cap = Duration::from_secs(1)
                .saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX))
                .min(Duration::from_secs(300));
            assert!(d >= cap / 2 && d <= cap, "attempt {attempt}: {d:?}");
        }
        assert!(b.delay(0) >= Duration::from_millis(500));
        assert!(b.delay(100) <= Duration::from_secs(300));
    }
}
