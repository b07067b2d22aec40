//! The `Set-Cookie` lines of answers (`vtex_session`, `vtex_segment`), made once per session
//! version and kept with its snapshot ([`Derived`]): the line of the first session token asked
//! for, and the segment's line, which every session with that segment token shares (a store has
//! a handful of segments, so snapshots hold one `Arc` each instead of a line of ~400 bytes). A
//! successor version keeps the lines that still hold: the token's when the id is the same, the
//! segment's when its token is.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, OnceLock};

use axum::http::HeaderValue;

use super::request::{set_cookie, SEGMENT_COOKIE, SESSION_COOKIE};
use crate::snapshot::{Derived, Snapshot};

/// The attributes of the token cookies (the same for every answer of a process).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CookieStyle {
    /// `Max-Age`, seconds.
    pub max_age: u64,
    /// Whether cookies carry `Secure`.
    pub secure: bool,
    /// Whether lines are kept and shared (a snapshot's session-token line, a segment's line);
    /// else each answer makes its own.
    pub keep: bool,
}

/// A segment token's `Set-Cookie` line.
#[derive(Debug)]
struct SegmentLine {
    style: CookieStyle,
    cookie: HeaderValue,
}

/// Most segments whose lines are shared (see [`shared_segment`]); past that the table starts
/// over, so requests that make up many distinct segments cannot grow it without bound.
const MAX_SHARED_SEGMENTS: usize = 4096;

/// The cookie lines of every segment token seen lately. A process has one cookie style; a
/// line of another style (tests run several servers in one process) replaces the entry.
static SEGMENTS: LazyLock<Mutex<HashMap<Box<str>, Arc<SegmentLine>>>> =
    LazyLock::new(Mutex::default);

/// The shared line of segment token `token` in `style`, made if not known.
fn shared_segment(token: &str, style: CookieStyle) -> Arc<SegmentLine> {
    // Each operation is one lookup or insert: a panic cannot leave the table half-written.
    let mut table = SEGMENTS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(line) = table.get(token).filter(|l| l.style == style) {
        return line.clone();
    }
    let cookie = set_cookie(SEGMENT_COOKIE, token, style.max_age, style.secure);
    let line = Arc::new(SegmentLine { style, cookie });
    if table.len() >= MAX_SHARED_SEGMENTS {
        table.clear();
    }
    table.insert(token.into(), line.clone());
    line
}

/// The lines kept with one snapshot.
#[derive(Default)]
struct Lines {
    /// The `vtex_session` line of the first session token asked for.
    token: OnceLock<HeaderValue>,
    segment: OnceLock<Arc<SegmentLine>>,
}

impl Derived for Lines {
    fn carried(&self, same_id: bool, same_segment: bool) -> Option<Box<dyn Derived>> {
        let next = Lines::default();
        let mut any = false;
        if let Some(token) = self.token.get().filter(|_| same_id) {
            let _ = next.token.set(token.clone());
            any = true;
        }
        if let Some(segment) = self.segment.get().filter(|_| same_segment) {
            let _ = next.segment.set(segment.clone());
            any = true;
        }
        any.then(|| Box::new(next) as Box<dyn Derived>)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Whether `line` is the `vtex_session` cookie line of `token` (`vtex_session=<token>;…`).
fn names_token(line: &HeaderValue, token: &str) -> bool {
    let start = SESSION_COOKIE.len() + 1;
    let end = start + token.len();
    let bytes = line.as_bytes();
    bytes.get(start..end) == Some(token.as_bytes()) && bytes.get(end) == Some(&b';')
}

/// The `Set-Cookie` line of session token `token` of `snapshot`'s session. The line of the
/// first token asked for is kept (a session is nearly always named by one token at a time).
pub fn session_cookie(snapshot: &Snapshot, token: &str, style: CookieStyle) -> HeaderValue {
    let make = || set_cookie(SESSION_COOKIE, token, style.max_age, style.secure);
    if !style.keep {
        return make();
    }
    let Some(lines) = snapshot.derived(Lines::default) else {
        return make();
    };
    let line = lines.token.get_or_init(make);
    if names_token(line, token) {
        line.clone()
    } else {
        make()
    }
}

/// The `Set-Cookie` line of the segment token of `snapshot`'s session.
pub fn segment_cookie(snapshot: &Snapshot, style: CookieStyle) -> HeaderValue {
    let token = snapshot.segment_token();
    let make = || set_cookie(SEGMENT_COOKIE, token, style.max_age, style.secure);
    if !style.keep {
        return make();
    }
    let Some(lines) = snapshot.derived(Lines::default) else {
        return make();
    };
    lines
        .segment
        .get_or_init(|| shared_segment(token, style))
        .cookie
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sessiond_core::{Key, Record, Session, SessionId, Value};

    const STYLE: CookieStyle = CookieStyle {
        max_age: 60,
        secure: false,
        keep: true,
    };

    fn session(version: u64) -> Session {
        let mut s = Session::new("demo", 1_000, 10_000);
        s.version = version;
        s.set(&Key::new("public", "k"), Value::new("v"));
        s
    }

    fn kept(snapshot: &Snapshot) -> &Lines {
        snapshot.derived(Lines::default).unwrap()
    }

    #[test]
    fn successors_carry_the_lines_that_still_hold() {
        let first = Snapshot::new(session(1));
        let token_line = session_cookie(&first, "tok", STYLE);
        let segment_line = segment_cookie(&first, STYLE);

        let other = Key::new("public", "other");
        let hint = first.segment_after([&other].into_iter());
        let mut same = first.session().unwrap().clone();
        same.version = 2;
        same.set(&other, Value::new("x"));
        let second = Snapshot::edited(Record::encode(&same, hint), &first);
        assert_eq!(kept(&second).segment.get().unwrap().cookie, segment_line);
        assert_eq!(*kept(&second).token.get().unwrap(), token_line);

        let utm = Key::new("public", "utm_source");
        let mut changed = second.session().unwrap().clone();
        changed.version = 3;
        changed.set(&utm, Value::new("google"));
        let third = Snapshot::edited(Record::encode(&changed, None), &second);
        assert!(
            kept(&third).segment.get().is_none(),
            "made again when asked"
        );
        assert_eq!(*kept(&third).token.get().unwrap(), token_line);
        assert_ne!(third.segment_token(), first.segment_token());
        assert!(segment_cookie(&third, STYLE)
            .to_str()
            .unwrap()
            .starts_with(&format!("vtex_segment={};", third.segment_token())));

        let mut moved = third.session().unwrap().clone();
        moved.id = SessionId::random();
        let fourth = Snapshot::edited(Record::encode(&moved, None), &third);
        assert!(
            kept(&fourth).token.get().is_none(),
            "a new id has a new token"
        );
        assert!(kept(&fourth).segment.get().is_some(), "the same segment");
    }

    #[test]
    fn equal_segments_share_their_lines_and_the_table_is_bounded() {
        let a = Snapshot::new(session(1));
        let b = Snapshot::new(session(2));
        assert_eq!(segment_cookie(&a, STYLE), segment_cookie(&b, STYLE));
        assert!(Arc::ptr_eq(
            kept(&a).segment.get().unwrap(),
            kept(&b).segment.get().unwrap()
        ));
        let secure = CookieStyle {
            secure: true,
            ..STYLE
        };
        let c = Snapshot::new(session(1));
        assert!(segment_cookie(&c, secure)
            .to_str()
            .unwrap()
            .ends_with("; Secure"));
        assert!(!segment_cookie(&a, STYLE)
            .to_str()
            .unwrap()
            .ends_with("; Secure"));
        // Made-up segments (one per request, say) do not grow the table without bound.
        for i in 0..MAX_SHARED_SEGMENTS + 10 {
            let line = shared_segment(&format!("made-up-{i}"), STYLE);
            assert!(line
                .cookie
                .to_str()
                .unwrap()
                .starts_with("vtex_segment=made-up-"));
        }
        assert!(SEGMENTS.lock().unwrap().len() <= MAX_SHARED_SEGMENTS);
    }

    #[test]
    fn session_lines_follow_the_token_and_are_made_anew_when_not_kept() {
        let snapshot = Snapshot::new(session(1));
        let style = CookieStyle {
            max_age: 60,
            secure: true,
            keep: true,
        };
        let a = session_cookie(&snapshot, "aaa", style);
        assert_eq!(
            a.to_str().unwrap(),
            "vtex_session=aaa; Path=/; Max-Age=60; HttpOnly; SameSite=Lax; Secure"
        );
        let b = session_cookie(&snapshot, "bbb", style);
        assert!(b.to_str().unwrap().starts_with("vtex_session=bbb;"));
        assert_eq!(session_cookie(&snapshot, "aaa", style), a);
        let prefix = session_cookie(&snapshot, "aa", style);
        assert!(prefix.to_str().unwrap().starts_with("vtex_session=aa;"));

        let fresh = Snapshot::new(session(1));
        let simple = CookieStyle {
            keep: false,
            ..style
        };
        assert_eq!(session_cookie(&fresh, "aaa", simple), a);
        assert_eq!(
            segment_cookie(&fresh, simple),
            segment_cookie(&fresh, style)
        );
        assert!(
            fresh.derived(Lines::default).unwrap().token.get().is_none(),
            "nothing kept when not keeping"
        );
    }
}
