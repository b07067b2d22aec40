//! The time requests are served at: the system clock, or a clock a test sets, passed into the
//! session rules with each call (they never read the time themselves).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Where the time of a request comes from.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    /// `None`: the system clock; else milliseconds since the Unix epoch, as set.
    manual: Option<Arc<AtomicU64>>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Clock { manual: None }
    }

    /// A clock that stands at `now_ms` until [`Clock::set`] moves it (clones share it).
    pub fn manual(now_ms: u64) -> Self {
        Clock {
            manual: Some(Arc::new(AtomicU64::new(now_ms))),
        }
    }

    /// Moves a manual clock to `now_ms` (nothing for the system clock).
    pub fn set(&self, now_ms: u64) {
        if let Some(manual) = &self.manual {
            manual.store(now_ms, Ordering::SeqCst);
        }
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        match &self.manual {
            Some(manual) => manual.load(Ordering::SeqCst),
            None => system_ms(),
        }
    }
}

/// Milliseconds since the Unix epoch, by the system clock.
pub fn system_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
