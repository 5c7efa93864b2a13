//! SOC tickets over an HTTP webhook, with a durable outbox.
//!
//! [`Webhook::submit`] groups findings into a ticket (see [`group`]), writes the ticket version
//! to the outbox directory and returns once it is on disk. [`Webhook::start_delivery`] starts
//! the delivery worker, a thread that signs and posts the outbox oldest first and retries until
//! the endpoint accepts or refuses each entry (see [`delivery`]). The ticket schema is in
//! [`ticket`] and `docs/SOC-TICKETS.md`; signing and how a receiver verifies are in [`sign`].

pub mod delivery;
pub mod error;
pub mod group;
pub mod outbox;
pub mod sign;
pub mod ticket;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

pub use delivery::{Backoff, DeliveryCounters};
pub use error::{VerifyError, WebhookError};
pub use outbox::{DeadRecord, ENVELOPE_FORMAT, Envelope, Outbox};
pub use sign::{
    DEFAULT_TOLERANCE, HEADER_IDEMPOTENCY, HEADER_SIGNATURE, HEADER_TIMESTAMP, SigningKey, verify,
    verify_fresh,
};
pub use ticket::{
    ActionRecord, AgentRef, Evidence, PodRef, ReleaseRecord, SCHEMA, Ticket, TicketContext,
    TicketEvent, TicketStatus, idempotency_key,
};

use crate::detect::{Finding, Tier};
use delivery::{Sender, Signal, Worker};
use group::Grouper;
use ticket::new_ticket_id;

/// Subdirectory of the outbox directory keeping each agent's latest ticket (grouping across
/// restarts, and the ticket a release closes).
pub const TICKETS_DIR: &str = "tickets";

/// How to reach the SOC and where to keep what is not delivered yet.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    /// The endpoint, `https://...`; `http://` only to a loopback address or with
    /// `allow_insecure_http`.
    pub url: String,
    /// File holding the HMAC-SHA256 key (at least 32 bytes; a trailing newline is ignored).
    pub key_file: PathBuf,
    /// The outbox directory (created, mode 0700); `dead/` inside it.
    pub outbox_dir: PathBuf,
    /// An agent's findings update its open ticket while they come within this time of the
    /// previous one. Default 15 minutes.
    pub group_window: Duration,
    /// Time allowed for one request, connection to response. Default 10 s.
    pub timeout: Duration,
    /// Retry waits. Default 1 s doubling to 5 min, with jitter.
    pub backoff: Backoff,
    /// How often an idle worker looks at the outbox without being woken. Default 5 s.
    pub idle_poll: Duration,
    /// Allow `http://` to a non-loopback host (never in production).
    pub allow_insecure_http: bool,
}

impl WebhookConfig {
    /// A configuration with the default timings.
    pub fn new(url: impl Into<String>, key_file: PathBuf, outbox_dir: PathBuf) -> Self {
        Self {
            url: url.into(),
            key_file,
            outbox_dir,
            group_window: Duration::from_secs(15 * 60),
            timeout: Duration::from_secs(10),
            backoff: Backoff::default(),
            idle_poll: Duration::from_secs(5),
            allow_insecure_http: false,
        }
    }

    fn validate(&self) -> Result<(), WebhookError> {
        let uri: ureq::http::Uri = self
            .url
            .parse()
            .map_err(|e| WebhookError::Config(format!("url {:?}: {e}", self.url)))?;
        let host = uri
            .host()
            .ok_or_else(|| WebhookError::Config(format!("url {:?}: no host", self.url)))?;
        match uri.scheme_str() {
            Some("https") => {}
            Some("http") if self.allow_insecure_http || is_loopback(host) => {}
            Some("http") => {
                return Err(WebhookError::Config(format!(
                    "url {:?}: plain http to a non-loopback host; use https (or set allow_insecure_http)",
                    self.url
                )));
            }
            _ => {
                return Err(WebhookError::Config(format!(
                    "url {:?}: scheme must be https",
                    self.url
                )));
            }
        }
        if self.backoff.initial.is_zero() || self.backoff.max < self.backoff.initial {
            return Err(WebhookError::Config(format!(
                "backoff {:?} to {:?}: need 0 < initial <= max",
                self.backoff.initial, self.backoff.max
            )));
        }
        if self.timeout.is_zero() || self.idle_poll.is_zero() {
            return Err(WebhookError::Config(
                "timeout and idle_poll must be positive".to_owned(),
            ));
        }
        Ok(())
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Which ticket version a submit made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TicketRef {
    pub ticket_id: String,
    pub version: u32,
    pub idempotency_key: String,
    /// This version raised the ticket's tier.
    pub escalated: bool,
    /// The outbox file holding it until it is delivered.
    pub outbox_path: PathBuf,
}

/// Numbers for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WebhookStats {
    /// Deliveries waiting in the outbox.
    pub pending: usize,
    /// Entries the endpoint refused, in `dead/` (all time, this directory).
    pub dead_pending: usize,
    /// Delivered since start.
    pub delivered: u64,
    /// Failed attempts since start (each is retried).
    pub retries: u64,
    /// Moved to `dead/` since start.
    pub dead: u64,
    /// Tickets kept: open for grouping, or waiting for their release.
    pub open_tickets: usize,
    /// The latest delivery error, cleared by the next success.
    pub last_error: Option<String>,
}

/// The SOC ticket sink.
pub struct Webhook {
    config: WebhookConfig,
    key: SigningKey,
    outbox: Arc<Outbox>,
    grouper: Grouper,
    counters: Arc<DeliveryCounters>,
    signal: Arc<Signal>,
    worker_running: Arc<AtomicBool>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &self.config.url)
            .field("outbox", &self.outbox.dir())
            .finish_non_exhaustive()
    }
}

impl Webhook {
    /// Check the configuration, read the key and open (lock) the outbox. Entries left by a
    /// previous run are sent once [`Webhook::start_delivery`] is called.
    pub fn new(config: WebhookConfig) -> Result<Self, WebhookError> {
        config.validate()?;
        let key = SigningKey::load(&config.key_file)?;
        let outbox = Arc::new(Outbox::open(&config.outbox_dir)?);
        let pending = outbox.depth()?;
        if pending > 0 {
            log::info!(
                "webhook: {pending} ticket version(s) pending in {} from a previous run",
                config.outbox_dir.display()
            );
        }
        let grouper =
            Grouper::with_store(config.group_window, &config.outbox_dir.join(TICKETS_DIR))?;
        Ok(Self {
            grouper,
            config,
            key,
            outbox,
            counters: Arc::new(DeliveryCounters::default()),
            signal: Arc::new(Signal::default()),
            worker_running: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Group `findings` (all of one agent) into its open ticket or a new one, with the tier the
    /// decision policy chose and the actions taken, and write that ticket version to the outbox.
    /// Durable when it returns `Ok`.
    pub fn submit(
        &mut self,
        findings: &[Finding],
        tier: Tier,
        actions: &[ActionRecord],
        extra: TicketContext,
    ) -> Result<TicketRef, WebhookError> {
        self.submit_at(findings, tier, actions, &extra, SystemTime::now())
    }

    /// [`Webhook::submit`] at a given wall-clock time (tests, replay).
    pub fn submit_at(
        &mut self,
        findings: &[Finding],
        tier: Tier,
        actions: &[ActionRecord],
        extra: &TicketContext,
        now: SystemTime,
    ) -> Result<TicketRef, WebhookError> {
        let first = findings.first().ok_or(WebhookError::NoFindings)?;
        let agent = first.agent_id.to_string();
        if let Some(other) = findings.iter().find(|f| *f.agent_id != *agent) {
            return Err(WebhookError::MixedAgents {
                first: agent,
                other: other.agent_id.to_string(),
            });
        }
        let before = self.grouper.snapshot(&agent);
        let ticket = self
            .grouper
            .add(&agent, findings, tier, actions, extra, now);
        match self.write(&ticket, now) {
            Ok(outbox_path) => {
                self.signal.wake();
                Ok(TicketRef {
                    ticket_id: ticket.ticket_id,
                    version: ticket.version,
                    idempotency_key: ticket.idempotency_key,
                    escalated: ticket.escalated,
                    outbox_path,
                })
            }
            Err(e) => {
                // Not on disk: forget this version so the next submit reuses its number.
                let (t, seen) = before.map_or((None, now), |(t, s)| (Some(t), s));
                self.grouper.restore(&agent, t, seen);
                Err(e)
            }
        }
    }

    /// The agent's responses were lifted: its latest ticket gets a `released` version (a new
    /// ticket is opened for it when it has none), written to the outbox like any version, and
    /// is closed. `tier` is the tier lifted, when known. Durable when it returns `Ok`.
    pub fn release(
        &mut self,
        agent: AgentRef,
        tier: Option<Tier>,
        release: ReleaseRecord,
    ) -> Result<TicketRef, WebhookError> {
        self.release_at(agent, tier, release, SystemTime::now())
    }

    /// [`Webhook::release`] at a given wall-clock time (tests).
    pub fn release_at(
        &mut self,
        agent: AgentRef,
        tier: Option<Tier>,
        release: ReleaseRecord,
        now: SystemTime,
    ) -> Result<TicketRef, WebhookError> {
        let before = self.grouper.snapshot(&agent.id);
        let ticket = match self.grouper.release(&agent.id, release.clone(), now) {
            Some(t) => t,
            None => Ticket::for_release(
                new_ticket_id(now),
                agent.clone(),
                tier.unwrap_or(Tier::Log),
                release,
                now,
            ),
        };
        match self.write(&ticket, now) {
            Ok(outbox_path) => {
                self.signal.wake();
                Ok(TicketRef {
                    ticket_id: ticket.ticket_id,
                    version: ticket.version,
                    idempotency_key: ticket.idempotency_key,
                    escalated: false,
                    outbox_path,
                })
            }
            Err(e) => {
                // Not on disk: the ticket stays open for the next attempt.
                if let Some((t, seen)) = before {
                    self.grouper.restore(&agent.id, Some(t), seen);
                }
                Err(e)
            }
        }
    }

    /// A deferred action of the agent finished (the forensic snapshot): its open ticket gets an
    /// `updated` version with the action's real outcome in place of its `queued` record, and the
    /// bundle as `evidence`. `None` when the agent has no open ticket. Durable when it returns.
    pub fn complete(
        &mut self,
        agent_id: &str,
        action: ActionRecord,
        evidence: Option<Evidence>,
    ) -> Result<Option<TicketRef>, WebhookError> {
        let now = SystemTime::now();
        let before = self.grouper.snapshot(agent_id);
        let Some(ticket) = self.grouper.complete(agent_id, action, evidence, now) else {
            return Ok(None);
        };
        match self.write(&ticket, now) {
            Ok(outbox_path) => {
                self.signal.wake();
                Ok(Some(TicketRef {
                    ticket_id: ticket.ticket_id,
                    version: ticket.version,
                    idempotency_key: ticket.idempotency_key,
                    escalated: false,
                    outbox_path,
                }))
            }
            Err(e) => {
                let (t, seen) = before.map_or((None, now), |(t, s)| (Some(t), s));
                self.grouper.restore(agent_id, t, seen);
                Err(e)
            }
        }
    }

    fn write(&self, ticket: &Ticket, now: SystemTime) -> Result<PathBuf, WebhookError> {
        let body = serde_json::to_string(ticket).map_err(|source| WebhookError::Encode {
            ticket_id: ticket.ticket_id.clone(),
            source,
        })?;
        self.outbox.enqueue(&Envelope {
            format: ENVELOPE_FORMAT.to_owned(),
            ticket_id: ticket.ticket_id.clone(),
            version: ticket.version,
            idempotency_key: ticket.idempotency_key.clone(),
            enqueued_at: ticket::rfc3339(now),
            body,
        })
    }

    /// Start the delivery worker thread (one per webhook). Stop it with
    /// [`DeliveryHandle::stop`]; dropping the handle stops it too. From tokio, call `stop` in
    /// `spawn_blocking`: it waits for the request in flight (at most `timeout`).
    pub fn start_delivery(&self) -> Result<DeliveryHandle, WebhookError> {
        if self.worker_running.swap(true, Ordering::SeqCst) {
            return Err(WebhookError::Worker("already running".to_owned()));
        }
        self.signal.rearm();
        let worker = Worker {
            outbox: Arc::clone(&self.outbox),
            sender: Sender::new(&self.config.url, self.key.clone(), self.config.timeout),
            backoff: self.config.backoff,
            idle_poll: self.config.idle_poll,
            counters: Arc::clone(&self.counters),
            signal: Arc::clone(&self.signal),
        };
        let running = Arc::clone(&self.worker_running);
        let thread = std::thread::Builder::new()
            .name("webhook-delivery".to_owned())
            .spawn(move || {
                worker.run();
                running.store(false, Ordering::SeqCst);
            })
            .map_err(|e| {
                self.worker_running.store(false, Ordering::SeqCst);
                WebhookError::Worker(format!("spawn: {e}"))
            })?;
        Ok(DeliveryHandle {
            signal: Arc::clone(&self.signal),
            thread: Some(thread),
        })
    }

    /// Numbers for metrics: outbox depth, dead entries, counters.
    pub fn stats(&self) -> WebhookStats {
        WebhookStats {
            pending: self.outbox.depth().unwrap_or(0),
            dead_pending: self.outbox.dead_depth().unwrap_or(0),
            delivered: self.counters.delivered.load(Ordering::Relaxed),
            retries: self.counters.retries.load(Ordering::Relaxed),
            dead: self.counters.dead.load(Ordering::Relaxed),
            open_tickets: self.grouper.open_count(),
            last_error: self.counters.last_error(),
        }
    }

    /// Pending deliveries (outbox depth).
    pub fn depth(&self) -> Result<usize, WebhookError> {
        self.outbox.depth()
    }

    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }
}

/// The running delivery worker.
#[derive(Debug)]
pub struct DeliveryHandle {
    signal: Arc<Signal>,
    thread: Option<JoinHandle<()>>,
}

impl DeliveryHandle {
    /// Stop the worker and wait for it (the request in flight finishes or times out). Pending
    /// entries stay in the outbox for the next run.
    pub fn stop(mut self) -> Result<(), WebhookError> {
        self.halt()
    }

    fn halt(&mut self) -> Result<(), WebhookError> {
        self.signal.stop();
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| WebhookError::Worker("delivery thread panicked".to_owned())),
            None => Ok(()),
        }
    }
}

impl Drop for DeliveryHandle {
    fn drop(&mut self) {
        if let Err(e) = self.halt() {
            log::error!("webhook: {e}");
        }
    }
}

#[cfg(test)]
mod tests;
