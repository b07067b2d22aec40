//! Identity rotation against session fixation: when the cycle changes who the visitor is
//! (log-in, log-out, start or end of impersonation) the session is saved under a new id with a
//! new token and the old id ends, taken over by the new one, in one store write; and the
//! succession grace, which leads the same browser's requests still carrying the old token to
//! the new session for a short while.

use std::sync::Arc;
use std::time::Duration;

use sessiond_core::{Delta, Session};

use super::{record_of, Attempt, Edit, SessionError, SessionService};
use crate::repo::StoreError;
use crate::snapshot::Snapshot;
use crate::tenancy::Account;

/// How long after a log-in or log-out a request with the old token and the new cookies is still
/// led to the new session (requests a page fired in parallel with the log-in).
pub const SUCCESSION_GRACE: Duration = Duration::from_secs(60);

impl SessionService {
    /// Saves `session` under a new id and ends `loaded` (its old id), taken over by the new
    /// one, in one store write. [`Attempt::Lost`] when the old session changed meanwhile (the
    /// caller retries from a fresh load).
    pub(super) async fn rotate(
        &self,
        account: &Account,
        (loaded, changed): (&Snapshot, &Delta),
        mut session: Session,
        now: u64,
    ) -> Result<Attempt, SessionError> {
        session.id = loaded.id().successor();
        let token = self.token_saved_with(account, &mut session, now);
        let old = loaded.record();
        let ended = old.ended(
            old.version() + 1,
            session.updated_at,
            Some(session.id),
            self.ended_kept_until(session.updated_at),
        );
        let record = record_of(&session, Some((loaded, changed)), self.fast_paths);
        let saved = self
            .repo
            .save_successor(record, ended, loaded.expected(), loaded)
            .await;
        match saved {
            Ok(snapshot) => {
                self.metrics.rotated(&session);
                Ok(Attempt::Reissued(snapshot, token))
            }
            // Someone edited the old session first: start over from the store.
            Err(StoreError::Conflict) => Ok(Attempt::Lost),
            Err(e) => Err(e.into()),
        }
    }

    /// The session that took over the ended `ended` at a log-in or log-out, if that was less
    /// than [`SUCCESSION_GRACE`] ago and the request carries exactly the successor's recorded
    /// cookies (the same browser, racing with its own log-in). A token planted before log-in,
    /// sent without the victim's identity cookie, never leads to it.
    pub(super) async fn successor(
        &self,
        ended: &Snapshot,
        edit: &Edit,
        now: u64,
    ) -> Result<Option<Arc<Snapshot>>, SessionError> {
        let record = ended.record();
        let Some(next) = record.replaced_by() else {
            return Ok(None);
        };
        if now.saturating_sub(record.updated_at()) > SUCCESSION_GRACE.as_millis() as u64 {
            return Ok(None);
        }
        Ok(match self.repo.load(next, now).await? {
            Some(n) if n.record().active() && edit.same_browser(n.session()?) => Some(n),
            _ => None,
        })
    }
}
