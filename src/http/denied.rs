//! Refused reads are audited too — but a flood of them must not become a
//! flood of records, so they are recorded within a budget per second and
//! the rest are counted.

use std::sync::Mutex;
use std::time::Instant;

use axum::http::request::Parts;

use super::auth::Caller;
use crate::audit;

/// The most `audit.read.denied` records one router writes in a second.
pub(crate) const DENIED_PER_SECOND: u32 = 10;

/// The longest request path copied into a record, in characters.
const MAX_PATH: usize = 256;

/// Why a read was refused.
#[derive(Debug)]
pub(crate) enum Denial {
    /// No `Authorization` header: a 401.
    NoCredentials,
    /// Credentials the authorizer refused: a 401.
    BadCredentials,
    /// An authenticated caller without `audit:read`: a 403.
    Forbidden(Caller),
}

impl Denial {
    fn reason(&self) -> &'static str {
        match self {
            Self::NoCredentials => "no_credentials",
            Self::BadCredentials => "bad_credentials",
            Self::Forbidden(_) => "missing_permission",
        }
    }

    fn status(&self) -> u16 {
        match self {
            Self::NoCredentials | Self::BadCredentials => 401,
            Self::Forbidden(_) => 403,
        }
    }
}

/// A fixed window of one second: at most [`DENIED_PER_SECOND`] records in
/// it; the refusals beyond are counted, and the count goes into the next
/// record that is written.
#[derive(Debug)]
pub(crate) struct DeniedBudget {
    start: Instant,
    window: Mutex<Window>,
}

#[derive(Debug, Default)]
struct Window {
    second: u64,
    used: u32,
    suppressed: u64,
}

impl DeniedBudget {
    pub(crate) fn new() -> Self {
        Self {
            start: Instant::now(),
            window: Mutex::new(Window::default()),
        }
    }

    /// Records `denial` as `audit.read.denied`, if the budget allows; the
    /// request's span gives the client address and request id.
    pub(crate) fn record(&self, parts: &Parts, denial: &Denial) {
        let Some(suppressed) = self.admit(self.start.elapsed().as_secs()) else {
            return;
        };
        let path: String = parts.uri.path().chars().take(MAX_PATH).collect();
        let method = parts.method.as_str();
        let (reason, status) = (denial.reason(), denial.status());
        match denial {
            Denial::Forbidden(caller) => audit!(
                action = "audit.read.denied",
                actor = caller,
                reason,
                status,
                method,
                path = path.as_str(),
                suppressed,
            ),
            Denial::NoCredentials | Denial::BadCredentials => audit!(
                action = "audit.read.denied",
                reason,
                status,
                method,
                path = path.as_str(),
                suppressed,
            ),
        }
    }

    /// Whether a record may be written in second `now` of the router's
    /// life; if so, how many were suppressed since the last one written.
    fn admit(&self, now: u64) -> Option<u64> {
        // A poisoned lock only means a panic elsewhere mid-update of three
        // counters: still good enough to count with.
        let mut window = self
            .window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if window.second != now {
            window.second = now;
            window.used = 0;
        }
        if window.used < DENIED_PER_SECOND {
            window.used += 1;
            Some(std::mem::take(&mut window.suppressed))
        } else {
            window.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_per_second_and_the_rest_counted_into_the_next_record() {
        let budget = DeniedBudget::new();
        let first: Vec<_> = (0..25).map(|_| budget.admit(0)).collect();
        let admitted = first.iter().filter(|a| a.is_some()).count();
        assert_eq!(admitted, DENIED_PER_SECOND as usize);
        assert!(first.iter().flatten().all(|&s| s == 0));
        // The next second: the first record carries the 15 suppressed.
        assert_eq!(budget.admit(1), Some(15));
        assert_eq!(budget.admit(1), Some(0));
        // A quiet gap changes nothing.
        assert_eq!(budget.admit(9), Some(0));
    }
}
