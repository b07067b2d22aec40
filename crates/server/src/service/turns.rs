//! Turns: after losing a compare-and-swap, the edits of one session queue instead of racing
//! each other again.

use std::collections::HashMap;
use std::sync::Arc;

use sessiond_core::SessionId;

/// One queue (an async mutex) per session with contended edits, so that many parallel edits
/// of one session (a page firing its requests at once) do not each retry until they run out
/// of attempts: after losing once, they take turns. Uncontended edits never touch it.
#[derive(Default)]
pub(super) struct Turns {
    queues: std::sync::Mutex<HashMap<SessionId, Arc<tokio::sync::Mutex<()>>>>,
}

/// A held turn; the session's queue is forgotten when nobody else waits in it.
pub(super) struct Turn<'a> {
    turns: &'a Turns,
    id: SessionId,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Turns {
    fn queues(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Arc<tokio::sync::Mutex<()>>>> {
        // Each operation is one insert or remove: a panic cannot leave the map half-written.
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for the turn of session `id`.
    pub(super) async fn wait(&self, id: SessionId) -> Turn<'_> {
        let queue = self.queues().entry(id).or_default().clone();
        Turn {
            turns: self,
            id,
            guard: Some(queue.lock_owned().await),
        }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.guard.take();
        let mut queues = self.turns.queues();
        if queues
            .get(&self.id)
            .is_some_and(|q| Arc::strong_count(q) == 1)
        {
            queues.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn turns_are_taken_in_order_and_forgotten_when_done() {
        let turns = Turns::default();
        let id = SessionId::random();
        let first = turns.wait(id).await;
        // A second edit of the same session waits until the first turn ends.
        let second = turns.wait(id);
        tokio::pin!(second);
        assert!(futures::poll!(second.as_mut()).is_pending());
        // Another session is not held up.
        let other = turns.wait(SessionId::random()).await;
        drop(first);
        let second = second.await;
        assert_eq!(turns.queues().len(), 2);
        drop(second);
        drop(other);
        assert!(
            turns.queues().is_empty(),
            "no queue is kept once nobody waits"
        );
    }
}
