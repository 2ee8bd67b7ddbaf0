//! The producer's acknowledgements: a batch's publishes all ask for theirs
//! on one reply subject, and the batch is written once as many came back,
//! each saying the message is stored.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use async_nats::{StatusCode, Subject};
use futures_util::StreamExt;
use tokio::time::{Instant, Sleep};

/// The acknowledgements a batch awaits.
pub(super) struct Acks<'a> {
    subscriber: &'a mut async_nats::Subscriber,
    reply: &'a Subject,
    /// Publishes sent and not acknowledged yet.
    awaited: usize,
    stall: Stall,
}

impl<'a> Acks<'a> {
    /// Acknowledgements on `reply`, from `subscriber` (subscribed to
    /// them); `timeout` without progress fails the batch.
    pub(super) fn new(
        subscriber: &'a mut async_nats::Subscriber,
        reply: &'a Subject,
        timeout: Duration,
    ) -> Self {
        Self {
            subscriber,
            reply,
            awaited: 0,
            stall: Stall::new(timeout),
        }
    }

    /// Publishes not acknowledged yet.
    pub(super) fn awaited(&self) -> usize {
        self.awaited
    }

    /// Queues a publish (`send`, asking for its acknowledgement on the
    /// reply subject); an error if the client's queue stays full for the
    /// timeout (a server away for long).
    pub(super) async fn send<E: std::fmt::Display>(
        &mut self,
        send: impl Future<Output = Result<(), E>>,
    ) -> Result<(), String> {
        tokio::select! {
            biased;
            sent = send => sent.map_err(|e| format!("nats publish failed: {e}"))?,
            () = self.stall.expired() => {
                return Err("nats publish timed out: the client's queue stayed full".to_owned());
            }
        }
        self.awaited += 1;
        self.stall.progress();
        Ok(())
    }

    /// Takes the next acknowledgement of this batch; an error if it says
    /// one, or if none came for the timeout.
    pub(super) async fn next(&mut self) -> Result<(), String> {
        loop {
            let message = tokio::select! {
                biased;
                message = self.subscriber.next() => message,
                () = self.stall.expired() => {
                    return Err(format!(
                        "nats publish not acknowledged: {} acknowledgements missing after {:?}",
                        self.awaited, self.stall.limit
                    ));
                }
            };
            let Some(message) = message else {
                return Err("nats acknowledgements subscription closed".to_owned());
            };
            if message.subject != *self.reply {
                continue; // late, for a batch that failed before
            }
            self.awaited -= 1;
            self.stall.progress();
            return acknowledged(&message);
        }
    }
}

/// Whether a reply to a JetStream publish says the message is stored.
fn acknowledged(reply: &async_nats::Message) -> Result<(), String> {
    #[derive(serde::Deserialize)]
    struct PublishAck {
        seq: Option<u64>,
        error: Option<ApiError>,
    }
    #[derive(serde::Deserialize)]
    struct ApiError {
        description: Option<String>,
        err_code: Option<u64>,
    }
    if reply.status == Some(StatusCode::NO_RESPONDERS) {
        return Err("nats publish not stored: no stream listens on the subject".to_owned());
    }
    match serde_json::from_slice::<PublishAck>(&reply.payload) {
        Ok(PublishAck {
            seq: Some(_),
            error: None,
        }) => Ok(()),
        Ok(PublishAck { error: Some(e), .. }) => Err(format!(
            "nats publish not stored: {} (error {})",
            e.description.as_deref().unwrap_or("no description"),
            e.err_code.unwrap_or(0)
        )),
        _ => Err(format!(
            "nats publish not acknowledged: unexpected reply {:?} (status {:?})",
            String::from_utf8_lossy(&reply.payload),
            reply.status
        )),
    }
}

/// A batch's deadline: it passes only after `limit` without progress (a
/// publish queued or an acknowledgement received). Progress costs a clock
/// read; the timer is reset only when it fires early.
struct Stall {
    sleep: Pin<Box<Sleep>>,
    last: Instant,
    limit: Duration,
}

impl Stall {
    fn new(limit: Duration) -> Self {
        let last = Instant::now();
        Self {
            sleep: Box::pin(tokio::time::sleep_until(last + limit)),
            last,
            limit,
        }
    }

    fn progress(&mut self) {
        self.last = Instant::now();
    }

    /// Completes once `limit` has passed since the last progress.
    async fn expired(&mut self) {
        loop {
            self.sleep.as_mut().await;
            let due = self.last + self.limit;
            if due <= Instant::now() {
                return;
            }
            self.sleep.as_mut().reset(due);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn reply(payload: &'static str, status: Option<StatusCode>) -> async_nats::Message {
        async_nats::Message {
            subject: Subject::from("_INBOX.x.1"),
            reply: None,
            payload: Bytes::from_static(payload.as_bytes()),
            headers: None,
            status,
            description: None,
            length: payload.len(),
        }
    }

    /// Only a reply naming the stored message's sequence is a success: an
    /// error, a missing stream or anything else fails the batch.
    #[test]
    fn a_batch_counts_only_acknowledgements_that_say_stored() {
        let cases = [
            (r#"{"stream":"AUDIT","seq":7}"#, None, Ok(())),
            (
                r#"{"stream":"AUDIT","seq":7,"duplicate":true}"#,
                None,
                Ok(()),
            ),
            (
                r#"{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"}}"#,
                None,
                Err("maximum messages exceeded (error 10077)"),
            ),
            (
                "",
                Some(StatusCode::NO_RESPONDERS),
                Err("no stream listens"),
            ),
            ("", None, Err("unexpected reply")),
            (r#"{"stream":"AUDIT"}"#, None, Err("unexpected reply")),
        ];
        for (payload, status, want) in cases {
            let got = acknowledged(&reply(payload, status));
            match (got, want) {
                (Ok(()), Ok(())) => {}
                (Err(e), Err(part)) => assert!(e.contains(part), "{payload:?}: {e}"),
                (got, want) => panic!("{payload:?}: got {got:?}, want {want:?}"),
            }
        }
    }
}
